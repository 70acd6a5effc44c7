//! Crash harness: the real `mqttd` binary, SIGKILLed at a random point of
//! each of [`ROUNDS`] rounds of traffic and restarted on the same data
//! directory, for `storage.durability: batched` and `sync` (a process
//! kill loses nothing the OS was handed, so neither may lose anything
//! acknowledged). Clients are independent: raw bytes written by hand.
//!
//! In each round, at once:
//! - `crash-p1` publishes QoS 2 on a persistent session and, after a
//!   restart, resends what was not completed (DUP PUBLISH, or PUBREL);
//!   `crash-p2` publishes QoS 1 on a clean session and republishes what
//!   was not acknowledged; `crash-p3` publishes QoS 2 on a clean session
//!   and gives up what was not acknowledged;
//! - the persistent subscriber `crash-sub` (`crash/#`, QoS 2) is online,
//!   offline, leaves or joins (see [`subscriber::Mode`]);
//! - retained sets and clears, subscriptions and unsubscriptions of a
//!   persistent session (see [`state`]), a clean session, a session
//!   destroyed by a clean start and sessions with a 1 s expiry (see
//!   [`sessions`]).
//!
//! After each restart: every message the broker acknowledged (PUBACK, or
//! PUBREC for QoS 2) reaches the subscriber, QoS 2 ones exactly once, each
//! publisher's in order; the retained values, subscriptions and sessions
//! are as acknowledged. A last life lets the publishers complete, then
//! every message of `crash-p1` (all were resent until completed) is
//! delivered exactly once and every one of `crash-p2` at least once.
//! Per-round figures go to stderr (`--nocapture` shows them).
//!
//! `CRASH_SEED=<n>` repeats a run's random choices (the kill lands
//! where the timing puts it).

mod common;
#[path = "crash/publisher.rs"]
mod publisher;
#[path = "crash/sessions.rs"]
mod sessions;
#[path = "crash/state.rs"]
mod state;
#[path = "crash/subscriber.rs"]
mod subscriber;

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use common::process::{Mqttd, Spec};
use common::wire::{Conn, DISCONNECT};
use publisher::{End, Publisher};
use sessions::Sessions;
use state::{Filters, Retained};
use subscriber::{Mode, Subscriber};

/// Kills per durability mode.
const ROUNDS: usize = 20;
/// A round's traffic runs this long (at random) before the kill.
const KILL_AFTER_MS: std::ops::Range<u64> = 50..400;
/// New messages per publisher per round (at random).
const BUDGET: std::ops::Range<u64> = 20..150;
/// Upper bound for a check after a restart, and for a round's clients to
/// notice the kill.
const LIMIT: Duration = Duration::from_secs(15);

/// Queues must not drop what the test counts on.
const CONFIG: &str = "mqtt:\n  max_queued_messages: 100000\n";

struct World {
    pubs: Vec<Publisher>,
    sub: Subscriber,
    retained: Retained,
    filters: Filters,
    sessions: Sessions,
}

/// Running totals, for per-round differences.
#[derive(Clone, Copy, Default)]
struct Totals {
    acked_q1: u64,
    acked_q2: u64,
    stored: u64,
    delivered: u64,
    dup_qos1: u64,
    dup_resent: u64,
    dup_qos2: u64,
    abandoned: u64,
    retained_ops: u64,
    subscription_ops: u64,
    session_probes: u64,
}

impl World {
    fn new(rng: &mut StdRng) -> World {
        let mut fork = || StdRng::seed_from_u64(rng.gen());
        World {
            pubs: vec![
                Publisher::new("p1", 2, true, true, fork()),
                Publisher::new("p2", 1, false, true, fork()),
                Publisher::new("p3", 2, false, false, fork()),
            ],
            sub: Subscriber::default(),
            retained: Retained::new(fork()),
            filters: Filters::new(fork()),
            sessions: Sessions::new(fork()),
        }
    }

    fn totals(&self) -> Totals {
        let acked = |qos| -> u64 {
            let p = self.pubs.iter().filter(|p| p.qos == qos);
            p.map(|p| p.completed).sum()
        };
        Totals {
            acked_q1: acked(1),
            acked_q2: acked(2),
            stored: self.pubs.iter().map(|p| p.stored.len() as u64).sum(),
            delivered: self.sub.delivered,
            dup_qos1: self.sub.dup_qos1,
            dup_resent: self.sub.dup_resent,
            dup_qos2: self.sub.dup_qos2,
            abandoned: self.pubs.iter().map(|p| p.abandoned).sum(),
            retained_ops: self.retained.ops_acked,
            subscription_ops: self.filters.acked,
            session_probes: self.sessions.probes,
        }
    }

