//! `pubsub`: throughput of one topic from P publishers to S subscribers
//! (1→1, fan-in N→1, fan-out 1→N) at a QoS, with loss counted by sequence
//! numbers.

use std::time::Duration;

use anyhow::ensure;
use mqttd::types::QoS;

use super::flow::{self, FlowOutcome, FlowSpec, Topics};
use super::{parse_duration, parse_qos};
use crate::ctx::Ctx;
use crate::payload::STAMP_LEN;
use crate::report::{Better, Report};
use crate::stats::loss;
use crate::stats::rate::per_sec;

/// Throughput: P publishers send as fast as the broker takes them (or at
/// --rate) to one topic that S subscribers receive; reports messages/s
/// sent and received and the loss (sent × S − unique received).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Publishing clients (fan-in: several publishers, one subscriber).
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Subscribing clients (fan-out: one publisher, several subscribers).
    #[arg(long, default_value_t = 1)]
    pub subscribers: u32,
    /// QoS of the messages and the subscriptions: 0, 1 or 2.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Subscribers keep persistent sessions: clean_session=0 (5.0: clean
    /// start 0 and a day's session expiry) under a client id fixed for
    /// the run (RUN-sub-N), so a broker that stores such sessions' QoS 1/2
    /// messages does so before acknowledging them to the publisher.
    #[arg(long)]
    pub persistent: bool,
    /// Payload bytes per message (at least 20: publisher, sequence, time).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// How long publishers publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop each publisher after this many messages (if before --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Total offered rate in messages/s over all publishers; 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// Longest wait for messages still in flight once publishers stop.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,
}

/// Time allowed for connecting every client before the start.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(10);

pub fn time_limit(args: &Args) -> Duration {
    args.duration + args.drain * 2 + SETUP_ALLOWANCE
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.payload >= STAMP_LEN,
        "--payload must be at least {STAMP_LEN} bytes"
    );
    ensure!(args.publishers > 0, "--publishers must be at least 1");
    ensure!(
        args.rate >= 0.0 && args.rate.is_finite(),
        "--rate must be 0 or positive"
    );
    ensure!(args.inflight > 0, "--inflight must be at least 1");
    let spec = FlowSpec {
        publishers: args.publishers,
        subscribers: args.subscribers,
        qos: args.qos,
        persistent: args.persistent,
        topics: Topics::One,
        payload: args.payload,
        duration: args.duration,
        count: args.count,
        rate: args.rate,
        inflight: args.inflight,
        drain: args.drain,
        latency: false,
        warmup: Duration::ZERO,
    };
    let (outcome, errors) = flow::run(ctx, spec, "pubsub").await?;
    let mut r = ctx.report("pubsub");
    r.param("publishers", args.publishers)
        .param("subscribers", args.subscribers)
        .param("qos", args.qos as u8)
        .param("persistent", args.persistent)
        .param("payload_bytes", args.payload)
        .param("duration_secs", args.duration.as_secs_f64())
        .param("rate", args.rate)
        .param("inflight", args.inflight);
    flow_metrics(&mut r, &outcome, u64::from(args.subscribers), args.payload);
    if args.qos != QoS::AtMostOnce {
        r.metric("acked", outcome.acked as f64, "msg", Better::Higher);
    }
    errors.fill(&mut r);
    Ok(r)
}

/// The metrics every message flow reports: counts, rates and loss.
pub fn flow_metrics(r: &mut Report, o: &FlowOutcome, receivers: u64, payload: usize) {
    let unique = o.received.unique;
    let received_rate = per_sec(unique, o.receive_time);
    r.metric("sent", o.sent as f64, "msg", Better::Neither)
        .metric("received", unique as f64, "msg", Better::Neither)
        .metric(
            "sent_per_sec",
            per_sec(o.sent, o.publish_time),
            "msg/s",
            Better::Higher,
        )
        .metric("received_per_sec", received_rate, "msg/s", Better::Higher)
        .metric(
            "received_mib_per_sec",
            received_rate * payload as f64 / (1024.0 * 1024.0),
            "MiB/s",
            Better::Higher,
        )
        .metric(
            "lost",
            loss::lost(o.sent, receivers, unique) as f64,
            "msg",
            Better::Lower,
        )
        .metric(
            "loss_ratio",
            loss::loss_ratio(o.sent, receivers, unique),
            "",
            Better::Lower,
        )
        .metric(
            "duplicates",
            o.received.duplicates as f64,
            "msg",
            Better::Lower,
        )
        .metric(
            "out_of_order",
            o.received.out_of_order as f64,
            "msg",
            Better::Lower,
        );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::loss::Counts;

    #[test]
    fn fan_out_metrics() {
        let o = FlowOutcome {
            sent: 1000,
            received: Counts {
                unique: 3900,
                duplicates: 5,
                ..Counts::default()
            },
            publish_time: Duration::from_secs(2),
            receive_time: Duration::from_secs(4),
            ..FlowOutcome::default()
        };
        let mut r = Report::new("pubsub", "x");
        flow_metrics(&mut r, &o, 4, 1024);
        assert_eq!(r.get("sent_per_sec"), Some(500.0));
        assert_eq!(r.get("received_per_sec"), Some(975.0));
        assert_eq!(r.get("lost"), Some(100.0));
        assert_eq!(r.get("loss_ratio"), Some(0.025));
        assert_eq!(r.get("duplicates"), Some(5.0));
    }
}
