//! One client connection (the seed's "protocol" process): framing, the
//! CONNECT handshake, keep alive, and the loop that passes packets between
//! the socket and the session.
//!
//! The connection owns no session state: everything that must survive a
//! disconnect lives in the session task. Reads and writes are buffered;
//! outgoing packets are batched into one write per wake-up.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::codec::{encode, Decoder, Disconnect, Packet, ProtocolVersion, ReasonCode, Subscribe};
use crate::connect::{self, Accepted};
use crate::context::Context;
use crate::keepalive::KeepAlive;
use crate::mailbox;
use crate::publish::{self, Reply};
use crate::session::{CloseReason, DetachKind, Outbound, SessionMsg, SessionTx};
use crate::transport::ConnMeta;
use crate::types::{ClientId, QoS};

/// Initial read buffer; it grows with what arrives in one read. Small, so
/// that idle connections cost little memory.
const READ_BUFFER_BYTES: usize = 512;
/// Outgoing bytes gathered before a write is issued.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Why a connection ended, for the log line and the will.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The client sent DISCONNECT.
    Disconnected(DetachKind),
    /// The peer closed the socket or it failed.
    Closed(&'static str),
    /// Keep alive expired.
    KeepAliveTimeout,
    /// The client broke the protocol; `code` goes into a 5.0 DISCONNECT.
    Violation { reason: String, code: ReasonCode },
    /// The session or the broker closed it.
    ByServer(CloseReason),
}

/// The framed socket of one connection.
pub(crate) struct Framed<S> {
    pub stream: S,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub decoder: Decoder,
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// The listener's settings and what the transport established.
    pub meta: ConnMeta,
    /// Broker state, for the byte counters.
    pub ctx: Arc<Context>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Reads until one whole packet is decoded. `Ok(None)`: clean EOF.
    pub async fn read_packet(&mut self) -> Result<Option<Packet>, Ending> {
        loop {
            if let Some(p) = self.try_decode()? {
                return Ok(Some(p));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Decodes a packet already buffered, if there is one.
    pub fn try_decode(&mut self) -> Result<Option<Packet>, Ending> {
        self.decoder
            .decode(&mut self.rbuf)
            .map_err(|e| Ending::Violation {
                reason: e.to_string(),
                code: e.reason_code(),
            })
    }

    /// One read into the buffer; 0 at EOF. Cancel safe.
    pub async fn fill(&mut self) -> Result<usize, Ending> {
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) if !self.rbuf.is_empty() => Err(Ending::Closed("connection closed mid-packet")),
            Ok(n) => {
                self.ctx.metrics.bytes_received.add(n as u64);
                Ok(n)
            }
            Err(_) => Err(Ending::Closed("read error")),
        }
    }

    /// Encodes `packet` into the write buffer.
    pub fn queue(&mut self, packet: &Packet, version: ProtocolVersion) {
        if let Err(e) = encode(packet, version, &mut self.wbuf) {
            tracing::warn!(peer = %self.peer, packet = packet.name(), error = %e, "cannot encode packet");
        }
    }

    pub async fn flush(&mut self) -> Result<(), Ending> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let mut result = self.stream.write_all(&self.wbuf).await;
        if result.is_ok() {
            self.ctx.metrics.bytes_sent.add(self.wbuf.len() as u64);
            // TLS and WebSocket streams buffer inside: push the bytes out.
            result = self.stream.flush().await;
        }
        self.wbuf.clear();
        result.map_err(|_| Ending::Closed("write error"))
    }

    pub async fn send(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), Ending> {
        self.queue(packet, version);
        self.flush().await
    }
}

