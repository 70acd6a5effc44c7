//! What else a kill must not undo, each with its part of a broker life
//! (`load`, ended by the kill) and its check after the restart
//! (`verify`):
//!
//! - [`Retained`]: acknowledged retained sets and clears on `crash-r/<k>`;
//! - [`Filters`]: a persistent session's SUBACKed subscriptions stay,
//!   its UNSUBACKed ones stay gone.
//!
//! Sessions that must not come back are in `sessions`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use crate::common::wire::{
    self, Conn, Incoming, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    SUBACK, UNSUBACK,
};

/// Upper bound for a check's exchange with a running broker.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

/// Reads until the broker closes `conn` (the kill), answering deliveries
/// so that nothing piles up.
pub async fn idle(mut conn: Conn) {
    while let Ok(Some(f)) = conn.read().await {
        let reply = match f.kind() {
            PUBLISH => match Incoming::parse(&f) {
                Incoming {
                    qos: 1,
                    id: Some(id),
                    ..
                } => Some(wire::ack(PUBACK, id)),
                Incoming {
                    qos: 2,
                    id: Some(id),
                    ..
                } => Some(wire::ack(PUBREC, id)),
                _ => None,
            },
            PUBREL => Some(wire::ack(PUBCOMP, f.id())),
            _ => None,
        };
        if let Some(r) = reply {
            if conn.send(&r).await.is_err() {
                return;
            }
        }
    }
}

const RETAINED_TOPICS: usize = 4;

/// Retained messages set and cleared by `crash-ret` (QoS 1, one at a time).
pub struct Retained {
    /// Per topic: the last acknowledged value (`None`: cleared).
    acked: Vec<Option<String>>,
    /// The one operation sent and not acknowledged: (topic, value).
    pending: Option<(usize, Option<String>)>,
    pub ops_acked: u64,
    rng: StdRng,
}

impl Retained {
    pub fn new(rng: StdRng) -> Self {
        Retained {
            acked: vec![None; RETAINED_TOPICS],
            pending: None,
            ops_acked: 0,
            rng,
        }
    }

    pub async fn load(&mut self, addr: SocketAddr, life: usize) {
        let Ok((mut c, _)) = Conn::open(addr, &wire::connect("crash-ret", true)).await else {
            return;
        };
        for n in 0.. {
            let pause = Duration::from_millis(self.rng.gen_range(1..20));
            tokio::time::sleep(pause).await;
            let k = self.rng.gen_range(0..RETAINED_TOPICS);
            let value = (self.rng.gen_range(0..3) != 0).then(|| format!("L{life}-{n}"));
            self.pending = Some((k, value.clone()));
            let payload = value.clone().unwrap_or_default();
            let p = wire::publish(
                &format!("crash-r/{k}"),
                1,
                true,
                false,
                1,
                payload.as_bytes(),
            );
            if c.send(&p).await.is_err() || c.expect(PUBACK).await.is_err() {
                return;
            }
            self.acked[k] = value;
            self.pending = None;
            self.ops_acked += 1;
        }
    }

    /// Each topic holds its acknowledged value, or the value of the
    /// operation the kill interrupted.
    pub async fn verify(&mut self, addr: SocketAddr) -> Vec<String> {
        let (mut c, _) = Conn::open(addr, &wire::connect("crash-rcheck", true))
            .await
            .expect("retained checker connects");
        c.send(&wire::subscribe(1, "crash-r/#", 0))
            .await
            .expect("send");
        let deadline = Instant::now() + CHECK_LIMIT;
        let mut seen: BTreeMap<usize, String> = BTreeMap::new();
        // The broker hands the replay to the connection with the SUBACK:
        // a PINGRESP asked for after the SUBACK comes after it.
        loop {
            let f = match tokio::time::timeout_at(deadline, c.read()).await {
                Ok(Ok(Some(f))) => f,
                other => panic!("retained check: broker answered {other:?}"),
            };
            match f.kind() {
                SUBACK => c.send(&PINGREQ).await.expect("send"),
                PUBLISH => record_retained(&mut seen, &f),
                PINGRESP => break,
                _ => panic!("retained check: unexpected {f:?}"),
            }
        }
        // A value that must be there and is not yet: wait for it (bounded).
        while (0..RETAINED_TOPICS).any(|k| {
            self.acked[k].is_some()
                && !seen.contains_key(&k)
                && !matches!(&self.pending, Some((pk, _)) if *pk == k)
        }) {
            match tokio::time::timeout_at(deadline, c.read()).await {
                Ok(Ok(Some(f))) if f.kind() == PUBLISH => record_retained(&mut seen, &f),
                _ => break,
            }
        }
        let _ = c.send(&DISCONNECT).await;
        let mut errors = Vec::new();
        for k in 0..RETAINED_TOPICS {
            let got = seen.get(&k).cloned();
            let ok = got == self.acked[k]
                || matches!(&self.pending, Some((pk, v)) if *pk == k && *v == got);
            if !ok {
                errors.push(format!(
                    "retained crash-r/{k}: {got:?}, acknowledged {:?}, pending {:?}",
                    self.acked[k], self.pending
                ));
            }
            self.acked[k] = got;
        }
        self.pending = None;
        errors
    }
}

fn record_retained(seen: &mut BTreeMap<usize, String>, f: &wire::Frame) {
    let p = Incoming::parse(f);
    assert!(p.retain, "a replayed retained message has RETAIN set");
    let k: usize = p.topic["crash-r/".len()..].parse().expect("topic");
    seen.insert(k, String::from_utf8(p.payload).expect("utf8"));
}

