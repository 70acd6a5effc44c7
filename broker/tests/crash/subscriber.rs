//! The persistent subscriber (`crash-sub`, clean session 0, `crash/#` at
//! QoS 2), over raw bytes, counting what it is delivered.
//!
//! It answers as the specification asks of a receiver: PUBACK for QoS 1;
//! for QoS 2, PUBREC, keeping the packet id until PUBREL, and a PUBLISH
//! that comes again with that id (DUP, resent by the broker) is the same
//! message, acknowledged and not delivered again [MQTT-4.3.3]. Its ids
//! outlive connections and broker restarts, as its session does.
//!
//! Checked on every delivery: a QoS 2 message is never delivered twice,
//! and each publisher's messages arrive in the order published (the first
//! delivery of each, as QoS 1 ones may come again).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::wire::{
    self, Conn, Frame, Incoming, DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK,
};
use crate::publisher::Publisher;

pub const CLIENT_ID: &str = "crash-sub";
pub const FILTER: &str = "crash/#";

/// The publishers, by the number in their name (`p1`...).
pub const PUBLISHERS: usize = 3;

#[derive(Default)]
pub struct Subscriber {
    /// QoS 2 ids received, PUBREC sent, no PUBREL yet.
    awaiting_rel: HashSet<u16>,
    /// Per publisher: sequence number → times delivered.
    seen: [BTreeMap<u64, u32>; PUBLISHERS],
    /// Per publisher: the last sequence number delivered for the first time.
    last_new: [Option<u64>; PUBLISHERS],
    /// Messages delivered for the first time.
    pub delivered: u64,
    /// QoS 1 messages delivered again (allowed: at least once).
    pub dup_qos1: u64,
    /// QoS 2 resends of an id awaiting PUBREL, dropped as the spec says.
    pub dup_resent: u64,
    /// QoS 2 messages delivered twice (never allowed).
    pub dup_qos2: u64,
    connacked: bool,
    pub violations: Vec<String>,
}

/// How the subscriber spends a broker life.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Connected until the kill.
    Online,
    /// Offline through it.
    Offline,
    /// Disconnects after this long.
    Leaves(Duration),
    /// Offline, connects after this long.
    Joins(Duration),
}

impl Subscriber {
    /// Connects (clean session 0); the first time, subscribes.
    pub async fn connect(&mut self, addr: SocketAddr) -> std::io::Result<Conn> {
        let (mut conn, present) = Conn::open(addr, &wire::connect(CLIENT_ID, false)).await?;
        if self.connacked && !present {
            self.violations
                .push("subscriber: its session was not present after a restart".into());
        }
        if !self.connacked {
            conn.send(&wire::subscribe(1, FILTER, 2)).await?;
            // Deliveries may come before the SUBACK only if something
            // else subscribed this session; nothing does.
            let ack = conn.expect(SUBACK).await?;
            assert_eq!(ack.body, [0, 1, 2], "SUBACK granting QoS 2");
        }
        self.connacked = true;
        Ok(conn)
    }

    /// Handles one packet from the broker.
    pub async fn on_frame(&mut self, conn: &mut Conn, f: &Frame) -> std::io::Result<()> {
        match f.kind() {
            PUBLISH => {
                let p = Incoming::parse(f);
                match (p.qos, p.id) {
                    (1, Some(id)) => {
                        self.record(&p);
                        conn.send(&wire::ack(PUBACK, id)).await?;
                    }
                    (2, Some(id)) => {
                        if self.awaiting_rel.contains(&id) {
                            if !p.dup {
                                self.violations.push(format!(
                                    "subscriber: id {id} reused before PUBREL without DUP ({})",
                                    String::from_utf8_lossy(&p.payload)
                                ));
                            }
                            self.dup_resent += 1;
                        } else {
                            self.awaiting_rel.insert(id);
                            self.record(&p);
                        }
                        conn.send(&wire::ack(PUBREC, id)).await?;
                    }
                    _ => self
                        .violations
                        .push(format!("subscriber: unexpected {p:?}")),
                }
            }
            PUBREL => {
                let id = f.id();
                self.awaiting_rel.remove(&id);
                conn.send(&wire::ack(PUBCOMP, id)).await?;
            }
            _ => self
                .violations
                .push(format!("subscriber: unexpected packet {f:?}")),
        }
        Ok(())
    }

