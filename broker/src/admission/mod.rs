//! Admission of new connections: the broker-wide and per-listener
//! connection bounds (`limits.max_connections`, a listener's
//! `max_connections`), the per-listener accept rate, and the cheap
//! refusal of connections above the bounds.
//!
//! A connection takes a [`Slot`] when it is accepted, before its TLS or
//! WebSocket handshake, and gives it back when its task ends: the bound
//! counts descriptors held for clients, which is what runs out. Above a
//! bound, a connection is answered CONNACK 0x97 (5.0) / 0x03 (3.1.x) by
//! [`refuse::answer`] without authentication or session work; at most
//! [`MAX_REFUSING`] are being refused at once, broker-wide, each for at
//! most [`REFUSAL_DEADLINE`], and beyond that a connection is closed as
//! soon as it is accepted, so that a flood cannot pile refusals up.
//!
//! - [`rate`]: the accept rate, and why it pauses accepting instead of refusing;
//! - [`refuse`]: the CONNACK refusal;
//! - [`open_files`]: the open-file limit and the default bound derived from it.

pub mod open_files;
pub mod rate;
pub mod refuse;

use std::sync::Arc;
use std::time::Duration;

use crate::codec::ReasonCode;
use crate::config::{Config, Durability};
use crate::metrics::{AdmissionMetrics, ListenerAdmissionMetrics};

/// Refusals in progress at once, broker-wide (each holds a descriptor
/// and a small task).
pub const MAX_REFUSING: usize = 64;

/// The longest a refusal may take, transport handshake included: a
/// client that does not send its CONNECT by then is closed unanswered.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(3);

/// Which bound refused a connection (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `limits.max_connections`.
    Broker,
    /// The listener's `max_connections`.
    Listener,
}

impl Bound {
    pub fn label(self) -> &'static str {
        match self {
            Bound::Broker => "max_connections",
            Bound::Listener => "listener_max_connections",
        }
    }
}

/// The broker-wide bound, shared by every listener.
#[derive(Debug)]
pub struct ConnectionLimits {
    max: i64,
    metrics: Arc<AdmissionMetrics>,
}

impl ConnectionLimits {
    /// The bound `config` asks for (its default derived from the
    /// open-file limit, read now) and the open-file limit it was checked
    /// against. Logs a warning when the configured bound is above what
    /// the open-file limit allows.
    pub fn new(config: &Config) -> Arc<ConnectionLimits> {
        let nofile = open_files::soft_limit();
        let on_disk = config.storage.durability != Durability::Memory;
        let fits = open_files::default_max_connections(nofile, on_disk);
        let max = match u64::from(config.limits.max_connections) {
            0 => fits,
            set => {
                if set > fits {
                    tracing::warn!(
                        max_connections = set,
                        open_files_limit = nofile,
                        fits,
                        "limits.max_connections is above what the open-file limit leaves for clients: \
                         accepts will fail (and back off) before it is reached; raise the limit (ulimit -n, LimitNOFILE=)"
                    );
                }
                set
            }
        };
        let metrics = Arc::new(AdmissionMetrics::default());
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        metrics.limit.set(max);
        Arc::new(ConnectionLimits { max, metrics })
    }

    /// The broker-wide bound in force.
    pub fn max(&self) -> u64 {
        self.max as u64
    }

    pub fn metrics(&self) -> &Arc<AdmissionMetrics> {
        &self.metrics
    }

    /// A listener's gate under this bound; `max` 0: no bound of its own.
    pub fn listener(self: &Arc<Self>, name: Arc<str>, max: u32) -> Arc<ListenerGate> {
        let metrics = self.metrics.add_listener(name);
        metrics.limit.set(i64::from(max));
        Arc::new(ListenerGate {
            broker: self.clone(),
            max: i64::from(max),
            metrics,
        })
    }
}

/// One listener's bound, under the broker-wide one.
#[derive(Debug)]
pub struct ListenerGate {
    broker: Arc<ConnectionLimits>,
    /// 0: none.
    max: i64,
    metrics: Arc<ListenerAdmissionMetrics>,
}

