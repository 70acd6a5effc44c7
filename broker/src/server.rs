//! Starting and stopping the whole broker: bind every listener (so errors
//! surface before anything runs), start accepting, and on shutdown stop
//! accepting, close clients (publishing their wills) and wait for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::{Config, ListenerKind};
use crate::listener::{self, BindError};

/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound listener as reported to operators.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub kind: ListenerKind,
    pub addr: SocketAddr,
}

pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<ListenerInfo>,
    accept_tasks: JoinSet<()>,
}

impl Server {
    /// Binds every listener and starts accepting.
    pub async fn start(config: Config) -> Result<Server, BindError> {
        let mut bound = Vec::new();
        for l in &config.listeners {
            bound.push(listener::bind(l).await?);
        }
        let broker = Broker::new(config);
        let listeners = bound
            .iter()
            .map(|b| ListenerInfo {
                name: b.name.clone(),
                kind: b.kind,
                addr: b.local_addr,
            })
            .collect();
        let mut accept_tasks = JoinSet::new();
        for b in bound {
            accept_tasks.spawn(listener::accept_loop(b, broker.clone()));
        }
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            pool_size = broker.manager.snapshot().size,
            "mqttd started"
        );
        Ok(Server {
            broker,
            listeners,
            accept_tasks,
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    /// The address of the first listener of `kind` (tests use port 0).
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.addr)
    }

    /// Stops accepting, closes every client (wills are published) and
    /// waits for connections to end, at most [`SHUTDOWN_GRACE`].
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        self.broker.shutdown.cancel();
        while self.accept_tasks.join_next().await.is_some() {}
        self.broker.connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.broker.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway");
        }
        self.broker.manager.shutdown().await;
        tracing::info!("stopped");
    }
}
