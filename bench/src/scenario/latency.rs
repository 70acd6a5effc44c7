//! `latency`: end-to-end latency percentiles at a fixed offered rate.
//!
//! Each payload carries the time its message was *meant* to be sent (the
//! publisher is paced by a tokio interval), so a publisher that falls
//! behind does not hide the delay (no coordinated omission).

use std::time::Duration;

use anyhow::ensure;
use mqttd::types::QoS;

use super::flow::{self, FlowSpec, Topics};
use super::pubsub::flow_metrics;
use super::{parse_duration, parse_qos};
use crate::ctx::Ctx;
use crate::payload::STAMP_LEN;
use crate::report::{Better, Report};
use crate::stats::latency::Percentiles;

/// Latency: publishers paced to --rate messages/s in total; subscribers
/// record the time from each message's scheduled send to its arrival and
/// report p50/p90/p99/p99.9/max.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Offered rate in messages/s over all publishers.
    #[arg(long)]
    pub rate: f64,
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    #[arg(long, default_value_t = 1)]
    pub subscribers: u32,
    /// QoS of the messages and the subscriptions: 0, 1 or 2.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Payload bytes per message (at least 20).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// How long publishers publish (the warm-up included).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Messages sent in the first part of the run are not recorded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// Longest wait for messages still in flight once publishers stop.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
}

const SETUP_ALLOWANCE: Duration = Duration::from_secs(10);

pub fn time_limit(args: &Args) -> Duration {
    args.duration + args.drain * 2 + SETUP_ALLOWANCE
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    ensure!(
        args.payload >= STAMP_LEN,
        "--payload must be at least {STAMP_LEN} bytes"
    );
    ensure!(
        args.publishers > 0 && args.subscribers > 0,
        "need a publisher and a subscriber"
    );
    ensure!(
        args.warmup < args.duration,
        "--warmup must be shorter than --duration"
    );
    let spec = FlowSpec {
        publishers: args.publishers,
        subscribers: args.subscribers,
        qos: args.qos,
        persistent: false,
        topics: Topics::One,
        payload: args.payload,
        duration: args.duration,
        count: None,
        rate: args.rate,
        inflight: args.inflight,
        drain: args.drain,
        latency: true,
        warmup: args.warmup,
    };
    let (outcome, errors) = flow::run(ctx, spec, "latency").await?;
    let mut r = ctx.report("latency");
    r.param("rate", args.rate)
        .param("publishers", args.publishers)
        .param("subscribers", args.subscribers)
        .param("qos", args.qos as u8)
        .param("payload_bytes", args.payload)
        .param("duration_secs", args.duration.as_secs_f64())
        .param("warmup_secs", args.warmup.as_secs_f64());
    r.metric("offered_per_sec", args.rate, "msg/s", Better::Neither);
    percentile_metrics(&mut r, &outcome.hist.percentiles(), "");
    flow_metrics(&mut r, &outcome, u64::from(args.subscribers), args.payload);
    errors.fill(&mut r);
    Ok(r)
}

/// Adds `{prefix}p50_us` … `{prefix}max_us` and the sample count.
pub fn percentile_metrics(r: &mut Report, p: &Percentiles, prefix: &str) {
    let mut add = |name: &str, v: f64| {
        r.metric(&format!("{prefix}{name}"), v, "us", Better::Lower);
    };
    add("p50_us", p.p50_us);
    add("p90_us", p.p90_us);
    add("p99_us", p.p99_us);
    add("p999_us", p.p999_us);
    add("max_us", p.max_us);
    add("mean_us", p.mean_us);
    r.metric(
        &format!("{prefix}samples"),
        p.count as f64,
        "",
        Better::Neither,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_names() {
        let p = Percentiles {
            count: 10,
            mean_us: 1.0,
            p50_us: 2.0,
            p90_us: 3.0,
            p99_us: 4.0,
            p999_us: 5.0,
            max_us: 6.0,
        };
        let mut r = Report::new("latency", "x");
        percentile_metrics(&mut r, &p, "handshake_");
        assert_eq!(r.get("handshake_p99_us"), Some(4.0));
        assert_eq!(r.get("handshake_p999_us"), Some(5.0));
        assert_eq!(r.get("handshake_samples"), Some(10.0));
    }
}
