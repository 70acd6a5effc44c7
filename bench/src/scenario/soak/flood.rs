//! The soak's publishers: many connections driven by a few tasks.
//!
//! Each task polls its share of the publishers as futures in one
//! `FuturesUnordered`, so a thousand connections cost a handful of tasks;
//! a publisher whose socket is full (the broker stopped reading it) just
//! waits without holding the others up. Each message is a prepared
//! PUBLISH whose stamp (and, at QoS 1, packet id) is rewritten in place:
//! no codec work per message, so the client spends its CPU share on
//! sending, not on encoding.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, FuturesUnordered, StreamExt};
use mqttd::codec::{Disconnect, Packet, ProtocolVersion};
use mqttd::types::{PacketId, QoS, TopicName};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{interval_at, sleep_until, timeout_at, MissedTickBehavior};

use super::{Args, Topics};
use crate::ctx::{Ctx, Errors};
use crate::mqtt::{self, Client, Incoming, Reader};
use crate::net::{BoxWrite, SocketBuffers};
use crate::payload::{now_ns, Stamp};
use crate::report::{Better, Report};
use crate::stats::rate::per_sec;

/// Bytes gathered before a write.
const FLUSH_BYTES: usize = 32 * 1024;
/// How long after the flood a publisher still reads acknowledgements.
const ACK_GRACE: Duration = Duration::from_secs(1);
/// Bounds of a paced publisher's tick: each tick sends what is due, so a
/// slow per-connection rate wakes it rarely (a thousand connections ticking
/// every millisecond would cost a million wake-ups a second).
const PACE_MIN: Duration = Duration::from_millis(10);
const PACE_MAX: Duration = Duration::from_secs(1);

/// Running totals, read by the sampler every second.
#[derive(Debug, Default)]
pub struct Counters {
    /// PUBLISH packets written to the socket.
    pub sent: AtomicU64,
    /// QoS 1 messages the broker acknowledged.
    pub acked: AtomicU64,
    /// Publishers whose connection the broker closed (or reset).
    pub closed: AtomicU64,
}

/// One connected publisher.
pub struct Publisher {
    client: Client,
    index: u32,
    qos: QoS,
}

/// Whether publisher `index` of `n` sends QoS 1: the first `share` of them.
pub fn is_qos1(index: u32, n: u32, share: f64) -> bool {
    f64::from(index) < (f64::from(n) * share).round()
}

/// Connects the publishers (clean sessions, SO_SNDBUF
/// `--publisher-sndbuf`); failures are counted in `errors` and the flood
/// goes on with those that connected.
pub async fn connect(ctx: &Arc<Ctx>, args: &Args, errors: &Errors) -> Vec<Publisher> {
    let deadline = Instant::now() + args.setup_limit;
    let (n, share, sndbuf) = (args.publishers, args.qos1_share, args.publisher_sndbuf);
    let mut attempts = stream::iter(0..n)
        .map(|index| {
            let ctx = ctx.clone();
            async move {
                let opts = ctx.connect_opts(format!("{}-pub{index}", ctx.run_id), true);
                let dial = async {
                    let bufs = SocketBuffers {
                        recv: None,
                        send: Some(sndbuf),
                    };
                    let tcp = ctx.target.connect_tcp(bufs).await?;
                    let (rd, wr) = ctx.target.wrap(tcp).await?;
                    Client::handshake(rd, wr, &opts).await
                };
                let client = timeout_at(deadline.into(), dial)
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("setup limit reached")))?
                    .0;
                let qos = if is_qos1(index, n, share) {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                anyhow::Ok(Publisher { client, index, qos })
            }
        })
        .buffer_unordered(args.concurrency);
    let mut out = Vec::with_capacity(n as usize);
    while let Some(r) = attempts.next().await {
        match r {
            Ok(p) => out.push(p),
            Err(e) => errors.record(&e),
        }
    }
    out
}

/// What every publisher shares.
struct Spec {
    topics: Arc<Topics>,
    payload: usize,
    inflight: usize,
    /// Messages per second per publisher; 0 = flat out.
    rate: f64,
    end: Instant,
}

/// The running flood.
pub struct Flood {
    counters: Arc<Counters>,
    tasks: JoinSet<()>,
}

