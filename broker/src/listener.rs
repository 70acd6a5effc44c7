//! Network listeners: bind each configured address and accept
//! connections until shutdown, one task per connection. A connection's
//! task first runs its transport's handshake (TLS, WebSocket upgrade, or
//! both), bounded in time and abandoned on shutdown, then serves MQTT.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{Auth, CertUser};
use crate::broker::Broker;
use crate::config::{ListenerConfig, ListenerKind, DEFAULT_HANDSHAKE_TIMEOUT_SECS};
use crate::connection;
use crate::log_limit::LogLimit;
use crate::tls::{TlsError, TlsServer};
use crate::transport::{ws, ConnMeta, ListenerCtx};

/// Pause after a failed accept (e.g. the process ran out of file
/// descriptors), so the loop does not spin; it doubles while accepts keep
/// failing, up to [`ACCEPT_ERROR_BACKOFF_MAX`], and resets on success.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
const ACCEPT_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// At most one accept-error warning per period (per process), with the
/// number left out; `mqttd_accept_errors_total` counts them all.
static ACCEPT_ERROR_LOG: LogLimit = LogLimit::new(Duration::from_secs(10));

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (listener `{name}`): {error}")]
pub struct BindError {
    pub name: String,
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// Why a listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("listener `{name}`: {error}")]
    Tls { name: String, error: TlsError },
}

/// What every connection of one listener shares.
struct Transport {
    ctx: Arc<ListenerCtx>,
    tls: Option<Arc<TlsServer>>,
    ws_path: String,
    /// Bound on the WebSocket upgrade (and TLS handshake) time.
    handshake_timeout: Duration,
}

/// A bound listener, not yet accepting.
pub struct Bound {
    pub name: Arc<str>,
    pub kind: ListenerKind,
    pub local_addr: SocketAddr,
    listener: TcpListener,
    transport: Arc<Transport>,
}

impl Bound {
    /// The listener's TLS state, for reloads.
    pub fn tls(&self) -> Option<&Arc<TlsServer>> {
        self.transport.tls.as_ref()
    }

    /// The listener's figures, for `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::ListenerMetrics> {
        &self.transport.ctx.metrics
    }
}

/// The name a listener is known by (defaults to `KIND-PORT`).
pub fn listener_name(cfg: &ListenerConfig) -> String {
    if cfg.name.is_empty() {
        format!("{}-{}", cfg.kind.as_str(), cfg.bind.port())
    } else {
        cfg.name.clone()
    }
}

/// Loads the listener's certificates; `None` for a listener without TLS.
pub fn load_tls(cfg: &ListenerConfig) -> Result<Option<TlsServer>, ListenerError> {
    let name = listener_name(cfg);
    match &cfg.tls {
        Some(t) if cfg.kind.is_tls() => TlsServer::new(&name, t)
            .map(Some)
            .map_err(|error| ListenerError::Tls { name, error }),
        _ => Ok(None),
    }
}

/// Loads the listener's certificates (if any) and binds its address.
pub async fn bind(cfg: &ListenerConfig, auth: Arc<Auth>) -> Result<Bound, ListenerError> {
    let name = listener_name(cfg);
    let tls = load_tls(cfg)?.map(Arc::new);
    let err = |error| BindError {
        name: name.clone(),
        addr: cfg.bind,
        error,
    };
    let listener = TcpListener::bind(cfg.bind).await.map_err(err)?;
    let local_addr = listener.local_addr().map_err(err)?;
    let name: Arc<str> = name.as_str().into();
    let handshake_timeout = cfg
        .tls
        .as_ref()
        .map_or(Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS), |t| {
            t.handshake_timeout()
        });
    let transport = Arc::new(Transport {
        ctx: Arc::new(ListenerCtx {
            name: name.clone(),
            kind: cfg.kind,
            allow_anonymous: cfg.allow_anonymous,
            auth,
            metrics: Arc::new(crate::metrics::ListenerMetrics::new(name.clone())),
        }),
        tls,
        ws_path: cfg.ws_path().to_string(),
        handshake_timeout,
    });
    Ok(Bound {
        name,
        kind: cfg.kind,
        local_addr,
        listener,
        transport,
    })
}