    fn record(&mut self, p: &Incoming) {
        let text = String::from_utf8_lossy(&p.payload);
        let parsed = text.split_once(':').and_then(|(name, seq)| {
            let n: usize = name.strip_prefix('p')?.parse().ok()?;
            Some((
                n.checked_sub(1).filter(|&i| i < PUBLISHERS)?,
                seq.parse::<u64>().ok()?,
            ))
        });
        let Some((i, seq)) = parsed else {
            self.violations
                .push(format!("subscriber: unexpected payload {text:?}"));
            return;
        };
        let count = self.seen[i].entry(seq).or_insert(0);
        *count += 1;
        if *count > 1 {
            if p.qos == 2 {
                self.dup_qos2 += 1;
                self.violations
                    .push(format!("subscriber: QoS 2 message {text} delivered twice"));
            } else {
                self.dup_qos1 += 1;
            }
            return;
        }
        self.delivered += 1;
        if let Some(last) = self.last_new[i] {
            if seq < last {
                self.violations.push(format!(
                    "subscriber: {text} arrived after p{}:{last} (out of order)",
                    i + 1
                ));
            }
        }
        self.last_new[i] = Some(self.last_new[i].map_or(seq, |l| l.max(seq)));
    }

    /// How many times `seq` of publisher `i` was delivered.
    pub fn times(&self, i: usize, seq: u64) -> u32 {
        self.seen[i].get(&seq).copied().unwrap_or(0)
    }

    /// What the publishers had stored that was not delivered yet.
    pub fn missing(&self, pubs: &[Publisher]) -> Vec<(usize, u64)> {
        pubs.iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.stored
                    .iter()
                    .filter(move |s| !self.seen[i].contains_key(s))
                    .map(move |s| (i, *s))
            })
            .collect()
    }

    /// Reads until every message the publishers had stored is delivered;
    /// `Err` describes what is missing at `deadline`.
    pub async fn drain(
        &mut self,
        conn: &mut Conn,
        pubs: &[Publisher],
        deadline: Instant,
    ) -> Result<(), String> {
        let mut missing: HashSet<(usize, u64)> = self.missing(pubs).into_iter().collect();
        while !missing.is_empty() {
            let f = match tokio::time::timeout_at(deadline, conn.read()).await {
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) | Ok(Err(_)) => return Err("the broker closed the subscriber".into()),
                Err(_) => {
                    let mut m: Vec<_> = missing.into_iter().collect();
                    m.sort_unstable();
                    let shown: Vec<String> = m
                        .iter()
                        .take(10)
                        .map(|(i, s)| format!("p{}:{s}", i + 1))
                        .collect();
                    return Err(format!(
                        "{} acknowledged messages never delivered, e.g. {}",
                        m.len(),
                        shown.join(", ")
                    ));
                }
            };
            self.on_frame(conn, &f)
                .await
                .map_err(|e| format!("subscriber write: {e}"))?;
            if f.kind() == PUBLISH {
                missing.retain(|(i, s)| !self.seen[*i].contains_key(s));
            }
        }
        Ok(())
    }

    /// The subscriber's part of a broker life: `conn` is its connection
    /// if it is online when the life's load starts.
    pub async fn load(&mut self, addr: SocketAddr, conn: Option<Conn>, mode: Mode) {
        let mut conn = match (conn, mode) {
            (Some(c), _) => c,
            (None, Mode::Joins(after)) => {
                tokio::time::sleep(after).await;
                match self.connect(addr).await {
                    Ok(c) => c,
                    Err(_) => return,
                }
            }
            (None, _) => return,
        };
        let leave_at = match mode {
            Mode::Leaves(after) => Some(Instant::now() + after),
            _ => None,
        };
        loop {
            let read = async {
                match leave_at {
                    Some(at) => tokio::time::timeout_at(at, conn.read()).await.ok(),
                    None => Some(conn.read().await),
                }
            };
            match read.await {
                Some(Ok(Some(f))) => {
                    if self.on_frame(&mut conn, &f).await.is_err() {
                        return;
                    }
                }
                Some(_) => return,
                None => {
                    let _ = conn.send(&DISCONNECT).await;
                    return;
                }
            }
        }
    }
}
