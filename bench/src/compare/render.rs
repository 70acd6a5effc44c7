//! The Markdown of BENCHMARKS.md.

use std::fmt::Write as _;

use super::losses::{self, Loss};
use super::machine::Machine;
use super::targets::{evaluate, Rule, Target, PERSISTENCE_TARGETS, TARGETS};
use super::{Absence, Results, BROKERS};
use crate::report::{format_value, Better, Report};

pub struct Document {
    pub machine: Machine,
    pub mqttd_version: String,
    pub mosquitto_version: String,
    pub rumqttd_version: String,
    pub mode: String,
    pub date: String,
    pub settings: Option<String>,
    pub notes: Option<String>,
}

/// The results a case's table puts side by side (result name, column
/// title) and the ratios it shows (numerator, denominator, title).
pub struct Columns {
    pub brokers: &'static [(&'static str, &'static str)],
    pub ratios: &'static [(&'static str, &'static str, &'static str)],
}

/// mqttd, Mosquitto and rumqttd; mqttd over each of the others.
const BROKER_COLUMNS: Columns = Columns {
    brokers: &BROKERS,
    ratios: &[
        ("mqttd", "mosquitto", "mqttd/Mosquitto"),
        ("mqttd", "rumqttd", "mqttd/rumqttd"),
    ],
};

/// mqttd in each durability mode and Mosquitto with persistence on
/// (rumqttd keeps nothing on disk).
const PERSISTENCE_COLUMNS: Columns = Columns {
    brokers: &[
        ("mqttd-batched", "mqttd batched"),
        ("mqttd-sync", "mqttd sync"),
        ("mqttd-memory", "mqttd memory"),
        ("mosquitto", "Mosquitto"),
    ],
    ratios: &[
        ("mqttd-batched", "mosquitto", "batched/Mosquitto"),
        ("mqttd-sync", "mqttd-batched", "sync/batched"),
        ("mqttd-batched", "mqttd-memory", "batched/memory"),
    ],
};

/// mqttd with its default durability, and Mosquitto with persistence on.
const STARTUP_COLUMNS: Columns = Columns {
    brokers: &[
        ("mqttd-batched", "mqttd batched"),
        ("mosquitto", "Mosquitto"),
    ],
    ratios: &[("mqttd-batched", "mosquitto", "mqttd/Mosquitto")],
};

/// Every result name, in the order losses are listed.
const ALL_BROKERS: &[&str] = &[
    "mqttd",
    "mqttd-batched",
    "mqttd-sync",
    "mqttd-memory",
    "mosquitto",
    "rumqttd",
];

/// Known cases in report order: name, title, columns.
const CASES: &[(&str, &str, &Columns)] = &[
    ("conn-plain", "Connection rate, plain TCP", &BROKER_COLUMNS),
    ("conn-tls", "Connection rate, TLS", &BROKER_COLUMNS),
    ("pubsub-1to1-qos0", "Throughput 1→1, QoS 0", &BROKER_COLUMNS),
    (
        "pubsub-fanin-qos0",
        "Throughput fan-in (N→1), QoS 0",
        &BROKER_COLUMNS,
    ),
    (
        "pubsub-fanout-qos0",
        "Throughput fan-out (1→N), QoS 0",
        &BROKER_COLUMNS,
    ),
    ("pubsub-1to1-qos1", "Throughput 1→1, QoS 1", &BROKER_COLUMNS),
    (
        "pubsub-fanin-qos1",
        "Throughput fan-in (N→1), QoS 1",
        &BROKER_COLUMNS,
    ),
    (
        "pubsub-fanout-qos1",
        "Throughput fan-out (1→N), QoS 1",
        &BROKER_COLUMNS,
    ),
    ("pubsub-1to1-qos2", "Throughput 1→1, QoS 2", &BROKER_COLUMNS),
    (
        "latency-half-peak",
        "Latency at half Mosquitto's peak 1→1 rate",
        &BROKER_COLUMNS,
    ),
    ("idle", "Idle connections and memory", &BROKER_COLUMNS),
    ("churn", "Session churn", &BROKER_COLUMNS),
    (
        "persist-1to1-qos1",
        "Persistent subscriber 1→1, QoS 1, by durability",
        &PERSISTENCE_COLUMNS,
    ),
    (
        "persist-fanin-qos1",
        "Persistent subscriber fan-in (N→1), QoS 1, by durability",
        &PERSISTENCE_COLUMNS,
    ),
    (
        "startup-fill",
        "Filling the store: persistent sessions and queued messages",
        &STARTUP_COLUMNS,
    ),
    (
        "startup-restart",
        "Restart with the filled store",
        &STARTUP_COLUMNS,
    ),
];

