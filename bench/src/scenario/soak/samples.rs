//! The soak's per-second samples, the table made of them and the summary.
//!
//! The sampler reads counters and `/proc` once a second; everything after
//! that (rates, the table, the verdicts) is pure and unit-tested here.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::time::{interval_at, MissedTickBehavior};

use super::flood::Counters;
use super::observers::{HealthyView, ProbeResult, StuckView};
use crate::report::{Better, Report, Series};
use crate::stats::latency::LatencyHist;
use crate::stats::{cpu, rss};

/// One second of the soak.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the flood started (the sample covers (t-1, t]).
    pub t: u64,
    /// Whether the publishers were still running.
    pub flood: bool,
    pub rss_bytes: Option<u64>,
    /// The broker's CPU over the second, in cores.
    pub cpu_cores: Option<f64>,
    /// Messages the publishers wrote in the second.
    pub sent: u64,
    /// Messages all healthy subscribers received in the second.
    pub healthy_total: u64,
    /// Messages the slowest healthy subscriber received in the second.
    pub healthy_min: u64,
    /// Healthy subscribers still connected.
    pub healthy_alive: u64,
    /// p99 delivery latency to the healthy subscribers in the second.
    pub healthy_p99_ms: Option<f64>,
    /// Whether the broker still holds the stuck subscriber (None: cannot
    /// be told, the broker is not on this machine).
    pub stuck_connected: Option<bool>,
    /// Bytes the broker's kernel holds for the stuck subscriber.
    pub stuck_send_queue: Option<u64>,
}

/// Reads everything once a second.
pub struct Sampler {
    pid: Option<u32>,
    start: Instant,
    flood_end: Instant,
    counters: Arc<Counters>,
    healthy: HealthyView,
    stuck: StuckView,
    last: Arc<Mutex<Option<Sample>>>,
}

