//! The performance targets mqttd is held to, and their verdicts. The
//! targets are set against Mosquitto; rumqttd's figure is shown beside
//! them for comparison only. The persistence targets compare mqttd's
//! durability modes (`mqttd-batched`, `mqttd-sync`) with Mosquitto with
//! persistence on and with each other, and bound the start-up time.

use super::Results;

/// What a target demands of the subject's figure (mqttd's) relative to
/// the reference's (Mosquitto's, unless the target names another).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// subject / reference ≥ this.
    RatioAtLeast(f64),
    /// subject ≤ reference (lower is better).
    NoMoreThanMosquitto,
    /// The subject's figure ≥ this absolute value.
    AtLeast(f64),
    /// The subject's figure < this absolute value.
    Below(f64),
    /// A figure to report, with no verdict.
    Reported,
}

#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub case: &'static str,
    pub metric: &'static str,
    pub rule: Rule,
    /// The result judged: a broker, or one of mqttd's durability modes.
    pub subject: &'static str,
    /// The result it is measured against.
    pub reference: &'static str,
    /// Parameters the subject's run must have reached for a verdict (a
    /// quick run is smaller than the target's load): (name, at least).
    pub scale: &'static [(&'static str, f64)],
}

/// The usual target: mqttd against Mosquitto, at any scale.
const fn against_mosquitto(
    name: &'static str,
    case: &'static str,
    metric: &'static str,
    rule: Rule,
) -> Target {
    Target {
        name,
        case,
        metric,
        rule,
        subject: "mqttd",
        reference: "mosquitto",
        scale: &[],
    }
}

pub const TARGETS: &[Target] = &[
    against_mosquitto(
        "QoS 0 fan-in throughput ≥ 2× Mosquitto",
        "pubsub-fanin-qos0",
        "received_per_sec",
        Rule::RatioAtLeast(2.0),
    ),
    against_mosquitto(
        "QoS 1 throughput (fan-in) ≥ 1.5× Mosquitto",
        "pubsub-fanin-qos1",
        "received_per_sec",
        Rule::RatioAtLeast(1.5),
    ),
    against_mosquitto(
        "Connect rate ≥ 1.5× Mosquitto",
        "conn-plain",
        "connections_per_sec",
        Rule::RatioAtLeast(1.5),
    ),
    against_mosquitto(
        "p99 latency at half Mosquitto's peak rate no worse",
        "latency-half-peak",
        "p99_us",
        Rule::NoMoreThanMosquitto,
    ),
    against_mosquitto(
        "Resident memory per idle connection ≤ Mosquitto's",
        "idle",
        "rss_per_connection_bytes",
        Rule::NoMoreThanMosquitto,
    ),
    against_mosquitto(
        "100,000 idle connections held",
        "idle",
        "connections_alive",
        Rule::AtLeast(100_000.0),
    ),
];

/// The start-up target's load: `fill` and `restart` parameters.
const FULL_STORE: &[(&str, f64)] = &[("sessions", 100_000.0), ("messages", 1_000_000.0)];