/// The columns of `case`'s table (mqttd, Mosquitto, rumqttd for a case
/// this version does not know).
fn columns_of(case: &str) -> &'static Columns {
    CASES
        .iter()
        .find(|(c, _, _)| *c == case)
        .map_or(&BROKER_COLUMNS, |(_, _, cols)| *cols)
}

/// A figure, or "-" when missing.
fn show(x: Option<f64>) -> String {
    x.map_or("-".to_string(), format_value)
}

/// mqttd's figure over another broker's, or "-".
fn ratio(mqttd: Option<f64>, other: Option<f64>) -> String {
    match (mqttd, other) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "-".to_string(),
    }
}

fn display_name(broker: &str) -> &str {
    BROKERS
        .iter()
        .chain(PERSISTENCE_COLUMNS.brokers)
        .find(|(b, _)| *b == broker)
        .map_or(broker, |(_, name)| name)
}

pub fn render(doc: &Document, results: &Results) -> String {
    let mut out = String::new();
    let cases = ordered_cases(results);
    header(&mut out, doc);
    targets(&mut out, results);
    if PERSISTENCE_TARGETS
        .iter()
        .any(|t| cases.iter().any(|c| c == t.case))
    {
        persistence_targets(&mut out, results);
    }
    losses_section(&mut out, &losses::all(results, &cases, ALL_BROKERS));
    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(
        out,
        "Ratios are mqttd's figure over Mosquitto's and over rumqttd's (in the persistence \
         cases, as each column says); ↑ marks figures where higher is better, ↓ lower. \
         n/a: no result for that broker (the reason follows the table).\n"
    );
    for case in &cases {
        case_section(&mut out, results, case);
    }
    if let Some(s) = &doc.settings {
        let _ = writeln!(out, "## Settings\n\n{}\n", s.trim_end());
    }
    if let Some(n) = &doc.notes {
        let _ = writeln!(out, "## Notes\n\n{}\n", n.trim_end());
    }
    out
}

fn header(out: &mut String, doc: &Document) {
    let m = &doc.machine;
    let _ = writeln!(out, "# Benchmarks: mqttd, Mosquitto and rumqttd\n");
    let _ = writeln!(
        out,
        "Generated by `scripts/bench-compare.sh` ({} run{}); do not edit by hand, run the script again.\n",
        doc.mode,
        if doc.date.is_empty() { String::new() } else { format!(", {}", doc.date) }
    );
    let _ = writeln!(out, "## Machine\n\n| | |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} |", m.cpu);
    let _ = writeln!(out, "| Cores | {} |", m.cores);
    let _ = writeln!(
        out,
        "| Memory | {:.1} GiB |",
        m.memory_bytes as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(out, "| Kernel | {} |", m.kernel);
    let _ = writeln!(out, "| OS | {} |\n", m.os);
    let _ = writeln!(out, "## Versions\n\n| | |\n|---|---|");
    let _ = writeln!(out, "| mqttd | {} |", doc.mqttd_version);
    let _ = writeln!(out, "| Mosquitto | {} |", doc.mosquitto_version);
    let _ = writeln!(out, "| rumqttd | {} |", doc.rumqttd_version);
    let _ = writeln!(out, "| mqttd-bench | {} |\n", env!("CARGO_PKG_VERSION"));
}

fn targets(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(
        out,
        "The targets are set against Mosquitto; rumqttd's figure is shown for comparison.\n"
    );
    let _ = writeln!(
        out,
        "| Target | mqttd | Mosquitto | rumqttd | mqttd/Mosquitto | mqttd/rumqttd | Met |\n\
         |---|---:|---:|---:|---:|---:|---|"
    );
    for t in TARGETS {
        let v = evaluate(t, results);
        let (to_mosquitto, to_rumqttd) = match t.rule {
            Rule::AtLeast(_) => ("-".to_string(), "-".to_string()),
            _ => (ratio(v.mqttd, v.mosquitto), ratio(v.mqttd, v.rumqttd)),
        };
        let _ = writeln!(
            out,
            "| {} (`{}` {}) | {} | {} | {} | {to_mosquitto} | {to_rumqttd} | {} |",
            t.name,
            t.case,
            t.metric,
            show(v.mqttd),
            show(v.mosquitto),
            show(v.rumqttd),
            verdict(t, &v),
        );
    }
    out.push('\n');
}

/// The Met column of a target.
fn verdict(t: &Target, v: &super::targets::Verdict) -> String {
    match (v.met, t.rule) {
        (Some(true), _) => "**met**".to_string(),
        (Some(false), _) => "**not met**".to_string(),
        (None, Rule::Reported) => "reported".to_string(),
        (None, _) if !v.short_of.is_empty() => {
            format!("not measured at this load ({})", v.short_of.join(", "))
        }
        (None, _) => "not measured".to_string(),
    }
}

/// The persistence targets: each names the results it compares.
fn persistence_targets(out: &mut String, results: &Results) {
    let _ = writeln!(out, "### Persistence targets\n");
    let _ = writeln!(
        out,
        "mqttd's durability modes (`storage.durability`) against Mosquitto with `persistence \
         true` and against each other; rumqttd keeps nothing on disk and is left out.\n"
    );
    let _ = writeln!(
        out,
        "| Target | Figure | Against | Ratio | Met |\n|---|---:|---:|---:|---|"
    );
    for t in PERSISTENCE_TARGETS {
        let v = evaluate(t, results);
        let ratio = match t.rule {
            Rule::RatioAtLeast(_) | Rule::Reported => ratio(v.mqttd, v.mosquitto),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} (`{}` {}) | {} ({}) | {} ({}) | {ratio} | {} |",
            t.name,
            t.case,
            t.metric,
            show(v.mqttd),
            display_name(t.subject),
            show(v.mosquitto),
            display_name(t.reference),
            verdict(t, &v),
        );
    }
    out.push('\n');
}

