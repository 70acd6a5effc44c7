//! The session-manager pool (emqttd's `emqttd_sm` workers).
//!
//! Requests for client id C go to worker `hash(C) mod N`, so every
//! lifecycle step of one client id is serialized by one worker while
//! different ids proceed in parallel. The session table is shared, so a
//! resize moves nothing: it swaps generations. The swap holds the write
//! side of a lock that every dispatch takes for reading; it closes the old
//! workers' queues, waits until each has drained and exited, and only then
//! starts the new set. No two workers ever handle one id at once, and
//! requests that arrive during the swap wait instead of failing.
//!
//! The swap is cancel-safe: once a resize holds the write lock, the swap
//! runs in its own task to the end, so a caller that gives up (a client
//! timeout, Ctrl-C, a closed HTTP connection) cannot leave the pool
//! without workers. Resizes are served in the order they asked for the
//! lock (tokio's `RwLock` is fair).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedRwLockWriteGuard, RwLock};
use tokio::task::JoinHandle;

use super::session::Session;
use super::table::SessionEntry;
use super::{CloseReason, ConnHandle, SessionMsg};
use crate::auth::Identity;
use crate::config::MAX_POOL_SIZE;
use crate::context::Context;
use crate::metrics::WorkerMetrics;
use crate::types::ClientId;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("the session manager is shutting down")]
    ShuttingDown,
    #[error("pool size {0} is out of range 1..={MAX_POOL_SIZE}")]
    InvalidSize(usize),
}

/// `start_session` input: what the connect flow validated.
#[derive(Debug)]
pub struct StartRequest {
    pub client_id: ClientId,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    pub conn: ConnHandle,
}

/// The session for a connection, attached to it and now its to own.
#[derive(Debug)]
pub struct StartResult {
    pub session: Box<Session>,
    pub session_present: bool,
}

enum Request {
    Start(
        Box<StartRequest>,
        oneshot::Sender<Result<StartResult, ManagerError>>,
    ),
    Destroy(ClientId, CloseReason, oneshot::Sender<bool>),
}

impl Request {
    fn client_id(&self) -> &ClientId {
        match self {
            Request::Start(r, _) => &r.client_id,
            Request::Destroy(id, _, _) => id,
        }
    }
}

struct Worker {
    tx: mpsc::UnboundedSender<Request>,
    stats: Arc<WorkerMetrics>,
    join: JoinHandle<()>,
}

/// A snapshot of the pool for the control API and metrics.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    pub size: usize,
    pub workers: Vec<Arc<WorkerMetrics>>,
}

pub struct SessionManager {
    ctx: Arc<Context>,
    /// Shared with the task that runs a swap (see [`SessionManager::resize`]).
    workers: Arc<RwLock<Vec<Worker>>>,
    /// The current generation's stats, readable without awaiting.
    stats: Arc<parking_lot::Mutex<Vec<Arc<WorkerMetrics>>>>,
}

impl SessionManager {
    pub fn new(ctx: Arc<Context>, size: usize) -> Self {
        let workers = spawn_workers(&ctx, size.clamp(1, MAX_POOL_SIZE));
        let stats = workers.iter().map(|w| w.stats.clone()).collect();
        SessionManager {
            ctx,
            workers: Arc::new(RwLock::new(workers)),
            stats: Arc::new(parking_lot::Mutex::new(stats)),
        }
    }

    /// Creates or resumes the session for a connection (the seed's
    /// `start_session`).
    pub async fn start_session(&self, req: StartRequest) -> Result<StartResult, ManagerError> {
        let (tx, rx) = oneshot::channel();
        self.dispatch(Request::Start(Box::new(req), tx)).await?;
        rx.await.map_err(|_| ManagerError::ShuttingDown)?
    }

    /// Destroys the session of `id`, closing its connection; `false` when
    /// there is none.
    pub async fn destroy_session(
        &self,
        id: ClientId,
        reason: CloseReason,
    ) -> Result<bool, ManagerError> {
        let (tx, rx) = oneshot::channel();
        self.dispatch(Request::Destroy(id, reason, tx)).await?;
        rx.await.map_err(|_| ManagerError::ShuttingDown)
    }

    async fn dispatch(&self, req: Request) -> Result<(), ManagerError> {
        let workers = self.workers.read().await;
        if workers.is_empty() {
            return Err(ManagerError::ShuttingDown);
        }
        let worker = &workers[worker_index(req.client_id(), workers.len())];
        worker.stats.queue_depth.inc();
        worker.tx.send(req).map_err(|_| ManagerError::ShuttingDown)
    }

    /// Changes the number of workers (a generation swap, see the module doc).
    ///
    /// Cancel-safe: dropping the returned future before the write lock is
    /// held changes nothing; after that the swap finishes in its own task
    /// whether or not anyone still awaits it.
    pub async fn resize(&self, size: usize) -> Result<(), ManagerError> {
        if !(1..=MAX_POOL_SIZE).contains(&size) {
            return Err(ManagerError::InvalidSize(size));
        }
        let workers = self.workers.clone().write_owned().await;
        if workers.is_empty() {
            return Err(ManagerError::ShuttingDown);
        }
        let swap = tokio::spawn(swap(self.ctx.clone(), workers, self.stats.clone(), size));
        swap.await.map_err(|e| {
            tracing::error!(error = %e, "session-manager pool swap failed");
            ManagerError::ShuttingDown
        })
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let workers = self.stats.lock().clone();
        PoolSnapshot {
            size: workers.len(),
            workers,
        }
    }

