//! Reloading credentials while the broker runs, without dropping
//! connections: on SIGHUP the password file, the ACL file and every
//! listener's certificates are re-read; certificate files are also polled
//! every [`CERT_POLL_INTERVAL`] and reloaded when they change (as
//! cert-manager or certbot renew them). A file that fails to load keeps
//! its previous contents and the error is logged. After the ACL is
//! reloaded, every live session's subscriptions are checked again
//! ([`crate::session::reauthorize`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::context::Context;
use crate::session::reauthorize;
use crate::tls::TlsServer;

/// How often certificate files are checked for changes.
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Everything that can be reloaded.
#[derive(Clone)]
pub struct Reloader {
    auth: Arc<Auth>,
    tls: Vec<Arc<TlsServer>>,
    /// The sessions whose subscriptions are checked after a reload.
    ctx: Arc<Context>,
}

impl Reloader {
    pub fn new(ctx: Arc<Context>, tls: Vec<Arc<TlsServer>>) -> Reloader {
        Reloader {
            auth: ctx.auth.clone(),
            tls,
            ctx,
        }
    }

    /// Reloads every file now; `true` if all loaded.
    pub fn reload_all(&self) -> bool {
        let mut ok = true;
        if let Err(e) = self.auth.reload() {
            tracing::error!(error = %e, "auth reload failed; previous contents kept");
            ok = false;
        }
        // Whatever loaded (the ACL, the hook's emptied cache) applies to
        // existing subscriptions too.
        tokio::spawn(reauthorize::recheck_all(self.ctx.clone()));
        for t in &self.tls {
            match t.reload() {
                Ok(()) => tracing::info!(listener = t.listener(), "TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(listener = t.listener(), error = %e, "TLS reload failed; previous certificate kept");
                    ok = false;
                }
            }
        }
        ok
    }

    /// Reloads the certificates whose files changed.
    pub fn reload_changed_certs(&self) {
        for t in &self.tls {
            match t.reload_if_changed() {
                None => {}
                Some(Ok(())) => tracing::info!(
                    listener = t.listener(),
                    "certificate files changed; reloaded"
                ),
                Some(Err(e)) => {
                    tracing::error!(listener = t.listener(), error = %e, "certificate files changed but cannot be loaded; previous certificate kept")
                }
            }
        }
    }

    /// Runs until `stop`: reloads on SIGHUP and polls certificate files.
    pub async fn run(self, stop: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; reload by signal is off");
                None
            }
        };
        let mut poll = tokio::time::interval(CERT_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(()) = recv(&mut hup) => {
                    tracing::info!("SIGHUP received: reloading certificates, passwords and ACL");
                    self.reload_all();
                }
                _ = poll.tick(), if !self.tls.is_empty() => self.reload_changed_certs(),
            }
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
