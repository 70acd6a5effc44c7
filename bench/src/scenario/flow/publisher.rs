//! A publisher: writes stamped PUBLISH packets in batches, optionally paced
//! to a rate, keeping at most `inflight` QoS 1/2 messages unacknowledged.
//!
//! Acknowledgements are read by a companion task: PUBACK and PUBCOMP give a
//! window permit back, PUBREC asks the writer (through a channel, since it
//! owns the socket's write half) to send PUBREL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttd::codec::{Disconnect, Packet, ProtocolVersion};
use mqttd::types::{PacketId, QoS, TopicName};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{interval, sleep, sleep_until, MissedTickBehavior};

use super::{FlowSpec, Shared, Topics};
use crate::mqtt::{self, Client, Incoming, Reader};
use crate::net::BoxWrite;
use crate::payload::{now_ns, ns_since_epoch, Stamp};

/// Bytes gathered before a write: large enough to amortize the syscall,
/// small enough to keep the latency of a paced stream low.
const FLUSH_BYTES: usize = 32 * 1024;
/// Pacing granularity of a rate-limited publisher (tokio's timer has 1 ms
/// resolution; each tick sends what is due).
const PACE_TICK: Duration = Duration::from_millis(1);
/// How long the acknowledgement reader gets to see the broker close.
const READER_GRACE: Duration = Duration::from_secs(1);

pub struct PubArgs {
    pub index: u32,
    pub topic: TopicName,
    pub spec: Arc<FlowSpec>,
    pub shared: Arc<Shared>,
}

/// The socket's write half with a batch buffer.
struct Batch {
    writer: BoxWrite,
    buf: BytesMut,
    version: ProtocolVersion,
    /// PUBLISH packets in `buf`.
    pending: u64,
    shared: Arc<Shared>,
}

impl Batch {
    fn push(&mut self, packet: &Packet) -> anyhow::Result<()> {
        mqtt::encode(packet, self.version, &mut self.buf)
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.buf.is_empty() {
            self.writer.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.shared.sent.fetch_add(self.pending, Ordering::Relaxed);
        self.pending = 0;
        Ok(())
    }
}

/// Messages due `elapsed` into a stream of `rate` per second (the first
/// one at time zero).
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// When message `seq` of a stream of `rate` per second is meant to be sent.
pub fn intended_ns(start_ns: u64, seq: u64, rate: f64) -> u64 {
    start_ns + (seq as f64 * 1e9 / rate) as u64
}

/// Runs one publisher; returns how many QoS 1/2 messages were acknowledged.
pub async fn run(client: Client, args: PubArgs) -> anyhow::Result<u64> {
    let Client {
        reader,
        writer,
        version,
        ..
    } = client;
    let spec = args.spec.clone();
    let window = Arc::new(Semaphore::new(spec.inflight.max(1)));
    let acked = Arc::new(AtomicU64::new(0));
    let (rel_tx, mut rel_rx) = mpsc::unbounded_channel();
    let acks = tokio::spawn(read_acks(reader, window.clone(), rel_tx, acked.clone()));
    let mut batch = Batch {
        writer,
        buf: BytesMut::with_capacity(FLUSH_BYTES * 2),
        version,
        pending: 0,
        shared: args.shared.clone(),
    };
    let result = publish_loop(&args, &mut batch, &window, &mut rel_rx).await;
    let drained = match result {
        Ok(()) => drain(&spec, &mut batch, &window, &mut rel_rx).await,
        Err(e) => Err(e),
    };
    let _ = batch.push(&Packet::Disconnect(Disconnect::normal()));
    let _ = batch.flush().await;
    let _ = batch.writer.shutdown().await;
    // A reader still waiting after the grace period (the broker did not
    // close) is dropped with the runtime.
    if let Ok(Ok(Err(e))) = tokio::time::timeout(READER_GRACE, acks).await {
        args.shared.errors.record(&e);
    }
    drained.map(|()| acked.load(Ordering::Relaxed))
}

async fn publish_loop(
    args: &PubArgs,
    batch: &mut Batch,
    window: &Semaphore,
    rel_rx: &mut mpsc::UnboundedReceiver<u16>,
) -> anyhow::Result<()> {
    let spec = &args.spec;
    let start = args.shared.start;
    let deadline = start + spec.duration;
    let rate = spec.rate / f64::from(spec.publishers.max(1));
    let start_ns = ns_since_epoch(start);
    let mut pace = interval(PACE_TICK);
    pace.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut id = PacketId::new(1).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut seq: u64 = 0;
    sleep_until(start.into()).await;
    loop {
        let now = Instant::now();
        if now >= deadline || spec.count.is_some_and(|c| seq >= c) {
            break;
        }
        if rate > 0.0 && seq >= due(now - start, rate) {
            batch.flush().await?;
            pace.tick().await;
            continue;
        }
        if spec.qos != QoS::AtMostOnce && !take_permit(batch, window, rel_rx, deadline).await? {
            break;
        }
        while let Ok(rel) = rel_rx.try_recv() {
            push_ack(batch, Packet::PubRel, rel)?;
        }
        let sent_at_ns = if rate > 0.0 {
            intended_ns(start_ns, seq, rate)
        } else {
            now_ns()
        };
        let payload = Stamp {
            publisher: args.index,
            seq,
            sent_at_ns,
        }
        .to_payload(spec.payload);
        let packet_id = (spec.qos != QoS::AtMostOnce).then_some(id);
        batch.push(&mqtt::publish_packet(
            topic_of(&spec.topics, &args.topic, spec.publishers, args.index, seq),
            spec.qos,
            packet_id,
            payload,
        ))?;
        batch.pending += 1;
        if packet_id.is_some() {
            id = id.next();
        }
        seq += 1;
        if batch.buf.len() >= FLUSH_BYTES {
            batch.flush().await?;
        }
    }
    batch.flush().await
}

/// The topic of message `seq` of publisher `index`.
pub fn topic_of<'a>(
    topics: &'a Topics,
    own: &'a TopicName,
    publishers: u32,
    index: u32,
    seq: u64,
) -> &'a TopicName {
    match topics {
        Topics::One => own,
        Topics::Spread(list) if !list.is_empty() => {
            let k = seq * u64::from(publishers) + u64::from(index);
            &list[(k % list.len() as u64) as usize]
        }
        Topics::Spread(_) => own,
    }
}

