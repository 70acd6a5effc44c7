//! A publisher of numbered messages (`<name>:<seq>` on `crash/<name>`),
//! over raw bytes, that records what the broker acknowledged.
//!
//! PUBACK, or PUBREC for QoS 2, means the broker stored the message: it
//! must reach the subscriber. PUBCOMP completes a QoS 2 exchange. What
//! the broker had not acknowledged when it was killed is resent after
//! the restart when the publisher is persistent (PUBLISH with DUP, or
//! PUBREL once PUBREC came, in the original order [MQTT-4.4.0-1]: the
//! broker must recognise a QoS 2 id it already stored), republished when
//! it `retry`s on a clean session (QoS 1: duplicates allowed), or given
//! up (may or may not arrive).

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use crate::common::wire::{self, Conn, Frame, DISCONNECT, PUBACK, PUBCOMP, PUBREC, PUBREL};

/// Messages a publisher keeps unacknowledged at once.
const WINDOW: usize = 8;

pub struct Publisher {
    pub name: &'static str,
    client_id: String,
    topic: String,
    pub qos: u8,
    persistent: bool,
    retry: bool,
    pub next_seq: u64,
    next_id: u16,
    inflight: VecDeque<Flight>,
    /// PUBACK or PUBREC received: stored by the broker.
    pub stored: BTreeSet<u64>,
    /// PUBACK or PUBCOMP received.
    pub completed: u64,
    /// Sent, then given up after a kill (no retry).
    pub abandoned: u64,
    connacked: bool,
    pub violations: Vec<String>,
    rng: StdRng,
}

struct Flight {
    seq: u64,
    id: u16,
    /// PUBREC received, PUBREL sent.
    released: bool,
}

/// Why [`Publisher::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Nothing left to send or complete (`finish`).
    Done,
    /// The broker went (or could not be reached).
    Closed,
}

impl Publisher {
    pub fn new(name: &'static str, qos: u8, persistent: bool, retry: bool, rng: StdRng) -> Self {
        Publisher {
            name,
            client_id: format!("crash-{name}"),
            topic: format!("crash/{name}"),
            qos,
            persistent,
            retry,
            next_seq: 0,
            next_id: 1,
            inflight: VecDeque::new(),
            stored: BTreeSet::new(),
            completed: 0,
            abandoned: 0,
            connacked: false,
            violations: Vec::new(),
            rng,
        }
    }

    fn payload(&self, seq: u64) -> Vec<u8> {
        format!("{}:{seq}", self.name).into_bytes()
    }

    /// One broker life: connects, resends what it must, then publishes
    /// `budget` new messages, paced, and holds the connection until the
    /// broker goes; with `finish`, returns once nothing is in flight.
    pub async fn run(&mut self, addr: SocketAddr, budget: u64, finish: bool) -> End {
        let connect = wire::connect(&self.client_id, !self.persistent);
        let Ok((mut conn, present)) = Conn::open(addr, &connect).await else {
            return End::Closed;
        };
        if self.persistent && self.connacked && !present {
            self.violations.push(format!(
                "{}: persistent session not present after a restart",
                self.client_id
            ));
        }
        self.connacked = true;
        if !self.persistent && !self.retry {
            self.abandoned += self.inflight.len() as u64;
            self.inflight.clear();
        }
        let resend: Vec<Vec<u8>> = self
            .inflight
            .iter()
            .map(|f| {
                if f.released && self.persistent {
                    wire::ack(PUBREL, f.id)
                } else {
                    wire::publish(
                        &self.topic,
                        self.qos,
                        false,
                        true,
                        f.id,
                        &self.payload(f.seq),
                    )
                }
            })
            .collect();
        if !self.persistent {
            // A clean session starts the exchange again.
            for f in &mut self.inflight {
                f.released = false;
            }
        }
        for bytes in resend {
            if conn.send(&bytes).await.is_err() {
                return End::Closed;
            }
        }
        let mut left = budget;
        loop {
            if finish && left == 0 && self.inflight.is_empty() {
                let _ = conn.send(&DISCONNECT).await;
                return End::Done;
            }
            let can_send = left > 0 && self.inflight.len() < WINDOW;
            let pace = Duration::from_micros(self.rng.gen_range(100..2_000));
            tokio::select! {
                r = conn.read() => match r {
                    Ok(Some(f)) => {
                        if self.on_frame(&mut conn, &f).await.is_err() {
                            return End::Closed;
                        }
                    }
                    _ => return End::Closed,
                },
                _ = tokio::time::sleep(pace), if can_send => {
                    left -= 1;
                    if self.send_new(&mut conn).await.is_err() {
                        return End::Closed;
                    }
                }
            }
        }
    }

    async fn send_new(&mut self, conn: &mut Conn) -> std::io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if self.inflight.iter().all(|f| f.id != id) {
                break id;
            }
        };
        self.inflight.push_back(Flight {
            seq,
            id,
            released: false,
        });
        conn.send(&wire::publish(
            &self.topic,
            self.qos,
            false,
            false,
            id,
            &self.payload(seq),
        ))
        .await
    }

    async fn on_frame(&mut self, conn: &mut Conn, f: &Frame) -> std::io::Result<()> {
        let kind = f.kind();
        if ![PUBACK, PUBREC, PUBCOMP].contains(&kind) {
            self.violations
                .push(format!("{}: unexpected packet {f:?}", self.client_id));
            return Ok(());
        }
        let id = f.id();
        let Some(i) = self.inflight.iter().position(|x| x.id == id) else {
            self.violations.push(format!(
                "{}: acknowledgement {kind} for unknown id {id}",
                self.client_id
            ));
            return Ok(());
        };
        let seq = self.inflight[i].seq;
        match (kind, self.qos) {
            (PUBACK, 1) => {
                self.inflight.remove(i);
                self.stored.insert(seq);
                self.completed += 1;
            }
            (PUBREC, 2) => {
                self.inflight[i].released = true;
                self.stored.insert(seq);
                conn.send(&wire::ack(PUBREL, id)).await?;
            }
            (PUBCOMP, 2) if self.inflight[i].released => {
                self.inflight.remove(i);
                self.completed += 1;
            }
            _ => self.violations.push(format!(
                "{}: acknowledgement {kind} out of place for id {id}",
                self.client_id
            )),
        }
        Ok(())
    }
}