/// Durability against Mosquitto with persistence on, group commit, and
/// start-up with a full store.
pub const PERSISTENCE_TARGETS: &[Target] = &[
    Target {
        name: "`batched` QoS 1 1→1 to a persistent subscriber ≥ 1.5× Mosquitto (persistence true)",
        case: "persist-1to1-qos1",
        metric: "received_per_sec",
        rule: Rule::RatioAtLeast(1.5),
        subject: "mqttd-batched",
        reference: "mosquitto",
        scale: &[],
    },
    Target {
        name: "`batched` QoS 1 8→1 to a persistent subscriber ≥ 1.5× Mosquitto (persistence true)",
        case: "persist-fanin-qos1",
        metric: "received_per_sec",
        rule: Rule::RatioAtLeast(1.5),
        subject: "mqttd-batched",
        reference: "mosquitto",
        scale: &[],
    },
    Target {
        name: "`sync` ≥ 0.3× `batched` (group commit), QoS 1 1→1",
        case: "persist-1to1-qos1",
        metric: "received_per_sec",
        rule: Rule::RatioAtLeast(0.3),
        subject: "mqttd-sync",
        reference: "mqttd-batched",
        scale: &[],
    },
    Target {
        name: "`sync` ≥ 0.3× `batched` (group commit), QoS 1 8→1",
        case: "persist-fanin-qos1",
        metric: "received_per_sec",
        rule: Rule::RatioAtLeast(0.3),
        subject: "mqttd-sync",
        reference: "mqttd-batched",
        scale: &[],
    },
    Target {
        name: "Start-up with 100,000 sessions and 1,000,000 queued messages under 10 s (to the first CONNACK)",
        case: "startup-restart",
        metric: "startup_ms",
        rule: Rule::Below(10_000.0),
        subject: "mqttd-batched",
        reference: "mosquitto",
        scale: FULL_STORE,
    },
    Target {
        name: "Disk bytes per queued 100-byte message (`du -sb` of the data directory after SIGTERM, sessions included)",
        case: "startup-restart",
        metric: "disk_bytes_per_message",
        rule: Rule::Reported,
        subject: "mqttd-batched",
        reference: "mosquitto",
        scale: &[],
    },
    Target {
        name: "Disk bytes per queued message, allocated (`du -s`: without the unwritten part of a preallocated file)",
        case: "startup-restart",
        metric: "disk_allocated_bytes_per_message",
        rule: Rule::Reported,
        subject: "mqttd-batched",
        reference: "mosquitto",
        scale: &[],
    },
    Target {
        name: "Peak resident memory after start-up with the full store",
        case: "startup-restart",
        metric: "peak_rss_bytes",
        rule: Rule::Reported,
        subject: "mqttd-batched",
        reference: "mosquitto",
        scale: &[],
    },
];

/// A target's outcome: `met` is `None` when a figure is missing, when the
/// run was smaller than the target's load, and for a figure only reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The subject's figure.
    pub mqttd: Option<f64>,
    /// The reference's figure.
    pub mosquitto: Option<f64>,
    /// For comparison; no part of the verdict.
    pub rumqttd: Option<f64>,
    pub met: Option<bool>,
    /// The parameters below the target's load, as "name=value".
    pub short_of: Vec<String>,
}

