//! The session-manager pool (emqttd's `emqttd_sm` workers).
//!
//! Requests for client id C go to worker `hash(C) mod N`, so every
//! lifecycle step of one client id is serialized by one worker while
//! different ids proceed in parallel.
//!
//! One step needs no worker: a clean start for a client id with no row in
//! the table creates its session on the connection's own task, inserted
//! only if the id still has no row (one table write lock). Ordering per id
//! still holds: whoever inserts first wins, and a worker that finds a row
//! where it meant to create one treats it as the live session it is
//! (taking it over or destroying it), as it would have if the row had
//! been there when it looked.
//!
//! A new session is refused past `limits.max_sessions`
//! ([`ManagerError::TooManySessions`]), counted under the table's write
//! lock so concurrent CONNECTs cannot pass it together. A session that
//! replaces one of its client id (clean start, a resume that found it
//! ending, another identity) is not refused: at the bound, a client can
//! always get back in.
//!
//! The session table is shared, so a resize moves nothing: it swaps
//! generations. Dispatch takes a blocking read lock for a moment (never
//! across an await); a swap installs the new workers at once, but they
//! wait at a gate until every old worker has drained its queue and exited.
//! No two workers ever handle one id at once, and requests that arrive
//! during the swap wait in the new queues instead of failing.
//!
//! The swap is cancel-safe: it runs in its own task to the end, so a
//! caller that gives up (a client timeout, Ctrl-C, a closed HTTP
//! connection) cannot leave the pool without workers. Resizes run one at
//! a time, in the order they asked (tokio's `Mutex` is fair).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::session::Session;
use super::table::{NotInserted, SessionEntry};
use super::{CloseReason, ConnHandle, SessionMsg};
use crate::auth::Identity;
use crate::config::MAX_POOL_SIZE;
use crate::context::Context;
use crate::metrics::WorkerMetrics;
use crate::types::{ClientId, TopicFilter};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("the session manager is shutting down")]
    ShuttingDown,
    #[error("pool size {0} is out of range 1..={MAX_POOL_SIZE}")]
    InvalidSize(usize),
    /// A new session would go past `limits.max_sessions`.
    #[error("the session table is full ({0} sessions, limits.max_sessions)")]
    TooManySessions(usize),
}

/// Why no session was created.
enum NotCreated {
    /// The client id has a session now: the connection is given back.
    Exists(ClientId, ConnHandle),
    /// `limits.max_sessions` reached.
    Full,
}

/// `start_session` input: what the connect flow validated.
#[derive(Debug)]
pub struct StartRequest {
    pub client_id: ClientId,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    pub conn: ConnHandle,
    /// Subscriptions of the session being resumed that authorization no
    /// longer grants this client: removed before anything is sent to it.
    pub revoked: Vec<TopicFilter>,
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
    /// Held by the swap in progress.
    resizing: Arc<Mutex<()>>,
    /// The current generation's stats, readable without awaiting.
    stats: Arc<parking_lot::Mutex<Vec<Arc<WorkerMetrics>>>>,
}

impl SessionManager {
    pub fn new(ctx: Arc<Context>, size: usize) -> Self {
        let open = CancellationToken::new();
        open.cancel();
        let workers = spawn_workers(&ctx, size.clamp(1, MAX_POOL_SIZE), open);
        let stats = workers.iter().map(|w| w.stats.clone()).collect();
        SessionManager {
            ctx,
            workers: Arc::new(RwLock::new(workers)),
            resizing: Arc::new(Mutex::new(())),
            stats: Arc::new(parking_lot::Mutex::new(stats)),
        }
    }

    /// Creates or resumes the session for a connection (the seed's
    /// `start_session`).
    pub async fn start_session(&self, req: StartRequest) -> Result<StartResult, ManagerError> {
        let req = if req.clean_start && self.ctx.table.get(req.client_id.as_str()).is_none() {
            // No live session to resume, take over or destroy: create it
            // here (see the module doc).
            match create(&self.ctx, req.client_id, req.conn, Bound::Limited) {
                Ok(started) => {
                    self.ctx.metrics.sessions_created_direct.inc();
                    return Ok(started);
                }
                Err(NotCreated::Full) => return Err(too_many(&self.ctx)),
                // Another connection of this id got there first.
                Err(NotCreated::Exists(client_id, conn)) => StartRequest {
                    client_id,
                    clean_start: true,
                    conn,
                    revoked: Vec::new(),
                },
            }
        } else {
            req
        };
        let (tx, rx) = oneshot::channel();
        self.dispatch(Request::Start(Box::new(req), tx))?;
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
        self.dispatch(Request::Destroy(id, reason, tx))?;
        rx.await.map_err(|_| ManagerError::ShuttingDown)
    }

    fn dispatch(&self, req: Request) -> Result<(), ManagerError> {
        let workers = self.workers.read();
        if workers.is_empty() {
            return Err(ManagerError::ShuttingDown);
        }
        let worker = &workers[worker_index(req.client_id(), workers.len())];
        worker.stats.queue_depth.inc();
        worker.tx.send(req).map_err(|_| ManagerError::ShuttingDown)
    }

