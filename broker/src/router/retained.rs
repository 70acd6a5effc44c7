//! The retained-message store: the last retained message of each topic,
//! in a trie of topic levels so a wildcard subscription visits only the
//! branches it can match, and a plain filter is a lookup per level.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::filter::ParsedFilter;
use super::{RouterError, MAX_TOPIC_LEVELS};
use crate::types::{TopicFilter, TopicName};

/// Retained messages by topic. `M` is cheap to clone (e.g. `Arc<Message>`).
///
/// A `std::sync::RwLock` for the same reasons as [`super::Router`]:
/// subscribes read in parallel, retained publishes write briefly.
#[derive(Debug)]
pub struct RetainedStore<M> {
    inner: RwLock<Inner<M>>,
}

#[derive(Debug)]
struct Inner<M> {
    root: Node<M>,
    len: usize,
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

impl<M: Clone> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Clone> RetainedStore<M> {
    pub fn new() -> Self {
        RetainedStore {
            inner: RwLock::new(Inner {
                root: Node::default(),
                len: 0,
            }),
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
    /// Fails only for a topic deeper than [`MAX_TOPIC_LEVELS`], which is
    /// then not retained (clearing one always succeeds: it cannot exist).
    pub fn set(&self, topic: &TopicName, msg: Option<M>) -> Result<(), RouterError> {
        let depth = topic.levels().count();
        let Some(msg) = msg else {
            if depth <= MAX_TOPIC_LEVELS {
                let levels: Vec<&str> = topic.levels().collect();
                let mut inner = self.write();
                if inner.root.remove(&levels) {
                    inner.len -= 1;
                }
            }
            return Ok(());
        };
        if depth > MAX_TOPIC_LEVELS {
            return Err(RouterError::TopicTooDeep {
                topic: topic.clone(),
            });
        }
        let mut inner = self.write();
        let mut node = &mut inner.root;
        for level in topic.levels() {
            node = node.children.entry(level.into()).or_default();
        }
        if node.msg.replace(msg).is_none() {
            inner.len += 1;
        }
        Ok(())
    }

    /// The retained messages whose topics match `filter`, with the same
    /// rules as routing (a first-level wildcard skips `$` topics). Shared
    /// subscriptions get no retained messages, so callers do not ask; if
    /// they do, the filter after the share name is used.
    pub fn matching(&self, filter: &TopicFilter) -> Vec<M> {
        let Ok(parsed) = ParsedFilter::parse(filter) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.read()
            .root
            .collect(&parsed.path, parsed.multi, true, &mut out);
        out
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.read().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of trie nodes, root included; for tests and diagnostics.
    pub fn node_count(&self) -> usize {
        self.read().root.node_count()
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
    /// Clears the message at `levels`, pruning emptied nodes; true if there
    /// was one.
    fn remove(&mut self, levels: &[&str]) -> bool {
        let Some((&level, rest)) = levels.split_first() else {
            return self.msg.take().is_some();
        };
        let Some(child) = self.children.get_mut(level) else {
            return false;
        };
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
    use super::*;

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