/// Every broker's undelivered messages, before any throughput figure.
fn losses_section(out: &mut String, losses: &[Loss]) {
    let _ = writeln!(out, "## Losses\n");
    if losses.is_empty() {
        let _ = writeln!(
            out,
            "No broker lost a message: in every result, each subscriber received every \
             message sent.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Messages sent but never received (expected = sent × subscribers; received counts \
         unique messages). Throughput figures of these runs count only what arrived.\n"
    );
    let _ = writeln!(
        out,
        "| Case | Broker | Sent | Expected | Received | Lost | Lost % |\n\
         |---|---|---:|---:|---:|---:|---:|"
    );
    for l in losses {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {:.2} |",
            l.case,
            display_name(&l.broker),
            format_value(l.sent),
            format_value(l.expected),
            format_value(l.received),
            format_value(l.lost),
            l.ratio() * 100.0
        );
    }
    out.push('\n');
}

/// Known cases first, in [`CASES`] order, then any others by name.
fn ordered_cases(results: &Results) -> Vec<String> {
    let present = results.case_names();
    let mut cases: Vec<String> = CASES
        .iter()
        .filter(|(c, _, _)| present.contains(c))
        .map(|(c, _, _)| c.to_string())
        .collect();
    for c in present {
        if !CASES.iter().any(|(k, _, _)| *k == c) {
            cases.push(c.to_string());
        }
    }
    cases
}

