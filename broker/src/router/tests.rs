//! Unit tests of [`Router`]: the matching rules with the spec's examples,
//! merging of overlapping subscriptions, no local, shared groups,
//! resubscription and trie cleanup.

use super::*;
use crate::codec::packet::RetainHandling;

type TestRouter = Router<&'static str>;

fn cid(s: &str) -> ClientId {
    ClientId::new(s)
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("valid filter")
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).expect("valid topic")
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::with_qos(qos)
}

fn sub(r: &TestRouter, client: &'static str, f: &str) -> SubscribeOutcome {
    r.subscribe(
        &cid(client),
        0,
        &filter(f),
        opts(QoS::AtMostOnce),
        None,
        client,
    )
    .expect("subscribed")
}

/// The sorted client ids a publish to `t` reaches.
fn clients(r: &TestRouter, t: &str) -> Vec<String> {
    let mut got: Vec<String> = r
        .route(&topic(t), None)
        .into_iter()
        .map(|d| d.client_id.to_string())
        .collect();
    got.sort();
    got
}

/// Whether a lone subscription to `f` matches topic `t`.
fn matches(f: &str, t: &str) -> bool {
    let r = TestRouter::new();
    sub(&r, "c", f);
    !r.route(&topic(t), None).is_empty()
}

#[test]
fn multi_level_wildcard_spec_examples() {
    let f = "sport/tennis/player1/#";
    assert!(matches(f, "sport/tennis/player1"));
    assert!(matches(f, "sport/tennis/player1/ranking"));
    assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
    assert!(!matches(f, "sport/tennis/player2"));
    assert!(matches("sport/#", "sport"));
    assert!(matches("#", "sport/tennis"));
    assert!(matches("#", "/"));
}

#[test]
fn single_level_wildcard_spec_examples() {
    assert!(matches("sport/tennis/+", "sport/tennis/player1"));
    assert!(matches("sport/tennis/+", "sport/tennis/player2"));
    assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
    assert!(!matches("sport/+", "sport"));
    assert!(matches("sport/+", "sport/"));
    assert!(matches("+/+", "/finance"));
    assert!(matches("/+", "/finance"));
    assert!(!matches("+", "/finance"));
    assert!(matches("+/tennis/#", "sport/tennis/player1"));
}

#[test]
fn empty_levels_are_levels() {
    assert!(matches("a//b", "a//b"));
    assert!(matches("a/+/b", "a//b"));
    assert!(!matches("a/b", "a//b"));
    assert!(!matches("a//b", "a/b"));
    assert!(matches("/a", "/a"));
    assert!(!matches("a", "/a"));
}

#[test]
fn dollar_topics_escape_first_level_wildcards() {
    assert!(!matches("#", "$SYS/x"));
    assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!matches("+", "$SYS"));
    assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
    assert!(matches("$SYS/#", "$SYS"));
    assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(matches("a/+", "a/$x"), "only the first level is special");
    assert!(matches("a/#", "a/$x"));
    assert!(!matches("$share/g/#", "$SYS/x"));
}

#[test]
fn overlapping_subscriptions_give_one_delivery() {
    let r = TestRouter::new();
    let c = cid("c");
    let mut o = opts(QoS::AtMostOnce);
    r.subscribe(&c, 0, &filter("a/#"), o, Some(1), "h")
        .expect("ok");
    o.qos = QoS::ExactlyOnce;
    r.subscribe(&c, 0, &filter("a/+"), o, Some(2), "h")
        .expect("ok");
    o.qos = QoS::AtLeastOnce;
    o.retain_as_published = true;
    r.subscribe(&c, 0, &filter("a/b"), o, None, "h")
        .expect("ok");
    sub(&r, "other", "#");

    let mut ds = r.route(&topic("a/b"), None);
    ds.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    assert_eq!(ds.len(), 2);
    let d = &mut ds[0];
    assert_eq!(d.client_id, c);
    assert_eq!(d.qos, QoS::ExactlyOnce);
    assert!(d.retain_as_published);
    d.subscription_ids.sort();
    assert_eq!(d.subscription_ids, [1, 2]);

    let ds = r.route(&topic("a"), None);
    let d = ds.iter().find(|d| d.client_id == c).expect("a/# matches a");
    assert_eq!(
        (d.qos, d.subscription_ids.as_slice()),
        (QoS::AtMostOnce, &[1][..])
    );
    assert!(!d.retain_as_published);
}

#[test]
fn exact_and_multi_on_one_node_merge() {
    let r = TestRouter::new();
    sub(&r, "c", "a");
    sub(&r, "c", "a/#");
    assert_eq!(clients(&r, "a"), ["c"]);
}

