//! One client connection (the seed's "protocol" process): framing, the
//! CONNECT handshake, keep alive, and the loop that passes packets between
//! the socket and the session.
//!
//! The connection owns no session state: everything that must survive a
//! disconnect lives in the session task. Reads and writes are buffered;
//! outgoing packets are batched into one write per wake-up.
//!
//! Every wait is bounded whatever the peer does: a write must finish
//! within `mqtt.write_timeout_secs`, and while it is blocked the
//! connection still obeys shutdown, a close from its session (takeover,
//! destroy) and keep alive; a packet begun after CONNECT must arrive whole
//! within `mqtt.packet_timeout_secs`. A connection the broker ends is
//! closed gracefully: DISCONNECT (5.0), half-close, then what the client
//! still sends is read and dropped for a moment, so that the client reads
//! the reason code instead of a reset.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::codec::{encode, Decoder, Disconnect, Packet, ProtocolVersion, ReasonCode, Subscribe};
use crate::connect::{self, Accepted};
use crate::context::Context;
use crate::keepalive::KeepAlive;
use crate::log_limit::LogLimit;
use crate::outbound::{self, OutboundRx, OutboundTx};
use crate::publish::{self, Reply};
use crate::session::{CloseReason, DetachKind, Outbound, SessionMsg};
use crate::transport::ConnMeta;
use crate::types::{ClientId, QoS};

/// Initial read buffer; it grows with what arrives in one read. Small, so
/// that idle connections cost little memory.
const READ_BUFFER_BYTES: usize = 512;
/// Outgoing bytes gathered before a write is issued.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// How long a connection the broker ends waits for its last bytes to
/// leave and for the client to close its side (graceful close).
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Input read and dropped during the graceful close at most.
const CLOSE_LINGER_BYTES: usize = 64 * 1024;

/// At most one protocol-violation warning a second, with a count.
static VIOLATION_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

/// Why a connection ended, for the log line and the will.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The client sent DISCONNECT.
    Disconnected(DetachKind),
    /// The peer closed the socket or it failed.
    Closed(&'static str),
    /// Keep alive expired.
    KeepAliveTimeout,
    /// A write did not finish within the write timeout: the client does
    /// not read.
    WriteTimeout,
    /// A packet begun did not arrive whole within the packet timeout.
    PacketTimeout,
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
    /// Bound on one flush (`mqtt.write_timeout_secs`).
    pub write_timeout: Duration,
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

    /// Writes the buffer out, within the write timeout.
    pub async fn flush(&mut self) -> Result<(), Ending> {
        self.flush_or(std::future::pending()).await
    }

    /// Writes the buffer out unless `stop` completes first (its ending is
    /// returned) or the write timeout passes. What was written is removed
    /// from the buffer, so after a stop the rest can still follow.
    pub async fn flush_or(&mut self, stop: impl Future<Output = Ending>) -> Result<(), Ending> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.write_timeout;
        let ctx = self.ctx.clone();
        let (stream, wbuf) = (&mut self.stream, &mut self.wbuf);
        let write = async {
            while !wbuf.is_empty() {
                let n = stream.write(wbuf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                ctx.metrics.bytes_sent.add(n as u64);
                wbuf.advance(n);
            }
            // TLS and WebSocket streams buffer inside: push the bytes out.
            stream.flush().await
        };
        tokio::select! {
            biased;
            e = stop => Err(e),
            r = write => r.map_err(|_| Ending::Closed("write error")),
            _ = tokio::time::sleep_until(deadline) => {
                ctx.metrics.write_timeouts.inc();
                Err(Ending::WriteTimeout)
            }
        }
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
        write_timeout: ctx.config.mqtt.write_timeout(),
    };
    // Boxed: the CONNECT handshake's state is only needed once.
    if let Some(mut accepted) = Box::pin(connect::handshake(&mut framed, &broker)).await {
        let client_id = accepted.client_id.clone();
        let conn_id = accepted.conn_id;
        let session = accepted.session.clone();
        let ending = run(&mut framed, &broker, &mut accepted).await;
        log_ending(&client_id, peer, &ending);
        match ending {
            Ending::Violation { .. } => ctx.metrics.malformed_packets.inc(),
            Ending::KeepAliveTimeout => ctx.metrics.keepalive_timeouts.inc(),
            _ => {}
        }
        let version = accepted.version;
        let (detach, linger) = match ending {
            Ending::Disconnected(kind) => (kind, false),
            // The peer is gone or does not read: nothing to wait for.
            Ending::Closed(_) | Ending::WriteTimeout => (DetachKind::Unclean, false),
            _ => (DetachKind::Unclean, true),
        };
        let _ = session.send(SessionMsg::Detach {
            conn_id,
            ending: detach,
        });
        if let Some(code) = disconnect_code(&ending, version) {
            let d = Disconnect {
                code,
                properties: Default::default(),
            };
            framed.queue(&Packet::Disconnect(d), version);
        }
        Box::pin(close(&mut framed, linger)).await;
    }
    ctx.metrics.connections.dec();
}

