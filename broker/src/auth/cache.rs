//! A small bounded map whose entries expire, for the HTTP hook's answers.
//!
//! Bounded simply: when full, expired entries are purged, and if that is
//! not enough the whole map is dropped. Hook answers are cheap to ask
//! again, so an occasional cold cache costs less than an LRU's upkeep.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

pub struct TtlCache<K, V> {
    ttl: Duration,
    max_entries: usize,
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// A cache keeping answers for `ttl`, at most `max_entries` at once; a
    /// zero `ttl` or size disables it.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            ttl,
            max_entries,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let mut map = self.map.lock();
        match map.get(key) {
            Some((v, expires)) if *expires > Instant::now() => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: K, value: V) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= self.max_entries && !map.contains_key(&key) {
            map.retain(|_, (_, expires)| *expires > now);
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(key, (value, now + self.ttl));
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire() {
        let c = TtlCache::new(Duration::from_secs(10), 10);
        c.insert("a", true);
        assert_eq!(c.get(&"a"), Some(true));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(c.get(&"a"), None);
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn size_is_bounded() {
        let c = TtlCache::new(Duration::from_secs(10), 3);
        for i in 0..3 {
            c.insert(i, i);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        c.insert(3, 3);
        assert_eq!(c.len(), 1, "expired entries purged");
        for i in 4..10 {
            c.insert(i, i);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn zero_ttl_disables() {
        let c = TtlCache::new(Duration::ZERO, 3);
        c.insert(1, 1);
        assert_eq!(c.get(&1), None);
    }
}
