//! The subscription trie: one node per topic-filter level, so routing a
//! topic costs a hash lookup per level (plus the `+` branch), whatever the
//! number of subscriptions.
//!
//! A filter's last node holds its subscribers: in `exact` for a filter that
//! ends there, in `multi` for one that ends there with a further `/#`
//! (so `a/#` lives on node `a`, which is how it also matches the parent
//! topic `a`). Each is keyed by client id for normal subscriptions and by
//! group name for shared ones.

use std::collections::HashMap;

use super::filter::ParsedFilter;
use super::shared::SharedGroup;
use super::Delivery;
use crate::codec::packet::SubscriptionOptions;
use crate::types::{ClientId, TopicName};

/// One subscription as stored: what [`Delivery`] is built from.
#[derive(Debug, Clone)]
pub(crate) struct Entry<S> {
    /// The session incarnation that made the subscription: only it (or a
    /// later incarnation replacing the entry) can remove it, so a late
    /// cleanup of an ended session never removes its successor's.
    pub incarnation: u64,
    pub opts: SubscriptionOptions,
    pub subscription_id: Option<u32>,
    pub handle: S,
}

impl<S: Clone> Entry<S> {
    fn delivery(&self, client_id: &ClientId) -> Delivery<S> {
        Delivery {
            client_id: client_id.clone(),
            handle: self.handle.clone(),
            qos: self.opts.qos,
            retain_as_published: self.opts.retain_as_published,
            subscription_ids: self.subscription_id.into_iter().collect(),
            shared: false,
            others: Vec::new(),
        }
    }
}

/// The subscriptions whose filter ends at one place in the trie.
//
// Keys are std `HashMap`s with the default SipHash: client ids and topic
// levels come from the network, so a hash-flooding-resistant hasher is
// worth its few nanoseconds per level.
#[derive(Debug)]
pub(crate) struct Subscribers<S> {
    clients: HashMap<ClientId, Entry<S>>,
    groups: HashMap<Box<str>, SharedGroup<S>>,
}

impl<S> Default for Subscribers<S> {
    fn default() -> Self {
        Subscribers {
            clients: HashMap::new(),
            groups: HashMap::new(),
        }
    }
}

impl<S> Subscribers<S> {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.groups.is_empty()
    }

    /// Adds or replaces; true if the subscription is new.
    fn insert(&mut self, group: Option<&str>, client: &ClientId, entry: Entry<S>) -> bool {
        match group {
            None => self.clients.insert(client.clone(), entry).is_none(),
            Some(g) => self
                .groups
                .entry(g.into())
                .or_insert_with(SharedGroup::new)
                .insert(client, entry),
        }
    }

    /// Removes `client`'s subscription made by `incarnation` (dropping an
    /// emptied group); true if it existed.
    fn remove(&mut self, group: Option<&str>, client: &ClientId, incarnation: u64) -> bool {
        let Some(g) = group else {
            if self
                .clients
                .get(client)
                .is_some_and(|e| e.incarnation == incarnation)
            {
                self.clients.remove(client);
                return true;
            }
            return false;
        };
        let Some(members) = self.groups.get_mut(g) else {
            return false;
        };
        let removed = members.remove(client, incarnation);
        if members.is_empty() {
            self.groups.remove(g);
        }
        removed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients.len() + self.groups.values().map(SharedGroup::len).sum::<usize>()
    }
}

