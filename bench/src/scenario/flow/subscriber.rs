//! A subscriber: reads the message stream, records sequence numbers (and
//! latency) and answers QoS 1/2 deliveries, one batch of acknowledgements
//! per read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttd::codec::{Packet, ProtocolVersion};
use tokio::io::AsyncWriteExt;

use super::{FlowSpec, Shared, QUIET};
use crate::mqtt::{self, Client, Incoming, Reader, STREAM_BUFFER};
use crate::net::BoxWrite;
use crate::payload::{now_ns, ns_since_epoch};
use crate::stats::latency::LatencyHist;
use crate::stats::loss::{Counts, SeqTracker};

/// How often a waiting subscriber checks whether it may stop.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct SubOutcome {
    pub counts: Counts,
    pub hist: LatencyHist,
    pub last_rx: Option<Instant>,
}

/// Where a subscriber stands once the publishers have stopped.
#[derive(Debug, Clone, Copy)]
pub struct StopCheck {
    /// When publishers finished (payload clock ns); 0 while they run.
    pub done_at_ns: u64,
    pub now_ns: u64,
    /// Last message received, or `done_at_ns` if later or none yet.
    pub last_activity_ns: u64,
    pub unique: u64,
    pub sent: u64,
    pub drain: Duration,
    pub quiet: Duration,
}

/// Whether a subscriber is finished: publishers are done and it has every
/// message, or the stream went quiet, or the drain limit passed.
pub fn should_stop(c: StopCheck) -> bool {
    if c.done_at_ns == 0 {
        return false;
    }
    let since = |t: u64| Duration::from_nanos(c.now_ns.saturating_sub(t));
    c.unique >= c.sent
        || since(c.last_activity_ns.max(c.done_at_ns)) >= c.quiet
        || since(c.done_at_ns) >= c.drain
}

/// Per-subscriber state while reading.
struct Tally {
    tracker: SeqTracker,
    foreign: u64,
    hist: LatencyHist,
    warmup_end_ns: u64,
    record_latency: bool,
    /// When the last message arrived.
    last_rx: Option<Instant>,
}

/// Reads until the flow is over. A subscriber whose connection breaks
/// (the broker closed it, or a read failed) still reports what it
/// received before: those messages arrived, and only the rest count as
/// lost. The failure is counted in the flow's errors.
pub async fn run(client: Client, spec: Arc<FlowSpec>, shared: Arc<Shared>) -> SubOutcome {
    let Client {
        mut reader,
        mut writer,
        version,
        ..
    } = client;
    reader.set_chunk(STREAM_BUFFER);
    let mut tally = Tally {
        tracker: SeqTracker::new(),
        foreign: 0,
        hist: LatencyHist::new(),
        warmup_end_ns: ns_since_epoch(shared.start + spec.warmup),
        record_latency: spec.latency,
        last_rx: None,
    };
    match read_stream(
        &mut reader,
        &mut writer,
        version,
        &spec,
        &shared,
        &mut tally,
    )
    .await
    {
        Ok(()) => {
            let mut acks = BytesMut::new();
            let _ = mqtt::encode(
                &Packet::Disconnect(mqttd::codec::Disconnect::normal()),
                version,
                &mut acks,
            );
            let _ = writer.write_all(&acks).await;
        }
        Err(e) => shared.errors.record(&e),
    }
    let mut counts = tally.tracker.counts();
    counts.foreign = tally.foreign;
    SubOutcome {
        counts,
        hist: tally.hist,
        last_rx: tally.last_rx,
    }
}

/// The read loop: takes every frame, answers QoS 1/2 deliveries and stops
/// once [`should_stop`] says so.
async fn read_stream(
    reader: &mut Reader,
    writer: &mut BoxWrite,
    version: ProtocolVersion,
    spec: &FlowSpec,
    shared: &Shared,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut acks = BytesMut::new();
    let mut last_rx_ns = 0;
    loop {
        let now = now_ns();
        let mut got = 0u64;
        while let Some(frame) = reader.next()? {
            got += tally.take(frame, now, &mut acks, version)?;
        }
        if got > 0 {
            tally.last_rx = Some(Instant::now());
            last_rx_ns = now;
            shared.received.fetch_add(got, Ordering::Relaxed);
        }
        if !acks.is_empty() {
            writer.write_all(&acks).await?;
            acks.clear();
        }
        let check = StopCheck {
            done_at_ns: shared.done_at_ns(),
            now_ns: now,
            last_activity_ns: last_rx_ns,
            unique: tally.tracker.counts().unique,
            sent: shared.sent.load(Ordering::Acquire),
            drain: spec.drain,
            quiet: QUIET.min(spec.drain),
        };
        if should_stop(check) {
            return Ok(());
        }
        match tokio::time::timeout(POLL, reader.fill()).await {
            Ok(Ok(true)) | Err(_) => {}
            Ok(Ok(false)) => anyhow::bail!("broker closed a subscriber's connection"),
            Ok(Err(e)) => return Err(e),
        }
    }
}