/// Starts the publishers, spread over `args.publisher_tasks` tasks, until
/// `end`.
pub fn start(
    args: &Args,
    topics: &Arc<Topics>,
    publishers: Vec<Publisher>,
    end: Instant,
    errors: &Arc<Errors>,
) -> Flood {
    let counters = Arc::new(Counters::default());
    let spec = Arc::new(Spec {
        topics: topics.clone(),
        payload: args.payload,
        inflight: args.inflight,
        rate: args.rate / f64::from(args.publishers.max(1)),
        end,
    });
    let groups = args.publisher_tasks.max(1);
    let mut shares: Vec<Vec<Publisher>> = (0..groups).map(|_| Vec::new()).collect();
    for (i, p) in publishers.into_iter().enumerate() {
        shares[i % groups].push(p);
    }
    let mut tasks = JoinSet::new();
    for share in shares.into_iter().filter(|s| !s.is_empty()) {
        let (spec, counters, errors) = (spec.clone(), counters.clone(), errors.clone());
        tasks.spawn(async move {
            let mut running: FuturesUnordered<_> = share
                .into_iter()
                .map(|p| publish(p, &spec, &counters, &errors))
                .collect();
            while running.next().await.is_some() {}
        });
    }
    Flood { counters, tasks }
}

/// The flood's totals.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    pub sent: u64,
    pub acked: u64,
    pub closed: u64,
}

impl Flood {
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Waits for every publisher to finish (each is bounded by the flood's
    /// end plus a grace period).
    pub async fn finish(mut self) -> Totals {
        while self.tasks.join_next().await.is_some() {}
        Totals {
            sent: self.counters.sent.load(Ordering::Relaxed),
            acked: self.counters.acked.load(Ordering::Relaxed),
            closed: self.counters.closed.load(Ordering::Relaxed),
        }
    }
}

impl Totals {
    pub fn fill(&self, r: &mut Report, duration: Duration) {
        r.metric("sent", self.sent as f64, "msg", Better::Neither)
            .metric(
                "sent_per_sec",
                per_sec(self.sent, duration),
                "msg/s",
                Better::Neither,
            )
            .metric("qos1_acked", self.acked as f64, "msg", Better::Neither)
            .metric("publishers_closed", self.closed as f64, "", Better::Neither);
    }
}

/// A PUBLISH prepared once and rewritten per message.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: BytesMut,
    /// Offset of the packet id (QoS 1 only).
    id_at: Option<usize>,
    payload_at: usize,
}

impl Template {
    pub fn new(
        topic: &str,
        qos: QoS,
        payload: usize,
        version: ProtocolVersion,
    ) -> anyhow::Result<Template> {
        let name = TopicName::new(topic).map_err(|e| anyhow!("topic {topic:?}: {e}"))?;
        let id = (qos != QoS::AtMostOnce)
            .then(|| PacketId::new(1))
            .transpose()
            .map_err(|e| anyhow!("{e}"))?;
        let packet = mqtt::publish_packet(&name, qos, id, Bytes::from(vec![0u8; payload]));
        let mut bytes = BytesMut::new();
        mqtt::encode(&packet, version, &mut bytes)?;
        // Fixed header: the type byte, then the remaining length (1-4
        // bytes, the last without its high bit); then the topic.
        let len_bytes = bytes[1..]
            .iter()
            .position(|b| b & 0x80 == 0)
            .map(|p| p + 1)
            .ok_or_else(|| anyhow!("encoded PUBLISH has a malformed length"))?;
        let after_topic = 1 + len_bytes + 2 + topic.len();
        Ok(Template {
            id_at: id.map(|_| after_topic),
            payload_at: bytes.len() - payload,
            bytes,
        })
    }

    /// Appends message `seq` of `publisher` with packet id `id` to `out`.
    pub fn put(&self, out: &mut BytesMut, stamp: Stamp, id: u16) {
        let at = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(i) = self.id_at {
            out[at + i..at + i + 2].copy_from_slice(&id.to_be_bytes());
        }
        stamp.write_into(&mut out[at + self.payload_at..]);
    }
}

