//! Reloading credentials while the broker runs, without dropping
//! connections: on SIGHUP the password file, the ACL file and every
//! listener's certificates are re-read; those files are also polled every
//! [`CERT_POLL_INTERVAL`] and reloaded when they change (as cert-manager
//! or certbot renew certificates, or Kubernetes updates a mounted Secret
//! holding the password or ACL file). A file that fails to load keeps
//! its previous contents and the error is logged. After the ACL is
//! reloaded, every live session's subscriptions are checked again
//! ([`crate::session::reauthorize`]).
//!
//! Reading and parsing files is blocking work (a slow disk, a network
//! file system, a FIFO): it runs on tokio's blocking pool, never on a
//! runtime worker, so connections are served while a reload waits.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::context::Context;
use crate::session::reauthorize;
use crate::tls::TlsServer;

/// How often certificate, password and ACL files are checked for changes.
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

    /// Reloads every file now, on a blocking thread; `true` if all loaded.
    pub async fn reload_all(&self) -> bool {
        let this = self.clone();
        let ok = off_runtime(move || this.reload_all_blocking()).await;
        // Whatever loaded (the ACL, the hook's emptied cache) applies to
        // existing subscriptions too.
        tokio::spawn(reauthorize::recheck_all(self.ctx.clone()));
        ok
    }

    fn reload_all_blocking(&self) -> bool {
        let mut ok = true;
        if let Err(e) = self.auth.reload() {
            tracing::error!(error = %e, "auth reload failed; previous contents kept");
            ok = false;
        }
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

    /// Reloads the certificates, password and ACL files that changed, on
    /// a blocking thread; then re-checks subscriptions if the ACL (or the
    /// passwords) did.
    pub async fn reload_changed_files(&self) {
        let this = self.clone();
        let auth_reloaded = off_runtime(move || this.reload_changed_files_blocking()).await;
        if auth_reloaded {
            tokio::spawn(reauthorize::recheck_all(self.ctx.clone()));
        }
    }

    /// `true` if the auth files changed and at least one loaded.
    fn reload_changed_files_blocking(&self) -> bool {
        let auth = match self.auth.reload_if_changed() {
            None => false,
            Some(Ok(())) => {
                tracing::info!("password or ACL file changed; reloaded");
                true
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "password or ACL file changed but cannot be loaded; previous contents kept");
                // The other file may have loaded: re-check anyway.
                true
            }
        };
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
        auth
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
        let watched = !self.tls.is_empty() || self.auth.has_files();
        let mut poll = tokio::time::interval(CERT_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(()) = recv(&mut hup) => {
                    tracing::info!("SIGHUP received: reloading certificates, passwords and ACL");
                    self.reload_all().await;
                }
                _ = poll.tick(), if watched => self.reload_changed_files().await,
            }
        }
    }
}

/// Runs blocking `work` on tokio's blocking pool; `T::default()` (a
/// failed reload, logged) if it panicked.
async fn off_runtime<T: Default + Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "reload task failed; previous contents kept");
            T::default()
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::ClientCtx;
    use crate::config::AuthConfig;

    /// The ACL file is swapped for a FIFO, whose read blocks until a
    /// writer comes: a reload that read it on the (only) runtime thread
    /// would stop every task until then. Here the runtime keeps running
    /// while the reload waits, and the new rules apply once it is done.
    #[tokio::test(flavor = "current_thread")]
    async fn reload_reads_files_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let acl = dir.path().join("acl");
        std::fs::write(&acl, "topic readwrite x\n").unwrap();
        let auth = Arc::new(
            Auth::new(&AuthConfig {
                acl_file: Some(acl.clone()),
                ..AuthConfig::default()
            })
            .unwrap(),
        );
        let client = ClientCtx::new("c", None, "l");
        assert!(!auth.authorize_publish(&client, "y").await);

        std::fs::remove_file(&acl).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&acl).status();
        assert!(made.unwrap().success(), "mkfifo");
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            // Bounded, so a reload blocking the runtime ends the test
            // instead of hanging it.
            let _ = wait_go.recv_timeout(Duration::from_secs(10));
            std::fs::write(&acl, "topic readwrite y\n").unwrap();
        });

        let ctx = Context::new(
            Arc::new(crate::config::Config::default()),
            auth.clone(),
            crate::store::Store::memory(),
        );
        let reloader = Reloader::new(ctx, Vec::new());
        let reload = tokio::spawn(async move { reloader.reload_all().await });
        for _ in 0..10 {
            // Lets the reload task run; it must come back to us.
            tokio::task::yield_now().await;
        }
        assert!(
            !reload.is_finished(),
            "the reload blocked the runtime thread until the file was written"
        );
        go.send(()).unwrap();
        assert!(reload.await.unwrap(), "reload succeeds");
        writer.join().unwrap();
        assert!(auth.authorize_publish(&client, "y").await);
        assert!(!auth.authorize_publish(&client, "x").await);
    }
}
