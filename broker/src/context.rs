//! The state every broker task shares: configuration, authorization,
//! session table, router, retained messages, the store and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::auth::Auth;
use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::router::{RetainedLimits, RetainedStore, Router};
use crate::routing_gate::RoutingGate;
use crate::session::{DeliverTx, SessionTable};
use crate::store::Store;

pub struct Context {
    pub config: Arc<Config>,
    /// The broker's authentication and authorization (the same one every
    /// listener uses): sessions ask it about wills and resumed or
    /// reloaded subscriptions.
    pub auth: Arc<Auth>,
    pub table: SessionTable,
    pub router: Router<DeliverTx>,
    pub retained: RetainedStore<Arc<Message>>,
    /// Where persistent sessions and retained messages are kept.
    pub store: Store,
    pub metrics: Metrics,
    /// `limits.max_memory_bytes` and the message copies charged to it.
    pub budget: Arc<MemoryBudget>,
    /// Turns at routing PUBLISH packets (see [`crate::routing_gate`]).
    pub routing: RoutingGate,
    next_id: AtomicU64,
}

impl Context {
    pub fn new(config: Arc<Config>, auth: Arc<Auth>, store: Store) -> Arc<Context> {
        let metrics = Metrics::default();
        if let Some(m) = store.metrics() {
            metrics.attach_store(m.clone());
        }
        let limit = config.limits.max_memory_bytes.resolve();
        if limit == 0 {
            tracing::info!("no memory budget (limits.max_memory_bytes: 0)");
        } else {
            tracing::info!(
                bytes = limit,
                "memory budget for message copies (limits.max_memory_bytes)"
            );
        }
        let budget = Arc::new(MemoryBudget::new(limit));
        metrics.attach_memory(budget.clone());
        let limits = RetainedLimits {
            max_messages: config.limits.max_retained_messages,
            max_bytes: config.limits.max_retained_bytes,
        };
        Arc::new(Context {
            retained: RetainedStore::with_limits(limits),
            config,
            auth,
            table: SessionTable::new(),
            router: Router::new(),
            store,
            metrics,
            budget,
            routing: RoutingGate::per_cpu(),
            next_id: AtomicU64::new(1),
        })
    }

    /// A process-unique id for a connection or a session incarnation.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