fn case_section(out: &mut String, results: &Results, case: &str) {
    let title = CASES
        .iter()
        .find(|(c, _, _)| *c == case)
        .map_or(case, |(_, t, _)| t);
    let columns = columns_of(case);
    let _ = writeln!(out, "### {title} (`{case}`)\n");
    let reports: Vec<Option<&Report>> = columns
        .brokers
        .iter()
        .map(|(b, _)| results.get(case, b))
        .collect();
    if let Some(r) = reports.iter().flatten().next() {
        let params: Vec<String> = r
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != "pid")
            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
            .collect();
        let _ = writeln!(out, "Parameters: `{}`\n", params.join(" "));
    }
    let titles: Vec<&str> = columns
        .brokers
        .iter()
        .map(|(_, t)| *t)
        .chain(columns.ratios.iter().map(|(_, _, t)| *t))
        .collect();
    let _ = writeln!(
        out,
        "| Metric | {} | |\n|---|{}---|",
        titles.join(" | "),
        "---:|".repeat(titles.len())
    );
    let index_of = |broker: &str| columns.brokers.iter().position(|(b, _)| *b == broker);
    for (name, unit, better) in metric_names(&reports) {
        let vals: Vec<Option<f64>> = reports
            .iter()
            .map(|r| r.and_then(|r| r.get(&name)))
            .collect();
        let cells: Vec<String> = reports
            .iter()
            .zip(&vals)
            .map(|(r, v)| match r {
                None => "n/a".to_string(),
                Some(_) => show(*v),
            })
            .collect();
        let arrow = match better {
            Better::Higher => "↑",
            Better::Lower => "↓",
            Better::Neither => "",
        };
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" ({unit})")
        };
        let ratios: Vec<String> = columns
            .ratios
            .iter()
            .map(|(a, b, _)| {
                let val = |x: &str| index_of(x).and_then(|i| vals[i]);
                ratio(val(a), val(b))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {name}{unit} | {} | {} | {arrow} |",
            cells.join(" | "),
            ratios.join(" | "),
        );
    }
    out.push('\n');
    for ((broker, name), r) in columns.brokers.iter().zip(&reports) {
        match r {
            None => {
                let why = match results.absence(case, broker) {
                    Some(Absence::Skipped(reason)) => format!("**not run**: {reason}"),
                    Some(Absence::Failed(reason)) => format!("**failed**: {reason}"),
                    None => "no result (see the Notes).".to_string(),
                };
                let _ = writeln!(out, "- {name}: {why}");
            }
            Some(r) => {
                if let Some(l) = losses::of(case, broker, r) {
                    let _ = writeln!(
                        out,
                        "- {name}: **lost {} of {} messages ({:.2}%)**.",
                        format_value(l.lost),
                        format_value(l.expected),
                        l.ratio() * 100.0
                    );
                }
                if let Some(e) = &r.first_error {
                    let _ = writeln!(out, "- {name}: first error: `{e}`");
                }
            }
        }
    }
    // Results left out of this case's columns on purpose, with the reason.
    for (broker, absence) in results.absences(case) {
        if index_of(broker).is_none() {
            let why = match absence {
                Absence::Skipped(reason) => format!("**not run**: {reason}"),
                Absence::Failed(reason) => format!("**failed**: {reason}"),
            };
            let _ = writeln!(out, "- {}: {why}", display_name(broker));
        }
    }
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Every metric any report has, in order of first appearance.
fn metric_names(reports: &[Option<&Report>]) -> Vec<(String, String, Better)> {
    let mut names: Vec<(String, String, Better)> = Vec::new();
    for r in reports.iter().flatten() {
        for m in &r.metrics {
            if !names.iter().any(|(n, _, _)| *n == m.name) {
                names.push((m.name.clone(), m.unit.clone(), m.better));
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        Document {
            machine: Machine {
                cpu: "Test CPU".into(),
                cores: 2,
                memory_bytes: 24 << 30,
                kernel: "6.1.0".into(),
                os: "Debian".into(),
            },
            mqttd_version: "abc1234".into(),
            mosquitto_version: "2.0.11".into(),
            rumqttd_version: "0.20.0".into(),
            mode: "quick".into(),
            date: "2024-01-01".into(),
            settings: Some("mosquitto.conf: ...".into()),
            notes: None,
        }
    }

    fn flow(received_per_sec: f64, sent: f64, received: f64) -> Report {
        let mut r = Report::new("pubsub", "127.0.0.1:1");
        r.param("qos", 0);
        r.metric("sent", sent, "msg", Better::Neither)
            .metric("received", received, "msg", Better::Neither)
            .metric(
                "received_per_sec",
                received_per_sec,
                "msg/s",
                Better::Higher,
            )
            .metric("lost", sent - received, "msg", Better::Lower);
        r
    }

    #[test]
    fn renders_side_by_side_with_ratios_and_targets() {
        let mut results = Results::default();
        results.insert("pubsub-fanin-qos0", "mqttd", flow(300.0, 10.0, 10.0));
        results.insert("pubsub-fanin-qos0", "mosquitto", flow(100.0, 10.0, 10.0));
        results.insert("pubsub-fanin-qos0", "rumqttd", flow(200.0, 10.0, 10.0));
        let md = render(&doc(), &results);
        assert!(md.contains("| CPU | Test CPU |"), "{md}");
        assert!(md.contains("| mqttd | abc1234 |"), "{md}");
        assert!(md.contains("| rumqttd | 0.20.0 |"), "{md}");
        assert!(
            md.contains("### Throughput fan-in (N→1), QoS 0 (`pubsub-fanin-qos0`)"),
            "{md}"
        );
        assert!(
            md.contains("| received_per_sec (msg/s) | 300 | 100 | 200 | 3.00 | 1.50 | ↑ |"),
            "{md}"
        );
        assert!(
            md.contains("| 300 | 100 | 200 | 3.00 | 1.50 | **met** |"),
            "{md}"
        );
        assert!(md.contains("not measured"), "{md}");
        assert!(md.contains("No broker lost a message"), "{md}");
        assert!(md.contains("## Settings\n\nmosquitto.conf: ..."), "{md}");
    }

    #[test]
    fn losses_are_listed_first_and_under_their_case() {
        let mut results = Results::default();
        results.insert("pubsub-1to1-qos0", "mqttd", flow(300.0, 1000.0, 1000.0));
        results.insert("pubsub-1to1-qos0", "rumqttd", flow(500.0, 1000.0, 750.0));
        let md = render(&doc(), &results);
        let row = "| `pubsub-1to1-qos0` | rumqttd | 1,000 | 1,000 | 750 | 250 | 25.00 |";
        assert!(md.contains(row), "{md}");
        assert!(md.find(row) < md.find("## Results"), "{md}");
        assert!(
            md.contains("- rumqttd: **lost 250 of 1,000 messages (25.00%)**."),
            "{md}"
        );
        assert!(!md.contains("- mqttd: **lost"), "{md}");
    }

    #[test]
    fn a_missing_run_is_said_with_its_reason() {
        let mut results = Results::default();
        results.insert("churn", "mqttd", Report::new("churn", "x"));
        results.insert_absence(
            "churn",
            "rumqttd",
            Absence::Skipped("no persistent sessions".into()),
        );
        results.insert_absence("churn", "mosquitto", Absence::Failed("timed out".into()));
        let md = render(&doc(), &results);
        assert!(
            md.contains("- rumqttd: **not run**: no persistent sessions"),
            "{md}"
        );
        assert!(md.contains("- Mosquitto: **failed**: timed out"), "{md}");
    }

    #[test]
    fn persistence_cases_compare_durability_modes() {
        let mut results = Results::default();
        for (broker, rate) in [
            ("mqttd-batched", 300.0),
            ("mqttd-sync", 60.0),
            ("mqttd-memory", 600.0),
            ("mosquitto", 100.0),
        ] {
            results.insert("persist-1to1-qos1", broker, flow(rate, 10.0, 10.0));
        }
        results.insert_absence(
            "persist-1to1-qos1",
            "rumqttd",
            Absence::Skipped("keeps nothing on disk".into()),
        );
        let md = render(&doc(), &results);
        assert!(
            md.contains(
                "| Metric | mqttd batched | mqttd sync | mqttd memory | Mosquitto | \
                 batched/Mosquitto | sync/batched | batched/memory | |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| received_per_sec (msg/s) | 300 | 60 | 600 | 100 | 3.00 | 0.20 | 0.50 | ↑ |"
            ),
            "{md}"
        );
        assert!(
            md.contains("- rumqttd: **not run**: keeps nothing on disk"),
            "{md}"
        );
        assert!(md.contains("### Persistence targets"), "{md}");
        assert!(
            md.contains("| 300 (mqttd batched) | 100 (Mosquitto) | 3.00 | **met** |"),
            "{md}"
        );
        assert!(
            md.contains("| 60 (mqttd sync) | 300 (mqttd batched) | 0.20 | **not met** |"),
            "{md}"
        );
        // No start-up result: its target is not measured, the rest stays.
        assert!(
            md.contains("`startup-restart` startup_ms) | - (mqttd batched)"),
            "{md}"
        );
    }

    #[test]
    fn no_persistence_targets_without_persistence_cases() {
        let mut results = Results::default();
        results.insert("pubsub-fanin-qos0", "mqttd", flow(300.0, 10.0, 10.0));
        assert!(!render(&doc(), &results).contains("Persistence targets"));
    }

    #[test]
    fn a_case_no_broker_ran_still_has_its_section() {
        let mut results = Results::default();
        results.insert_absence("conn-tls", "mqttd", Absence::Skipped("no TLS".into()));
        let md = render(&doc(), &results);
        assert!(md.contains("(`conn-tls`)"), "{md}");
        assert!(md.contains("- mqttd: **not run**: no TLS"), "{md}");
        assert!(
            md.contains("- Mosquitto: no result (see the Notes)."),
            "{md}"
        );
    }
}
