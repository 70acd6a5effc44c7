//! An application message as the broker routes it: what a PUBLISH carried,
//! detached from any connection, shared between subscribers by `Arc`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{LastWill, Properties, Publish};
use crate::types::{ClientId, QoS, TopicName};

/// `payload` in an allocation of its own, not a slice of a larger buffer.
fn own(payload: Bytes) -> Bytes {
    Bytes::copy_from_slice(&payload)
}

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
    ///
    /// The payload is copied into an allocation of its own: the decoded
    /// one is a slice of the connection's read buffer, and a message may
    /// wait in a queue for a long time, so a 10-byte message would keep a
    /// buffer of up to a whole read (or a large earlier packet) alive. One
    /// copy per publish, shared by every subscriber, costs less than that,
    /// and it lets the read buffer be reused in place.
    pub fn from_publish(p: Publish, publisher: &ClientId) -> Arc<Message> {
        let mut properties = p.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Arc::new(Message {
            topic: p.topic,
            payload: own(p.payload),
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
            payload: own(will.payload),
            qos: will.qos,
            retain: will.retain,
            properties,
            publisher: Some(publisher.clone()),
            received_at: Instant::now(),
        })
    }

    /// When the MQTT 5.0 message expiry interval passes, if it is set.
    pub fn expires_at(&self) -> Option<Instant> {
        let secs = self.properties.message_expiry_interval?;
        self.received_at
            .checked_add(std::time::Duration::from_secs(u64::from(secs)))
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

/// Retained messages count their payload and topic against
/// `limits.max_retained_bytes`.
impl crate::router::Retainable for Arc<Message> {
    fn retained_bytes(&self) -> u64 {
        (self.payload.len() + self.topic.as_str().len()) as u64
    }

    fn expires_at(&self) -> Option<Instant> {
        Message::expires_at(self)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::codec::Decoder;

    /// Decodes a PUBLISH out of a large read buffer, as a connection does,
    /// and checks the routed payload does not point into that buffer.
    #[test]
    fn payload_does_not_pin_the_read_buffer() {
        let mut rbuf = BytesMut::with_capacity(1 << 20);
        // CONNECT (3.1.1, client id "c"), then a QoS 0 PUBLISH "t" with a 10-byte payload, then room to spare.
        rbuf.put_slice(&[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'c',
        ]);
        rbuf.put_slice(&[0x30, 13, 0, 1, b't']);
        rbuf.put_slice(b"0123456789");
        let buffer = rbuf.as_ptr() as usize..rbuf.as_ptr() as usize + rbuf.capacity();
        let mut decoder = Decoder::new(1 << 20);
        decoder.decode(&mut rbuf).unwrap().unwrap();
        let packet = decoder.decode(&mut rbuf).unwrap().unwrap();
        let crate::codec::Packet::Publish(p) = packet else {
            panic!("not a publish: {packet:?}");
        };
        assert!(
            buffer.contains(&(p.payload.as_ptr() as usize)),
            "the decoder slices the read buffer (the case this guards)"
        );
        let msg = Message::from_publish(p, &ClientId::new("c"));
        assert_eq!(&msg.payload[..], b"0123456789");
        assert!(!buffer.contains(&(msg.payload.as_ptr() as usize)));
    }
}