/// Where a filter of `crash-subs` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Subscribed,
    Unsubscribed,
    /// SUBSCRIBE or UNSUBSCRIBE sent, no answer before the kill.
    Unknown,
}

/// The subscriptions of `crash-subs` (persistent): one new filter
/// `crash-s/<n>` per life, and now and then one removed.
pub struct Filters {
    filters: BTreeMap<u32, Sub>,
    next: u32,
    pub acked: u64,
    rng: StdRng,
}

const SUBS_ID: &str = "crash-subs";
const SENTINEL: &str = "crash-s/sentinel";

impl Filters {
    pub fn new(rng: StdRng) -> Self {
        Filters {
            filters: BTreeMap::new(),
            next: 0,
            acked: 0,
            rng,
        }
    }

    /// Before the first kill: the session and its sentinel subscription.
    pub async fn setup(&mut self, addr: SocketAddr) {
        let (mut c, _) = Conn::open(addr, &wire::connect(SUBS_ID, false))
            .await
            .expect("connect");
        c.send(&wire::subscribe(1, SENTINEL, 1))
            .await
            .expect("send");
        c.expect(SUBACK).await.expect("SUBACK");
        let _ = c.send(&DISCONNECT).await;
    }

    pub async fn load(&mut self, addr: SocketAddr) {
        let Ok((mut c, _)) = Conn::open(addr, &wire::connect(SUBS_ID, false)).await else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(self.rng.gen_range(0..100))).await;
        let n = self.next;
        self.next += 1;
        self.filters.insert(n, Sub::Unknown);
        let sub = wire::subscribe(2, &format!("crash-s/{n}"), 1);
        if c.send(&sub).await.is_err() || c.expect(SUBACK).await.is_err() {
            return;
        }
        self.filters.insert(n, Sub::Subscribed);
        self.acked += 1;
        let subscribed: Vec<u32> = self
            .filters
            .iter()
            .filter(|(_, s)| **s == Sub::Subscribed)
            .map(|(n, _)| *n)
            .collect();
        if self.rng.gen_range(0..3) == 0 {
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(0..100))).await;
            let gone = subscribed[self.rng.gen_range(0..subscribed.len())];
            self.filters.insert(gone, Sub::Unknown);
            let unsub = wire::unsubscribe(3, &format!("crash-s/{gone}"));
            if c.send(&unsub).await.is_err() || c.expect(UNSUBACK).await.is_err() {
                return;
            }
            self.filters.insert(gone, Sub::Unsubscribed);
            self.acked += 1;
        }
        idle(c).await;
    }

    /// Publishes one message to every filter ever used, then one to the
    /// sentinel; the session, reconnected, gets them in that order
    /// [MQTT-4.6.0-6], so once the sentinel's is in, it got all it will.
    pub async fn verify(&mut self, addr: SocketAddr, life: usize) -> Vec<String> {
        let (mut p, _) = Conn::open(addr, &wire::connect("crash-prober", true))
            .await
            .expect("prober connects");
        let deadline = Instant::now() + CHECK_LIMIT;
        let topics = self
            .filters
            .keys()
            .map(|n| (format!("crash-s/{n}"), format!("L{life}:{n}")))
            .chain([(SENTINEL.to_string(), format!("L{life}:end"))]);
        for (topic, payload) in topics {
            p.send(&wire::publish(
                &topic,
                1,
                false,
                false,
                1,
                payload.as_bytes(),
            ))
            .await
            .expect("send");
            tokio::time::timeout_at(deadline, p.expect(PUBACK))
                .await
                .expect("PUBACK in time")
                .expect("PUBACK");
        }
        let _ = p.send(&DISCONNECT).await;
        let (mut c, present) = Conn::open(addr, &wire::connect(SUBS_ID, false))
            .await
            .expect("connect");
        let mut errors = Vec::new();
        if !present {
            errors.push(format!("{SUBS_ID}: session not present after a restart"));
        }
        let prefix = format!("L{life}:");
        let mut got = Vec::new();
        loop {
            let f = match tokio::time::timeout_at(deadline, c.read()).await {
                Ok(Ok(Some(f))) => f,
                other => {
                    errors.push(format!("{SUBS_ID}: no sentinel ({other:?})"));
                    return errors;
                }
            };
            if f.kind() != PUBLISH {
                continue;
            }
            let m = Incoming::parse(&f);
            if let Some(id) = m.id {
                c.send(&wire::ack(PUBACK, id)).await.expect("send");
            }
            // Earlier lives' messages may come again (at least once).
            let Some(rest) = String::from_utf8_lossy(&m.payload)
                .strip_prefix(&prefix)
                .map(str::to_string)
            else {
                continue;
            };
            if rest == "end" {
                break;
            }
            got.push(rest.parse::<u32>().expect("filter number"));
        }
        let _ = c.send(&DISCONNECT).await;
        for (n, state) in &mut self.filters {
            let delivered = got.contains(n);
            match (*state, delivered) {
                (Sub::Subscribed, false) => {
                    errors.push(format!("{SUBS_ID}: SUBACKed crash-s/{n} did not survive"))
                }
                (Sub::Unsubscribed, true) => {
                    errors.push(format!("{SUBS_ID}: UNSUBACKed crash-s/{n} came back"))
                }
                _ => {}
            }
            *state = if delivered {
                Sub::Subscribed
            } else {
                Sub::Unsubscribed
            };
        }
        errors
    }
}