/// Accepts connections on `bound` until the broker shuts down.
pub async fn accept_loop(bound: Bound, broker: Arc<Broker>) {
    tracing::info!(listener = %bound.name, addr = %bound.local_addr, kind = bound.kind.as_str(), "listening");
    let mut backoff = ACCEPT_ERROR_BACKOFF;
    loop {
        let accepted = tokio::select! {
            a = bound.listener.accept() => a,
            _ = broker.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_ERROR_BACKOFF;
                // Small MQTT packets must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                spawn_connection(stream, peer, bound.transport.clone(), broker.clone());
            }
            Err(e) => {
                broker.ctx.metrics.accept_errors.inc();
                if let Some(suppressed) = ACCEPT_ERROR_LOG.check() {
                    tracing::warn!(listener = %bound.name, error = %e, suppressed, ?backoff, "accept failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = broker.shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_ERROR_BACKOFF_MAX);
            }
        }
    }
    tracing::debug!(listener = %bound.name, "stopped accepting");
}

/// Starts one connection's task: the transport handshake, then MQTT. Each
/// kind is its own task type, so that a plain TCP connection neither
/// reserves room for the TLS and WebSocket state of the other kinds nor
/// needs a second allocation.
fn spawn_connection(stream: TcpStream, peer: SocketAddr, t: Arc<Transport>, broker: Arc<Broker>) {
    let tasks = broker.connections.clone();
    match (t.ctx.kind, t.tls.clone()) {
        (ListenerKind::Tcp, _) => {
            tasks.spawn(serve_mqtt(stream, peer, &t, CertUser::None, broker));
        }
        (ListenerKind::Ws, _) => {
            tasks.spawn(serve_ws(stream, peer, t, CertUser::None, broker));
        }
        (ListenerKind::Tls, Some(tls)) => {
            tasks.spawn(serve_tls(stream, peer, t, tls, broker, false));
        }
        (ListenerKind::Wss, Some(tls)) => {
            tasks.spawn(serve_tls(stream, peer, t, tls, broker, true));
        }
        // `bind` makes TLS state for every TLS kind.
        (ListenerKind::Tls | ListenerKind::Wss, None) => {}
    }
}

/// MQTT over an established transport. Not an `async fn`, so that the
/// future holds only the connection's own (see [`connection::serve`]).
fn serve_mqtt<S>(
    s: S,
    peer: SocketAddr,
    t: &Transport,
    user: CertUser,
    broker: Arc<Broker>,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let meta = ConnMeta {
        listener: t.ctx.clone(),
        peer,
        cert_user: user,
    };
    connection::serve(s, meta, broker)
}

/// The TLS handshake, then MQTT, or a WebSocket upgrade first (`wss`).
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    t: Arc<Transport>,
    tls: Arc<TlsServer>,
    broker: Arc<Broker>,
    websocket: bool,
) {
    let accept = async {
        let r = tls.accept(stream).await;
        if let Err(e) = &r {
            let reason = crate::tls::HandshakeFailure::of(e);
            t.ctx.metrics.tls_failure(reason).inc();
        }
        r
    };
    let Some((s, user)) = handshake(&broker, &t, peer, accept).await else {
        return;
    };
    if websocket {
        Box::pin(serve_ws(s, peer, t, user, broker)).await;
    } else {
        serve_mqtt(s, peer, &t, user, broker).await;
    }
}

/// The WebSocket upgrade, then MQTT.
async fn serve_ws<S>(
    stream: S,
    peer: SocketAddr,
    t: Arc<Transport>,
    user: CertUser,
    broker: Arc<Broker>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max_packet = broker.ctx.config.mqtt.max_packet_size_bytes as usize;
    if let Some(s) = handshake(&broker, &t, peer, ws_upgrade(stream, &t, max_packet)).await {
        serve_mqtt(s, peer, &t, user, broker).await;
    }
}

/// The WebSocket upgrade, bounded by the listener's handshake timeout.
async fn ws_upgrade<S>(io: S, t: &Transport, max_packet: usize) -> Result<ws::WsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(t.handshake_timeout, ws::accept(io, &t.ws_path, max_packet))
        .await
        .map_err(|_| "WebSocket upgrade timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Runs a transport handshake unless the broker stops first; failures are
/// logged (at debug: scanners and probes make many).
async fn handshake<T, E: Display>(
    broker: &Broker,
    t: &Transport,
    peer: SocketAddr,
    fut: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    tokio::select! {
        r = fut => match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(listener = %t.ctx.name, %peer, error = %e, "handshake failed");
                None
            }
        },
        _ = broker.stopping.cancelled() => None,
    }
}