#[test]
fn many_subscribers_each_get_one() {
    let r = TestRouter::new();
    for c in ["c1", "c2", "c3"] {
        sub(&r, c, "a/b");
        sub(&r, c, "a/+");
    }
    sub(&r, "c4", "a/b");
    assert_eq!(clients(&r, "a/b"), ["c1", "c2", "c3", "c4"]);
    assert_eq!(clients(&r, "a/c"), ["c1", "c2", "c3"]);
    assert!(clients(&r, "b").is_empty());
}

#[test]
fn no_local_skips_only_the_publisher() {
    let r = TestRouter::new();
    let mut o = opts(QoS::AtLeastOnce);
    o.no_local = true;
    r.subscribe(&cid("c1"), 0, &filter("a/#"), o, Some(7), "h")
        .expect("ok");
    r.subscribe(&cid("c2"), 0, &filter("a/#"), o, None, "h")
        .expect("ok");
    sub(&r, "c1", "a/b");

    let c1 = cid("c1");
    let to = |t: &str| -> Vec<Delivery<&str>> { r.route(&topic(t), Some(&c1)) };
    let ds = to("a/c");
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].client_id, cid("c2"));
    // The other matching subscription still delivers, without the skipped one's id.
    let mut ds = to("a/b");
    ds.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    assert_eq!(ds.len(), 2);
    assert_eq!(
        (ds[0].qos, ds[0].subscription_ids.len()),
        (QoS::AtMostOnce, 0)
    );
    // Without a publisher (e.g. a will or $SYS message) nobody is skipped.
    assert_eq!(clients(&r, "a/c"), ["c1", "c2"]);
}

#[test]
fn shared_group_round_robin() {
    let r = TestRouter::new();
    for c in ["c1", "c2", "c3"] {
        sub(&r, c, "$share/g/a/+");
    }
    let picked: Vec<String> = (0..6).flat_map(|_| clients(&r, "a/x")).collect();
    assert_eq!(picked, ["c1", "c2", "c3", "c1", "c2", "c3"]);
    assert!(clients(&r, "b/x").is_empty());
}

#[test]
fn one_copy_per_group_plus_normal_subscriptions() {
    let r = TestRouter::new();
    sub(&r, "c1", "$share/g/a/#");
    sub(&r, "c2", "$share/g/a/#");
    sub(&r, "c1", "$share/h/a/b");
    sub(&r, "c1", "a/b");
    // Same group name, different filter: a separate shared subscription.
    sub(&r, "c3", "$share/g/a/b");
    for _ in 0..4 {
        let ds = r.route(&topic("a/b"), None);
        assert_eq!(ds.len(), 4, "{ds:?}");
        let normal = ds.iter().filter(|d| d.client_id == cid("c1")).count();
        assert!(normal >= 2, "c1's own copy and its group h copy");
    }
    assert_eq!(clients(&r, "a/c").len(), 1);
}

#[test]
fn shared_subscription_errors() {
    let r = TestRouter::new();
    let mut o = opts(QoS::AtLeastOnce);
    o.no_local = true;
    let err = r
        .subscribe(&cid("c"), 0, &filter("$share/g/a"), o, None, "h")
        .expect_err("no local on shared");
    assert!(err.is_protocol_error());
    assert_eq!(
        err,
        RouterError::NoLocalOnShared {
            filter: filter("$share/g/a")
        }
    );
    for bad in ["$share//a", "$share/+/a", "$share/g", "$share/g/"] {
        let err = r
            .subscribe(&cid("c"), 0, &filter(bad), opts(QoS::AtMostOnce), None, "h")
            .expect_err(bad);
        assert!(!err.is_protocol_error(), "{bad}");
    }
    assert_eq!(r.subscription_count(), 0);
    assert_eq!(r.node_count(), 1);
    // No local on a normal subscription is fine.
    assert!(r
        .subscribe(&cid("c"), 0, &filter("a"), o, None, "h")
        .is_ok());
}

#[test]
fn resubscribe_replaces_options() {
    let r = TestRouter::new();
    let c = cid("c");
    let f = filter("a/+");
    let mut o = opts(QoS::AtMostOnce);
    assert!(r
        .subscribe(&c, 0, &f, o, Some(1), "old")
        .expect("ok")
        .is_new());
    o.qos = QoS::ExactlyOnce;
    o.retain_handling = RetainHandling::SendIfNew;
    let again = r.subscribe(&c, 0, &f, o, Some(2), "new").expect("ok");
    assert_eq!(again, SubscribeOutcome::Replaced);
    assert_eq!(r.subscription_count(), 1);
    let ds = r.route(&topic("a/b"), None);
    assert_eq!(ds.len(), 1);
    assert_eq!((ds[0].qos, ds[0].handle), (QoS::ExactlyOnce, "new"));
    assert_eq!(ds[0].subscription_ids, [2]);

    assert!(sub(&r, "c", "$share/g/a/+").is_new());
    assert_eq!(sub(&r, "c", "$share/g/a/+"), SubscribeOutcome::Replaced);
    assert!(sub(&r, "c", "$share/h/a/+").is_new());
    assert_eq!(r.subscription_count(), 3);
}