/// Serves one accepted connection until it ends.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    listener: Arc<str>,
    meta: ConnMeta,
    broker: Arc<Broker>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ctx = &broker.ctx;
    ctx.metrics.connections_total.inc();
    ctx.metrics.connections.inc();
    let mut framed = Framed {
        stream,
        rbuf: BytesMut::with_capacity(READ_BUFFER_BYTES),
        wbuf: BytesMut::new(),
        decoder: Decoder::new(ctx.config.mqtt.max_packet_size_bytes),
        peer,
        listener,
        meta,
        ctx: ctx.clone(),
    };
    // Boxed: the CONNECT handshake's state is only needed once.
    if let Some(mut accepted) = Box::pin(connect::handshake(&mut framed, &broker)).await {
        let client_id = accepted.client_id.clone();
        let conn_id = accepted.conn_id;
        let session = accepted.session.clone();
        let ending = run(&mut framed, &broker, &mut accepted).await;
        log_ending(&client_id, peer, &ending);
        if let Ending::Violation { .. } = ending {
            ctx.metrics.malformed_packets.inc();
        }
        let detach = match ending {
            Ending::Disconnected(kind) => kind,
            _ => DetachKind::Unclean,
        };
        let _ = session.send(SessionMsg::Detach {
            conn_id,
            ending: detach,
        });
        let _ = framed.stream.shutdown().await;
    }
    ctx.metrics.connections.dec();
}

fn log_ending(client_id: &ClientId, peer: SocketAddr, ending: &Ending) {
    match ending {
        Ending::Disconnected(_) => tracing::debug!(%client_id, %peer, "client disconnected"),
        Ending::Closed(why) => tracing::info!(%client_id, %peer, reason = why, "connection closed"),
        Ending::KeepAliveTimeout => tracing::info!(%client_id, %peer, "keep alive timeout"),
        Ending::Violation { reason, .. } => {
            tracing::warn!(%client_id, %peer, %reason, "closing connection: protocol violation")
        }
        Ending::ByServer(r) => {
            tracing::info!(%client_id, %peer, reason = ?r, "connection closed by broker")
        }
    }
}

/// The connected state: packets in go to the session, packets out come
/// from it, until one side ends the connection.
async fn run<S>(framed: &mut Framed<S>, broker: &Broker, a: &mut Accepted) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut keepalive = KeepAlive::new(a.keep_alive_secs);
    let ending = loop {
        // Packets that arrived with the CONNECT (or earlier reads). Boxed:
        // its state is large and only needed while there is input, so an
        // idle connection does not carry it.
        if !framed.rbuf.is_empty() {
            if let Err(e) = Box::pin(drain_buffered(framed, broker, a, &mut keepalive)).await {
                break e;
            }
        }
        let deadline = keepalive.deadline();
        tokio::select! {
            _ = broker.shutdown.cancelled() => break Ending::ByServer(CloseReason::ServerShutdown),
            out = a.outbound.recv() => match out {
                Some(out) => if let Err(e) = write_outbound(framed, broker, a, out).await { break e; },
                None => break Ending::ByServer(CloseReason::ServerShutdown),
            },
            read = framed.fill() => match read {
                Ok(0) => break Ending::Closed("peer closed the connection"),
                Ok(_) => {}
                Err(e) => break e,
            },
            _ = sleep_until(deadline) => {
                if keepalive.expired() {
                    break Ending::KeepAliveTimeout;
                }
            }
        }
    };
    if a.version.is_v5() {
        let code = match &ending {
            Ending::Violation { code, .. } => Some(*code),
            Ending::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Ending::ByServer(r) => Some(close_code(*r)),
            _ => None,
        };
        if let Some(code) = code {
            let d = Disconnect {
                code,
                properties: Default::default(),
            };
            let _ = framed.send(&Packet::Disconnect(d), a.version).await;
        }
    }
    ending
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn close_code(r: CloseReason) -> ReasonCode {
    match r {
        CloseReason::TakenOver => ReasonCode::SESSION_TAKEN_OVER,
        CloseReason::Destroyed => ReasonCode::ADMINISTRATIVE_ACTION,
        CloseReason::ServerShutdown => ReasonCode::SERVER_SHUTTING_DOWN,
        CloseReason::ProtocolError => ReasonCode::PROTOCOL_ERROR,
    }
}

/// Handles every whole packet in the read buffer, then answers them in
/// one write. While subscribers lag far behind, it pauses before the next
/// read (see [`crate::backlog`]).
async fn drain_buffered<S>(
    framed: &mut Framed<S>,
    broker: &Broker,
    a: &mut Accepted,
    keepalive: &mut KeepAlive,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut published = false;
    let mut any = false;
    while let Some(packet) = framed.try_decode()? {
        any = true;
        published |= matches!(packet, Packet::Publish(_));
        handle_incoming(framed, broker, a, packet).await?;
    }
    if any {
        keepalive.touch();
    }
    framed.flush().await?;
    if published {
        broker.ctx.metrics.backlog.wait_below_high_water().await;
    }
    Ok(())
}

