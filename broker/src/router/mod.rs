//! The message router: which sessions get a published message (a topic
//! trie of subscriptions, with MQTT 5.0 shared subscriptions), and the
//! retained-message store.
//!
//! - `filter`: splitting `$share/GROUP/FILTER` and filter levels;
//! - `trie`: the subscription trie and the per-publish match walk;
//! - `shared`: a shared-subscription group and its round-robin;
//! - `retained`: [`RetainedStore`].
//!
//! The router is generic over the subscriber's delivery handle `S` (the
//! session's mailbox sender in the broker), so it knows nothing of sessions.

mod filter;
mod retained;
mod shared;
mod trie;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use retained::{Retainable, RetainedLimit, RetainedLimits, RetainedStore, SetOutcome};

use crate::codec::packet::SubscriptionOptions;
use crate::types::{ClientId, QoS, TopicFilter, TopicName};
use filter::ParsedFilter;
use trie::{Collector, Entry, Node};

/// Most levels a stored topic filter or retained topic may have.
///
/// The trie is walked recursively, one frame per level; bounding its depth
/// bounds stack use whatever a client sends (a filter of 65,000 `/` once
/// overflowed Mosquitto's stack). Topics routed through the trie need no
/// limit: the walk never goes deeper than the trie.
pub const MAX_TOPIC_LEVELS: usize = 200;

/// Why the router refused a subscription or a retained message.
///
/// Subscription errors but [`RouterError::NoLocalOnShared`] become a
/// SUBACK failure ("topic filter invalid", 0x8F); that one is a protocol
/// error. The last two concern retained messages only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("shared subscription {filter} has an empty share name")]
    EmptyShareName { filter: TopicFilter },
    #[error("shared subscription {filter} has a wildcard in its share name")]
    WildcardInShareName { filter: TopicFilter },
    #[error("shared subscription {filter} has no topic filter after the share name")]
    MissingSharedFilter { filter: TopicFilter },
    #[error("no local is set on shared subscription {filter} [MQTT-3.8.3-4]")]
    NoLocalOnShared { filter: TopicFilter },
    #[error("topic filter {filter} has more than {MAX_TOPIC_LEVELS} levels")]
    FilterTooDeep { filter: TopicFilter },
    #[error("topic {topic} has more than {MAX_TOPIC_LEVELS} levels and cannot be retained")]
    TopicTooDeep { topic: TopicName },
    #[error("topic {topic} not retained: limits.max_retained_{} reached", limit.as_str())]
    RetainedFull {
        topic: TopicName,
        limit: RetainedLimit,
    },
}

impl RouterError {
    /// True if the client broke the protocol (close with DISCONNECT 0x82)
    /// rather than asked for a filter the server refuses.
    pub fn is_protocol_error(&self) -> bool {
        matches!(self, RouterError::NoLocalOnShared { .. })
    }
}

/// Whether a subscribe created a subscription or replaced the options of
/// an existing one for the same client and filter [MQTT-3.8.4-3].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    New,
    Replaced,
}

impl SubscribeOutcome {
    /// For retain handling 1 ("send retained only if new").
    pub fn is_new(self) -> bool {
        self == SubscribeOutcome::New
    }
}

/// One copy of a published message for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<S> {
    pub client_id: ClientId,
    pub handle: S,
    /// The highest QoS granted among the matching subscriptions; the sender
    /// downgrades it to the message's own QoS.
    pub qos: QoS,
    pub retain_as_published: bool,
    /// Identifiers of all matching subscriptions that have one [MQTT-3.3.4-4].
    pub subscription_ids: Vec<u32>,
    /// Whether this is a shared group's delivery: only one member must
    /// get the message.
    pub shared: bool,
    /// For a shared group: the other members, in the order to try them
    /// if this one cannot take the message (offline, ending). Empty for
    /// a normal subscription.
    pub others: Vec<Delivery<S>>,
}

impl<S> Delivery<S> {
    /// Folds an overlapping subscription of the same client into this one
    /// [MQTT-3.3.4-2].
    fn merge(&mut self, other: &mut Delivery<S>) {
        self.qos = self.qos.max(other.qos);
        self.retain_as_published |= other.retain_as_published;
        self.subscription_ids.append(&mut other.subscription_ids);
    }
}

