//! `fill`: load a broker with offline persistent sessions and their queued
//! messages, for `restart` to time the start-up that reads them back.
//!
//! Phase 1 creates `--sessions` persistent sessions (clean_session=0;
//! session N is client `PREFIX-N`), each subscribed at QoS 1 to its own
//! topic `PREFIX/N`, and disconnects each at once, `--concurrency` at a
//! time (the open-files limit bounds the connections held, not the
//! sessions made). Phase 2 publishes `--messages` QoS 1 messages, message
//! k to session k mod sessions, from `--publishers` publishers as fast as
//! the broker acknowledges them (the `pubsub` publisher, with a window of
//! `--inflight`). Every message then waits in an offline session's queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use futures::stream::{self, StreamExt};
use mqttd::types::{QoS, TopicName};

use super::flow::{self, FlowSpec, Topics};
use super::parse_duration;
use crate::ctx::{Ctx, Errors};
use crate::mqtt::Client;
use crate::payload::STAMP_LEN;
use crate::progress::Progress;
use crate::report::{Better, Report};
use crate::stats::rate::per_sec;

/// Fill a broker's store: create persistent sessions, each subscribed at
/// QoS 1 to a topic of its own, disconnect them, then publish QoS 1
/// messages spread evenly over them. Reports the sessions made and the
/// messages acknowledged per second; `restart` then times the broker's
/// start-up with them.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Persistent sessions to create.
    #[arg(long, default_value_t = 100_000)]
    pub sessions: usize,
    /// QoS 1 messages to queue, message k for session k mod --sessions (a
    /// multiple of --publishers).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Payload bytes per message (at least 20: publisher, sequence, time).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Publishing clients.
    #[arg(long, default_value_t = 8)]
    pub publishers: u32,
    /// Unacknowledged messages per publisher.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// Sessions being set up at once (connect, subscribe, disconnect).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Session N is client PREFIX-N subscribed to PREFIX/N; give `restart`
    /// the same prefix.
    #[arg(long, default_value = "fill")]
    pub prefix: String,
    /// Longest time for each phase (sessions, then messages).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub limit: Duration,
}

/// Longest wait for the last acknowledgements once publishing stopped.
const DRAIN: Duration = Duration::from_secs(30);

pub fn time_limit(args: &Args) -> Duration {
    args.limit * 2 + DRAIN
}

/// The client id of session `i`.
pub fn client_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

/// The topic session `i` subscribes to.
pub fn topic(prefix: &str, i: usize) -> String {
    format!("{prefix}/{i}")
}

/// Messages queued for session `i` when `messages` are spread over
/// `sessions`, message k to session k mod `sessions`.
pub fn expected_for(i: usize, sessions: usize, messages: u64) -> u64 {
    if sessions == 0 {
        return 0;
    }
    let n = sessions as u64;
    messages / n + u64::from((i as u64) < messages % n)
}