async fn handle_incoming<S>(
    framed: &mut Framed<S>,
    broker: &Broker,
    a: &mut Accepted,
    packet: Packet,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ctx = &broker.ctx;
    let v5 = a.version.is_v5();
    match packet {
        Packet::PingReq => framed.queue(&Packet::PingResp, a.version),
        Packet::Disconnect(d) => return Err(on_disconnect(a, &d)),
        Packet::Publish(mut p) => {
            if !p.properties.subscription_identifiers.is_empty() {
                return Err(violation(
                    "PUBLISH from a client carries a subscription identifier [MQTT-3.3.4-6]",
                    ReasonCode::PROTOCOL_ERROR,
                ));
            }
            if a.version.is_v5() {
                a.aliases_in
                    .resolve(&mut p)
                    .map_err(|(reason, code)| violation(reason, code))?;
            }
            let auth = framed.meta.auth();
            let reply = if auth.authorize_publish(&a.client, p.topic.as_str()).await {
                publish::on_publish(ctx, &a.shared, &a.client_id, p, v5)
            } else {
                tracing::info!(client_id = %a.client_id, topic = %p.topic, "publish denied by ACL");
                publish::on_denied_publish(ctx, &a.shared, p.qos, p.packet_id, v5)
            };
            match reply {
                Reply::None => {}
                Reply::PubAck(ack) => framed.queue(&Packet::PubAck(ack), a.version),
                Reply::PubRec(ack) => framed.queue(&Packet::PubRec(ack), a.version),
                Reply::ReceiveMaximumExceeded => {
                    return Err(violation(
                        "more unacknowledged QoS 2 PUBLISH packets than the Receive Maximum [MQTT-3.3.4-9]",
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    ))
                }
            }
        }
        Packet::PubRel(r) => {
            let comp = publish::on_pubrel(&a.shared, &r, v5);
            framed.queue(&comp, a.version);
        }
        // Boxed: rare, and its state would otherwise enlarge every
        // connection's future.
        Packet::Subscribe(s) => Box::pin(subscribe(&framed.meta, a, s)).await?,
        Packet::Unsubscribe(_) => {
            forward(&a.session, a.conn_id, packet)?;
            Box::pin(sync_with_session(&a.session)).await?;
        }
        Packet::Auth(_) => {
            return Err(violation(
                "AUTH without enhanced authentication [MQTT-4.12.0-1]",
                ReasonCode::PROTOCOL_ERROR,
            ))
        }
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {
            forward(&a.session, a.conn_id, packet)?
        }
        Packet::Connect(_) => {
            return Err(violation(
                "second CONNECT on a connection [MQTT-3.1.0-2]",
                ReasonCode::PROTOCOL_ERROR,
            ))
        }
        other => {
            return Err(violation(
                &format!("{} is not sent by clients", other.name()),
                ReasonCode::PROTOCOL_ERROR,
            ))
        }
    }
    Ok(())
}

/// Authorizes each filter of a SUBSCRIBE, hands it to the session and
/// waits until the session has added the subscriptions.
async fn subscribe(meta: &ConnMeta, a: &Accepted, s: Subscribe) -> Result<(), Ending> {
    let auth = meta.auth();
    let mut denied = Vec::with_capacity(s.filters.len());
    for (filter, _) in &s.filters {
        let ok = auth.authorize_subscribe(&a.client, filter.as_str()).await;
        if !ok {
            tracing::info!(client_id = %a.client_id, %filter, "subscription denied by ACL");
        }
        denied.push(!ok);
    }
    let msg = SessionMsg::Subscribe {
        conn_id: a.conn_id,
        subscribe: Box::new(s),
        denied,
    };
    send_to_session(&a.session, msg)?;
    sync_with_session(&a.session).await
}

