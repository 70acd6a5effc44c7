//! MQTT over WebSocket (MQTT section 6): the HTTP upgrade, and a stream
//! adapter that presents the binary frames of a WebSocket as a byte stream
//! (`AsyncRead + AsyncWrite`), so the connection code is the same as for
//! TCP.
//!
//! The upgrade is accepted only on the listener's path. The client should
//! offer the `mqtt` subprotocol, which is echoed back (`mqttv3.1` is
//! accepted from old clients); a client that offers other subprotocols
//! only is refused, one that offers none is served (some simple clients
//! send no header). A text frame is a protocol error [MQTT-6.0.0-1].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Per-connection read buffer of the WebSocket layer; small, since MQTT
/// packets from devices are small and connections are many.
const WS_READ_BUFFER_BYTES: usize = 8 * 1024;
/// Room above the MQTT packet limit for a message holding several packets.
const WS_MESSAGE_SLACK_BYTES: usize = 64 * 1024;

const SUBPROTOCOL_HEADER: &str = "sec-websocket-protocol";

/// Upgrades `io` to a WebSocket serving `path`; `max_packet_bytes` bounds
/// the messages accepted.
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
pub async fn accept<S>(io: S, path: &str, max_packet_bytes: usize) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = max_packet_bytes.saturating_add(WS_MESSAGE_SLACK_BYTES);
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        // The connection batches packets itself; write each one at once.
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let path = path.to_string();
    let callback = move |req: &Request, resp: Response| check_upgrade(req, resp, &path);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(config)).await?;
    Ok(WsStream::new(ws))
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

/// Checks the path and picks the subprotocol of an upgrade request.
#[allow(clippy::result_large_err)] // the error type is tungstenite's
fn check_upgrade(req: &Request, mut resp: Response, path: &str) -> Result<Response, ErrorResponse> {
    if req.uri().path() != path {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "no MQTT endpoint at this path",
        ));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(SUBPROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if offered.is_empty() {
        return Ok(resp);
    }
    let chosen = ["mqtt", "mqttv3.1"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)));
    match chosen {
        Some(p) => {
            resp.headers_mut()
                .insert(SUBPROTOCOL_HEADER, HeaderValue::from_static(p));
            Ok(resp)
        }
        None => Err(refuse(
            StatusCode::BAD_REQUEST,
            "the `mqtt` subprotocol is required",
        )),
    }
}

/// A WebSocket seen as a byte stream: reads yield the payloads of binary
/// messages, each write is sent as one binary message.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    /// A close frame arrived (or the stream ended): reads return EOF.
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    pub fn new(inner: WebSocketStream<S>) -> Self {
        WsStream {
            inner,
            pending: Bytes::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket frame: MQTT needs binary frames [MQTT-6.0.0-1]",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner);
        ready!(inner.poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        // Push the frame out now if the socket takes it; what remains is
        // written by the next write or flush.
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.inner).poll_flush(cx) {
            return Poll::Ready(Err(to_io(e)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (
        WsStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (WsStream::new(server), client)
    }

    #[tokio::test]
    async fn binary_frames_become_a_byte_stream() {
        use futures::{SinkExt, StreamExt};
        let (mut server, mut client) = pair().await;
        client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        client.send(Message::binary(vec![4, 5])).await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5]);
        server.write_all(&[9, 8, 7]).await.unwrap();
        server.flush().await.unwrap();
        let got = client.next().await.unwrap().unwrap();
        assert_eq!(got, Message::binary(vec![9, 8, 7]));
        client.close(None).await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "close frame reads as EOF");
    }

    #[tokio::test]
    async fn text_frames_are_refused() {
        use futures::SinkExt;
        let (mut server, mut client) = pair().await;
        client.send(Message::text("hello")).await.unwrap();
        let mut buf = [0u8; 8];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[allow(clippy::result_large_err)]
    fn upgrade(path: &str, protocols: Option<&str>) -> Result<Response, ErrorResponse> {
        let mut req = Request::builder().uri(path);
        if let Some(p) = protocols {
            req = req.header("Sec-WebSocket-Protocol", p);
        }
        check_upgrade(&req.body(()).unwrap(), Response::new(()), "/mqtt")
    }

    #[test]
    fn upgrade_checks_path_and_subprotocol() {
        let ok = upgrade("/mqtt", Some("mqtt")).unwrap();
        assert_eq!(ok.headers()[SUBPROTOCOL_HEADER], "mqtt");
        let ok = upgrade("/mqtt", Some("foo, mqttv3.1")).unwrap();
        assert_eq!(ok.headers()[SUBPROTOCOL_HEADER], "mqttv3.1");
        assert!(upgrade("/mqtt", None)
            .unwrap()
            .headers()
            .get(SUBPROTOCOL_HEADER)
            .is_none());
        assert_eq!(
            upgrade("/other", Some("mqtt")).unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            upgrade("/mqtt", Some("chat")).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
