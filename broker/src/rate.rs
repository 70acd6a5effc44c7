//! The per-connection publish rate (`limits.max_publish_rate_messages`,
//! `limits.max_publish_rate_bytes`): a token bucket per bound, holding
//! one second of its rate (the burst a client may send at once).
//!
//! Every PUBLISH read takes one token and its size on the wire in bytes,
//! even past zero: a packet is never cut, and one larger than the burst
//! still passes, leaving a debt. While a bucket is in debt the connection
//! stops reading its socket (see `connection::run`), so the client's data
//! waits in TCP buffers and TCP's flow control slows the client; nothing
//! is buffered in the broker for it. Reading resumes when the debt is
//! repaid. A pause is cut into steps of at most [`MAX_PAUSE_STEP`], each
//! counting as a sign of life for keep alive: the client is not silent,
//! the broker is not listening.
//!
//! A client counts as over its rate from its first pause until its
//! buckets are full again (it sent less than its rate for a second or
//! so). Staying over it longer than `limits.publish_rate_grace_secs`
//! ends the connection: the last resort, for a client that never slows
//! down; a client that merely had a backlog is slowed, not disconnected.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::metrics::PublishRateMetrics;

/// Longest single pause; the connection looks again after it.
pub const MAX_PAUSE_STEP: Duration = Duration::from_secs(1);

/// One bound: `rate` tokens a second, at most `rate` held.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: f64) -> Option<Bucket> {
        (rate > 0.0).then_some(Bucket { rate, tokens: rate })
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + self.rate * secs).min(self.rate);
    }

    fn is_full(&self) -> bool {
        self.tokens >= self.rate
    }

    /// Time until the debt is repaid; zero if there is none.
    fn debt(&self) -> Duration {
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate)
    }
}

/// What the connection does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Read on.
    Go,
    /// Do not read until then.
    Wait(Instant),
    /// Over its rate past the grace: disconnect.
    Disconnect,
}

/// The publish rate state of one connection.
#[derive(Debug)]
pub struct PublishRate {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    refilled: Instant,
    /// When the client went over its rate (its first pause since its
    /// buckets were last full).
    over_since: Option<Instant>,
    grace: Option<Duration>,
    /// When the current pause began, for the time not read.
    paused_at: Option<Instant>,
}

impl PublishRate {
    /// The state for a new connection; `None` without a rate configured,
    /// so that connections without one carry only an empty pointer.
    pub fn new(limits: &LimitsConfig, now: Instant) -> Option<Box<PublishRate>> {
        if !limits.publish_rate_limited() {
            return None;
        }
        Some(Box::new(PublishRate {
            messages: Bucket::new(f64::from(limits.max_publish_rate_messages)),
            bytes: Bucket::new(limits.max_publish_rate_bytes as f64),
            refilled: now,
            over_since: None,
            grace: limits.publish_rate_grace(),
            paused_at: None,
        }))
    }

    fn buckets(&mut self) -> impl Iterator<Item = &mut Bucket> {
        self.messages.iter_mut().chain(self.bytes.iter_mut())
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.buckets().for_each(|b| b.refill(secs));
        if self.buckets().all(|b| b.is_full()) {
            self.over_since = None;
        }
    }

    /// A PUBLISH of `wire_bytes` was read.
    pub fn charge(&mut self, wire_bytes: usize, now: Instant) {
        self.refill(now);
        if let Some(b) = &mut self.messages {
            b.tokens -= 1.0;
        }
        if let Some(b) = &mut self.bytes {
            b.tokens -= wire_bytes as f64;
        }
    }

    /// Whether a bucket is in debt at `now`: stop decoding what is
    /// already read.
    pub fn in_debt(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.messages
            .iter()
            .chain(&self.bytes)
            .any(|b| b.tokens < 0.0)
    }