/// What a client's DISCONNECT means for its session.
fn on_disconnect(a: &Accepted, d: &Disconnect) -> Ending {
    let expiry = d.properties.session_expiry_interval;
    if a.session_expiry_secs == 0 && expiry.is_some_and(|e| e > 0) {
        return violation(
            "DISCONNECT sets a session expiry after CONNECT set none [MQTT-3.14.2-2]",
            ReasonCode::PROTOCOL_ERROR,
        );
    }
    Ending::Disconnected(if d.code == ReasonCode::DISCONNECT_WITH_WILL {
        DetachKind::DisconnectWithWill {
            session_expiry_secs: expiry,
        }
    } else {
        DetachKind::Disconnect {
            session_expiry_secs: expiry,
        }
    })
}

fn violation(reason: &str, code: ReasonCode) -> Ending {
    Ending::Violation {
        reason: reason.to_string(),
        code,
    }
}

fn forward(session: &SessionTx, conn_id: u64, packet: Packet) -> Result<(), Ending> {
    let packet = Box::new(packet);
    send_to_session(session, SessionMsg::Packet { conn_id, packet })
}

fn send_to_session(session: &SessionTx, msg: SessionMsg) -> Result<(), Ending> {
    session
        .send(msg)
        .map_err(|_| Ending::ByServer(CloseReason::ServerShutdown))
}

/// Waits until the session has handled everything sent to it so far.
async fn sync_with_session(session: &SessionTx) -> Result<(), Ending> {
    let (tx, rx) = oneshot::channel();
    send_to_session(session, SessionMsg::Sync(tx))?;
    rx.await
        .map_err(|_| Ending::ByServer(CloseReason::ServerShutdown))
}

/// Writes `first` and whatever else the session has queued, in one batch.
async fn write_outbound<S>(
    framed: &mut Framed<S>,
    broker: &Broker,
    a: &mut Accepted,
    first: Outbound,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    while let Some(out) = next.take() {
        match out {
            Outbound::Publish(out) => {
                if out.qos == QoS::AtMostOnce {
                    a.pending_qos0.written(out.msg.payload.len());
                }
                let mut p = out.msg.to_publish(
                    out.qos,
                    out.retain,
                    &out.subscription_ids,
                    a.version.is_v5(),
                );
                p.packet_id = out.packet_id;
                p.dup = out.dup;
                let new_alias = a.aliases_out.apply(&mut p);
                let (qos, id) = (p.qos, p.packet_id);
                if write_limited(framed, a, &Packet::Publish(p)) {
                    broker.ctx.metrics.messages_sent.qos(qos).inc();
                } else {
                    if let Some(topic) = new_alias {
                        a.aliases_out.forget(&topic);
                    }
                    // Too large for the client: discard it and behave as
                    // if it had been delivered [MQTT-3.1.2-25].
                    broker.ctx.metrics.messages_dropped.qos(qos).inc();
                    if let Some(packet_id) = id {
                        let _ = a.session.send(SessionMsg::Discarded {
                            conn_id: a.conn_id,
                            packet_id,
                        });
                    }
                }
            }
            Outbound::Packet(packet) => {
                write_limited(framed, a, &packet);
            }
            Outbound::Close(reason) => {
                framed.flush().await?;
                return Err(Ending::ByServer(reason));
            }
        }
        if framed.wbuf.len() < WRITE_BATCH_BYTES {
            next = a.outbound.try_recv().ok();
        }
    }
    framed.flush().await
}

/// Encodes `packet` unless it exceeds the client's maximum packet size;
/// `false` if it was left out.
fn write_limited<S>(framed: &mut Framed<S>, a: &Accepted, packet: &Packet) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let before = framed.wbuf.len();
    framed.queue(packet, a.version);
    match a.max_packet_out {
        Some(max) if framed.wbuf.len() - before > max as usize => {
            framed.wbuf.truncate(before);
            false
        }
        _ => true,
    }
}

/// The receiving side of a connection's outbound channel and its QoS 0
/// backlog counter.
pub(crate) fn outbound_channel() -> (
    mailbox::Sender<Outbound>,
    mailbox::Receiver<Outbound>,
    Arc<crate::session::Qos0Budget>,
) {
    let (tx, rx) = mailbox::mailbox();
    (tx, rx, Arc::default())
}