impl Sampler {
    pub fn new(
        pid: Option<u32>,
        start: Instant,
        flood_end: Instant,
        counters: Arc<Counters>,
        healthy: HealthyView,
        stuck: StuckView,
    ) -> Sampler {
        Sampler {
            pid,
            start,
            flood_end,
            counters,
            healthy,
            stuck,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The latest sample, for the progress line.
    pub fn last(&self) -> Arc<Mutex<Option<Sample>>> {
        self.last.clone()
    }

    /// Samples every second until `stop`.
    pub async fn run(self, stop: Instant) -> Vec<Sample> {
        let second = Duration::from_secs(1);
        let mut tick = interval_at((self.start + second).into(), second);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rows = Vec::new();
        let mut sent = 0;
        let mut received: Vec<u64> = vec![0; self.healthy.received.len()];
        let mut cpu_before = self.pid.and_then(|p| cpu::process_cpu(p).ok());
        let mut at = Instant::now();
        loop {
            tick.tick().await;
            let now = Instant::now();
            let t = now
                .saturating_duration_since(self.start)
                .as_secs_f64()
                .round() as u64;
            let cpu_now = self.pid.and_then(|p| cpu::process_cpu(p).ok());
            let cpu_cores = match (cpu_before, cpu_now) {
                (Some(b), Some(a)) => Some(cpu::cores(a.saturating_sub(b), now - at)),
                _ => None,
            };
            (cpu_before, at) = (cpu_now, now);
            let total_sent = self.counters.sent.load(Ordering::Relaxed);
            let got: Vec<u64> = self
                .healthy
                .received
                .iter()
                .zip(received.iter_mut())
                .map(|(c, prev)| {
                    let v = c.load(Ordering::Relaxed);
                    let d = v.saturating_sub(*prev);
                    *prev = v;
                    d
                })
                .collect();
            let hist = self
                .healthy
                .latency
                .lock()
                .map(|mut h| std::mem::take(&mut *h))
                .unwrap_or_default();
            let stuck = self.stuck.state();
            let sample = Sample {
                t,
                flood: now <= self.flood_end + Duration::from_millis(500),
                rss_bytes: self.pid.and_then(|p| rss::read_rss(p).ok()),
                cpu_cores,
                sent: total_sent.saturating_sub(sent),
                healthy_total: got.iter().sum(),
                healthy_min: got.iter().copied().min().unwrap_or(0),
                healthy_alive: self
                    .healthy
                    .alive
                    .iter()
                    .filter(|a| a.load(Ordering::Relaxed))
                    .count() as u64,
                healthy_p99_ms: p99_ms(&hist),
                stuck_connected: stuck.map(|s| s.connected()),
                stuck_send_queue: stuck.map(|s| s.send_queue()),
            };
            sent = total_sent;
            if let Ok(mut l) = self.last.lock() {
                *l = Some(sample.clone());
            }
            rows.push(sample);
            if now >= stop {
                return rows;
            }
        }
    }
}

fn p99_ms(h: &LatencyHist) -> Option<f64> {
    let p = h.percentiles();
    (p.count > 0).then_some(p.p99_us / 1000.0)
}

/// The probes that started in the second a sample covers: (connect time
/// of the slowest that succeeded, failures).
pub fn probes_in(probes: &[ProbeResult], t: u64) -> (Option<f64>, u64) {
    let mut slowest: Option<f64> = None;
    let mut failed = 0;
    for p in probes.iter().filter(|p| bucket(p.started_secs) == t) {
        match &p.outcome {
            Ok(d) => {
                let ms = d.as_secs_f64() * 1000.0;
                slowest = Some(slowest.map_or(ms, |s| s.max(ms)));
            }
            Err(_) => failed += 1,
        }
    }
    (slowest, failed)
}

/// The sample (by its `t`) covering an instant `secs` into the flood.
fn bucket(secs: f64) -> u64 {
    secs.max(0.0).floor() as u64 + 1
}

/// The columns of the per-second table.
pub const COLUMNS: [&str; 11] = [
    "t_s",
    "flood",
    "rss_mb",
    "broker_cpu",
    "sent_per_s",
    "healthy_per_s",
    "healthy_min_per_s",
    "healthy_p99_ms",
    "probe_ms",
    "probe_failures",
    "stuck_connected",
];

/// The per-second table: [`COLUMNS`] and the bytes (KiB) the broker's
/// kernel held for the stuck subscriber.
pub fn series(rows: &[Sample], probes: &[ProbeResult]) -> Series {
    let num = |v: f64| Value::from((v * 10.0).round() / 10.0);
    let mut columns: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    columns.push("stuck_sendq_kb".to_string());
    let rows = rows
        .iter()
        .map(|s| {
            let (probe_ms, failed) = probes_in(probes, s.t);
            vec![
                Value::from(s.t),
                Value::from(s.flood),
                // Whole megabytes: the sampling is coarser than a tenth.
                s.rss_bytes
                    .map_or(Value::Null, |b| Value::from((b as f64 / 1e6).round())),
                s.cpu_cores
                    .map_or(Value::Null, |c| Value::from((c * 100.0).round() / 100.0)),
                Value::from(s.sent),
                Value::from(s.healthy_total),
                Value::from(s.healthy_min),
                s.healthy_p99_ms.map_or(Value::Null, num),
                probe_ms.map_or(Value::Null, num),
                Value::from(failed),
                s.stuck_connected.map_or(Value::Null, Value::from),
                s.stuck_send_queue
                    .map_or(Value::Null, |q| Value::from(q / 1024)),
            ]
        })
        .collect();
    Series { columns, rows }
}

/// The summary of a run.
pub struct Summary<'a> {
    pub rows: &'a [Sample],
    pub probes: &'a [ProbeResult],
    pub budget: Option<u64>,
}

impl Summary<'_> {
    pub fn max_rss(&self) -> Option<u64> {
        self.rows.iter().filter_map(|s| s.rss_bytes).max()
    }

    /// The slowest healthy subscriber's lowest per-second count while the
    /// flood ran (the first second, when the flood starts, left out).
    pub fn healthy_min_per_sec(&self) -> Option<u64> {
        self.rows
            .iter()
            .filter(|s| s.flood && s.t > 1)
            .map(|s| s.healthy_min)
            .min()
    }