#[test]
fn unsubscribe_removes_and_prunes() {
    let r = TestRouter::new();
    let filters = [
        "a/b/c",
        "a/+/c",
        "a/#",
        "#",
        "+",
        "/",
        "a//b",
        "$SYS/#",
        "$share/g/a/b",
        "$share/g/#",
    ];
    for f in filters {
        sub(&r, "c1", f);
        sub(&r, "c2", f);
    }
    assert_eq!(r.subscription_count(), 2 * filters.len());
    assert!(r.unsubscribe(&cid("c1"), 0, &filter("a/b/c")));
    assert!(
        !r.unsubscribe(&cid("c1"), 0, &filter("a/b/c")),
        "already gone"
    );
    assert!(
        !r.unsubscribe(&cid("c3"), 0, &filter("a/+/c")),
        "never there"
    );
    assert!(!r.unsubscribe(&cid("c1"), 0, &filter("x/y")));
    assert!(!r.unsubscribe(&cid("c1"), 0, &filter("$share//x")));
    assert!(r.unsubscribe(&cid("c1"), 0, &filter("$share/g/#")));
    assert_eq!(clients(&r, "a/b/c"), ["c1", "c2", "c2"]);

    let all: Vec<TopicFilter> = filters.iter().map(|f| filter(f)).collect();
    r.unsubscribe_all(&cid("c1"), 0, &all);
    assert_eq!(r.subscription_count(), filters.len());
    assert!(r.node_count() > 1);
    r.unsubscribe_all(&cid("c2"), 0, all.iter());
    assert_eq!(r.subscription_count(), 0);
    assert_eq!(r.node_count(), 1, "no nodes left behind");
    assert!(r.route(&topic("a/b/c"), None).is_empty());
}

#[test]
fn subscription_count_matches_trie() {
    let r = TestRouter::new();
    sub(&r, "c1", "a");
    sub(&r, "c1", "a");
    sub(&r, "c2", "$share/g/a");
    sub(&r, "c1", "$share/g/a");
    assert_eq!(r.subscription_count(), 3);
    assert_eq!(r.read().root.subscription_count(), 3);
}

#[test]
fn too_deep_filter_is_refused() {
    let r = TestRouter::new();
    let deep = filter(&vec!["a"; MAX_TOPIC_LEVELS + 1].join("/"));
    let err = r.subscribe(&cid("c"), 0, &deep, opts(QoS::AtMostOnce), None, "h");
    assert!(matches!(err, Err(RouterError::FilterTooDeep { .. })));
    // Deep topics still route: the walk stops where the trie ends.
    sub(&r, "c", "a/#");
    let deep_topic = topic(&vec!["a"; 10 * MAX_TOPIC_LEVELS].join("/"));
    assert_eq!(r.route(&deep_topic, None).len(), 1);
}

#[test]
fn router_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router<std::sync::Arc<str>>>();
    assert_send_sync::<RetainedStore<std::sync::Arc<str>>>();
}

/// A late cleanup by an ended session incarnation never removes the
/// subscriptions its successor (same client id) made since.
#[test]
fn removal_is_keyed_by_incarnation() {
    let r = TestRouter::new();
    let c = cid("c");
    let o = opts(QoS::AtLeastOnce);
    for f in ["a/b", "$share/g/a/b"] {
        r.subscribe(&c, 1, &filter(f), o, None, "old").expect("ok");
        // The next incarnation subscribes before the old one is cleaned up.
        r.subscribe(&c, 2, &filter(f), o, None, "new").expect("ok");
        assert!(!r.unsubscribe(&c, 1, &filter(f)), "stale incarnation");
    }
    r.unsubscribe_all(&c, 1, [&filter("a/b"), &filter("$share/g/a/b")]);
    assert_eq!(r.subscription_count(), 2);
    let ds = r.route(&topic("a/b"), None);
    assert!(ds.iter().all(|d| d.handle == "new") && ds.len() == 2);
    r.unsubscribe_all(&c, 2, [&filter("a/b"), &filter("$share/g/a/b")]);
    assert_eq!(r.subscription_count(), 0);
}
