//! `soak-report`: the Markdown tables of BENCHMARKS.md's soak section
//! from several `soak -o json` results side by side (mqttd, Mosquitto):
//! a summary per broker, then RSS, healthy delivery, the probe and the
//! stuck subscriber every few seconds.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::report::{cell_text, format_value, Report};

/// Markdown tables from `soak -o json` results, one column per run
/// (written by scripts/bench-soak.sh into BENCHMARKS.md).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A result to include, as LABEL=FILE (e.g. "mqttd=soak.mqttd.json");
    /// columns follow the order given.
    #[arg(long = "run", value_name = "LABEL=FILE", required = true, value_parser = parse_run)]
    pub runs: Vec<(String, PathBuf)>,
    /// Seconds between the rows of the over-time table.
    #[arg(long, default_value_t = 5)]
    pub every: u64,
}

fn parse_run(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((label, file)) if !label.is_empty() && !file.is_empty() => {
            Ok((label.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("{s:?}: expected LABEL=FILE")),
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for (label, path) in &args.runs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a soak result", path.display()))?;
        if report.scenario != "soak" {
            bail!(
                "{} holds a {} result, not a soak",
                path.display(),
                report.scenario
            );
        }
        runs.push((label.clone(), report));
    }
    print!("{}", render(&runs, args.every.max(1)));
    Ok(())
}

/// Both tables.
pub fn render(runs: &[(String, Report)], every: u64) -> String {
    let mut out = summary(runs);
    out.push('\n');
    out.push_str(&over_time(runs, every));
    out
}

fn mb(v: f64) -> String {
    format!("{:.0} MB", v / 1e6)
}

/// The summary: one row per figure, one column per run.
pub fn summary(runs: &[(String, Report)]) -> String {
    type Row = (&'static str, fn(&Report) -> String);
    let rows: [Row; 13] = [
        ("memory budget", |r| {
            r.params
                .get("budget_bytes")
                .and_then(Value::as_f64)
                .map_or("none".into(), mb)
        }),
        ("peak RSS (sampled each second)", |r| {
            let peak = r.get("max_rss_bytes").map_or("-".into(), mb);
            match r.get("rss_under_budget") {
                Some(v) if v >= 1.0 => format!("{peak}, **under the budget**"),
                Some(_) => format!("{peak}, **over the budget**"),
                None => peak,
            }
        }),
        (
            "RSS before / after the abandoned sessions / at the end",
            |r| {
                let f = |n| r.get(n).map_or("-".into(), mb);
                format!(
                    "{} / {} / {}",
                    f("rss_before_bytes"),
                    f("rss_after_sessions_bytes"),
                    f("final_rss_bytes")
                )
            },
        ),
        ("abandoned sessions made", |r| num(r.get("sessions_made"))),
        ("publishers connected / closed by the broker", |r| {
            format!(
                "{} / {}",
                num(r.get("publishers_connected")),
                num(r.get("publishers_closed"))
            )
        }),
        (
            "messages written into the publishers' sockets / QoS 1 acknowledged (per second)",
            |r| {
                let secs = r
                    .params
                    .get("duration_secs")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let acked = r.get("qos1_acked").filter(|_| secs > 0.0).map(|a| a / secs);
                format!("{}/s / {}/s", num(r.get("sent_per_sec")), num(acked))
            },
        ),
        ("broker process", |r| match gone_at(r) {
            Some(t) => format!("**gone by t = {t} s** (its RSS could no longer be read)"),
            None => "ran to the end".into(),
        }),
        ("stuck subscriber", |r| {
            match (r.get("stuck_dropped_at_secs"), gone_at(r)) {
                (Some(t), Some(g)) if t.is_finite() && t >= g as f64 => {
                    "gone with the broker".into()
                }
                (Some(t), _) if t.is_finite() => format!("dropped by the broker by t = {t:.0} s"),
                (Some(_), _) => "still held by the broker at the end".into(),
                (None, _) => "not observable (broker not on this machine)".into(),
            }
        }),
        (
            "healthy subscribers: mean per subscriber / slowest second",
            |r| {
                format!(
                    "{}/s / {}/s",
                    num(r.get("healthy_mean_per_sec")),
                    num(r.get("healthy_min_per_sec"))
                )
            },
        ),
        ("healthy subscribers disconnected", |r| {
            num(r.get("healthy_disconnected"))
        }),
        ("healthy delivery latency p50 / p99", |r| {
            format!(
                "{} ms / {} ms",
                num(r.get("healthy_latency_p50_ms")),
                num(r.get("healthy_latency_p99_ms"))
            )
        }),
        (
            "new connections (probe, 1/s): served / failed, slowest",
            |r| {
                let probes = r.get("probes").unwrap_or(0.0);
                let failed = r.get("probe_failures").unwrap_or(0.0);
                format!(
                    "{} / {}, {} ms",
                    num(Some(probes - failed)),
                    num(Some(failed)),
                    num(r.get("probe_max_ms"))
                )
            },
        ),
        ("broker CPU, mean", |r| {
            r.get("broker_cpu_mean_cores")
                .map_or("-".into(), |c| format!("{c:.2} cores"))
        }),
    ];
    let mut out = String::from("| |");
    for (label, _) in runs {
        let _ = write!(out, " {label} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    for (name, cell) in rows {
        let _ = write!(out, "| {name} |");
        for (_, r) in runs {
            let _ = write!(out, " {} |", cell(r));
        }
        out.push('\n');
    }
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|(label, r)| {
            let n = r.get("errors").unwrap_or(0.0);
            (n > 0.0).then(|| {
                format!(
                    "- {label}: {} client error(s); first: {}\n",
                    num(Some(n)),
                    r.first_error.as_deref().unwrap_or("-")
                )
            })
        })
        .collect();
    if !errors.is_empty() {
        out.push('\n');
        out.push_str(&errors.concat());
    }
    out
}

/// The first second whose RSS could not be read after one that could: the
/// broker process had exited (crashed, or was killed).
pub fn gone_at(r: &Report) -> Option<u64> {
    let series = r.series.as_ref()?;
    let t: Vec<Option<u64>> = series.column("t_s")?.map(Value::as_u64).collect();
    let mut seen = false;
    for (i, rss) in series.column("rss_mb")?.enumerate() {
        match (rss.is_null(), seen) {
            (false, _) => seen = true,
            (true, true) => return t.get(i).copied().flatten(),
            (true, false) => {}
        }
    }
    None
}

fn num(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map_or("-".into(), format_value)
}

/// Over time, every `every` seconds (and the first and last): per run, RSS,
/// healthy messages per second, the probe's connect time (or failures) and
/// whether the stuck subscriber is still held.
pub fn over_time(runs: &[(String, Report)], every: u64) -> String {
    let mut out = String::from("| t (s) |");
    for (label, _) in runs {
        let _ = write!(
            out,
            " {label} RSS MB | {label} healthy msg/s | {label} probe ms | {label} stuck held |"
        );
    }
    out.push_str("\n|---:|");
    out.push_str(&"---:|---:|---:|:---:|".repeat(runs.len()));
    out.push('\n');
    // Rows by the sample's own second: a late tick may skip one, and the
    // runs need not skip the same ones.
    let row_of = |r: &Report, t: u64| -> Option<usize> {
        r.series
            .as_ref()?
            .column("t_s")?
            .position(|v| v.as_u64() == Some(t))
    };
    let seconds: std::collections::BTreeSet<u64> = runs
        .iter()
        .filter_map(|(_, r)| r.series.as_ref()?.column("t_s"))
        .flat_map(|c| c.filter_map(Value::as_u64).collect::<Vec<_>>())
        .collect();
    let (Some(&first), Some(&last)) = (seconds.first(), seconds.last()) else {
        return out;
    };
    for &t in seconds
        .iter()
        .filter(|&&t| t % every == 0 || t == first || t == last)
    {
        let _ = write!(out, "| {t} |");
        for (_, r) in runs {
            let i = row_of(r, t);
            let cell = |name: &str| {
                i.and_then(|i| r.series.as_ref()?.column(name)?.nth(i).cloned())
                    .unwrap_or(Value::Null)
            };
            let probe = match cell("probe_failures").as_u64() {
                Some(f) if f > 0 => format!("{f} failed"),
                _ => cell_text(&cell("probe_ms")),
            };
            let _ = write!(
                out,
                " {} | {} | {} | {} |",
                cell_text(&cell("rss_mb")),
                cell_text(&cell("healthy_per_s")),
                probe,
                cell_text(&cell("stuck_connected"))
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Series};

    fn run(rss: [f64; 3], stuck_drop: Option<f64>, budget: Option<u64>) -> Report {
        let mut r = Report::new("soak", "127.0.0.1:1");
        if let Some(b) = budget {
            r.param("budget_bytes", b);
        }
        let peak = rss.iter().copied().fold(0.0, f64::max) * 1e6;
        r.metric("max_rss_bytes", peak, "B", Better::Lower);
        if let Some(b) = budget {
            r.metric(
                "rss_under_budget",
                if peak <= b as f64 { 1.0 } else { 0.0 },
                "bool",
                Better::Higher,
            );
        }
        r.metric(
            "stuck_dropped_at_secs",
            stuck_drop.unwrap_or(f64::NAN),
            "s",
            Better::Neither,
        );
        r.metric("probes", 3.0, "", Better::Neither);
        r.metric("probe_failures", 1.0, "", Better::Lower);
        r.series = Some(Series {
            columns: [
                "t_s",
                "rss_mb",
                "healthy_per_s",
                "probe_ms",
                "probe_failures",
                "stuck_connected",
            ]
            .map(String::from)
            .to_vec(),
            rows: (0..3)
                .map(|i| {
                    vec![
                        Value::from(i + 1),
                        Value::from(rss[i]),
                        Value::from(1000),
                        Value::from(2.5),
                        Value::from(u64::from(i == 1)),
                        Value::from(i == 0),
                    ]
                })
                .collect(),
        });
        r
    }

    #[test]
    fn summary_side_by_side() {
        let runs = [
            (
                "mqttd".to_string(),
                run([10.0, 50.0, 20.0], Some(2.0), Some(64_000_000)),
            ),
            (
                "Mosquitto".to_string(),
                run([5.0, 90.0, 80.0], None, Some(64_000_000)),
            ),
        ];
        let md = summary(&runs);
        assert!(
            md.starts_with("| | mqttd | Mosquitto |\n|---|---|---|\n"),
            "{md}"
        );
        assert!(md.contains("| memory budget | 64 MB | 64 MB |"), "{md}");
        assert!(
            md.contains("50 MB, **under the budget** | 90 MB, **over the budget** |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| dropped by the broker by t = 2 s | still held by the broker at the end |"
            ),
            "{md}"
        );
        assert!(md.contains("| 2 / 1, - ms |"), "{md}");
    }

    #[test]
    fn a_broker_that_exited() {
        let mut r = run([10.0, 50.0, 20.0], Some(3.0), None);
        assert_eq!(gone_at(&r), None);
        if let Some(s) = r.series.as_mut() {
            s.rows[2][1] = Value::Null;
        }
        assert_eq!(gone_at(&r), Some(3));
        let md = summary(&[("b".to_string(), r)]);
        assert!(
            md.contains("| broker process | **gone by t = 3 s**"),
            "{md}"
        );
        assert!(
            md.contains("| stuck subscriber | gone with the broker |"),
            "{md}"
        );
    }

    #[test]
    fn over_time_every_n_seconds() {
        let runs = [("mqttd".to_string(), run([10.0, 50.0, 20.0], None, None))];
        let md = over_time(&runs, 2);
        let lines: Vec<&str> = md.lines().collect();
        // Header, rule, then t=1 (first), t=2 (every 2 s), t=3 (last).
        assert_eq!(lines.len(), 5, "{md}");
        assert_eq!(lines[2], "| 1 | 10 | 1,000 | 2.50 | yes |");
        assert_eq!(lines[3], "| 2 | 50 | 1,000 | 1 failed | no |");
        assert!(lines[4].starts_with("| 3 | 20 |"), "{md}");
        // A run whose sampler skipped second 2: its cells there are blank.
        let mut skipped = run([10.0, 50.0, 20.0], None, None);
        if let Some(s) = skipped.series.as_mut() {
            s.rows[1][0] = Value::from(4);
        }
        let runs = [runs[0].clone(), ("late".to_string(), skipped)];
        let md = over_time(&runs, 2);
        assert!(
            md.contains("\n| 2 | 50 | 1,000 | 1 failed | no | - | - | - | - |\n"),
            "{md}"
        );
        assert!(
            md.contains("\n| 4 | - | - | - | - | 50 | 1,000 | 1 failed | no |\n"),
            "{md}"
        );
    }

    #[test]
    fn run_argument() {
        assert_eq!(
            parse_run("mqttd=a/b.json"),
            Ok(("mqttd".to_string(), PathBuf::from("a/b.json")))
        );
        assert!(parse_run("a.json").is_err());
        assert!(parse_run("=a.json").is_err());
    }
}