    /// Everything any client found wrong so far.
    fn violations(&mut self) -> Vec<String> {
        let mut v = std::mem::take(&mut self.sub.violations);
        for p in &mut self.pubs {
            v.append(&mut p.violations);
        }
        v
    }

    /// After a (re)start: the checks of [`state`] and [`sessions`], then the subscriber
    /// connects and gets everything stored so far. Returns its
    /// connection and what is wrong.
    async fn verify(
        &mut self,
        addr: SocketAddr,
        life: usize,
        started: Instant,
    ) -> (Conn, Vec<String>) {
        let mut errors = Vec::new();
        if life == 0 {
            self.filters.setup(addr).await;
        } else {
            errors.extend(self.sessions.verify(addr, life, started).await);
            errors.extend(self.retained.verify(addr).await);
            errors.extend(self.filters.verify(addr, life).await);
        }
        let mut conn = self.sub.connect(addr).await.expect("subscriber connects");
        let deadline = Instant::now() + LIMIT;
        if let Err(e) = self.sub.drain(&mut conn, &self.pubs, deadline).await {
            errors.push(e);
        }
        errors.extend(self.violations());
        (conn, errors)
    }

    /// A round's traffic; returns once every client saw the broker go.
    async fn load(
        &mut self,
        addr: SocketAddr,
        life: usize,
        conn: Conn,
        mode: Mode,
        budgets: [u64; 3],
    ) {
        let online = match mode {
            Mode::Online | Mode::Leaves(_) => Some(conn),
            Mode::Offline | Mode::Joins(_) => {
                let mut conn = conn;
                let _ = conn.send(&DISCONNECT).await;
                None
            }
        };
        let World {
            pubs,
            sub,
            retained,
            filters,
            sessions,
        } = self;
        let publishers = futures::future::join_all(
            pubs.iter_mut()
                .zip(budgets)
                .map(|(p, budget)| p.run(addr, budget, false)),
        );
        tokio::join!(
            publishers,
            sub.load(addr, online, mode),
            retained.load(addr, life),
            filters.load(addr),
            sessions.load(addr, life),
        );
    }

    /// The last life: the publishers complete what they have in flight,
    /// the expiring sessions are checked once due, and the subscriber
    /// gets everything.
    async fn finish(
        &mut self,
        addr: SocketAddr,
        life: usize,
        started: Instant,
        mut conn: Conn,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(due) = self.sessions.last_due() {
            tokio::time::sleep_until(due).await;
            errors.extend(self.sessions.verify(addr, life, started).await);
        }
        let ends = futures::future::join_all(self.pubs.iter_mut().map(|p| p.run(addr, 0, true)));
        let ends = tokio::time::timeout(LIMIT, ends)
            .await
            .expect("publishers complete in time");
        assert!(
            ends.iter().all(|e| *e == End::Done),
            "publishers complete: {ends:?}"
        );
        let deadline = Instant::now() + LIMIT;
        if let Err(e) = self.sub.drain(&mut conn, &self.pubs, deadline).await {
            errors.push(e);
        }
        let _ = conn.send(&DISCONNECT).await;
        for (i, p) in self.pubs.iter().enumerate() {
            for seq in 0..p.next_seq {
                let n = self.sub.times(i, seq);
                let wrong = match (p.name, p.stored.contains(&seq)) {
                    // Resent until completed: every one, exactly once.
                    ("p1", _) => n != 1,
                    (_, true) if p.qos == 1 => n == 0,
                    (_, true) => n != 1,
                    (_, false) => p.qos == 2 && n > 1,
                };
                if wrong {
                    errors.push(format!("{}:{seq} delivered {n} times", p.name));
                }
            }
        }
        errors.extend(self.violations());
        errors
    }
}

fn fail(durability: &str, seed: u64, round: usize, note: &str, errors: &[String], log: &str) -> ! {
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "crash[{durability}] round {round} ({note}; CRASH_SEED={seed}):\n  {}\n\
         broker log (last lines):\n{}",
        errors.join("\n  "),
        tail.join("\n")
    );
}

