//! Network listeners: bind each configured address and accept
//! connections until shutdown, one task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::{ListenerConfig, ListenerKind};
use crate::connection;

/// Pause after an accept error that is not about one connection (e.g. the
/// process ran out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (listener `{name}`): {source}")]
pub struct BindError {
    pub name: String,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// A bound listener, not yet accepting.
pub struct Bound {
    pub name: Arc<str>,
    pub kind: ListenerKind,
    pub local_addr: SocketAddr,
    listener: TcpListener,
}

pub async fn bind(cfg: &ListenerConfig) -> Result<Bound, BindError> {
    let name = if cfg.name.is_empty() {
        format!("{}-{}", cfg.kind.as_str(), cfg.bind.port())
    } else {
        cfg.name.clone()
    };
    let err = |source| BindError {
        name: name.clone(),
        addr: cfg.bind,
        source,
    };
    let listener = TcpListener::bind(cfg.bind).await.map_err(err)?;
    let local_addr = listener.local_addr().map_err(err)?;
    Ok(Bound {
        name: name.as_str().into(),
        kind: cfg.kind,
        local_addr,
        listener,
    })
}

/// Accepts connections on `bound` until the broker shuts down.
pub async fn accept_loop(bound: Bound, broker: Arc<Broker>) {
    tracing::info!(listener = %bound.name, addr = %bound.local_addr, kind = bound.kind.as_str(), "listening");
    loop {
        let accepted = tokio::select! {
            a = bound.listener.accept() => a,
            _ = broker.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small MQTT packets must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let broker2 = broker.clone();
                let name = bound.name.clone();
                broker
                    .connections
                    .spawn(connection::serve(stream, peer, name, broker2));
            }
            Err(e) => {
                tracing::warn!(listener = %bound.name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    tracing::debug!(listener = %bound.name, "stopped accepting");
}