    /// Mean messages per second per healthy subscriber during the flood.
    pub fn healthy_mean_per_sec(&self, subscribers: u64) -> f64 {
        let flood: Vec<&Sample> = self.rows.iter().filter(|s| s.flood).collect();
        if flood.is_empty() || subscribers == 0 {
            return 0.0;
        }
        let total: u64 = flood.iter().map(|s| s.healthy_total).sum();
        total as f64 / flood.len() as f64 / subscribers as f64
    }

    /// When the broker was first seen without the stuck subscriber.
    pub fn stuck_dropped_at(&self) -> Option<u64> {
        self.rows
            .iter()
            .find(|s| s.stuck_connected == Some(false))
            .map(|s| s.t)
    }

    pub fn fill(&self, r: &mut Report, healthy: u64) {
        if let Some(max) = self.max_rss() {
            r.metric("max_rss_bytes", max as f64, "B", Better::Lower);
            if let Some(budget) = self.budget {
                r.metric(
                    "rss_under_budget",
                    if max <= budget { 1.0 } else { 0.0 },
                    "bool",
                    Better::Higher,
                );
            }
        }
        if let Some(last) = self.rows.last().and_then(|s| s.rss_bytes) {
            r.metric("final_rss_bytes", last as f64, "B", Better::Lower);
        }
        let cpu: Vec<f64> = self.rows.iter().filter_map(|s| s.cpu_cores).collect();
        if !cpu.is_empty() {
            r.metric(
                "broker_cpu_mean_cores",
                cpu.iter().sum::<f64>() / cpu.len() as f64,
                "cores",
                Better::Neither,
            );
        }
        r.metric(
            "healthy_min_per_sec",
            self.healthy_min_per_sec().map_or(f64::NAN, |v| v as f64),
            "msg/s",
            Better::Higher,
        )
        .metric(
            "healthy_mean_per_sec",
            self.healthy_mean_per_sec(healthy),
            "msg/s",
            Better::Higher,
        );
        let ok: Vec<f64> = self
            .probes
            .iter()
            .filter_map(|p| p.outcome.as_ref().ok())
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let failed = self.probes.len() - ok.len();
        r.metric("probes", self.probes.len() as f64, "", Better::Neither)
            .metric("probe_failures", failed as f64, "", Better::Lower)
            .metric(
                "probe_max_ms",
                ok.iter().copied().fold(f64::NAN, f64::max),
                "ms",
                Better::Lower,
            );
        if let Some(e) = self.probes.iter().find_map(|p| p.outcome.as_ref().err()) {
            r.param("first_probe_failure", e.as_str());
        }
        if self.rows.iter().any(|s| s.stuck_connected.is_some()) {
            r.metric(
                "stuck_dropped_at_secs",
                self.stuck_dropped_at().map_or(f64::NAN, |t| t as f64),
                "s",
                Better::Neither,
            );
        }
    }
}

/// Figures from before the flood.
pub struct Setup {
    pub sessions_made: u64,
    pub publishers_connected: u64,
    pub rss_before: Option<u64>,
    pub rss_after_sessions: Option<u64>,
}