    /// Changes the number of workers (a generation swap, see the module doc).
    ///
    /// Cancel-safe: dropping the returned future before the swap's turn
    /// changes nothing; after that the swap finishes in its own task
    /// whether or not anyone still awaits it.
    pub async fn resize(&self, size: usize) -> Result<(), ManagerError> {
        if !(1..=MAX_POOL_SIZE).contains(&size) {
            return Err(ManagerError::InvalidSize(size));
        }
        let turn = self.resizing.clone().lock_owned().await;
        if self.workers.read().is_empty() {
            return Err(ManagerError::ShuttingDown);
        }
        let swap = tokio::spawn(swap(
            self.ctx.clone(),
            self.workers.clone(),
            turn,
            self.stats.clone(),
            size,
        ));
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
        let _turn = self.resizing.lock().await;
        let old = std::mem::take(&mut *self.workers.write());
        drain(old).await;
    }
}

/// The generation swap behind [`SessionManager::resize`]: installs the new
/// workers behind a gate, drains the old ones, then opens the gate.
async fn swap(
    ctx: Arc<Context>,
    workers: Arc<RwLock<Vec<Worker>>>,
    _turn: OwnedMutexGuard<()>,
    stats: Arc<parking_lot::Mutex<Vec<Arc<WorkerMetrics>>>>,
    size: usize,
) {
    let gate = CancellationToken::new();
    let new = spawn_workers(&ctx, size, gate.clone());
    let new_stats = new.iter().map(|w| w.stats.clone()).collect();
    let old = std::mem::replace(&mut *workers.write(), new);
    drain(old).await;
    *stats.lock() = new_stats;
    gate.cancel();
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

/// `n` workers that start serving their queues once `open` is cancelled.
fn spawn_workers(ctx: &Arc<Context>, n: usize, open: CancellationToken) -> Vec<Worker> {
    ctx.metrics
        .resize_workers(n)
        .into_iter()
        .map(|stats| {
            let (tx, rx) = mpsc::unbounded_channel();
            let join = tokio::spawn(run_worker(ctx.clone(), rx, stats.clone(), open.clone()));
            Worker { tx, stats, join }
        })
        .collect()
}

async fn run_worker(
    ctx: Arc<Context>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: Arc<WorkerMetrics>,
    open: CancellationToken,
) {
    open.cancelled().await;
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
    mut req: StartRequest,
) -> Result<StartResult, ManagerError> {
    let clean_start = req.clean_start;
    loop {
        match start_once(ctx, stats, req).await {
            Ok(started) => return Ok(started),
            Err(NotCreated::Full) => return Err(too_many(ctx)),
            // A connection created a session for this id on its own task
            // meanwhile (see the module doc): deal with that one.
            Err(NotCreated::Exists(client_id, conn)) => {
                // The session the revocations were checked for is gone.
                req = StartRequest {
                    client_id,
                    clean_start,
                    conn,
                    revoked: Vec::new(),
                }
            }
        }
    }
}

async fn start_once(
    ctx: &Arc<Context>,
    stats: &WorkerMetrics,
    req: StartRequest,
) -> Result<StartResult, NotCreated> {
    // A session that replaces one of the same client id (a clean start, or
    // a resume that found it ending) is not a new session: it may go past
    // `limits.max_sessions` for the moment the old row takes to leave.
    let mut bound = Bound::Limited;
    if let Some(entry) = ctx.table.get(req.client_id.as_str()) {
        bound = Bound::Replacing;
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
            session.attach(req.conn, req.revoked);
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
    let started = create(ctx, req.client_id, req.conn, bound)?;
    stats.created.inc();
    Ok(started)
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

fn too_many(ctx: &Context) -> ManagerError {
    ManagerError::TooManySessions(ctx.config.limits.max_sessions)
}

/// Whether a new session counts against `limits.max_sessions`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    Limited,
    /// It replaces a session of its client id that was in the table.
    Replacing,
}

/// Creates a session for `conn` if `client_id` has no row in the table
/// (otherwise gives the connection back) and, when `bound` says so, the
/// table is below `limits.max_sessions`.
fn create(
    ctx: &Arc<Context>,
    client_id: ClientId,
    conn: ConnHandle,
    bound: Bound,
) -> Result<StartResult, NotCreated> {
    let max = match bound {
        Bound::Limited => ctx.config.limits.max_sessions,
        Bound::Replacing => usize::MAX,
    };
    // Checked first without building a session: at the bound, a crowd of
    // refused CONNECTs costs a read of a counter each.
    if ctx.table.len() >= max {
        return Err(NotCreated::Full);
    }
    let (mut session, entry) = Session::create(ctx, client_id);
    match ctx.table.insert_new_within(entry, max) {
        Ok(()) => {}
        Err(NotInserted::Taken(_)) => {
            return Err(NotCreated::Exists(session.client_id().clone(), conn))
        }
        Err(NotInserted::Full) => return Err(NotCreated::Full),
    }
    session.attach(conn, Vec::new());
    ctx.metrics.sessions_created.inc();
    ctx.metrics.sessions.inc();
    Ok(StartResult {
        session,
        session_present: false,
    })
}

/// Shuts a session down and waits until it is gone from the table (the
/// session removes its own row as it ends).
async fn destroy(ctx: &Context, entry: &SessionEntry, reason: CloseReason) {
    let _ = entry.tx.send(SessionMsg::Shutdown(reason));
    entry.ended.cancelled().await;
    ctx.metrics.sessions_destroyed.inc();
}
