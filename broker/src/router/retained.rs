//! The retained-message store: the last retained message of each topic,
//! in a trie of topic levels so a wildcard subscription visits only the
//! branches it can match, and a plain filter is a lookup per level.
//!
//! It keeps its own bounds (`limits.max_retained_messages` and
//! `limits.max_retained_bytes`): a topic that holds no retained message
//! yet gets one only while both have room; replacing or clearing one is
//! always allowed, so a device can always update or withdraw its state.
//! Messages with an MQTT 5.0 expiry are indexed by deadline, so that
//! purging the expired ones costs a few tree steps each, never a walk of
//! the whole trie, and a purge can stop after a bounded number.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use super::filter::ParsedFilter;
use super::{RouterError, MAX_TOPIC_LEVELS};
use crate::types::{TopicFilter, TopicName};

/// What the store needs to know of a message.
pub trait Retainable: Clone {
    /// Bytes it counts for against the bytes bound (payload and topic).
    fn retained_bytes(&self) -> u64;
    /// When it expires (MQTT 5.0 Message Expiry Interval), if it does.
    fn expires_at(&self) -> Option<Instant>;
}

/// The store's bounds; 0: no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainedLimits {
    pub max_messages: usize,
    pub max_bytes: u64,
}

/// Which bound refused a new retained topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedLimit {
    Messages,
    Bytes,
}

impl RetainedLimit {
    /// The metric label and the configuration key's suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            RetainedLimit::Messages => "messages",
            RetainedLimit::Bytes => "bytes",
        }
    }
}

/// What a successful [`RetainedStore::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// A topic that held none got a retained message.
    Added,
    /// The topic's retained message was replaced.
    Replaced,
    /// The topic's retained message was cleared, or there was none.
    Cleared,
}

/// Retained messages by topic. `M` is cheap to clone (e.g. `Arc<Message>`).
///
/// A `std::sync::RwLock` for the same reasons as [`super::Router`]:
/// subscribes read in parallel, retained publishes write briefly.
#[derive(Debug)]
pub struct RetainedStore<M> {
    inner: RwLock<Inner<M>>,
    limits: RetainedLimits,
}

#[derive(Debug)]
struct Inner<M> {
    root: Node<M>,
    len: usize,
    bytes: u64,
    /// The messages that expire, by deadline then topic.
    expiring: BTreeSet<(Instant, TopicName)>,
}

#[derive(Debug)]
struct Node<M> {
    children: HashMap<Box<str>, Node<M>>,
    msg: Option<M>,
}

impl<M> Default for Node<M> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            msg: None,
        }
    }
}

impl<M: Retainable> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Retainable> RetainedStore<M> {
    /// A store without bounds.
    pub fn new() -> Self {
        Self::with_limits(RetainedLimits::default())
    }