/// What the accept loop does with a connection it accepted.
pub enum Admission {
    /// Serve it; the slot is held for its life.
    Admit(Slot),
    /// Refuse it with CONNACK (holding a refusal permit).
    Refuse(Refusal),
    /// Close it at once: too many refusals are in progress.
    Drop,
}

impl ListenerGate {
    /// Counts a connection just accepted against the bounds.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let (m, b) = (&self.metrics, &self.broker.metrics);
        let bound = if self.max > 0 && m.open.add_get(1) > self.max {
            m.open.dec();
            Some(Bound::Listener)
        } else if b.open.add_get(1) > self.broker.max {
            b.open.dec();
            if self.max > 0 {
                m.open.dec();
            }
            Some(Bound::Broker)
        } else {
            None
        };
        let Some(bound) = bound else {
            if self.max == 0 {
                m.open.inc();
            }
            return Admission::Admit(Slot(self.clone()));
        };
        m.refused(bound).inc();
        if b.refusing.add_get(1) > MAX_REFUSING as i64 {
            b.refusing.dec();
            b.refused_unanswered.inc();
            return Admission::Drop;
        }
        Admission::Refuse(Refusal {
            metrics: b.clone(),
            bound,
        })
    }

    /// The listener's own bound (0: none).
    pub fn max(&self) -> u64 {
        self.max as u64
    }

    /// Counts a moment the listener stopped accepting for its rate.
    pub fn paused_for_rate(&self) {
        self.metrics.rate_pauses.inc();
    }
}

/// An admitted connection's place under the bounds, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<ListenerGate>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.metrics.open.dec();
        self.0.broker.metrics.open.dec();
    }
}

/// A refusal in progress, counted against [`MAX_REFUSING`] until dropped.
pub struct Refusal {
    metrics: Arc<AdmissionMetrics>,
    bound: Bound,
}

impl Refusal {
    /// The 5.0 reason code to refuse with (3.1.x gets 0x03).
    pub fn code(&self) -> ReasonCode {
        ReasonCode::QUOTA_EXCEEDED
    }

    pub fn bound(&self) -> Bound {
        self.bound
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        self.metrics.refusing.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: u32) -> Arc<ConnectionLimits> {
        let mut c = Config::default();
        c.limits.max_connections = global;
        ConnectionLimits::new(&c)
    }

    #[test]
    fn listener_then_broker_bounds_and_slots_give_back() {
        let l = limits(3);
        let a = l.listener("a".into(), 2);
        let b = l.listener("b".into(), 0);
        let a1 = a.admit();
        let a2 = a.admit();
        assert!(matches!(a1, Admission::Admit(_)));
        assert!(matches!(a2, Admission::Admit(_)));
        match a.admit() {
            Admission::Refuse(r) => assert_eq!(r.bound(), Bound::Listener),
            _ => panic!("listener bound"),
        }
        let b1 = b.admit();
        assert!(matches!(b1, Admission::Admit(_)));
        match b.admit() {
            Admission::Refuse(r) => assert_eq!(r.bound(), Bound::Broker),
            _ => panic!("broker bound"),
        }
        let m = l.metrics();
        assert_eq!(m.open.get(), 3);
        assert_eq!(m.refusing.get(), 0, "refusals dropped");
        drop(a1);
        assert_eq!(m.open.get(), 2);
        assert!(matches!(b.admit(), Admission::Admit(_)));
        assert_eq!(a.metrics.refused(Bound::Listener).get(), 1);
        assert_eq!(b.metrics.refused(Bound::Broker).get(), 1);
    }

    #[test]
    fn refusals_in_progress_are_bounded() {
        let l = limits(1);
        let g = l.listener("a".into(), 0);
        let _held = g.admit();
        let refusing: Vec<_> = (0..MAX_REFUSING).map(|_| g.admit()).collect();
        assert!(refusing.iter().all(|a| matches!(a, Admission::Refuse(_))));
        assert!(matches!(g.admit(), Admission::Drop));
        assert_eq!(l.metrics().refused_unanswered.get(), 1);
        drop(refusing);
        assert!(matches!(g.admit(), Admission::Refuse(_)));
    }
}