/// Runs one publisher to the end of the flood.
async fn publish(p: Publisher, spec: &Spec, counters: &Counters, errors: &Errors) {
    let Client {
        reader,
        writer,
        version,
        ..
    } = p.client;
    let topic = match p.qos {
        QoS::AtMostOnce => &spec.topics.qos0,
        _ => &spec.topics.qos1,
    };
    let template = match Template::new(topic, p.qos, spec.payload, version) {
        Ok(t) => t,
        Err(e) => return errors.record(&e),
    };
    let window = Semaphore::new(spec.inflight);
    let qos1 = p.qos != QoS::AtMostOnce;
    let mut w = Writer {
        writer,
        buf: BytesMut::with_capacity(FLUSH_BYTES * 2),
        counters,
        end: spec.end,
        pending: 0,
    };
    // Set once our DISCONNECT is on its way: the broker closing the
    // connection after it is the normal end, not a close to count.
    let said_goodbye = std::sync::atomic::AtomicBool::new(false);
    let writing = async {
        let r = write_loop(&mut w, &template, p.index, qos1, spec, &window).await;
        if r.is_ok() {
            said_goodbye.store(true, Ordering::Relaxed);
            // Within the flood's grace only: a full socket must not hold
            // the end.
            let _ = mqtt::encode(
                &Packet::Disconnect(Disconnect::normal()),
                version,
                &mut w.buf,
            );
            let _ = timeout_at((spec.end + ACK_GRACE).into(), w.writer.write_all(&w.buf)).await;
        }
        let _ = timeout_at((spec.end + ACK_GRACE).into(), w.writer.shutdown()).await;
        r
    };
    let reading = read_acks(reader, &window, counters, qos1, spec.end + ACK_GRACE);
    let (written, read) = tokio::join!(writing, reading);
    // The read side usually says why (EOF, reset); the write side when
    // the broker reset a connection it never answered on.
    let read = read.or_else(|why| {
        if said_goodbye.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(why)
        }
    });
    if let Some(why) = read.err().or(written.err()) {
        counters.closed.fetch_add(1, Ordering::Relaxed);
        errors.record(&anyhow!(
            "the broker closed a QoS {} publisher's connection: {why}",
            p.qos as u8
        ));
    }
}

/// The write half and its batch.
struct Writer<'a> {
    writer: BoxWrite,
    buf: BytesMut,
    counters: &'a Counters,
    end: Instant,
    /// PUBLISH packets in `buf`.
    pending: u64,
}

/// How a write ended early.
#[derive(Debug)]
enum Stop {
    /// The flood's end came while the socket was full.
    End,
    /// The broker closed or reset the connection.
    Broken(String),
}

impl Writer<'_> {
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match timeout_at(self.end.into(), self.writer.write_all(&self.buf)).await {
            Ok(Ok(())) => {
                self.counters
                    .sent
                    .fetch_add(self.pending, Ordering::Relaxed);
                self.buf.clear();
                self.pending = 0;
                Ok(())
            }
            Ok(Err(e)) => Err(Stop::Broken(format!("write failed: {e}"))),
            Err(_) => Err(Stop::End),
        }
    }
}

/// Messages due `elapsed` into a stream of `rate` per second (the first at
/// time zero).
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// The pacing tick for `rate` messages per second on one connection.
pub fn pace_tick(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate.max(1e-3)).clamp(PACE_MIN, PACE_MAX)
}

