//! MQTT 5.0 topic aliases of one connection, in both directions
//! (section 3.3.2.3.4). Aliases live and die with the network connection.

use std::collections::HashMap;

use crate::codec::{Publish, ReasonCode};
use crate::types::TopicName;

/// Aliases the client set towards the broker.
#[derive(Debug)]
pub struct InboundAliases {
    map: Vec<Option<TopicName>>,
}

impl InboundAliases {
    /// `max` is the Topic Alias Maximum the broker announced in CONNACK.
    pub fn new(max: u16) -> Self {
        InboundAliases {
            map: vec![None; usize::from(max)],
        }
    }

    /// Replaces an alias by its topic, or records a new alias. `Err` gives
    /// the reason and the DISCONNECT reason code.
    pub fn resolve(&mut self, p: &mut Publish) -> Result<(), (&'static str, ReasonCode)> {
        let Some(alias) = p.properties.topic_alias.take() else {
            return if p.topic.is_empty() {
                Err((
                    "empty topic without a topic alias",
                    ReasonCode::PROTOCOL_ERROR,
                ))
            } else {
                Ok(())
            };
        };
        let slot = usize::from(alias)
            .checked_sub(1)
            .and_then(|i| self.map.get_mut(i))
            .ok_or((
                "topic alias is 0 or above the maximum [MQTT-3.3.2-9]",
                ReasonCode::TOPIC_ALIAS_INVALID,
            ))?;
        if p.topic.is_empty() {
            match slot {
                Some(topic) => p.topic = topic.clone(),
                None => return Err(("unknown topic alias", ReasonCode::PROTOCOL_ERROR)),
            }
        } else {
            *slot = Some(p.topic.clone());
        }
        Ok(())
    }
}

/// Aliases the broker sets towards the client, first come first served
/// until the client's maximum is used up.
#[derive(Debug)]
pub struct OutboundAliases {
    max: u16,
    map: HashMap<TopicName, u16>,
}

impl OutboundAliases {
    /// `max` is the Topic Alias Maximum the client announced in CONNECT.
    pub fn new(max: u16) -> Self {
        OutboundAliases {
            max,
            map: HashMap::new(),
        }
    }

    /// Uses an alias for `p` when one exists or can be assigned. Returns
    /// the topic if a new alias was assigned, for [`OutboundAliases::forget`].
    pub fn apply(&mut self, p: &mut Publish) -> Option<TopicName> {
        if self.max == 0 {
            return None;
        }
        if let Some(&alias) = self.map.get(&p.topic) {
            p.properties.topic_alias = Some(alias);
            p.topic = TopicName::new_allow_empty("").unwrap_or_else(|_| p.topic.clone());
            None
        } else if self.map.len() < usize::from(self.max) {
            let alias = self.map.len() as u16 + 1;
            self.map.insert(p.topic.clone(), alias);
            p.properties.topic_alias = Some(alias);
            Some(p.topic.clone())
        } else {
            None
        }
    }

    /// Takes back the alias just assigned to `topic`: the packet that
    /// carried it was not sent.
    pub fn forget(&mut self, topic: &TopicName) {
        self.map.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, alias: Option<u16>) -> Publish {
        let mut p = Publish {
            dup: false,
            qos: crate::types::QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new_allow_empty(topic).unwrap(),
            packet_id: None,
            payload: Default::default(),
            properties: Default::default(),
        };
        p.properties.topic_alias = alias;
        p
    }

    #[test]
    fn inbound_set_then_use() {
        let mut a = InboundAliases::new(2);
        let mut p = publish("a/b", Some(1));
        a.resolve(&mut p).unwrap();
        let mut q = publish("", Some(1));
        a.resolve(&mut q).unwrap();
        assert_eq!(q.topic.as_str(), "a/b");
        assert_eq!(q.properties.topic_alias, None);
        assert_eq!(
            a.resolve(&mut publish("", Some(2))).unwrap_err().1,
            ReasonCode::PROTOCOL_ERROR
        );
        assert_eq!(
            a.resolve(&mut publish("x", Some(3))).unwrap_err().1,
            ReasonCode::TOPIC_ALIAS_INVALID
        );
        assert_eq!(
            a.resolve(&mut publish("x", Some(0))).unwrap_err().1,
            ReasonCode::TOPIC_ALIAS_INVALID
        );
        assert!(a.resolve(&mut publish("", None)).is_err());
    }

    #[test]
    fn outbound_assigns_until_full() {
        let mut a = OutboundAliases::new(1);
        let mut p = publish("t", None);
        a.apply(&mut p);
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("t", Some(1)));
        let mut p = publish("t", None);
        a.apply(&mut p);
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("", Some(1)));
        let mut p = publish("u", None);
        a.apply(&mut p);
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("u", None));
        let mut off = OutboundAliases::new(0);
        let mut p = publish("t", None);
        off.apply(&mut p);
        assert_eq!(p.properties.topic_alias, None);
    }
}