impl Tally {
    /// Accounts for one frame, queueing its acknowledgement; returns 1 for
    /// a PUBLISH, 0 otherwise.
    fn take(
        &mut self,
        frame: Incoming,
        now_ns: u64,
        acks: &mut BytesMut,
        version: ProtocolVersion,
    ) -> anyhow::Result<u64> {
        match frame {
            Incoming::Publish {
                qos,
                packet_id,
                stamp,
            } => {
                match stamp {
                    Some(s) if self.tracker.record(s.publisher, s.seq) => {
                        if self.record_latency && s.sent_at_ns >= self.warmup_end_ns {
                            self.hist.record(s.latency(now_ns));
                        }
                    }
                    Some(_) => {}
                    None => self.foreign += 1,
                }
                let ack = match (qos, packet_id) {
                    (1, Some(id)) => mqtt::ack_packet(Packet::PubAck, id),
                    (2, Some(id)) => mqtt::ack_packet(Packet::PubRec, id),
                    _ => None,
                };
                if let Some(ack) = ack {
                    mqtt::encode(&ack, version, acks)?;
                }
                Ok(1)
            }
            Incoming::Packet(Packet::PubRel(r)) => {
                if let Some(ack) = mqtt::ack_packet(Packet::PubComp, r.packet_id.get()) {
                    mqtt::encode(&ack, version, acks)?;
                }
                Ok(0)
            }
            Incoming::Packet(_) => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::Errors;
    use crate::payload::Stamp;
    use mqttd::types::{QoS, TopicName};
    use std::sync::atomic::AtomicU64;

    const S: u64 = 1_000_000_000;

    fn check() -> StopCheck {
        StopCheck {
            done_at_ns: 10 * S,
            now_ns: 10 * S + S / 10,
            last_activity_ns: 10 * S,
            unique: 50,
            sent: 100,
            drain: Duration::from_secs(5),
            quiet: Duration::from_secs(1),
        }
    }

    #[test]
    fn keeps_going_while_publishers_run() {
        let c = StopCheck {
            done_at_ns: 0,
            unique: 100,
            ..check()
        };
        assert!(!should_stop(c));
    }

    #[test]
    fn stops_with_everything_received() {
        assert!(!should_stop(check()));
        assert!(should_stop(StopCheck {
            unique: 100,
            ..check()
        }));
    }

    #[test]
    fn stops_when_quiet_or_drained() {
        // Messages still arriving 3 s after the end: not quiet, not drained.
        let busy = StopCheck {
            now_ns: 13 * S,
            last_activity_ns: 13 * S - S / 2,
            ..check()
        };
        assert!(!should_stop(busy));
        // Nothing for 1 s: quiet.
        assert!(should_stop(StopCheck {
            now_ns: 14 * S,
            last_activity_ns: 13 * S - S / 2,
            ..check()
        }));
        // Still busy but past the drain limit.
        assert!(should_stop(StopCheck {
            now_ns: 15 * S,
            last_activity_ns: 15 * S,
            ..check()
        }));
    }

    #[tokio::test]
    async fn a_closed_connection_keeps_what_arrived() {
        let version = ProtocolVersion::V311;
        let (client_end, mut broker_end) = tokio::io::duplex(64 * 1024);
        let (rd, wr) = tokio::io::split(client_end);
        let client = Client::from_halves(Box::new(rd), Box::new(wr), version);
        let spec = Arc::new(FlowSpec {
            publishers: 1,
            subscribers: 1,
            qos: QoS::AtMostOnce,
            persistent: false,
            topics: crate::scenario::flow::Topics::One,
            payload: 64,
            duration: Duration::from_secs(1),
            count: None,
            rate: 0.0,
            inflight: 16,
            drain: Duration::from_secs(5),
            latency: false,
            warmup: Duration::ZERO,
        });
        let shared = Arc::new(Shared {
            start: Instant::now(),
            sent: AtomicU64::new(10),
            received: AtomicU64::new(0),
            done_at_ns: AtomicU64::new(0),
            errors: Arc::new(Errors::default()),
        });
        // The broker delivers 3 of 10 messages, then closes the connection.
        let topic = TopicName::new("bench/t").unwrap();
        let mut bytes = BytesMut::new();
        for seq in 0..3 {
            let stamp = Stamp {
                publisher: 0,
                seq,
                sent_at_ns: now_ns(),
            };
            let p = mqtt::publish_packet(&topic, QoS::AtMostOnce, None, stamp.to_payload(64));
            mqtt::encode(&p, version, &mut bytes).unwrap();
        }
        broker_end.write_all(&bytes).await.unwrap();
        drop(broker_end);

        let out = run(client, spec, shared.clone()).await;
        assert_eq!(out.counts.unique, 3);
        assert!(out.last_rx.is_some());
        assert_eq!(shared.errors.count(), 1);
        assert_eq!(
            shared.errors.first().as_deref(),
            Some("broker closed a subscriber's connection")
        );
    }
}
