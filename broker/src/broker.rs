//! The running broker as its connections see it: shared context, session
//! manager, shutdown signal and connection tracking.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::Config;
use crate::context::Context;
use crate::server::ListenerInfo;
use crate::session::SessionManager;
use crate::store::Store;

pub struct Broker {
    pub ctx: Arc<Context>,
    pub manager: SessionManager,
    /// Cancelled when the broker starts to stop: no new session is
    /// started, and wills are published before connections close.
    pub stopping: CancellationToken,
    /// Cancelled when the broker stops: listeners stop accepting and
    /// connections close.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub connections: TaskTracker,
    pub started_at: Instant,
    /// The bound listeners, for status reports.
    pub listeners: Vec<ListenerInfo>,
    /// True while listeners accept connections (`/readyz`).
    pub ready: AtomicBool,
}

impl Broker {
    pub fn new(
        config: Config,
        auth: Arc<Auth>,
        store: Store,
        listeners: Vec<ListenerInfo>,
    ) -> Arc<Broker> {
        let size = config.session_manager.effective_size();
        let ctx = Context::new(Arc::new(config), auth, store);
        Arc::new(Broker {
            manager: SessionManager::new(ctx.clone(), size),
            ctx,
            stopping: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            started_at: Instant::now(),
            listeners,
            ready: AtomicBool::new(false),
        })
    }
}