/// Writes until the flood ends; `Err` (why) only when the broker broke
/// the connection.
async fn write_loop(
    w: &mut Writer<'_>,
    template: &Template,
    index: u32,
    qos1: bool,
    spec: &Spec,
    window: &Semaphore,
) -> Result<(), String> {
    let start = Instant::now();
    let mut pace = interval_at(start.into(), pace_tick(spec.rate));
    pace.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq: u64 = 0;
    let mut id: u16 = 0;
    let outcome = loop {
        let now = Instant::now();
        if now >= spec.end {
            break Ok(());
        }
        if spec.rate > 0.0 && seq >= due(now - start, spec.rate) {
            if let Err(e) = w.flush().await {
                break Err(e);
            }
            tokio::select! {
                _ = pace.tick() => continue,
                _ = sleep_until(spec.end.into()) => break Ok(()),
            }
        }
        if qos1 {
            if let Ok(p) = window.try_acquire() {
                p.forget();
            } else {
                if let Err(e) = w.flush().await {
                    break Err(e);
                }
                tokio::select! {
                    p = window.acquire() => match p {
                        Ok(p) => p.forget(),
                        Err(_) => break Err(Stop::Broken("acknowledgements stopped".into())),
                    },
                    _ = sleep_until(spec.end.into()) => break Ok(()),
                }
            }
            // Packet ids 1..=65535; the window keeps far fewer in flight.
            id = id.checked_add(1).unwrap_or(1).max(1);
        }
        let stamp = Stamp {
            publisher: index,
            seq,
            sent_at_ns: now_ns(),
        };
        template.put(&mut w.buf, stamp, id);
        w.pending += 1;
        seq += 1;
        if w.buf.len() >= FLUSH_BYTES {
            if let Err(e) = w.flush().await {
                break Err(e);
            }
        }
    };
    match outcome.and(w.flush().await) {
        Ok(()) | Err(Stop::End) => Ok(()),
        Err(Stop::Broken(why)) => Err(why),
    }
}

/// Reads PUBACKs (giving window permits back) until `until`; `Err` (why)
/// when the broker closed the connection first.
async fn read_acks(
    mut reader: Reader,
    window: &Semaphore,
    counters: &Counters,
    qos1: bool,
    until: Instant,
) -> Result<(), String> {
    loop {
        match timeout_at(until.into(), reader.recv()).await {
            Err(_) => return Ok(()),
            Ok(Ok(Some(Incoming::Packet(Packet::PubAck(_))))) => {
                if qos1 {
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                    window.add_permits(1);
                }
            }
            Ok(Ok(Some(_))) => {}
            Ok(r) => {
                // The writer waiting for a permit must not wait for ever.
                window.close();
                return Err(match r {
                    Ok(_) => "end of stream".to_string(),
                    Err(e) => format!("{e:#}"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    #[test]
    fn qos1_share_of_publishers() {
        let n = 10;
        let q1 = (0..n).filter(|&i| is_qos1(i, n, 0.5)).count();
        assert_eq!(q1, 5);
        assert!(!(0..n).any(|i| is_qos1(i, n, 0.0)));
        assert!((0..n).all(|i| is_qos1(i, n, 1.0)));
    }

    #[test]
    fn template_rewrites_id_and_stamp() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let t = Template::new("soak/x/qos1", QoS::AtLeastOnce, 64, version).unwrap();
            let mut out = BytesMut::new();
            let stamp = Stamp {
                publisher: 4,
                seq: 17,
                sent_at_ns: 99,
            };
            t.put(&mut out, stamp, 0x0203);
            t.put(&mut out, Stamp { seq: 18, ..stamp }, 0x0204);
            let len = frame::frame_len(&out, 1 << 20).unwrap().unwrap();
            let first = frame::parse_publish(&out[..len], version.is_v5()).unwrap();
            assert_eq!(first.qos, 1);
            assert_eq!(first.packet_id, Some(0x0203));
            assert_eq!(first.payload.len(), 64);
            assert_eq!(Stamp::from_payload(first.payload), Some(stamp));
            let second = frame::parse_publish(&out[len..], version.is_v5()).unwrap();
            assert_eq!(second.packet_id, Some(0x0204));
            assert_eq!(Stamp::from_payload(second.payload).map(|s| s.seq), Some(18));
        }
        let t = Template::new("t", QoS::AtMostOnce, 20, ProtocolVersion::V311).unwrap();
        let mut out = BytesMut::new();
        t.put(
            &mut out,
            Stamp {
                publisher: 1,
                seq: 2,
                sent_at_ns: 3,
            },
            0,
        );
        let v = frame::parse_publish(&out, false).unwrap();
        assert_eq!((v.qos, v.packet_id), (0, None));
    }

    #[test]
    fn pacing() {
        assert_eq!(due(Duration::ZERO, 10.0), 1);
        assert_eq!(due(Duration::from_millis(500), 10.0), 6);
        assert_eq!(pace_tick(10.0), Duration::from_millis(100));
        assert_eq!(pace_tick(100_000.0), PACE_MIN);
        assert_eq!(pace_tick(0.01), PACE_MAX);
    }
}