fn crash_harness(durability: &'static str) {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash[{durability}]: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let spec = Spec {
        dir: tmp.path(),
        data_dir: &data,
        durability: Some(durability),
        extra_yaml: CONFIG,
        log_level: common::process::QUIET,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut world = World::new(&mut rng);
    let began = std::time::Instant::now();
    let mut last = Totals::default();
    let mut round_note = String::new();
    for life in 0..=ROUNDS {
        let broker = Mqttd::start(&spec).running();
        let started = Instant::now();
        let (conn, errors) = rt.block_on(world.verify(broker.mqtt, life, started));
        if !errors.is_empty() {
            fail(durability, seed, life, &round_note, &errors, &broker.log());
        }
        if life > 0 {
            let t = world.totals();
            eprintln!(
                "crash[{durability}] round {life:2}/{ROUNDS}: {round_note}; acked q1 +{} q2 +{} \
                 (stored +{}, given up +{}); delivered +{}; duplicates: q1 +{}, q2 resent +{}, \
                 q2 twice +{}; retained ops +{}, (un)subscribes +{}, session probes +{}",
                t.acked_q1 - last.acked_q1,
                t.acked_q2 - last.acked_q2,
                t.stored - last.stored,
                t.abandoned - last.abandoned,
                t.delivered - last.delivered,
                t.dup_qos1 - last.dup_qos1,
                t.dup_resent - last.dup_resent,
                t.dup_qos2 - last.dup_qos2,
                t.retained_ops - last.retained_ops,
                t.subscription_ops - last.subscription_ops,
                t.session_probes - last.session_probes,
            );
            last = t;
        }
        if life == ROUNDS {
            let errors = rt.block_on(world.finish(broker.mqtt, life, started, conn));
            if !errors.is_empty() {
                fail(durability, seed, life, &round_note, &errors, &broker.log());
            }
            let (status, log) = broker.terminate();
            assert!(status.success(), "mqttd stopped with {status}:\n{log}");
            break;
        }
        let kill_after = Duration::from_millis(rng.gen_range(KILL_AFTER_MS));
        let mode = match rng.gen_range(0..4) {
            0 => Mode::Online,
            1 => Mode::Offline,
            2 => Mode::Leaves(Duration::from_millis(rng.gen_range(0..KILL_AFTER_MS.end))),
            _ => Mode::Joins(Duration::from_millis(rng.gen_range(0..KILL_AFTER_MS.end))),
        };
        let budgets = std::array::from_fn(|_| rng.gen_range(BUDGET));
        round_note = format!(
            "killed after {} ms, subscriber {mode:?}",
            kill_after.as_millis()
        );
        let addr = broker.mqtt;
        let mut w = world;
        let load = rt.spawn(async move {
            w.load(addr, life, conn, mode, budgets).await;
            w
        });
        // The kill point: not a wait for anything.
        std::thread::sleep(kill_after);
        broker.kill();
        world = rt
            .block_on(async { tokio::time::timeout(LIMIT, load).await })
            .expect("clients notice the kill in time")
            .expect("round's clients");
    }
    let t = world.totals();
    eprintln!(
        "crash[{durability}] total: {ROUNDS} rounds in {:.1} s; acked q1 {} q2 {} (stored {}); \
         delivered {}; duplicates: q1 {}, q2 resent {}, q2 twice {}; given up {}",
        began.elapsed().as_secs_f64(),
        t.acked_q1,
        t.acked_q2,
        t.stored,
        t.delivered,
        t.dup_qos1,
        t.dup_resent,
        t.dup_qos2,
        t.abandoned
    );
}

#[test]
fn kill_9_loses_nothing_acknowledged_batched() {
    crash_harness("batched");
}

#[test]
fn kill_9_loses_nothing_acknowledged_sync() {
    crash_harness("sync");
}

/// A session connected when the broker was killed expires its interval
/// after the first restart, even if the broker is killed again before
/// that: the restart writes down when the count began.
#[test]
fn expiry_of_a_session_connected_at_a_kill_counts_from_the_first_restart() {
    use common::wire::{self, SUBACK};
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let spec = Spec {
        dir: tmp.path(),
        data_dir: &data,
        durability: Some("batched"),
        extra_yaml: "",
        log_level: common::process::QUIET,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let broker = Mqttd::start(&spec).running();
    let held = rt.block_on(async {
        let connect = wire::connect_v5("held", true, Some(1));
        let (mut c, _) = Conn::open(broker.mqtt, &connect).await.expect("connect");
        c.send(&wire::subscribe_v5(1, "t/#", 1))
            .await
            .expect("send");
        c.expect(SUBACK).await.expect("SUBACK");
        c
    });
    broker.kill();
    drop(held);
    // Restarted (the session restored by the time it is ready), and
    // killed again long before the expiry.
    let restarted = Mqttd::start(&spec).running();
    let first_restart = std::time::Instant::now();
    restarted.kill();
    // The expiry (1 s) is over, counted from the first restart.
    let over = first_restart + Duration::from_millis(1_500);
    std::thread::sleep(over.saturating_duration_since(std::time::Instant::now()));
    let broker = Mqttd::start(&spec).running();
    let present = rt.block_on(async {
        let probe = wire::connect_v5("held", false, None);
        let (mut c, present) = Conn::open(broker.mqtt, &probe).await.expect("probe");
        let _ = c.send(&DISCONNECT).await;
        present
    });
    assert!(!present, "the session outlived its expiry");
    let (status, log) = broker.terminate();
    assert!(status.success(), "{status}:\n{log}");
}
