//! `$SYS` topics as Mosquitto publishes them, for the dashboards and tools
//! that read them: every `mqtt.sys_interval_secs` (0, the default: off)
//! the broker publishes, retained and at QoS 0, each figure that changed
//! since the last round (`$SYS/broker/uptime` every round):
//!
//! | topic | value |
//! |---|---|
//! | `$SYS/broker/version` | `mqttd VERSION` |
//! | `$SYS/broker/uptime` | `N seconds` |
//! | `$SYS/broker/clients/connected` | clients with a session and a connection |
//! | `$SYS/broker/clients/disconnected` | persistent sessions without a connection |
//! | `$SYS/broker/clients/total` | sessions |
//! | `$SYS/broker/messages/received`, `…/sent` | PUBLISH packets since start |
//! | `$SYS/broker/publish/messages/received`, `…/sent` | the same (Mosquitto's name for PUBLISH only) |
//! | `$SYS/broker/publish/messages/dropped` | messages dropped |
//! | `$SYS/broker/bytes/received`, `…/sent` | bytes since start |
//! | `$SYS/broker/subscriptions/count` | subscriptions |
//! | `$SYS/broker/retained messages/count` | retained messages (other than `$SYS`) |
//!
//! Mosquitto's `messages/*` count packets of every type; mqttd counts
//! PUBLISH packets there. Wildcards at the first level do not match `$`
//! topics [MQTT-4.7.2-1], so only a subscription naming `$SYS` gets them,
//! and it is authorized as any other: with an ACL file a client needs a
//! rule such as `topic read $SYS/#`.
//!
//! The retained values are kept in memory only (never in the store:
//! they are stale after a restart, and rewritten every round), and are
//! routed like a PUBLISH from the broker itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::broker::Broker;
use crate::message::Message;
use crate::types::{QoS, TopicName};

/// The figures of one round, topic → payload; `sys_retained`: how many
/// `$SYS` topics are retained already, left out of the retained count.
fn figures(b: &Broker, sys_retained: usize) -> Vec<(&'static str, String)> {
    let ctx = &b.ctx;
    let m = &ctx.metrics;
    let sum = |by: &crate::metrics::ByQos| {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .iter()
            .map(|q| by.qos(*q).get())
            .sum::<u64>()
    };
    let (received, sent) = (sum(&m.messages_received), sum(&m.messages_sent));
    let sessions = ctx.table.len();
    let connected = ctx.table.connected_count();
    vec![
        (
            "$SYS/broker/version",
            format!("mqttd {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", b.started_at.elapsed().as_secs()),
        ),
        ("$SYS/broker/clients/connected", connected.to_string()),
        (
            "$SYS/broker/clients/disconnected",
            sessions.saturating_sub(connected).to_string(),
        ),
        ("$SYS/broker/clients/total", sessions.to_string()),
        ("$SYS/broker/messages/received", received.to_string()),
        ("$SYS/broker/messages/sent", sent.to_string()),
        (
            "$SYS/broker/publish/messages/received",
            received.to_string(),
        ),
        ("$SYS/broker/publish/messages/sent", sent.to_string()),
        (
            "$SYS/broker/publish/messages/dropped",
            m.messages_dropped.total().to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            m.bytes_received.get().to_string(),
        ),
        ("$SYS/broker/bytes/sent", m.bytes_sent.get().to_string()),
        (
            "$SYS/broker/subscriptions/count",
            ctx.router.subscription_count().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            ctx.retained.len().saturating_sub(sys_retained).to_string(),
        ),
    ]
}

/// Publishes the `$SYS` topics every `interval` until the broker stops.
pub async fn run(broker: Arc<Broker>, interval: Duration) {
    let mut last: HashMap<&'static str, String> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = broker.stopping.cancelled() => return,
            _ = tick.tick() => {}
        }
        let retained = if broker.ctx.config.mqtt.retain_available {
            last.len()
        } else {
            0
        };
        for (topic, value) in figures(&broker, retained) {
            if last.get(topic) == Some(&value) {
                continue;
            }
            publish(&broker, topic, &value);
            last.insert(topic, value);
        }
    }
}

/// Retains `value` under `topic` (memory only) and routes it as a live
/// message to current subscribers.
fn publish(b: &Broker, topic: &'static str, value: &str) {
    let Ok(topic) = TopicName::new(topic) else {
        return;
    };
    let msg = Message {
        topic,
        payload: Bytes::copy_from_slice(value.as_bytes()),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Default::default(),
        publisher: None,
        received_at: Instant::now(),
    };
    if b.ctx.config.mqtt.retain_available {
        if let Err(e) = b.ctx.retained.set(&msg.topic, Some(Arc::new(msg.clone()))) {
            tracing::debug!(topic = %msg.topic, error = %e, "$SYS value not retained");
        }
    }
    // Routed without the retain flag, so `route` leaves the store alone
    // (a live message reaches subscribers with retain 0 anyway).
    let live = Message {
        retain: false,
        ..msg
    };
    crate::publish::route(&b.ctx, Arc::new(live), None);
}
