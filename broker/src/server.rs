//! Starting and stopping the whole broker: load credentials and
//! certificates and bind every listener (so errors surface before anything
//! runs), start accepting and reloading, and on shutdown stop accepting,
//! publish the clients' wills to the subscribers still connected, close
//! clients and wait for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::admission::ConnectionLimits;
use crate::auth::AuthSetupError;
use crate::broker::Broker;
use crate::config::{Config, ListenerKind};
use crate::control::{
    serve_control, serve_http, ControlBackend, ControlError, ControlServer, HttpServer,
};
use crate::listener::{self, ListenerError};
use crate::reload::Reloader;
use crate::session::stopping::close_all;

/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound listener as reported to operators.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub kind: ListenerKind,
    pub addr: SocketAddr,
}

/// Why the broker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error("{0}")]
    Log(String),
    #[error(transparent)]
    DataDir(#[from] crate::preflight::DataDirError),
}

pub struct Server {
    broker: Arc<Broker>,
    accept_tasks: JoinSet<()>,
    control: ControlServer,
    /// `None` with `http.enabled: false`.
    http: Option<HttpServer>,
    reloader: Reloader,
}

impl Server {
    /// Loads credentials and certificates, binds every listener, the
    /// control socket and the HTTP port, then starts accepting.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        // The same checks as `mqttd --check-config`, before anything is bound.
        let auth = Arc::new(crate::preflight::check(&config)?);
        // Before binding: a store another broker holds stops this one
        // before it takes any port.
        let storage = config.storage.clone();
        let (store, loaded) = tokio::task::spawn_blocking(move || crate::store::open(&storage))
            .await
            .map_err(|e| crate::store::OpenError::Engine {
                path: config.storage.data_dir.clone(),
                reason: format!("the opening task failed: {e}"),
            })??;
        let limits = ConnectionLimits::new(&config);
        let mut bound = Vec::new();
        for l in &config.listeners {
            bound.push(listener::bind(l, auth.clone(), &limits).await?);
        }
        let tls = bound.iter().filter_map(|b| b.tls().cloned()).collect();
        let auth_metrics = auth.metrics();
        let listeners = bound
            .iter()
            .map(|b| ListenerInfo {
                name: b.name.clone(),
                kind: b.kind,
                addr: b.local_addr,
            })
            .collect();
        let (control_cfg, http_cfg) = (config.control.clone(), config.http.clone());
        let broker = Broker::new(config, auth, store, listeners);
        broker.ctx.metrics.attach_auth(auth_metrics);
        for b in &bound {
            broker
                .ctx
                .metrics
                .attach_listener(b.metrics().clone(), b.tls().is_some());
        }
        broker
            .ctx
            .metrics
            .attach_admission(limits.metrics().clone());
        let restored = crate::session::restore::restore(&broker.ctx, loaded);
        let reloader = Reloader::new(broker.ctx.clone(), tls);
        let backend: Arc<dyn ControlBackend> = Arc::new(Admin(broker.clone()));
        let token = broker.shutdown.clone();
        let control = serve_control(backend.clone(), &control_cfg, token.clone()).await?;
        let http = if http_cfg.enabled {
            Some(serve_http(backend, &http_cfg, token).await?)
        } else {
            None
        };
        let mut accept_tasks = JoinSet::new();
        for b in bound {
            accept_tasks.spawn(listener::accept_loop(b, broker.clone()));
        }
        accept_tasks.spawn(reloader.clone().run(broker.shutdown.clone()));
        accept_tasks.spawn(crate::keepalive::sweep(broker.ctx.clone()));
        let sys_interval = broker.ctx.config.mqtt.sys_interval_secs;
        if sys_interval > 0 {
            accept_tasks.spawn(crate::sys_topics::run(
                broker.clone(),
                Duration::from_secs(sys_interval),
            ));
        }
        accept_tasks.spawn(crate::retain::sweep(broker.ctx.clone()));
        broker.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            pool_size = broker.manager.snapshot().size,
            control_socket = %control.socket_path().display(),
            http = %http
                .as_ref()
                .map_or_else(|| "off".to_string(), |h| h.local_addr().to_string()),
            durability = broker.ctx.config.storage.durability.as_str(),
            restored_sessions = restored,
            max_connections = limits.max(),
            open_files_limit = %crate::admission::open_files::soft_limit()
                .map_or("unlimited".to_string(), |n| n.to_string()),
            "mqttd started"
        );
        Ok(Server {
            broker,
            accept_tasks,
            control,
            http,
            reloader,
        })
    }

    /// Reloads certificates, the password file and the ACL file now, as
    /// SIGHUP does (on a blocking thread); `true` if every file loaded.
    pub async fn reload(&self) -> bool {
        self.reloader.reload_all().await
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.broker.listeners
    }

    /// The address of the first listener of `kind` (tests use port 0).
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners()
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.addr)
    }

    /// The control socket actually in use.
    pub fn control_socket(&self) -> &std::path::Path {
        self.control.socket_path()
    }

    /// The TCP control API address actually bound, if `control.tcp` is set.
    pub fn control_tcp_addr(&self) -> Option<SocketAddr> {
        self.control.tcp_addr()
    }

    /// The health and metrics address actually bound; `None` when the
    /// server is off (`http.enabled: false`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Stops accepting, publishes every client's will to the subscribers
    /// still connected, closes every client and waits for connections to
    /// end (each step at most 5 seconds).
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        self.broker.ready.store(false, Ordering::Relaxed);
        self.broker.stopping.cancel();
        // Stop accepting (and reloading), but keep connections open until
        // the wills have reached them.
        self.accept_tasks.abort_all();
        while self.accept_tasks.join_next().await.is_some() {}
        match tokio::time::timeout(SHUTDOWN_GRACE, close_all(&self.broker.ctx)).await {
            Ok(sessions) => tracing::info!(sessions, "wills published; connections closing"),
            Err(_) => tracing::warn!(
                "sessions still closing after {SHUTDOWN_GRACE:?}; closing connections anyway"
            ),
        }
        // Each connection now writes what its session queued (the wills)
        // and closes by itself; those that do not in time are cut off.
        self.broker.connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.broker.connections.wait())
            .await
            .is_err()
        {
            self.broker.shutdown.cancel();
            crate::session::stopping::force_close_all(&self.broker.ctx);
            if tokio::time::timeout(SHUTDOWN_GRACE, self.broker.connections.wait())
                .await
                .is_err()
            {
                tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway");
            }
        }
        self.broker.shutdown.cancel();
        self.broker.manager.shutdown().await;
        // Sessions went offline above, their records saved: flush and a
        // last fsync, bounded (a failing disk must not hold the exit; the
        // journal has everything anyway).
        let store = self.broker.ctx.store.clone();
        let closing = tokio::task::spawn_blocking(move || store.close());
        if tokio::time::timeout(SHUTDOWN_GRACE, closing).await.is_err() {
            tracing::warn!("store still flushing after {SHUTDOWN_GRACE:?}; exiting anyway (the journal is replayed at start-up)");
        }
        self.control.join().await;
        if let Some(http) = self.http {
            http.join().await;
        }
        tracing::info!("stopped");
    }
}
