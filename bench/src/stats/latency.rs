//! Latency histograms (HdrHistogram) and the percentiles reported.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency recorded; larger values are clamped to it.
pub const MAX_RECORDED: Duration = Duration::from_secs(60);
/// Significant decimal digits kept by the histogram.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHist {
    hist: Histogram<u64>,
}

/// The percentiles reported, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    pub fn new() -> Self {
        let max = u64::try_from(MAX_RECORDED.as_nanos()).unwrap_or(u64::MAX);
        // The bounds are constants known to be valid (1 <= low, high >= 2*low,
        // digits <= 5), so this cannot fail.
        let hist = Histogram::new_with_bounds(1, max, SIGNIFICANT_DIGITS)
            .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"));
        LatencyHist { hist }
    }

    /// Records one latency, clamped to [1 ns, [`MAX_RECORDED`]].
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.max(1));
    }

    pub fn merge(&mut self, other: &LatencyHist) {
        // Both histograms have the same bounds, so adding cannot fail;
        // should it ever, the extra samples are simply not merged.
        let _ = self.hist.add(&other.hist);
    }

    /// The reported percentiles; all zero for an empty histogram.
    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles {
                count: 0,
                mean_us: 0.0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                max_us: 0.0,
            };
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: self.hist.len(),
            mean_us: self.hist.mean() / 1000.0,
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p90_us: us(self.hist.value_at_quantile(0.90)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: f64, expected: f64) -> bool {
        // Three significant digits: 0.1 % relative error at most.
        (actual - expected).abs() <= expected * 0.001 + 0.001
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = LatencyHist::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 10_000);
        assert!(within(p.p50_us, 5000.0), "{p:?}");
        assert!(within(p.p90_us, 9000.0), "{p:?}");
        assert!(within(p.p99_us, 9900.0), "{p:?}");
        assert!(within(p.p999_us, 9990.0), "{p:?}");
        assert!(within(p.max_us, 10_000.0), "{p:?}");
        assert!(within(p.mean_us, 5000.5), "{p:?}");
    }

    #[test]
    fn tail_is_seen_by_high_percentiles_only() {
        let mut h = LatencyHist::new();
        for _ in 0..999 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(50));
        let p = h.percentiles();
        assert!(within(p.p99_us, 100.0), "{p:?}");
        assert!(within(p.max_us, 50_000.0), "{p:?}");
    }

    #[test]
    fn empty_and_clamped() {
        assert_eq!(LatencyHist::new().percentiles().count, 0);
        let mut h = LatencyHist::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(3600));
        let p = h.percentiles();
        assert_eq!(p.count, 2);
        assert!(p.max_us <= MAX_RECORDED.as_secs_f64() * 1e6 * 1.001);
    }

    #[test]
    fn merge_adds_samples() {
        let mut a = LatencyHist::new();
        let mut b = LatencyHist::new();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(20));
        a.merge(&b);
        assert_eq!(a.percentiles().count, 2);
    }
}
