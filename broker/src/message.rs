//! An application message as the broker routes it: what a PUBLISH carried,
//! detached from any connection, shared between subscribers by `Arc`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{LastWill, Properties, Publish};
use crate::types::{ClientId, QoS, TopicName};

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    pub retain: bool,
    /// Properties forwarded to subscribers (MQTT 5.0); topic alias and
    /// subscription identifiers are removed.
    pub properties: Properties,
    /// The publishing client, for "no local" subscriptions; `None` for
    /// messages the broker itself publishes.
    pub publisher: Option<ClientId>,
    pub received_at: Instant,
}

impl Message {
    /// Builds a message from a PUBLISH received from `publisher` (topic
    /// aliases already resolved).
    pub fn from_publish(p: Publish, publisher: &ClientId) -> Arc<Message> {
        let mut properties = p.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Arc::new(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            publisher: Some(publisher.clone()),
            received_at: Instant::now(),
        })
    }

    /// The message a will becomes when it is published.
    pub fn from_will(will: LastWill, publisher: &ClientId) -> Arc<Message> {
        let p = will.properties;
        // Only the properties a PUBLISH may carry; the will delay stays behind.
        let properties = Properties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..Properties::default()
        };
        Arc::new(Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            publisher: Some(publisher.clone()),
            received_at: Instant::now(),
        })
    }

    /// Whether the MQTT 5.0 message expiry interval has passed.
    pub fn is_expired(&self) -> bool {
        self.properties
            .message_expiry_interval
            .is_some_and(|secs| self.received_at.elapsed().as_secs() >= u64::from(secs))
    }

    /// The PUBLISH that carries this message to a subscriber at `qos`;
    /// properties only for MQTT 5.0 peers (`v5`).
    pub fn to_publish(&self, qos: QoS, retain: bool, sub_ids: &[u32], v5: bool) -> Publish {
        let mut properties = Properties::default();
        if v5 {
            properties = self.properties.clone();
            properties
                .subscription_identifiers
                .extend_from_slice(sub_ids);
            // The remaining lifetime is forwarded, not the original.
            if let Some(secs) = properties.message_expiry_interval {
                let elapsed =
                    u32::try_from(self.received_at.elapsed().as_secs()).unwrap_or(u32::MAX);
                properties.message_expiry_interval = Some(secs.saturating_sub(elapsed).max(1));
            }
        }
        Publish {
            dup: false,
            qos,
            retain,
            topic: self.topic.clone(),
            packet_id: None,
            payload: self.payload.clone(),
            properties,
        }
    }
}
