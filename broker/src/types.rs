//! Validated newtypes for the protocol's core values: [`ClientId`],
//! [`TopicName`], [`TopicFilter`], [`PacketId`] and [`QoS`].
//!
//! Each is checked once at construction, so the rest of the broker never
//! re-validates (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7).

use std::fmt;
use std::num::NonZeroU16;
use std::sync::Arc;

/// Why a value was refused by one of the constructors in this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("topic name is empty")]
    EmptyTopic,
    #[error("topic name contains a wildcard")]
    WildcardInTopicName,
    #[error("topic contains a null character")]
    NullInTopic,
    #[error("topic is longer than 65535 bytes")]
    TopicTooLong,
    #[error("topic filter is empty")]
    EmptyFilter,
    #[error("'#' must be the last level of a topic filter and occupy it alone")]
    MisplacedMultiLevelWildcard,
    #[error("'+' must occupy a whole topic filter level")]
    MisplacedSingleLevelWildcard,
    #[error("packet identifier is zero")]
    ZeroPacketId,
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
}

/// Quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two-bit QoS value; 3 is invalid.
    pub fn from_u8(v: u8) -> Result<Self, InvalidValue> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            other => Err(InvalidValue::InvalidQoS(other)),
        }
    }
}

/// A non-zero packet identifier [MQTT-2.3.1-1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    pub fn new(v: u16) -> Result<Self, InvalidValue> {
        NonZeroU16::new(v)
            .map(PacketId)
            .ok_or(InvalidValue::ZeroPacketId)
    }
    pub fn get(self) -> u16 {
        self.0.get()
    }
    /// The next identifier, wrapping from 65535 to 1.
    pub fn next(self) -> Self {
        match NonZeroU16::new(self.0.get().wrapping_add(1)) {
            Some(n) => PacketId(n),
            None => PacketId(NonZeroU16::MIN),
        }
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client identifier. Any UTF-8 string the codec accepted; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(Arc<str>);

/// A set of packet ids. Ids are 16-bit and at most 65,535 are in use at
/// once, so hash flooding is not a concern: a plain multiplicative hash
/// with no per-set keys keeps the set 16 bytes smaller than with SipHash
/// (every session has two).
pub type PacketIdSet =
    std::collections::HashSet<PacketId, std::hash::BuildHasherDefault<PacketIdHasher>>;

/// The hasher of [`PacketIdSet`].
#[derive(Debug, Default, Clone, Copy)]
pub struct PacketIdHasher(u64);

impl std::hash::Hasher for PacketIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, v: u16) {
        self.0 = u64::from(v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl ClientId {
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        ClientId(s.into())
    }

    /// The shared string itself.
    pub fn arc(&self) -> Arc<str> {
        self.0.clone()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

fn check_common(s: &str) -> Result<(), InvalidValue> {
    if s.len() > usize::from(u16::MAX) {
        return Err(InvalidValue::TopicTooLong);
    }
    if s.contains('\0') {
        return Err(InvalidValue::NullInTopic);
    }
    Ok(())
}

/// A topic name as used in PUBLISH: no wildcards [MQTT-3.3.2-2].
///
/// The empty name exists only for MQTT 5.0 PUBLISH packets that carry a
/// topic alias instead; [`TopicName::new`] refuses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(Arc<str>);

impl TopicName {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() {
            return Err(InvalidValue::EmptyTopic);
        }
        Self::new_allow_empty(s)
    }
    /// Like [`TopicName::new`] but accepts the empty name (MQTT 5.0 topic alias).
    pub fn new_allow_empty(s: &str) -> Result<Self, InvalidValue> {
        check_common(s)?;
        if s.contains(['+', '#']) {
            return Err(InvalidValue::WildcardInTopicName);
        }
        Ok(TopicName(Arc::from(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Topics starting with `$` are reserved for the server [MQTT-4.7.2-1].
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic filter as used in SUBSCRIBE/UNSUBSCRIBE, with `+` and `#` only
/// as whole levels and `#` only last [MQTT-4.7.1-2], [MQTT-4.7.1-3].
///
/// A shared subscription (`$share/GROUP/filter`) is a valid filter here;
/// the router splits it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() {
            return Err(InvalidValue::EmptyFilter);
        }
        check_common(s)?;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(InvalidValue::MisplacedMultiLevelWildcard);
            }
            if level.contains('+') && level != "+" {
                return Err(InvalidValue::MisplacedSingleLevelWildcard);
            }
        }
        Ok(TopicFilter(Arc::from(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(TopicName::new("a/b").is_ok());
        assert!(TopicName::new("/").is_ok());
        assert_eq!(TopicName::new(""), Err(InvalidValue::EmptyTopic));
        assert_eq!(
            TopicName::new("a/+"),
            Err(InvalidValue::WildcardInTopicName)
        );
        assert_eq!(TopicName::new("a\0"), Err(InvalidValue::NullInTopic));
        assert!(TopicName::new_allow_empty("").is_ok());
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "a/+/b",
            "/",
            "$share/g/a/#",
            "sport/tennis/+",
        ] {
            assert!(TopicFilter::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "##"] {
            assert!(TopicFilter::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packet_ids() {
        assert!(PacketId::new(0).is_err());
        assert_eq!(
            PacketId::new(u16::MAX)
                .map(PacketId::next)
                .map(PacketId::get),
            Ok(1)
        );
    }
}
