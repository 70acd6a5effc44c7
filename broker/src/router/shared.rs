//! One shared-subscription group (MQTT 5.0 section 4.8.2): the members that
//! subscribed with the same `$share/GROUP/FILTER`, and the round-robin
//! cursor that picks which single member gets each message (and the
//! order in which the others are tried if that one cannot take it).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::trie::Entry;
use crate::types::ClientId;

/// The members of one group for one filter, in subscription order.
///
/// Kept as a `Vec`: groups are small (a handful of workers), picking a
/// member is an index, and order makes the rotation deterministic.
#[derive(Debug)]
pub(crate) struct SharedGroup<S> {
    members: Vec<(ClientId, Entry<S>)>,
    /// Advanced under the router's *read* lock, hence atomic: concurrent
    /// publishes each take a distinct turn.
    next: AtomicUsize,
}

impl<S> SharedGroup<S> {
    pub fn new() -> Self {
        SharedGroup {
            members: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// Adds `client` or replaces its entry; true if it was not a member.
    pub fn insert(&mut self, client: &ClientId, entry: Entry<S>) -> bool {
        match self.members.iter_mut().find(|(c, _)| c == client) {
            Some((_, old)) => {
                *old = entry;
                false
            }
            None => {
                self.members.push((client.clone(), entry));
                true
            }
        }
    }

    /// Removes `client`'s membership made by `incarnation`; true if it was
    /// a member.
    pub fn remove(&mut self, client: &ClientId, incarnation: u64) -> bool {
        let found = self
            .members
            .iter()
            .position(|(c, e)| c == client && e.incarnation == incarnation);
        match found {
            Some(i) => {
                self.members.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Every member, starting with the one whose turn it is, advancing the
    /// rotation by one. The caller gives the message to the first member
    /// that can take it (a connected one first), so an offline or ending
    /// member does not swallow its turn.
    pub fn in_turn(&self) -> impl Iterator<Item = &(ClientId, Entry<S>)> {
        let n = self.members.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        self.members[start..].iter().chain(&self.members[..start])
    }
}