pub async fn run(ctx: &Arc<Ctx>, args: &Args) -> anyhow::Result<Report> {
    ensure!(args.sessions > 0, "--sessions must be at least 1");
    ensure!(
        args.publishers > 0 && args.concurrency > 0 && args.inflight > 0,
        "--publishers, --concurrency and --inflight must be at least 1"
    );
    ensure!(
        args.messages % u64::from(args.publishers) == 0,
        "--messages must be a multiple of --publishers ({})",
        args.publishers
    );
    ensure!(
        args.payload >= STAMP_LEN,
        "--payload must be at least {STAMP_LEN} bytes"
    );
    let topics: Arc<[TopicName]> = (0..args.sessions)
        .map(|i| TopicName::new(&topic(&args.prefix, i)).map_err(|e| anyhow!("bad topic: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let errors = Errors::default();
    let setup = make_sessions(ctx, args, &errors).await;
    let spec = FlowSpec {
        publishers: args.publishers,
        subscribers: 0,
        qos: QoS::AtLeastOnce,
        persistent: false,
        topics: Topics::Spread(topics),
        payload: args.payload,
        duration: args.limit,
        count: Some(args.messages / u64::from(args.publishers)),
        rate: 0.0,
        inflight: args.inflight,
        drain: DRAIN,
        latency: false,
        warmup: Duration::ZERO,
    };
    let (outcome, flow_errors) = flow::run(ctx, spec, "fill messages").await?;
    let mut r = ctx.report("fill");
    r.param("sessions", args.sessions)
        .param("messages", args.messages)
        .param("payload_bytes", args.payload)
        .param("publishers", args.publishers)
        .param("inflight", args.inflight)
        .param("concurrency", args.concurrency)
        .param("prefix", args.prefix.as_str());
    r.metric("sessions_made", setup.made as f64, "", Better::Higher)
        .metric(
            "sessions_present",
            setup.present as f64,
            "",
            Better::Neither,
        )
        .metric(
            "sessions_per_sec",
            per_sec(setup.made, setup.time),
            "session/s",
            Better::Higher,
        )
        .metric("sent", outcome.sent as f64, "msg", Better::Neither)
        .metric("acked", outcome.acked as f64, "msg", Better::Higher)
        .metric(
            "acked_per_sec",
            per_sec(outcome.acked, outcome.publish_time),
            "msg/s",
            Better::Higher,
        );
    let errs = errors.count() + flow_errors.count();
    r.metric("errors", errs as f64, "", Better::Lower);
    r.first_error = errors.first().or_else(|| flow_errors.first());
    Ok(r)
}

/// What phase 1 did.
struct Setup {
    made: u64,
    /// Sessions the broker already had (session present = 1).
    present: u64,
    time: Duration,
}

async fn make_sessions(ctx: &Arc<Ctx>, args: &Args, errors: &Errors) -> Setup {
    let made = Arc::new(AtomicU64::new(0));
    let present = Arc::new(AtomicU64::new(0));
    let m = made.clone();
    let total = args.sessions;
    let progress = Progress::start("fill sessions", ctx.quiet, move || {
        format!("{} of {total} sessions", m.load(Ordering::Relaxed))
    });
    let start = Instant::now();
    let deadline = start + args.limit;
    let mut setups = stream::iter(0..args.sessions)
        .map(|i| {
            let (ctx, made, present) = (ctx.clone(), made.clone(), present.clone());
            let prefix = args.prefix.clone();
            async move {
                let one = async {
                    let opts = ctx.connect_opts(client_id(&prefix, i), false);
                    let (mut client, ack) = Client::connect(&ctx.target, &opts).await?;
                    client
                        .subscribe(&topic(&prefix, i), QoS::AtLeastOnce)
                        .await?;
                    client.disconnect().await?;
                    anyhow::Ok(ack.session_present)
                };
                let was_present = tokio::time::timeout_at(deadline.into(), one)
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("fill --limit reached making sessions")))?;
                made.fetch_add(1, Ordering::Relaxed);
                if was_present {
                    present.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(result) = setups.next().await {
        if let Err(e) = result {
            errors.record(&e);
        }
    }
    let time = start.elapsed();
    progress.finish();
    Setup {
        made: made.load(Ordering::Relaxed),
        present: present.load(Ordering::Relaxed),
        time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_spread_evenly() {
        // 10 messages over 4 sessions: 3, 3, 2, 2.
        let got: Vec<u64> = (0..4).map(|i| expected_for(i, 4, 10)).collect();
        assert_eq!(got, [3, 3, 2, 2]);
        assert_eq!((0..4).map(|i| expected_for(i, 4, 10)).sum::<u64>(), 10);
        assert_eq!(expected_for(7, 100_000, 1_000_000), 10);
        assert_eq!(expected_for(0, 0, 5), 0);
    }

    #[test]
    fn names_of_a_session() {
        assert_eq!(client_id("fill", 42), "fill-42");
        assert_eq!(topic("fill", 42), "fill/42");
    }
}