pub fn setup_metrics(r: &mut Report, s: Setup) {
    r.metric("sessions_made", s.sessions_made as f64, "", Better::Neither)
        .metric(
            "publishers_connected",
            s.publishers_connected as f64,
            "",
            Better::Neither,
        );
    if let Some(b) = s.rss_before {
        r.metric("rss_before_bytes", b as f64, "B", Better::Neither);
    }
    if let Some(b) = s.rss_after_sessions {
        r.metric("rss_after_sessions_bytes", b as f64, "B", Better::Neither);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u64, rss_mb: u64, healthy: [u64; 2], stuck: bool) -> Sample {
        Sample {
            t,
            flood: t <= 3,
            rss_bytes: Some(rss_mb * 1_000_000),
            cpu_cores: Some(1.0),
            sent: 1000,
            healthy_total: healthy.iter().sum(),
            healthy_min: healthy.iter().copied().min().unwrap_or(0),
            healthy_alive: 2,
            healthy_p99_ms: Some(2.0),
            stuck_connected: Some(stuck),
            stuck_send_queue: Some(2048),
        }
    }

    fn rows() -> Vec<Sample> {
        vec![
            sample(1, 10, [5, 7], true),
            sample(2, 40, [100, 80], true),
            sample(3, 30, [90, 120], false),
            sample(4, 20, [0, 0], false),
        ]
    }

    fn probes() -> Vec<ProbeResult> {
        vec![
            ProbeResult {
                started_secs: 0.01,
                outcome: Ok(Duration::from_millis(3)),
            },
            ProbeResult {
                started_secs: 1.0,
                outcome: Ok(Duration::from_millis(12)),
            },
            ProbeResult {
                started_secs: 1.9,
                outcome: Ok(Duration::from_millis(4)),
            },
            ProbeResult {
                started_secs: 2.0,
                outcome: Err("no CONNACK within 5s".into()),
            },
        ]
    }

    #[test]
    fn summary_verdicts() {
        let (rows, probes) = (rows(), probes());
        let s = Summary {
            rows: &rows,
            probes: &probes,
            budget: Some(35_000_000),
        };
        assert_eq!(s.max_rss(), Some(40_000_000));
        // The first second is left out; the cooldown (t=4) too.
        assert_eq!(s.healthy_min_per_sec(), Some(80));
        assert_eq!(
            s.healthy_mean_per_sec(2),
            (12 + 180 + 210) as f64 / 3.0 / 2.0
        );
        assert_eq!(s.stuck_dropped_at(), Some(3));
        let mut r = Report::new("soak", "x");
        s.fill(&mut r, 2);
        assert_eq!(r.get("max_rss_bytes"), Some(40_000_000.0));
        assert_eq!(r.get("rss_under_budget"), Some(0.0));
        assert_eq!(r.get("probes"), Some(4.0));
        assert_eq!(r.get("probe_failures"), Some(1.0));
        assert_eq!(r.get("probe_max_ms"), Some(12.0));
        assert_eq!(r.get("stuck_dropped_at_secs"), Some(3.0));
        assert_eq!(r.get("final_rss_bytes"), Some(20_000_000.0));
        assert_eq!(
            r.params.get("first_probe_failure").and_then(|v| v.as_str()),
            Some("no CONNACK within 5s")
        );
    }

    #[test]
    fn probes_by_second() {
        let p = probes();
        assert_eq!(probes_in(&p, 1), (Some(3.0), 0));
        assert_eq!(probes_in(&p, 2), (Some(12.0), 0));
        assert_eq!(probes_in(&p, 3), (None, 1));
        assert_eq!(probes_in(&p, 9), (None, 0));
    }

    #[test]
    fn table_rows() {
        let s = series(&rows(), &probes());
        assert_eq!(s.columns.len(), COLUMNS.len() + 1);
        assert_eq!(s.rows.len(), 4);
        let rss: Vec<f64> = s
            .column("rss_mb")
            .map(|c| c.filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        assert_eq!(rss, [10.0, 40.0, 30.0, 20.0]);
        let stuck: Vec<Value> = s
            .column("stuck_connected")
            .map(|c| c.cloned().collect())
            .unwrap_or_default();
        assert_eq!(stuck[0], Value::Bool(true));
        assert_eq!(stuck[2], Value::Bool(false));
        let text = s.to_text();
        assert!(
            text.lines().next().is_some_and(|l| l.contains("rss_mb")),
            "{text}"
        );
        assert!(text.contains("yes") && text.contains("no"), "{text}");
    }

    #[test]
    fn no_budget_no_verdict_and_unknown_stuck_state() {
        let mut rows = rows();
        for r in &mut rows {
            r.stuck_connected = None;
        }
        let s = Summary {
            rows: &rows,
            probes: &[],
            budget: None,
        };
        let mut r = Report::new("soak", "x");
        s.fill(&mut r, 2);
        assert_eq!(r.get("rss_under_budget"), None);
        assert_eq!(r.get("stuck_dropped_at_secs"), None);
        assert_eq!(r.get("probe_failures"), Some(0.0));
    }
}