    /// Whether the connection may read now; counts pauses in `metrics`.
    pub fn check(&mut self, now: Instant, metrics: &PublishRateMetrics) -> Verdict {
        // The time actually not read (a late timer included), not the
        // time planned.
        if let Some(at) = self.paused_at.take() {
            let micros = now.saturating_duration_since(at).as_micros();
            metrics
                .throttled_micros
                .add(u64::try_from(micros).unwrap_or(u64::MAX));
        }
        self.refill(now);
        let debt = self.buckets().map(|b| b.debt()).max().unwrap_or_default();
        if debt.is_zero() {
            return Verdict::Go;
        }
        let since = *self.over_since.get_or_insert_with(|| {
            metrics.throttled.inc();
            now
        });
        if self.grace.is_some_and(|g| now.duration_since(since) >= g) {
            return Verdict::Disconnect;
        }
        self.paused_at = Some(now);
        Verdict::Wait(now + debt.min(MAX_PAUSE_STEP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: u32, bytes: u64, grace_secs: u64) -> LimitsConfig {
        LimitsConfig {
            max_publish_rate_messages: messages,
            max_publish_rate_bytes: bytes,
            publish_rate_grace_secs: grace_secs,
            ..LimitsConfig::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn off_by_default() {
        assert!(PublishRate::new(&LimitsConfig::default(), Instant::now()).is_none());
    }

    /// A burst of one second's worth passes; the next message waits for
    /// its token.
    #[test]
    fn burst_then_rate() {
        let m = PublishRateMetrics::default();
        let t0 = Instant::now();
        let mut r = PublishRate::new(&limits(10, 0, 0), t0).expect("limited");
        for _ in 0..10 {
            r.charge(100, t0);
        }
        assert!(!r.in_debt(t0));
        assert_eq!(r.check(t0, &m), Verdict::Go);
        r.charge(100, t0);
        assert!(r.in_debt(t0));
        assert_eq!(r.check(t0, &m), Verdict::Wait(t0 + ms(100)));
        assert!(!r.in_debt(t0 + ms(100)));
        assert_eq!(r.check(t0 + ms(100), &m), Verdict::Go);
        assert_eq!(m.throttled.get(), 1);
        assert_eq!(m.throttled_micros.get(), 100_000);
    }

    /// A packet larger than the byte burst passes and leaves a debt,
    /// repaid in steps of at most a second.
    #[test]
    fn large_packet_leaves_a_debt() {
        let m = PublishRateMetrics::default();
        let t0 = Instant::now();
        let mut r = PublishRate::new(&limits(0, 1000, 0), t0).expect("limited");
        r.charge(3500, t0);
        assert_eq!(r.check(t0, &m), Verdict::Wait(t0 + MAX_PAUSE_STEP));
        assert_eq!(r.check(t0 + ms(2000), &m), Verdict::Wait(t0 + ms(2500)));
        assert_eq!(r.check(t0 + ms(2500), &m), Verdict::Go);
        assert_eq!(m.throttled.get(), 1, "one episode");
    }

    /// Staying over the rate past the grace disconnects; a full bucket in
    /// between starts the count again.
    #[test]
    fn grace_counts_from_the_first_pause_until_the_bucket_fills() {
        let m = PublishRateMetrics::default();
        let t0 = Instant::now();
        let mut r = PublishRate::new(&limits(10, 0, 2), t0).expect("limited");
        let mut now = t0;
        // 20 messages a second, at twice the rate.
        let mut verdict = Verdict::Go;
        for _ in 0..100 {
            r.charge(10, now);
            verdict = r.check(now, &m);
            if verdict == Verdict::Disconnect {
                break;
            }
            now += ms(50);
        }
        assert_eq!(verdict, Verdict::Disconnect);
        // The burst lasts about a second, then two seconds of grace.
        let took = now - t0;
        assert!(took >= ms(2900) && took <= ms(3000), "{took:?}");

        // The same client slowing down below the rate in between is
        // never disconnected.
        let mut r = PublishRate::new(&limits(10, 0, 2), t0).expect("limited");
        let mut now = t0;
        for round in 0..10 {
            for _ in 0..15 {
                r.charge(10, now);
                if let Verdict::Wait(until) = r.check(now, &m) {
                    now = until;
                }
            }
            assert_ne!(r.check(now, &m), Verdict::Disconnect, "round {round}");
            // Quiet long enough to fill up again.
            now += Duration::from_secs(2);
        }
        assert_ne!(r.check(now, &m), Verdict::Disconnect);
    }

    #[test]
    fn no_grace_never_disconnects() {
        let m = PublishRateMetrics::default();
        let t0 = Instant::now();
        let mut r = PublishRate::new(&limits(1, 0, 0), t0).expect("limited");
        for s in 0..1000 {
            r.charge(10, t0 + Duration::from_secs(s));
            r.charge(10, t0 + Duration::from_secs(s));
            assert_ne!(
                r.check(t0 + Duration::from_secs(s), &m),
                Verdict::Disconnect
            );
        }
    }
}