/// Takes one window permit, flushing first and sending PUBRELs while it
/// waits. `false` if the deadline passed first.
async fn take_permit(
    batch: &mut Batch,
    window: &Semaphore,
    rel_rx: &mut mpsc::UnboundedReceiver<u16>,
    deadline: Instant,
) -> anyhow::Result<bool> {
    if let Ok(p) = window.try_acquire() {
        p.forget();
        return Ok(true);
    }
    batch.flush().await?;
    loop {
        tokio::select! {
            biased;
            Some(rel) = rel_rx.recv() => {
                push_ack(batch, Packet::PubRel, rel)?;
                batch.flush().await?;
            }
            p = window.acquire() => {
                p?.forget();
                return Ok(true);
            }
            _ = sleep_until(deadline.into()) => return Ok(false),
        }
    }
}

/// After the last PUBLISH: keep answering PUBREC until every QoS 1/2
/// message is acknowledged or the drain limit passes.
async fn drain(
    spec: &FlowSpec,
    batch: &mut Batch,
    window: &Semaphore,
    rel_rx: &mut mpsc::UnboundedReceiver<u16>,
) -> anyhow::Result<()> {
    if spec.qos == QoS::AtMostOnce {
        return Ok(());
    }
    let limit = Instant::now() + spec.drain;
    while window.available_permits() < spec.inflight.max(1) && Instant::now() < limit {
        tokio::select! {
            Some(rel) = rel_rx.recv() => {
                push_ack(batch, Packet::PubRel, rel)?;
                batch.flush().await?;
            }
            _ = sleep(Duration::from_millis(5)) => {}
        }
    }
    Ok(())
}

fn push_ack(
    batch: &mut Batch,
    kind: fn(mqttd::codec::PubResp) -> Packet,
    id: u16,
) -> anyhow::Result<()> {
    match mqtt::ack_packet(kind, id) {
        Some(p) => batch.push(&p),
        None => Ok(()),
    }
}

/// Reads the broker's acknowledgements until it closes the connection.
async fn read_acks(
    mut reader: Reader,
    window: Arc<Semaphore>,
    rel_tx: mpsc::UnboundedSender<u16>,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    while let Some(frame) = reader.recv().await? {
        match frame {
            Incoming::Packet(Packet::PubAck(_) | Packet::PubComp(_)) => {
                acked.fetch_add(1, Ordering::Relaxed);
                window.add_permits(1);
            }
            Incoming::Packet(Packet::PubRec(r)) => {
                let _ = rel_tx.send(r.packet_id.get());
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_topics_take_turns_across_publishers() {
        let own = TopicName::new("own").unwrap();
        let list: Arc<[TopicName]> = (0..3)
            .map(|i| TopicName::new(&format!("t/{i}")).unwrap())
            .collect();
        let spread = Topics::Spread(list);
        // Two publishers: message k = seq * 2 + index goes to t/(k mod 3).
        let got: Vec<&str> = [(0, 0), (1, 0), (0, 1), (1, 1)]
            .iter()
            .map(|&(index, seq)| topic_of(&spread, &own, 2, index, seq).as_str())
            .collect();
        assert_eq!(got, ["t/0", "t/1", "t/2", "t/0"]);
        assert_eq!(topic_of(&Topics::One, &own, 2, 1, 5).as_str(), "own");
    }

    #[test]
    fn pacing_schedule() {
        // 1000 msg/s: one due at t=0, 501 by 500 ms.
        assert_eq!(due(Duration::ZERO, 1000.0), 1);
        assert_eq!(due(Duration::from_millis(500), 1000.0), 501);
        assert_eq!(intended_ns(1_000, 0, 1000.0), 1_000);
        assert_eq!(intended_ns(1_000, 3, 1000.0), 3_001_000);
    }
}