/// The reason code of the DISCONNECT the broker sends (MQTT 5.0 only).
fn disconnect_code(ending: &Ending, version: ProtocolVersion) -> Option<ReasonCode> {
    if !version.is_v5() {
        return None;
    }
    match ending {
        Ending::Violation { code, .. } => Some(*code),
        Ending::KeepAliveTimeout | Ending::PacketTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
        Ending::ByServer(r) => Some(close_code(*r)),
        Ending::Disconnected(_) | Ending::Closed(_) | Ending::WriteTimeout => None,
    }
}

/// Ends the connection. With `linger` (the broker closes it): writes what
/// is buffered (the DISCONNECT), half-closes, and reads and drops what the
/// client still sends until it closes too, for at most [`CLOSE_LINGER`] and
/// [`CLOSE_LINGER_BYTES`]. Closing a socket with unread input makes the
/// kernel send a reset, which can destroy the DISCONNECT before the client
/// reads it.
async fn close<S>(framed: &mut Framed<S>, linger: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let graceful = async {
        if linger {
            framed.flush().await?;
        }
        framed
            .stream
            .shutdown()
            .await
            .map_err(|_| Ending::Closed("shutdown"))?;
        if linger {
            let mut dropped = 0;
            while dropped < CLOSE_LINGER_BYTES {
                framed.rbuf.clear();
                match framed.stream.read_buf(&mut framed.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        }
        Ok::<_, Ending>(())
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, graceful).await;
}

fn log_ending(client_id: &ClientId, peer: SocketAddr, ending: &Ending) {
    // Per-connection ends are routine under load: debug. Violations are
    // warnings, rate-limited so a crowd of broken clients cannot flood
    // the log; metrics count every one.
    match ending {
        Ending::Disconnected(_) => tracing::debug!(%client_id, %peer, "client disconnected"),
        Ending::Closed(why) => {
            tracing::debug!(%client_id, %peer, reason = why, "connection closed")
        }
        Ending::KeepAliveTimeout => tracing::debug!(%client_id, %peer, "keep alive timeout"),
        Ending::WriteTimeout => {
            tracing::debug!(%client_id, %peer, "write timeout: the client does not read")
        }
        Ending::PacketTimeout => {
            tracing::debug!(%client_id, %peer, "packet timeout: a packet did not arrive whole")
        }
        Ending::Violation { reason, .. } => {
            if let Some(suppressed) = VIOLATION_LOG.check() {
                tracing::warn!(%client_id, %peer, %reason, suppressed, "closing connection: protocol violation")
            }
        }
        Ending::ByServer(r) => {
            tracing::debug!(%client_id, %peer, reason = ?r, "connection closed by broker")
        }
    }
}

/// Completes when the connection must stop whatever it waits for: the
/// broker stops, the session closes it, or keep alive expires.
async fn stop_signal(broker: &Broker, out: &OutboundRx, keepalive: Option<Instant>) -> Ending {
    tokio::select! {
        biased;
        _ = broker.shutdown.cancelled() => Ending::ByServer(CloseReason::ServerShutdown),
        r = closed_unless_stopping(out) => Ending::ByServer(r),
        _ = sleep_until(keepalive) => Ending::KeepAliveTimeout,
    }
}

/// A close from the session, except the one for shutdown: a write in
/// progress then finishes (the wills follow it, see [`flush_on_shutdown`]),
/// bounded by the write timeout and by the broker closing every connection.
async fn closed_unless_stopping(out: &OutboundRx) -> CloseReason {
    match out.closed().await {
        CloseReason::ServerShutdown => std::future::pending().await,
        r => r,
    }
}

/// The connected state: packets in go to the session, packets out come
/// from it, until one side ends the connection.
async fn run<S>(framed: &mut Framed<S>, broker: &Broker, a: &mut Accepted) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut keepalive = KeepAlive::new(a.keep_alive_secs);
    let packet_timeout = broker.ctx.config.mqtt.packet_timeout();
    // When the packet now partly in the read buffer began to arrive.
    let mut partial_since: Option<Instant> = None;
    loop {
        // Packets that arrived with the CONNECT (or earlier reads). Boxed:
        // its state is large and only needed while there is input, so an
        // idle connection does not carry it.
        if !framed.rbuf.is_empty() {
            match Box::pin(drain_buffered(framed, broker, a, &mut keepalive)).await {
                Ok(true) => partial_since = None,
                Ok(false) => {}
                Err(e) => return e,
            }
        }
        if framed.rbuf.is_empty() {
            partial_since = None;
        } else if partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        let packet_deadline = partial_since.map(|t| t + packet_timeout);
        let deadline = match (keepalive.deadline(), packet_deadline) {
            (Some(k), Some(p)) => Some(k.min(p)),
            (k, p) => k.or(p),
        };
        // Not biased: a flood of outgoing messages must not keep the
        // client's packets (PINGREQ, acknowledgements) from being read. A
        // close from the session comes first out of `recv`.
        tokio::select! {
            _ = broker.shutdown.cancelled() => return Ending::ByServer(CloseReason::ServerShutdown),
            out = a.outbound.recv() => match out {
                // Stopping: the wills the session queued before its close
                // go out first (see crate::session::stopping).
                Some(Outbound::Close(CloseReason::ServerShutdown)) => {
                    return Box::pin(flush_on_shutdown(framed, broker, a)).await
                }
                Some(Outbound::Close(r)) => return Ending::ByServer(r),
                Some(out) => {
                    let ka = keepalive.deadline();
                    if let Err(e) = write_outbound(framed, broker, a, out, ka).await {
                        return e;
                    }
                }
                None => return session_gone(a),
            },
            read = framed.fill() => match read {
                Ok(0) => return Ending::Closed("peer closed the connection"),
                Ok(_) => {}
                Err(e) => return e,
            },
            _ = sleep_until(deadline) => {
                if keepalive.expired() {
                    return Ending::KeepAliveTimeout;
                }
                if packet_deadline.is_some_and(|d| Instant::now() >= d) {
                    broker.ctx.metrics.packet_timeouts.inc();
                    return Ending::PacketTimeout;
                }
            }
        }
    }
}

/// The ending when the session can no longer be reached: the close reason
/// it gave (it always gives one before it goes), else the broker stopping.
fn session_gone(a: &Accepted) -> Ending {
    Ending::ByServer(
        a.outbound
            .close_reason()
            .unwrap_or(CloseReason::ServerShutdown),
    )
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
/// one write; `true` if there was one. While subscribers lag far behind,
/// it pauses before the next read (see [`crate::backlog`]).
///
/// Once the session has closed the connection (a takeover, a destroy),
/// nothing more is handled: packets still buffered are dropped, never
/// routed.
async fn drain_buffered<S>(
    framed: &mut Framed<S>,
    broker: &Broker,
    a: &mut Accepted,
    keepalive: &mut KeepAlive,
) -> Result<bool, Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut published = false;
    let mut any = false;
    loop {
        if let Some(r) = a.outbound.close_reason() {
            return Err(Ending::ByServer(r));
        }
        let Some(packet) = framed.try_decode()? else {
            break;
        };
        any = true;
        published |= matches!(packet, Packet::Publish(_));
        handle_incoming(framed, broker, a, packet).await?;
    }
    if any {
        keepalive.touch();
    }
    let ka = keepalive.deadline();
    framed
        .flush_or(stop_signal(broker, &a.outbound, ka))
        .await?;
    if published {
        tokio::select! {
            _ = broker.ctx.metrics.backlog.wait_below_high_water() => {}
            e = stop_signal(broker, &a.outbound, ka) => return Err(e),
        }
    }
    Ok(any)
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
            let allowed = auth.authorize_publish(&a.client, p.topic.as_str()).await;
            // Authorization may take a while (an HTTP hook): a takeover
            // meanwhile means this connection no longer speaks for the
            // client id.
            if let Some(r) = a.outbound.close_reason() {
                return Err(Ending::ByServer(r));
            }
            let reply = if allowed {
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
            forward(a, packet)?;
            Box::pin(sync_with_session(a)).await?;
        }
        Packet::Auth(_) => {
            return Err(violation(
                "AUTH without enhanced authentication [MQTT-4.12.0-1]",
                ReasonCode::PROTOCOL_ERROR,
            ))
        }
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => forward(a, packet)?,
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
    send_to_session(a, msg)?;
    sync_with_session(a).await
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

fn forward(a: &Accepted, packet: Packet) -> Result<(), Ending> {
    let packet = Box::new(packet);
    let conn_id = a.conn_id;
    send_to_session(a, SessionMsg::Packet { conn_id, packet })
}

fn send_to_session(a: &Accepted, msg: SessionMsg) -> Result<(), Ending> {
    a.session.send(msg).map_err(|_| session_gone(a))
}

/// Waits until the session has handled everything sent to it so far.
async fn sync_with_session(a: &Accepted) -> Result<(), Ending> {
    let (tx, rx) = oneshot::channel();
    send_to_session(a, SessionMsg::Sync(tx))?;
    rx.await.map_err(|_| session_gone(a))
}

/// Writes `first` and whatever else the session has queued, in one batch.
/// The write gives way to shutdown, a close from the session and keep
/// alive (`keepalive` is its deadline).
async fn write_outbound<S>(
    framed: &mut Framed<S>,
    broker: &Broker,
    a: &mut Accepted,
    first: Outbound,
    keepalive: Option<Instant>,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    encode_outbound(framed, broker, a, first)?;
    // Boxed: the deadline and stop state are only needed while writing,
    // so an idle connection's future does not carry them.
    Box::pin(framed.flush_or(stop_signal(broker, &a.outbound, keepalive))).await
}

/// Encodes `first` and whatever else the session has queued, up to one
/// write batch, into the write buffer.
fn encode_outbound<S>(
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
            // Signalled, not queued (see crate::outbound).
            Outbound::Close(reason) => return Err(Ending::ByServer(reason)),
        }
        if framed.wbuf.len() < WRITE_BATCH_BYTES {
            next = a.outbound.try_recv().ok();
        }
    }
    Ok(())
}

/// The session closed the connection because the broker stops: unlike a
/// takeover or a destroy, what it queued before the close (the wills
/// published first, see [`crate::session::stopping`]) is written, bounded
/// by the write timeout and cut short once the broker closes every
/// connection.
async fn flush_on_shutdown<S>(framed: &mut Framed<S>, broker: &Broker, a: &mut Accepted) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stop = || async {
        broker.shutdown.cancelled().await;
        Ending::ByServer(CloseReason::ServerShutdown)
    };
    while let Ok(out) = a.outbound.try_recv() {
        if let Err(ending) = encode_outbound(framed, broker, a, out) {
            return ending;
        }
        if let Err(ending) = framed.flush_or(stop()).await {
            return ending;
        }
    }
    Ending::ByServer(CloseReason::ServerShutdown)
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

/// The two sides of a connection's outbound mailbox and its QoS 0
/// backlog counter.
pub(crate) fn outbound_channel() -> (OutboundTx, OutboundRx, Arc<crate::session::Qos0Budget>) {
    let (tx, rx) = outbound::channel();
    (tx, rx, Arc::default())
}
