//! The message-flow engine shared by `pubsub` and `latency`: P publishers
//! and S subscribers on one topic, every subscriber receiving every
//! message.
//!
//! Subscribers connect and subscribe first, then publishers connect and all
//! start at the same instant. Publishers stop at the deadline (or their
//! count); subscribers then drain what is still in flight, stopping when
//! they have everything, when nothing arrived for [`QUIET`], or after the
//! drain limit.

mod publisher;
mod subscriber;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use mqttd::types::{QoS, TopicName};
use tokio::task::JoinSet;

use crate::ctx::{Ctx, Errors};
use crate::mqtt::Client;
use crate::progress::Progress;
use crate::stats::latency::LatencyHist;
use crate::stats::loss::Counts;

/// Subscribers stop once publishers are done and nothing arrived for this
/// long: the broker has nothing left to deliver.
pub const QUIET: Duration = Duration::from_secs(1);
/// Delay between connecting the last client and the common start instant.
const START_DELAY: Duration = Duration::from_millis(100);

/// Where publishers send their messages.
#[derive(Debug, Clone)]
pub enum Topics {
    /// The flow's own topic, which every subscriber receives.
    One,
    /// Message k of the whole flow (k = seq × publishers + publisher
    /// index) to topic k mod len: the topics take turns, each getting the
    /// same share. `fill` queues messages for many offline sessions so.
    Spread(Arc<[TopicName]>),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub publishers: u32,
    pub subscribers: u32,
    pub qos: QoS,
    /// Subscribers keep persistent sessions (3.1.1 clean_session=0; 5.0
    /// clean start 0 with a session expiry), so a broker that stores
    /// such sessions' messages does so on this flow's path.
    pub persistent: bool,
    pub topics: Topics,
    /// Payload bytes per message (at least the stamp's 20).
    pub payload: usize,
    pub duration: Duration,
    /// Messages per publisher at most.
    pub count: Option<u64>,
    /// Offered rate over all publishers, messages per second; 0 = as fast
    /// as the broker takes them.
    pub rate: f64,
    /// Unacknowledged QoS 1/2 messages per publisher.
    pub inflight: usize,
    /// Longest wait for in-flight messages after publishers stop.
    pub drain: Duration,
    /// Record end-to-end latency of messages sent after `warmup`.
    pub latency: bool,
    pub warmup: Duration,
}

/// What happened.
#[derive(Debug, Default)]
pub struct FlowOutcome {
    pub sent: u64,
    /// QoS 1/2 messages whose handshake with the broker completed.
    pub acked: u64,
    pub received: Counts,
    pub hist: LatencyHist,
    /// Start to the last publisher's stop.
    pub publish_time: Duration,
    /// Start to the last message received by any subscriber.
    pub receive_time: Duration,
}

/// State shared by the flow's tasks.
#[derive(Debug)]
struct Shared {
    start: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    /// Nanoseconds (payload clock) when every publisher had stopped; 0
    /// while they run.
    done_at_ns: AtomicU64,
    errors: Arc<Errors>,
}

impl Shared {
    fn done_at_ns(&self) -> u64 {
        self.done_at_ns.load(Ordering::Acquire)
    }
}

/// Runs the flow; connection errors abort, errors after the start are
/// counted in `errors`.
pub async fn run(
    ctx: &Ctx,
    spec: FlowSpec,
    label: &str,
) -> anyhow::Result<(FlowOutcome, Arc<Errors>)> {
    let topic = TopicName::new(&format!("bench/{}/flow", ctx.run_id))
        .map_err(|e| anyhow!("bad topic: {e}"))?;
    let subs = connect_subscribers(ctx, &spec, &topic).await?;
    let pubs = connect_publishers(ctx, &spec).await?;
    let shared = Arc::new(Shared {
        start: Instant::now() + START_DELAY,
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        done_at_ns: AtomicU64::new(0),
        errors: Arc::new(Errors::default()),
    });
    let spec = Arc::new(spec);
    let progress = show_progress(label, ctx.quiet, &shared);
    let mut sub_tasks = JoinSet::new();
    for client in subs {
        sub_tasks.spawn(subscriber::run(client, spec.clone(), shared.clone()));
    }
    let mut pub_tasks = JoinSet::new();
    for (i, client) in pubs.into_iter().enumerate() {
        let args = publisher::PubArgs {
            index: i as u32,
            topic: topic.clone(),
            spec: spec.clone(),
            shared: shared.clone(),
        };
        pub_tasks.spawn(publisher::run(client, args));
    }
    let mut outcome = FlowOutcome::default();
    while let Some(joined) = pub_tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(acked) => outcome.acked += acked,
            Err(e) => shared.errors.record(&e),
        }
    }
    outcome.publish_time = shared.start.elapsed();
    // Counted as written, so a publisher that failed midway still counts.
    outcome.sent = shared.sent.load(Ordering::Acquire);
    shared
        .done_at_ns
        .store(crate::payload::now_ns().max(1), Ordering::Release);
    collect_subscribers(&mut sub_tasks, &shared, &mut outcome).await;
    progress.finish();
    Ok((outcome, shared.errors.clone()))
}

async fn collect_subscribers(
    tasks: &mut JoinSet<subscriber::SubOutcome>,
    shared: &Shared,
    outcome: &mut FlowOutcome,
) {
    let mut last_rx: Option<Instant> = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(s) => {
                outcome.received.add(s.counts);
                outcome.hist.merge(&s.hist);
                last_rx = last_rx.max(s.last_rx);
            }
            Err(e) => shared.errors.record(&e.into()),
        }
    }
    outcome.receive_time = last_rx.map_or(Duration::ZERO, |t| {
        t.saturating_duration_since(shared.start)
    });
}

async fn connect_subscribers(
    ctx: &Ctx,
    spec: &FlowSpec,
    topic: &TopicName,
) -> anyhow::Result<Vec<Client>> {
    let mut subs = Vec::new();
    for i in 0..spec.subscribers {
        let opts = ctx.connect_opts(format!("{}-sub-{i}", ctx.run_id), !spec.persistent);
        let (mut client, _) = Client::connect(&ctx.target, &opts).await?;
        client.subscribe(topic.as_str(), spec.qos).await?;
        subs.push(client);
    }
    Ok(subs)
}

async fn connect_publishers(ctx: &Ctx, spec: &FlowSpec) -> anyhow::Result<Vec<Client>> {
    let mut pubs = Vec::new();
    for i in 0..spec.publishers {
        let opts = ctx.connect_opts(format!("{}-pub-{i}", ctx.run_id), true);
        pubs.push(Client::connect(&ctx.target, &opts).await?.0);
    }
    Ok(pubs)
}

fn show_progress(label: &str, quiet: bool, shared: &Arc<Shared>) -> Progress {
    let s = shared.clone();
    Progress::start(label, quiet, move || {
        let secs = s.start.elapsed().as_secs_f64().max(1e-3);
        let sent = s.sent.load(Ordering::Relaxed);
        let received = s.received.load(Ordering::Relaxed);
        format!(
            "sent {sent} ({:.0}/s), received {received} ({:.0}/s), errors {}",
            sent as f64 / secs,
            received as f64 / secs,
            s.errors.count()
        )
    })
}
