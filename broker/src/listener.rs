//! Network listeners: bind each configured address and accept
//! connections until shutdown, one task per connection. A connection's
//! task first runs its transport's handshake (TLS, WebSocket upgrade, or
//! both), bounded in time and abandoned on shutdown, then serves MQTT.
//!
//! Every accepted connection is counted against the broker's and the
//! listener's connection bounds first ([`crate::admission`]): above them
//! it is refused cheaply with CONNACK, after the same transport
//! handshake. A listener with a `max_accept_rate` stops accepting while
//! its rate is spent.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::admission::rate::AcceptRate;
use crate::admission::{
    refuse, Admission, ConnectionLimits, ListenerGate, Refusal, Slot, REFUSAL_DEADLINE,
};
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

/// At most one warning per period that a connection limit refuses
/// connections, with the number left out; the metrics count them all.
static REFUSAL_LOG: LogLimit = LogLimit::new(Duration::from_secs(10));

/// The largest WebSocket message a connection being refused may send:
/// its CONNECT is only peeked at.
const PEEK_HANDSHAKE_BYTES: usize = 4096;

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
    /// The listener's connection bound, under the broker's.
    gate: Arc<ListenerGate>,
}

/// A bound listener, not yet accepting.
pub struct Bound {
    pub name: Arc<str>,
    pub kind: ListenerKind,
    pub local_addr: SocketAddr,
    listener: TcpListener,
    transport: Arc<Transport>,
    /// `max_accept_rate`, if set.
    rate: Option<AcceptRate>,
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

/// Loads the listener's certificates (if any) and binds its address; its
/// connections count against `limits`.
pub async fn bind(
    cfg: &ListenerConfig,
    auth: Arc<Auth>,
    limits: &Arc<ConnectionLimits>,
) -> Result<Bound, ListenerError> {
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
        gate: limits.listener(name.clone(), cfg.max_connections),
    });
    Ok(Bound {
        name,
        kind: cfg.kind,
        local_addr,
        listener,
        transport,
        rate: (cfg.max_accept_rate > 0).then(|| AcceptRate::new(cfg.max_accept_rate)),
    })
}

