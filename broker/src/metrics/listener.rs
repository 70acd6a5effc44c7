//! Figures of one listener, labelled `listener="NAME"` in `/metrics`:
//! its connections, bytes, and failed TLS handshakes by reason. The
//! listener makes them when it binds (before the broker's [`Metrics`]
//! exists) and the server attaches them with [`Metrics::attach_listener`].
//!
//! [`Metrics`]: super::Metrics
//! [`Metrics::attach_listener`]: super::Metrics::attach_listener

use std::sync::Arc;

use super::{Counter, Exposition, Gauge, Kind};
use crate::tls::HandshakeFailure;

#[derive(Debug)]
pub struct ListenerMetrics {
    pub name: Arc<str>,
    /// Connections of this listener open now.
    pub connections: Gauge,
    /// Connections accepted by this listener.
    pub connections_total: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    /// Failed TLS handshakes, one counter per [`HandshakeFailure`].
    tls_failures: [Counter; HandshakeFailure::ALL.len()],
}

impl ListenerMetrics {
    pub fn new(name: Arc<str>) -> ListenerMetrics {
        ListenerMetrics {
            name,
            connections: Gauge::default(),
            connections_total: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            tls_failures: Default::default(),
        }
    }

    /// The counter of TLS handshakes that failed for `reason`.
    pub fn tls_failure(&self, reason: HandshakeFailure) -> &Counter {
        &self.tls_failures[reason as usize]
    }
}

/// The listener families, one sample per listener (TLS failures: per
/// TLS listener and reason).
pub(super) fn render(listeners: &[Arc<ListenerMetrics>], tls: &[bool], e: &mut Exposition) {
    type Figure = fn(&ListenerMetrics) -> i64;
    #[rustfmt::skip]
    let families: [(&str, Kind, &str, Figure); 4] = [
        ("mqttd_listener_connections", Kind::Gauge, "Network connections open now, by listener.", |l| l.connections.get()),
        ("mqttd_listener_connections_total", Kind::Counter, "Network connections accepted, by listener.", |l| l.connections_total.get() as i64),
        ("mqttd_listener_bytes_received_total", Kind::Counter, "Bytes read from clients, by listener.", |l| l.bytes_received.get() as i64),
        ("mqttd_listener_bytes_sent_total", Kind::Counter, "Bytes written to clients, by listener.", |l| l.bytes_sent.get() as i64),
    ];
    if listeners.is_empty() {
        return;
    }
    for (name, kind, help, figure) in families {
        e.family(name, kind, help);
        for l in listeners {
            e.sample(name, &[("listener", &l.name)], figure(l));
        }
    }
    if !tls.iter().any(|t| *t) {
        return;
    }
    let name = "mqttd_tls_handshake_failures_total";
    e.family(
        name,
        Kind::Counter,
        "Failed TLS handshakes, by listener and reason (no_client_cert, unknown_ca, bad_client_cert, server_cert_rejected, protocol_mismatch, timeout, other).",
    );
    for (l, _) in listeners.iter().zip(tls).filter(|(_, t)| **t) {
        for reason in HandshakeFailure::ALL {
            e.sample(
                name,
                &[("listener", &l.name), ("reason", reason.as_str())],
                l.tls_failure(reason).get(),
            );
        }
    }
}
