//! Property tests: the trie ([`Router`] and [`RetainedStore`]) against a
//! naive matcher written straight from the spec, over random topics and
//! filters built from a small alphabet of levels (including empty and `$`
//! levels, so collisions and edge cases are frequent).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// MQTT 5.0 section 4.7: does `filter` match `topic`?
fn naive_matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1]: a first-level wildcard never matches a `$` topic.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    for i in 0.. {
        match (f.get(i), t.get(i)) {
            // `#` matches the rest, including nothing (the parent level).
            (Some(&"#"), _) => return true,
            (Some(&fl), Some(&tl)) if fl == "+" || fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
    false
}

const TOPIC_LEVELS: &[&str] = &["a", "b", "", "$s"];
const FILTER_LEVELS: &[&str] = &["a", "b", "", "$s", "+"];

fn topic_strategy() -> impl Strategy<Value = String> {
    // A lone empty level would be the empty topic, which is invalid.
    prop::collection::vec(prop::sample::select(TOPIC_LEVELS), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("topic names are not empty", |t| !t.is_empty())
}

fn filter_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(FILTER_LEVELS), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("topic filters are not empty", |f| !f.is_empty())
}

fn sorted_clients<S>(ds: Vec<Delivery<S>>) -> Vec<String> {
    let mut v: Vec<String> = ds.into_iter().map(|d| d.client_id.to_string()).collect();
    v.sort();
    v
}

#[test]
fn naive_matcher_agrees_with_spec_examples() {
    assert!(naive_matches(
        "sport/tennis/player1/#",
        "sport/tennis/player1"
    ));
    assert!(naive_matches("sport/+", "sport/"));
    assert!(!naive_matches("sport/+", "sport"));
    assert!(naive_matches("+/+", "/finance"));
    assert!(!naive_matches("+", "/finance"));
    assert!(!naive_matches("#", "$SYS/x"));
    assert!(naive_matches("$SYS/#", "$SYS"));
}

proptest! {
    /// Every filter is subscribed by its own client, normally and as its own
    /// shared group: a publish reaches exactly the matching ones, once each.
    #[test]
    fn route_matches_naive(
        filters in prop::collection::vec(filter_strategy(), 1..12),
        topics in prop::collection::vec(topic_strategy(), 1..8),
    ) {
        let r: Router<usize> = Router::new();
        let o = SubscriptionOptions::with_qos(QoS::AtMostOnce);
        for (i, f) in filters.iter().enumerate() {
            let tf = TopicFilter::new(f).expect("generated filters are valid");
            r.subscribe(&ClientId::new(format!("n{i}")), 0, &tf, o, None, i).expect("ok");
            let shared = TopicFilter::new(&format!("$share/g{i}/{f}")).expect("valid");
            r.subscribe(&ClientId::new(format!("s{i}")), 0, &shared, o, None, i).expect("ok");
        }
        for t in &topics {
            let topic = TopicName::new(t).expect("generated topics are valid");
            let mut want: Vec<String> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| naive_matches(f, t))
                .flat_map(|(i, _)| [format!("n{i}"), format!("s{i}")])
                .collect();
            want.sort();
            prop_assert_eq!(sorted_clients(r.route(&topic, None)), want, "topic {}", t);
        }
    }

    /// One client holding all the filters gets a single delivery carrying the
    /// ids of exactly the matching ones.
    #[test]
    fn overlapping_filters_merge(
        filters in prop::collection::vec(filter_strategy(), 1..12),
        topic in topic_strategy(),
    ) {
        let r: Router<()> = Router::new();
        let c = ClientId::new("c");
        let mut ids_by_filter = BTreeMap::new();
        for (i, f) in filters.iter().enumerate() {
            let tf = TopicFilter::new(f).expect("valid");
            let id = u32::try_from(i + 1).expect("small");
            let o = SubscriptionOptions::with_qos(QoS::from_u8((i % 3) as u8).expect("0..=2"));
            r.subscribe(&c, 0, &tf, o, Some(id), ()).expect("ok");
            // A repeated filter replaces the earlier subscription.
            ids_by_filter.insert(f.clone(), (id, o.qos));
        }
        let matching: Vec<(u32, QoS)> = ids_by_filter
            .iter()
            .filter(|(f, _)| naive_matches(f, &topic))
            .map(|(_, v)| *v)
            .collect();
        let ds = r.route(&TopicName::new(&topic).expect("valid"), None);
        prop_assert_eq!(ds.len(), usize::from(!matching.is_empty()));
        if let Some(d) = ds.first() {
            let mut got = d.subscription_ids.clone();
            got.sort_unstable();
            let mut want: Vec<u32> = matching.iter().map(|m| m.0).collect();
            want.sort_unstable();
            prop_assert_eq!(got, want);
            prop_assert_eq!(Some(d.qos), matching.iter().map(|m| m.1).max());
        }
    }

    /// Subscribing and then unsubscribing everything, in any order, leaves
    /// only the root.
    #[test]
    fn churn_leaves_no_nodes(
        filters in prop::collection::vec(filter_strategy(), 1..16),
        order in any::<prop::sample::Index>(),
    ) {
        let r: Router<()> = Router::new();
        let o = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        let tfs: Vec<TopicFilter> =
            filters.iter().map(|f| TopicFilter::new(f).expect("valid")).collect();
        for (i, tf) in tfs.iter().enumerate() {
            r.subscribe(&ClientId::new(format!("c{}", i % 3)), 0, tf, o, None, ()).expect("ok");
        }
        let start = order.index(tfs.len());
        for k in 0..tfs.len() {
            let i = (start + k) % tfs.len();
            r.unsubscribe(&ClientId::new(format!("c{}", i % 3)), 0, &tfs[i]);
        }
        prop_assert_eq!(r.subscription_count(), 0);
        prop_assert_eq!(r.node_count(), 1);
    }

    /// Retained lookups return exactly the stored topics the filter matches.
    #[test]
    fn retained_matches_naive(
        topics in prop::collection::vec(topic_strategy(), 0..16),
        filters in prop::collection::vec(filter_strategy(), 1..8),
    ) {
        let store: RetainedStore<String> = RetainedStore::new();
        for t in &topics {
            store.set(&TopicName::new(t).expect("valid"), Some(t.clone())).expect("ok");
        }
        let mut stored = topics.clone();
        stored.sort();
        stored.dedup();
        prop_assert_eq!(store.len(), stored.len());
        for f in &filters {
            let mut got = store.matching(&TopicFilter::new(f).expect("valid"));
            got.sort();
            let want: Vec<String> =
                stored.iter().filter(|t| naive_matches(f, t)).cloned().collect();
            prop_assert_eq!(got, want, "filter {}", f);
        }
        for t in &topics {
            store.set(&TopicName::new(t).expect("valid"), None).expect("ok");
        }
        prop_assert_eq!(store.len(), 0);
        prop_assert_eq!(store.node_count(), 1);
    }
}