    pub fn with_limits(limits: RetainedLimits) -> Self {
        RetainedStore {
            inner: RwLock::new(Inner {
                root: Node::default(),
                len: 0,
                bytes: 0,
                expiring: BTreeSet::new(),
            }),
            limits,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner<M>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<M>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retains `msg` as the topic's message, or with `None` (a retained
    /// publish with an empty payload) clears it (MQTT 5.0 [MQTT-3.3.1-6]).
    ///
    /// Fails for a topic deeper than [`MAX_TOPIC_LEVELS`], and for a topic
    /// that holds no retained message yet when a bound is reached; the
    /// message is then not retained (clearing one always succeeds).
    pub fn set(&self, topic: &TopicName, msg: Option<M>) -> Result<SetOutcome, RouterError> {
        let depth = topic.levels().count();
        let Some(msg) = msg else {
            if depth <= MAX_TOPIC_LEVELS {
                let levels: Vec<&str> = topic.levels().collect();
                let mut inner = self.write();
                if let Some(old) = inner.root.remove(&levels) {
                    inner.forget(topic, &old);
                }
            }
            return Ok(SetOutcome::Cleared);
        };
        if depth > MAX_TOPIC_LEVELS {
            return Err(RouterError::TopicTooDeep {
                topic: topic.clone(),
            });
        }
        let levels: Vec<&str> = topic.levels().collect();
        let mut inner = self.write();
        let outcome = match inner.root.get(&levels) {
            Some(old) => {
                let old = old.clone();
                inner.forget(topic, &old);
                SetOutcome::Replaced
            }
            None => {
                if let Some(limit) = self.full(&inner, msg.retained_bytes()) {
                    return Err(RouterError::RetainedFull {
                        topic: topic.clone(),
                        limit,
                    });
                }
                SetOutcome::Added
            }
        };
        inner.len += 1;
        inner.bytes += msg.retained_bytes();
        if let Some(at) = msg.expires_at() {
            inner.expiring.insert((at, topic.clone()));
        }
        let mut node = &mut inner.root;
        for level in levels {
            node = node.children.entry(level.into()).or_default();
        }
        node.msg = Some(msg);
        Ok(outcome)
    }

    /// The bound a new topic of `bytes` would pass, if any.
    fn full(&self, inner: &Inner<M>, bytes: u64) -> Option<RetainedLimit> {
        let l = self.limits;
        if l.max_messages > 0 && inner.len >= l.max_messages {
            Some(RetainedLimit::Messages)
        } else if l.max_bytes > 0 && inner.bytes.saturating_add(bytes) > l.max_bytes {
            Some(RetainedLimit::Bytes)
        } else {
            None
        }
    }

    /// The retained messages whose topics match `filter`, with the same
    /// rules as routing (a first-level wildcard skips `$` topics), less
    /// those expired and not purged yet. Shared subscriptions get no
    /// retained messages, so callers do not ask; if they do, the filter
    /// after the share name is used.
    pub fn matching(&self, filter: &TopicFilter) -> Vec<M> {
        let Ok(parsed) = ParsedFilter::parse(filter) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.read()
            .root
            .collect(&parsed.path, parsed.multi, true, &mut out);
        let now = Instant::now();
        out.retain(|m| m.expires_at().is_none_or(|at| at > now));
        out
    }

    /// Removes up to `max` messages whose expiry is at or before `now`;
    /// `purged` is called with their topics before the lock is released,
    /// so that a retained publish to one of them cannot come between the
    /// removal and what the caller does (clear them in the durable store).
    /// Returns how many were removed.
    pub fn purge_expired(
        &self,
        now: Instant,
        max: usize,
        purged: impl FnOnce(&[TopicName]),
    ) -> usize {
        // Most ticks find nothing due: a shared look first, so that they
        // never stop subscribes.
        if !self.any_expired(now) {
            return 0;
        }
        let mut inner = self.write();
        let mut topics = Vec::new();
        while topics.len() < max {
            let Some((at, topic)) = inner.expiring.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            let levels: Vec<&str> = topic.levels().collect();
            // The index and the trie change together under the lock, so
            // the message there is the one indexed.
            if let Some(old) = inner.root.remove(&levels) {
                inner.forget(&topic, &old);
            } else {
                inner.expiring.remove(&(at, topic.clone()));
            }
            topics.push(topic);
        }
        if !topics.is_empty() {
            purged(&topics);
        }
        topics.len()
    }

    /// Whether a message's expiry is at or before `now` (one tree step).
    pub fn any_expired(&self, now: Instant) -> bool {
        self.read()
            .expiring
            .first()
            .is_some_and(|(at, _)| *at <= now)
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.read().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes (payload and topic) of the retained messages.
    pub fn bytes(&self) -> u64 {
        self.read().bytes
    }

    /// Number of trie nodes, root included; for tests and diagnostics.
    pub fn node_count(&self) -> usize {
        self.read().root.node_count()
    }
}

impl<M: Retainable> Inner<M> {
    /// Takes `old`, no longer in the trie at `topic`, out of the figures.
    fn forget(&mut self, topic: &TopicName, old: &M) {
        self.len -= 1;
        self.bytes = self.bytes.saturating_sub(old.retained_bytes());
        if let Some(at) = old.expires_at() {
            self.expiring.remove(&(at, topic.clone()));
        }
    }
}

impl<M: Clone> Node<M> {
    /// Pushes the messages under `self` matching `path` (+ `#` if `multi`).
    /// Recursion depth is bounded by the trie's, at most [`MAX_TOPIC_LEVELS`].
    fn collect(&self, path: &[&str], multi: bool, at_root: bool, out: &mut Vec<M>) {
        let Some((&level, rest)) = path.split_first() else {
            if let Some(msg) = &self.msg {
                out.push(msg.clone());
            }
            if multi {
                self.collect_below(at_root, out);
            }
            return;
        };
        if level == "+" {
            for (name, child) in &self.children {
                // [MQTT-4.7.2-1]
                if !(at_root && name.starts_with('$')) {
                    child.collect(rest, multi, false, out);
                }
            }
        } else if let Some(child) = self.children.get(level) {
            child.collect(rest, multi, false, out);
        }
    }

    /// Pushes every message strictly below `self`.
    fn collect_below(&self, at_root: bool, out: &mut Vec<M>) {
        for (name, child) in &self.children {
            if at_root && name.starts_with('$') {
                continue;
            }
            if let Some(msg) = &child.msg {
                out.push(msg.clone());
            }
            child.collect_below(false, out);
        }
    }
}

impl<M> Node<M> {
    /// The message at `levels`, if any.
    fn get(&self, levels: &[&str]) -> Option<&M> {
        let mut node = self;
        for level in levels {
            node = node.children.get(*level)?;
        }
        node.msg.as_ref()
    }

    /// Clears the message at `levels`, pruning emptied nodes; returns it.
    fn remove(&mut self, levels: &[&str]) -> Option<M> {
        let Some((&level, rest)) = levels.split_first() else {
            return self.msg.take();
        };
        let child = self.children.get_mut(level)?;
        let removed = child.remove(rest);
        if child.msg.is_none() && child.children.is_empty() {
            self.children.remove(level);
        }
        removed
    }

    fn node_count(&self) -> usize {
        1 + self.children.values().map(Node::node_count).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    impl Retainable for String {
        fn retained_bytes(&self) -> u64 {
            self.len() as u64
        }
        fn expires_at(&self) -> Option<Instant> {
            None
        }
    }

    /// A message with an expiry.
    #[derive(Debug, Clone, PartialEq)]
    struct Expiring(&'static str, Option<Instant>);

    impl Retainable for Expiring {
        fn retained_bytes(&self) -> u64 {
            self.0.len() as u64
        }
        fn expires_at(&self) -> Option<Instant> {
            self.1
        }
    }

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).expect("valid topic")
    }

    fn store(topics: &[&str]) -> RetainedStore<String> {
        let s = RetainedStore::new();
        for t in topics {
            s.set(&topic(t), Some(t.to_string())).expect("retained");
        }
        s
    }

    fn limited(max_messages: usize, max_bytes: u64) -> RetainedStore<String> {
        RetainedStore::with_limits(RetainedLimits {
            max_messages,
            max_bytes,
        })
    }

    fn set(s: &RetainedStore<String>, t: &str, m: Option<&str>) -> Result<SetOutcome, RouterError> {
        s.set(&topic(t), m.map(str::to_string))
    }

    fn refused_by(r: Result<SetOutcome, RouterError>) -> Option<RetainedLimit> {
        match r {
            Err(RouterError::RetainedFull { limit, .. }) => Some(limit),
            _ => None,
        }
    }

    #[test]
    fn count_bound_refuses_new_topics_only() {
        let s = limited(2, 0);
        assert_eq!(set(&s, "a", Some("1")), Ok(SetOutcome::Added));
        assert_eq!(set(&s, "b", Some("2")), Ok(SetOutcome::Added));
        assert_eq!(
            refused_by(set(&s, "c", Some("3"))),
            Some(RetainedLimit::Messages)
        );
        assert_eq!(s.node_count(), 3, "a refused topic leaves no node");
        assert_eq!(set(&s, "a", Some("replaced")), Ok(SetOutcome::Replaced));
        assert_eq!(set(&s, "b", None), Ok(SetOutcome::Cleared));
        assert_eq!(set(&s, "c", Some("3")), Ok(SetOutcome::Added), "room again");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn byte_bound_counts_what_is_kept() {
        let s = limited(0, 10);
        set(&s, "a", Some("12345")).expect("5 bytes");
        assert_eq!(s.bytes(), 5);
        assert_eq!(
            refused_by(set(&s, "b", Some("123456"))),
            Some(RetainedLimit::Bytes)
        );
        set(&s, "b", Some("12345")).expect("exactly at the bound");
        assert_eq!(s.bytes(), 10);
        // A replacement is always allowed, even one that grows.
        set(&s, "a", Some("1234567")).expect("replaced");
        assert_eq!(s.bytes(), 12);
        set(&s, "a", None).expect("cleared");
        assert_eq!(s.bytes(), 5);
    }

    #[test]
    fn purge_removes_expired_only_and_is_bounded() {
        let s: RetainedStore<Expiring> = RetainedStore::new();
        let now = Instant::now();
        let past = now - Duration::from_millis(1);
        let later = now + Duration::from_secs(60);
        for t in ["x/1", "x/2", "x/3"] {
            s.set(&topic(t), Some(Expiring("old", Some(past))))
                .expect("set");
        }
        s.set(&topic("x/4"), Some(Expiring("later", Some(later))))
            .expect("set");
        s.set(&topic("x/5"), Some(Expiring("never", None)))
            .expect("set");
        // Expired but not purged yet: not handed to subscribers.
        let all = s.matching(&TopicFilter::new("x/#").expect("filter"));
        assert_eq!(all.len(), 2, "{all:?}");
        let mut cleared = Vec::new();
        assert_eq!(s.purge_expired(now, 2, |t| cleared.extend_from_slice(t)), 2);
        assert_eq!(s.purge_expired(now, 2, |t| cleared.extend_from_slice(t)), 1);
        assert_eq!(s.purge_expired(now, 2, |_| panic!("nothing to purge")), 0);
        assert_eq!(cleared.len(), 3);
        assert_eq!(s.len(), 2);
        // A replacement drops the old deadline from the index.
        s.set(&topic("x/4"), Some(Expiring("now never", None)))
            .expect("set");
        assert_eq!(s.purge_expired(later, 10, |_| {}), 0);
        assert_eq!(s.len(), 2);
    }

    fn matching(s: &RetainedStore<String>, filter: &str) -> Vec<String> {
        let f = TopicFilter::new(filter).expect("valid filter");
        let mut got = s.matching(&f);
        got.sort();
        got
    }

    const TOPICS: &[&str] = &[
        "a",
        "a/b",
        "a/b/c",
        "a//c",
        "/a",
        "$SYS/x",
        "$SYS",
        "sport/tennis/player1",
    ];

    #[test]
    fn set_replace_and_clear() {
        let s = store(&["a/b"]);
        assert_eq!(s.len(), 1);
        s.set(&topic("a/b"), Some("new".into())).expect("retained");
        assert_eq!(s.len(), 1);
        assert_eq!(matching(&s, "a/b"), ["new"]);
        s.set(&topic("a/b"), None).expect("cleared");
        assert!(s.is_empty());
        assert!(matching(&s, "a/b").is_empty());
        assert_eq!(s.node_count(), 1, "cleared topic leaves no nodes");
        s.set(&topic("x/y"), None)
            .expect("clearing nothing is fine");
        assert_eq!(s.node_count(), 1);
    }

    #[test]
    fn clearing_a_parent_keeps_children() {
        let s = store(&["a", "a/b"]);
        s.set(&topic("a"), None).expect("cleared");
        assert_eq!(matching(&s, "a/#"), ["a/b"]);
        s.set(&topic("a/b"), None).expect("cleared");
        assert_eq!(s.node_count(), 1);
    }

    #[test]
    fn wildcard_matching() {
        let s = store(TOPICS);
        assert_eq!(matching(&s, "a"), ["a"]);
        assert_eq!(matching(&s, "a/#"), ["a", "a//c", "a/b", "a/b/c"]);
        assert_eq!(matching(&s, "a/+"), ["a/b"]);
        assert_eq!(matching(&s, "a/+/c"), ["a//c", "a/b/c"]);
        assert_eq!(matching(&s, "+/+"), ["/a", "a/b"]);
        assert_eq!(matching(&s, "/+"), ["/a"]);
        assert_eq!(matching(&s, "+"), ["a"]);
        assert_eq!(
            matching(&s, "sport/tennis/player1/#"),
            ["sport/tennis/player1"]
        );
        assert!(matching(&s, "b/#").is_empty());
    }

    #[test]
    fn dollar_topics() {
        let s = store(TOPICS);
        let all = matching(&s, "#");
        assert!(!all.iter().any(|t| t.starts_with('$')), "{all:?}");
        assert_eq!(all.len(), TOPICS.len() - 2);
        assert_eq!(matching(&s, "+/x"), Vec::<String>::new());
        assert_eq!(matching(&s, "$SYS/#"), ["$SYS", "$SYS/x"]);
        assert_eq!(matching(&s, "$SYS/+"), ["$SYS/x"]);
    }

    #[test]
    fn shared_filter_uses_inner_filter() {
        let s = store(TOPICS);
        assert_eq!(matching(&s, "$share/g/a/+"), ["a/b"]);
        assert!(matching(&s, "$share//a").is_empty());
    }

    #[test]
    fn too_deep_topic_is_refused() {
        let s: RetainedStore<String> = RetainedStore::new();
        let deep = topic(&vec!["x"; MAX_TOPIC_LEVELS + 1].join("/"));
        assert!(matches!(
            s.set(&deep, Some("m".into())),
            Err(RouterError::TopicTooDeep { .. })
        ));
        assert!(s.set(&deep, None).is_ok());
        let ok = topic(&vec!["x"; MAX_TOPIC_LEVELS].join("/"));
        assert!(s.set(&ok, Some("m".into())).is_ok());
        assert_eq!(matching(&s, "#"), ["m"]);
    }
}
