//! The performance targets mqttd is held to, and their verdicts. The
//! targets are set against Mosquitto; rumqttd's figure is shown beside
//! them for comparison only.

use super::Results;

/// What a target demands of mqttd's figure relative to Mosquitto's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// mqttd / Mosquitto ≥ this.
    RatioAtLeast(f64),
    /// mqttd ≤ Mosquitto (lower is better).
    NoMoreThanMosquitto,
    /// mqttd's figure ≥ this absolute value.
    AtLeast(f64),
}

#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub case: &'static str,
    pub metric: &'static str,
    pub rule: Rule,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "QoS 0 fan-in throughput ≥ 2× Mosquitto",
        case: "pubsub-fanin-qos0",
        metric: "received_per_sec",
        rule: Rule::RatioAtLeast(2.0),
    },
    Target {
        name: "QoS 1 throughput (fan-in) ≥ 1.5× Mosquitto",
        case: "pubsub-fanin-qos1",
        metric: "received_per_sec",
        rule: Rule::RatioAtLeast(1.5),
    },
    Target {
        name: "Connect rate ≥ 1.5× Mosquitto",
        case: "conn-plain",
        metric: "connections_per_sec",
        rule: Rule::RatioAtLeast(1.5),
    },
    Target {
        name: "p99 latency at half Mosquitto's peak rate no worse",
        case: "latency-half-peak",
        metric: "p99_us",
        rule: Rule::NoMoreThanMosquitto,
    },
    Target {
        name: "Resident memory per idle connection ≤ Mosquitto's",
        case: "idle",
        metric: "rss_per_connection_bytes",
        rule: Rule::NoMoreThanMosquitto,
    },
    Target {
        name: "100,000 idle connections held",
        case: "idle",
        metric: "connections_alive",
        rule: Rule::AtLeast(100_000.0),
    },
];

/// A target's outcome: `met` is `None` when a figure is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub mqttd: Option<f64>,
    pub mosquitto: Option<f64>,
    /// For comparison; no part of the verdict.
    pub rumqttd: Option<f64>,
    pub met: Option<bool>,
}

pub fn evaluate(target: &Target, results: &Results) -> Verdict {
    let mqttd = results.value(target.case, "mqttd", target.metric);
    let mosquitto = results.value(target.case, "mosquitto", target.metric);
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
    };
    Verdict {
        mqttd,
        mosquitto,
        rumqttd: results.value(target.case, "rumqttd", target.metric),
        met,
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