pub fn evaluate(target: &Target, results: &Results) -> Verdict {
    let mqttd = results.value(target.case, target.subject, target.metric);
    let mosquitto = results.value(target.case, target.reference, target.metric);
    let short_of: Vec<String> = match results.get(target.case, target.subject) {
        Some(r) => target
            .scale
            .iter()
            .filter_map(|&(name, min)| {
                let v = r.params.get(name).and_then(serde_json::Value::as_f64);
                match v {
                    Some(v) if v >= min => None,
                    Some(v) => Some(format!("{name}={v}")),
                    None => Some(format!("{name} unknown")),
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let met = match target.rule {
        Rule::RatioAtLeast(r) => match (mqttd, mosquitto) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b >= r),
            (Some(a), Some(_)) => Some(a > 0.0),
            _ => None,
        },
        Rule::NoMoreThanMosquitto => match (mqttd, mosquitto) {
            (Some(a), Some(b)) => Some(a <= b),
            _ => None,
        },
        Rule::AtLeast(min) => mqttd.map(|a| a >= min),
        Rule::Below(max) => mqttd.map(|a| a < max),
        Rule::Reported => None,
    };
    Verdict {
        mqttd,
        mosquitto,
        rumqttd: results.value(target.case, "rumqttd", target.metric),
        met: met.filter(|_| short_of.is_empty()),
        short_of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Report};

    fn results(case: &str, metric: &str, mqttd: f64, mosquitto: f64) -> Results {
        let mut res = Results::default();
        for (broker, v) in [("mqttd", mqttd), ("mosquitto", mosquitto)] {
            let mut r = Report::new("x", "y");
            r.metric(metric, v, "", Better::Higher);
            res.insert(case, broker, r);
        }
        res
    }

    #[test]
    fn ratio_targets() {
        let t = &TARGETS[0];
        let v = evaluate(t, &results(t.case, t.metric, 210.0, 100.0));
        assert_eq!(v.met, Some(true));
        assert_eq!(v.rumqttd, None);
        let v = evaluate(t, &results(t.case, t.metric, 150.0, 100.0));
        assert_eq!(v.met, Some(false));
        assert_eq!(evaluate(t, &Results::default()).met, None);
    }

    #[test]
    fn rumqttd_does_not_decide() {
        let t = &TARGETS[0];
        let mut res = results(t.case, t.metric, 210.0, 100.0);
        let mut r = Report::new("x", "y");
        r.metric(t.metric, 1000.0, "", Better::Higher);
        res.insert(t.case, "rumqttd", r);
        let v = evaluate(t, &res);
        assert_eq!((v.rumqttd, v.met), (Some(1000.0), Some(true)));
    }

    fn persistence(
        case: &str,
        metric: &str,
        values: &[(&str, f64)],
        params: &[(&str, f64)],
    ) -> Results {
        let mut res = Results::default();
        for &(broker, v) in values {
            let mut r = Report::new("x", "y");
            for &(k, p) in params {
                r.param(k, p);
            }
            r.metric(metric, v, "", Better::Higher);
            res.insert(case, broker, r);
        }
        res
    }

    #[test]
    fn persistence_targets_judge_a_mode_against_its_reference() {
        let batched = &PERSISTENCE_TARGETS[0];
        let vals = [
            ("mqttd-batched", 150.0),
            ("mqttd-sync", 40.0),
            ("mosquitto", 100.0),
        ];
        let res = persistence(batched.case, batched.metric, &vals, &[]);
        let v = evaluate(batched, &res);
        assert_eq!(
            (v.mqttd, v.mosquitto, v.met),
            (Some(150.0), Some(100.0), Some(true))
        );
        // sync at 40 of batched's 150: 0.27 < 0.3.
        let sync = &PERSISTENCE_TARGETS[2];
        let v = evaluate(sync, &res);
        assert_eq!(
            (v.mqttd, v.mosquitto, v.met),
            (Some(40.0), Some(150.0), Some(false))
        );
    }

    #[test]
    fn start_up_needs_the_full_load_for_a_verdict() {
        let t = &PERSISTENCE_TARGETS[4];
        assert_eq!(t.metric, "startup_ms");
        let full = [("sessions", 100_000.0), ("messages", 1_000_000.0)];
        let fast = [("mqttd-batched", 3_000.0)];
        let v = evaluate(t, &persistence(t.case, t.metric, &fast, &full));
        assert_eq!(v.met, Some(true));
        let slow = [("mqttd-batched", 12_000.0)];
        let v = evaluate(t, &persistence(t.case, t.metric, &slow, &full));
        assert_eq!(v.met, Some(false));
        let quick = [("sessions", 10_000.0), ("messages", 1_000_000.0)];
        let v = evaluate(t, &persistence(t.case, t.metric, &fast, &quick));
        assert_eq!(
            (v.met, v.short_of),
            (None, vec!["sessions=10000".to_string()])
        );
        let reported = &PERSISTENCE_TARGETS[5];
        let v = evaluate(
            reported,
            &persistence(reported.case, reported.metric, &fast, &full),
        );
        assert_eq!((v.mqttd, v.met), (Some(3_000.0), None));
    }

    #[test]
    fn lower_is_better_and_absolute_targets() {
        let p99 = &TARGETS[3];
        assert_eq!(
            evaluate(p99, &results(p99.case, p99.metric, 900.0, 1000.0)).met,
            Some(true)
        );
        assert_eq!(
            evaluate(p99, &results(p99.case, p99.metric, 1100.0, 1000.0)).met,
            Some(false)
        );
        let held = &TARGETS[5];
        assert_eq!(
            evaluate(held, &results(held.case, held.metric, 19_000.0, 19_000.0)).met,
            Some(false)
        );
        assert_eq!(
            evaluate(held, &results(held.case, held.metric, 100_000.0, 0.0)).met,
            Some(true)
        );
    }
}