/// The subscriptions of all sessions.
///
/// One `std::sync::RwLock` over the whole trie: `route` (every publish)
/// takes it shared, so publishes match in parallel; subscribe/unsubscribe
/// take it exclusively for a few hash operations. The lock is never held
/// across an `.await`, so a blocking lock is right; std's futex-based lock
/// prefers waiting writers, so a flood of publishes cannot starve
/// subscribers, and it costs no extra dependency.
#[derive(Debug)]
pub struct Router<S> {
    inner: RwLock<Inner<S>>,
}

#[derive(Debug)]
struct Inner<S> {
    root: Node<S>,
    count: usize,
}

impl<S: Clone> Default for Router<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone> Router<S> {
    pub fn new() -> Self {
        Router {
            inner: RwLock::new(Inner {
                root: Node::default(),
                count: 0,
            }),
        }
    }

    // A panic cannot leave the trie half-updated in a way that matters
    // more than losing the broker, so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, Inner<S>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<S>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `client`'s subscription to `filter`, or replaces its options
    /// if it already has one to the identical filter. `incarnation` is the
    /// session incarnation making it: removals name it (see
    /// [`Router::unsubscribe`]).
    pub fn subscribe(
        &self,
        client: &ClientId,
        incarnation: u64,
        filter: &TopicFilter,
        opts: SubscriptionOptions,
        subscription_id: Option<u32>,
        handle: S,
    ) -> Result<SubscribeOutcome, RouterError> {
        let parsed = ParsedFilter::parse(filter)?;
        if parsed.group.is_some() && opts.no_local {
            return Err(RouterError::NoLocalOnShared {
                filter: filter.clone(),
            });
        }
        let entry = Entry {
            incarnation,
            opts,
            subscription_id,
            handle,
        };
        let mut inner = self.write();
        if inner.root.insert(&parsed, client, entry) {
            inner.count += 1;
            Ok(SubscribeOutcome::New)
        } else {
            Ok(SubscribeOutcome::Replaced)
        }
    }

    /// Removes `client`'s subscription to `filter` made by session
    /// `incarnation`; false if it had none (or a later incarnation of the
    /// client id holds it now).
    pub fn unsubscribe(&self, client: &ClientId, incarnation: u64, filter: &TopicFilter) -> bool {
        let Ok(parsed) = ParsedFilter::parse(filter) else {
            return false;
        };
        let mut inner = self.write();
        let removed = inner.root.remove(&parsed, client, incarnation);
        if removed {
            inner.count -= 1;
        }
        removed
    }

    /// Removes all of `client`'s subscriptions to `filters` made by
    /// `incarnation`, under a single lock (session teardown).
    pub fn unsubscribe_all<'f>(
        &self,
        client: &ClientId,
        incarnation: u64,
        filters: impl IntoIterator<Item = &'f TopicFilter>,
    ) {
        let mut inner = self.write();
        for filter in filters {
            if let Ok(parsed) = ParsedFilter::parse(filter) {
                if inner.root.remove(&parsed, client, incarnation) {
                    inner.count -= 1;
                }
            }
        }
    }

    /// Who gets a message published to `topic`: one delivery per client
    /// with matching normal subscriptions (merged), plus one per matching
    /// shared group (its next member in turn, the others in
    /// [`Delivery::others`]). `publisher` is used for
    /// no-local subscriptions; `None` for messages the broker publishes.
    pub fn route(&self, topic: &TopicName, publisher: Option<&ClientId>) -> Vec<Delivery<S>> {
        let mut out = Collector::new(publisher);
        self.read().root.route(topic, &mut out);
        out.finish()
    }

    /// Number of subscriptions (each member of a shared group counts once).
    pub fn subscription_count(&self) -> usize {
        self.read().count
    }

    /// Number of trie nodes, root included: 1 when there are no
    /// subscriptions. Walks the trie; for tests and diagnostics.
    pub fn node_count(&self) -> usize {
        self.read().root.node_count()
    }
}
