//! Rates: events per second over a measured interval.

use std::time::Duration;

/// `count` events over `elapsed`, per second; 0 when nothing was measured
/// (a zero interval would otherwise give infinity).
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        count as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_an_interval() {
        assert_eq!(per_sec(1000, Duration::from_millis(500)), 2000.0);
        assert_eq!(per_sec(0, Duration::from_secs(3)), 0.0);
    }

    #[test]
    fn zero_interval_gives_zero_not_infinity() {
        assert_eq!(per_sec(10, Duration::ZERO), 0.0);
    }
}