    /// Stops the pool after the queued requests are done.
    pub async fn shutdown(&self) {
        let mut workers = self.workers.write().await;
        drain(std::mem::take(&mut *workers)).await;
    }
}

/// The generation swap behind [`SessionManager::resize`]; holds the write
/// lock until the new workers are in place.
async fn swap(
    ctx: Arc<Context>,
    mut workers: OwnedRwLockWriteGuard<Vec<Worker>>,
    stats: Arc<parking_lot::Mutex<Vec<Arc<WorkerMetrics>>>>,
    size: usize,
) {
    drain(std::mem::take(&mut *workers)).await;
    *workers = spawn_workers(&ctx, size);
    *stats.lock() = workers.iter().map(|w| w.stats.clone()).collect();
    tracing::info!(size, "session-manager pool resized");
}

async fn drain(workers: Vec<Worker>) {
    let joins: Vec<_> = workers
        .into_iter()
        .map(|w| {
            drop(w.tx);
            w.join
        })
        .collect();
    for join in joins {
        if let Err(e) = join.await {
            tracing::error!(error = %e, "session-manager worker failed");
        }
    }
}

fn worker_index(id: &ClientId, n: usize) -> usize {
    // SipHash with fixed keys: stable for the process, well spread.
    let mut h = std::hash::DefaultHasher::new();
    id.as_str().hash(&mut h);
    (h.finish() % n as u64) as usize
}

fn spawn_workers(ctx: &Arc<Context>, n: usize) -> Vec<Worker> {
    ctx.metrics
        .resize_workers(n)
        .into_iter()
        .map(|stats| {
            let (tx, rx) = mpsc::unbounded_channel();
            let join = tokio::spawn(run_worker(ctx.clone(), rx, stats.clone()));
            Worker { tx, stats, join }
        })
        .collect()
}

async fn run_worker(
    ctx: Arc<Context>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: Arc<WorkerMetrics>,
) {
    while let Some(req) = rx.recv().await {
        stats.queue_depth.dec();
        match req {
            Request::Start(req, reply) => {
                let result = start(&ctx, &stats, *req).await;
                let _ = reply.send(result);
            }
            Request::Destroy(id, reason, reply) => {
                let found = match ctx.table.get(id.as_str()) {
                    Some(entry) => {
                        destroy(&ctx, &entry, reason).await;
                        stats.destroyed.inc();
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
        }
    }
}

/// The seed's `start_session`: resume a live persistent session of the
/// same identity (taking it from its owner: the connection attached to it,
/// which closes as taken over, or the holder of an offline session), or
/// destroy what is there and create a new one.
async fn start(
    ctx: &Arc<Context>,
    stats: &WorkerMetrics,
    req: StartRequest,
) -> Result<StartResult, ManagerError> {
    if let Some(entry) = ctx.table.get(req.client_id.as_str()) {
        let owner = owner(&entry);
        let claimant = Identity::of(req.conn.info.username.as_deref());
        if !req.clean_start && owner != claimant {
            // A client id is not a credential: another identity never
            // inherits a session's subscriptions and messages.
            tracing::warn!(
                client_id = %req.client_id,
                %owner,
                %claimant,
                "persistent session belongs to another identity: destroying it and starting a fresh one"
            );
            ctx.metrics.sessions_identity_mismatch.inc();
        }
        if req.clean_start || owner != claimant {
            destroy(ctx, &entry, CloseReason::TakenOver).await;
            stats.destroyed.inc();
        } else if let Some(mut session) = take(&entry).await {
            session.attach(req.conn);
            session.publish_counters();
            stats.resumed.inc();
            ctx.metrics.sessions_resumed.inc();
            return Ok(StartResult {
                session,
                session_present: true,
            });
        } else {
            // It was ending: once it is gone, a new one is created below.
            entry.ended.cancelled().await;
        }
    }
    Ok(create(ctx, stats, req.client_id, req.conn))
}

/// The identity a session belongs to: that of the connection attached to
/// it, or of the last one. Every connection a session ever had shares it,
/// since [`start`] resumes a session only for its owner.
pub(crate) fn owner(entry: &SessionEntry) -> Identity {
    let last = entry.shared.last_client();
    Identity::of(last.as_ref().and_then(|c| c.username.as_deref()))
}

/// Takes a live session from its owner; `None` if it is ending (or its
/// owner died), in which case its row goes with it.
async fn take(entry: &SessionEntry) -> Option<Box<Session>> {
    let (tx, rx) = oneshot::channel();
    entry.tx.send(SessionMsg::Take(tx)).ok()?;
    rx.await.ok()
}

fn create(
    ctx: &Arc<Context>,
    stats: &WorkerMetrics,
    client_id: ClientId,
    conn: ConnHandle,
) -> StartResult {
    let (session, entry) = Session::create(ctx, client_id, conn);
    if let Some(old) = ctx.table.insert(entry) {
        tracing::error!(client_id = %old.client_id, "replaced a live session table entry");
    }
    stats.created.inc();
    ctx.metrics.sessions_created.inc();
    ctx.metrics.sessions.inc();
    StartResult {
        session,
        session_present: false,
    }
}

/// Shuts a session down and waits until it is gone from the table (the
/// session removes its own row as it ends).
async fn destroy(ctx: &Context, entry: &SessionEntry, reason: CloseReason) {
    let _ = entry.tx.send(SessionMsg::Shutdown(reason));
    entry.ended.cancelled().await;
    ctx.metrics.sessions_destroyed.inc();
}