/// Accepts connections on `bound` until the broker shuts down. Each
/// turn of the loop accepts a connection or waits (accept-rate pause,
/// back-off after a failed accept): it never spins.
pub async fn accept_loop(mut bound: Bound, broker: Arc<Broker>) {
    tracing::info!(
        listener = %bound.name,
        addr = %bound.local_addr,
        kind = bound.kind.as_str(),
        max_connections = bound.transport.gate.max(),
        max_accept_rate = bound.rate.as_ref().map_or(0, AcceptRate::per_sec),
        "listening"
    );
    let mut backoff = ACCEPT_ERROR_BACKOFF;
    loop {
        if let Some(until) = bound
            .rate
            .as_ref()
            .and_then(|r| r.wait_until(Instant::now()))
        {
            // The rate is spent: connections wait in the kernel's backlog.
            bound.transport.gate.paused_for_rate();
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = broker.shutdown.cancelled() => break,
            }
        }
        let accepted = tokio::select! {
            a = bound.listener.accept() => a,
            _ = broker.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_ERROR_BACKOFF;
                if let Some(r) = bound.rate.as_mut() {
                    r.take(Instant::now());
                }
                let t = &bound.transport;
                match t.gate.admit() {
                    Admission::Admit(slot) => {
                        // Small MQTT packets must not wait for Nagle's algorithm.
                        let _ = stream.set_nodelay(true);
                        spawn_connection(stream, peer, t.clone(), broker.clone(), slot);
                    }
                    Admission::Refuse(refusal) => {
                        spawn_refusal(stream, peer, t.clone(), &broker, refusal);
                    }
                    // Dropping the stream closes it.
                    Admission::Drop => {}
                }
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
/// needs a second allocation. The connection holds `slot` until it ends
/// (in its [`ConnMeta`]).
fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    t: Arc<Transport>,
    broker: Arc<Broker>,
    slot: Slot,
) {
    let tasks = broker.connections.clone();
    match (t.ctx.kind, t.tls.clone()) {
        (ListenerKind::Tcp, _) => {
            tasks.spawn(serve_mqtt(stream, peer, &t, CertUser::None, broker, slot));
        }
        (ListenerKind::Ws, _) => {
            tasks.spawn(serve_ws(stream, peer, t, CertUser::None, broker, slot));
        }
        (ListenerKind::Tls, Some(tls)) => {
            tasks.spawn(serve_tls(stream, peer, t, tls, broker, false, slot));
        }
        (ListenerKind::Wss, Some(tls)) => {
            tasks.spawn(serve_tls(stream, peer, t, tls, broker, true, slot));
        }
        // `bind` makes TLS state for every TLS kind.
        (ListenerKind::Tls | ListenerKind::Wss, None) => {}
    }
}

/// Starts the refusal of a connection over a bound: the transport
/// handshake, then CONNACK 0x97 / 0x03 ([`refuse::answer`]), all within
/// [`REFUSAL_DEADLINE`]. Tracked with the connections, so that shutdown
/// waits for it; it ends as soon as the broker starts to stop.
fn spawn_refusal(
    stream: TcpStream,
    peer: SocketAddr,
    t: Arc<Transport>,
    broker: &Broker,
    refusal: Refusal,
) {
    if let Some(suppressed) = REFUSAL_LOG.check() {
        tracing::warn!(listener = %t.ctx.name, %peer, reason = refusal.bound().label(), suppressed, "connection limit reached; refusing new connections");
    }
    let stopping = broker.stopping.clone();
    broker.connections.spawn(async move {
        let code = refusal.code();
        // Boxed: TLS and WebSocket state, on a rare path.
        let refuse = Box::pin(async {
            let max_packet = PEEK_HANDSHAKE_BYTES;
            match (t.ctx.kind, &t.tls) {
                (ListenerKind::Tcp, _) => refuse::answer(stream, code).await,
                (ListenerKind::Ws, _) => {
                    if let Ok(ws) = ws::accept(stream, &t.ws_path, max_packet).await {
                        refuse::answer(ws, code).await;
                    }
                }
                (ListenerKind::Tls, Some(tls)) => {
                    if let Ok((s, _)) = tls.accept(stream).await {
                        refuse::answer(s, code).await;
                    }
                }
                (ListenerKind::Wss, Some(tls)) => {
                    if let Ok((s, _)) = tls.accept(stream).await {
                        if let Ok(ws) = ws::accept(s, &t.ws_path, max_packet).await {
                            refuse::answer(ws, code).await;
                        }
                    }
                }
                (ListenerKind::Tls | ListenerKind::Wss, None) => {}
            }
        });
        tokio::select! {
            _ = tokio::time::timeout(REFUSAL_DEADLINE, refuse) => {}
            _ = stopping.cancelled() => {}
        }
        drop(refusal);
    });
}

/// MQTT over an established transport. Not an `async fn`, so that the
/// future holds only the connection's own (see [`connection::serve`]).
fn serve_mqtt<S>(
    s: S,
    peer: SocketAddr,
    t: &Transport,
    user: CertUser,
    broker: Arc<Broker>,
    slot: Slot,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let meta = ConnMeta {
        listener: t.ctx.clone(),
        peer,
        cert_user: user,
        slot: Some(slot),
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
    slot: Slot,
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
        Box::pin(serve_ws(s, peer, t, user, broker, slot)).await;
    } else {
        serve_mqtt(s, peer, &t, user, broker, slot).await;
    }
}

/// The WebSocket upgrade, then MQTT.
async fn serve_ws<S>(
    stream: S,
    peer: SocketAddr,
    t: Arc<Transport>,
    user: CertUser,
    broker: Arc<Broker>,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max_packet = broker.ctx.config.mqtt.max_packet_size_bytes as usize;
    if let Some(s) = handshake(&broker, &t, peer, ws_upgrade(stream, &t, max_packet)).await {
        serve_mqtt(s, peer, &t, user, broker, slot).await;
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