/// One level of the trie.
#[derive(Debug)]
pub(crate) struct Node<S> {
    literal: HashMap<Box<str>, Node<S>>,
    plus: Option<Box<Node<S>>>,
    exact: Subscribers<S>,
    multi: Subscribers<S>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            plus: None,
            exact: Subscribers::default(),
            multi: Subscribers::default(),
        }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.plus.is_none()
            && self.exact.is_empty()
            && self.multi.is_empty()
    }

    /// Adds or replaces a subscription; true if it is new.
    pub fn insert(
        &mut self,
        filter: &ParsedFilter<'_>,
        client: &ClientId,
        entry: Entry<S>,
    ) -> bool {
        let mut node = self;
        for &level in &filter.path {
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.literal.entry(level.into()).or_default()
            };
        }
        let subs = if filter.multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        subs.insert(filter.group, client, entry)
    }

    /// Removes a subscription and every node it leaves empty; true if it
    /// existed. Recursion depth is bounded by [`super::MAX_TOPIC_LEVELS`].
    pub fn remove(
        &mut self,
        filter: &ParsedFilter<'_>,
        client: &ClientId,
        incarnation: u64,
    ) -> bool {
        self.remove_at(&filter.path, filter, client, incarnation)
    }

    fn remove_at(
        &mut self,
        path: &[&str],
        filter: &ParsedFilter<'_>,
        client: &ClientId,
        incarnation: u64,
    ) -> bool {
        let Some((&level, rest)) = path.split_first() else {
            let subs = if filter.multi {
                &mut self.multi
            } else {
                &mut self.exact
            };
            return subs.remove(filter.group, client, incarnation);
        };
        if level == "+" {
            let Some(child) = self.plus.as_deref_mut() else {
                return false;
            };
            let removed = child.remove_at(rest, filter, client, incarnation);
            if child.is_empty() {
                self.plus = None;
            }
            removed
        } else {
            let Some(child) = self.literal.get_mut(level) else {
                return false;
            };
            let removed = child.remove_at(rest, filter, client, incarnation);
            if child.is_empty() {
                self.literal.remove(level);
            }
            removed
        }
    }

    /// Nodes in this subtree, itself included.
    pub fn node_count(&self) -> usize {
        1 + self.literal.values().map(Node::node_count).sum::<usize>()
            + self.plus.as_deref().map_or(0, Node::node_count)
    }

    /// Subscriptions stored in this subtree (walks it: for tests and checks).
    #[cfg(test)]
    pub fn subscription_count(&self) -> usize {
        self.exact.len()
            + self.multi.len()
            + self
                .literal
                .values()
                .map(Node::subscription_count)
                .sum::<usize>()
            + self.plus.as_deref().map_or(0, Node::subscription_count)
    }
}

impl<S: Clone> Node<S> {
    /// Collects the subscriptions matching `topic`, starting at the root.
    ///
    /// Wildcards in the first level (`#`, `+`) do not match a topic whose
    /// first level starts with `$` [MQTT-4.7.2-1]; a literal `$SYS` does.
    pub fn route(&self, topic: &TopicName, out: &mut Collector<'_, S>) {
        let mut levels = topic.levels();
        let Some(first) = levels.next() else { return };
        if !first.starts_with('$') {
            out.add(&self.multi);
            if let Some(plus) = self.plus.as_deref() {
                plus.walk(levels.clone(), out);
            }
        }
        if let Some(child) = self.literal.get(first) {
            child.walk(levels, out);
        }
    }

    /// `self` matched the level just consumed; `levels` are what is left.
    /// Recursion depth is bounded by the trie's depth, not the topic's.
    fn walk(&self, mut levels: std::str::Split<'_, char>, out: &mut Collector<'_, S>) {
        // `x/#` matches `x` itself and anything below it.
        out.add(&self.multi);
        let Some(level) = levels.next() else {
            out.add(&self.exact);
            return;
        };
        if let Some(child) = self.literal.get(level) {
            child.walk(levels.clone(), out);
        }
        if let Some(plus) = self.plus.as_deref() {
            plus.walk(levels, out);
        }
    }
}

/// Accumulates the deliveries of one `route` call.
pub(crate) struct Collector<'a, S> {
    publisher: Option<&'a ClientId>,
    out: Vec<Delivery<S>>,
    shared: Vec<Delivery<S>>,
    /// How many subscriber maps added something: one map holds each client
    /// at most once, so with a single one there is nothing to merge.
    maps_hit: usize,
}

impl<'a, S: Clone> Collector<'a, S> {
    pub fn new(publisher: Option<&'a ClientId>) -> Self {
        Collector {
            publisher,
            out: Vec::new(),
            shared: Vec::new(),
            maps_hit: 0,
        }
    }

    fn add(&mut self, subs: &Subscribers<S>) {
        if !subs.clients.is_empty() {
            let before = self.out.len();
            self.out.reserve(subs.clients.len());
            for (client, entry) in &subs.clients {
                // [MQTT-3.8.3-3]: not back to the publisher on a no-local subscription.
                if entry.opts.no_local && self.publisher == Some(client) {
                    continue;
                }
                self.out.push(entry.delivery(client));
            }
            if self.out.len() > before {
                self.maps_hit += 1;
            }
        }
        for group in subs.groups.values() {
            let mut members = group.in_turn();
            if let Some((client, entry)) = members.next() {
                let mut d = entry.delivery(client);
                d.shared = true;
                d.others = members.map(|(c, e)| e.delivery(c)).collect();
                self.shared.push(d);
            }
        }
    }

    /// One delivery per client for its normal subscriptions, then one per
    /// matching shared group.
    pub fn finish(mut self) -> Vec<Delivery<S>> {
        if self.maps_hit > 1 {
            self.out
                .sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
            self.out.dedup_by(|later, kept| {
                let same = later.client_id == kept.client_id;
                if same {
                    kept.merge(later);
                }
                same
            });
        }
        self.out.append(&mut self.shared);
        self.out
    }
}
