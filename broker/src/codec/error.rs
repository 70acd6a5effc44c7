//! Codec errors: why bytes from a peer are not a valid packet
//! ([`DecodeError`]) and why a packet cannot be written ([`EncodeError`]).
//!
//! Each decode error names the rule broken and cites the spec clause
//! (3.1.1 numbering where the rule exists there, 5.0 otherwise); every one
//! of them ends the connection. [`DecodeError::reason_code`] gives the MQTT
//! 5.0 reason code for the DISCONNECT (or CONNACK) sent before closing.

use super::packet::{ProtocolVersion, ReasonCode};
use crate::types::InvalidValue;

/// Why bytes from a peer are not a valid packet. `Copy + PartialEq` so tests
/// compare them; [`DecodeError::reason_code`] gives the MQTT 5.0 reason code
/// to send back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The fixed header announces more than the configured maximum; raised
    /// as soon as the remaining length is known, before the body arrives
    /// (5.0 section 3.1.2.11.4).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: u32 },

    /// The first packet on a connection must be CONNECT [MQTT-3.1.0-1].
    #[error("first packet must be connect, got packet type {packet_type}")]
    FirstPacketNotConnect { packet_type: u8 },

    /// Packet type 0 is reserved; type 15 (AUTH) exists only in 5.0
    /// [MQTT-2.2.1] (3.1.1 table 2.1).
    #[error("reserved packet type {packet_type}")]
    ReservedPacketType { packet_type: u8 },

    /// Fixed header flags other than those the packet type defines
    /// [MQTT-2.2.2-1], [MQTT-2.2.2-2].
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidHeaderFlags { packet_type: u8, flags: u8 },

    /// PUBLISH with both QoS bits set [MQTT-3.3.1-4].
    #[error("publish qos 3 is invalid")]
    InvalidPublishQoS,

    /// DUP must be 0 for QoS 0 messages [MQTT-3.3.1-2].
    #[error("publish dup flag set with qos 0")]
    DupWithQoS0,

    /// A variable byte integer longer than 4 bytes, or not in its shortest
    /// form (3.1.1 section 2.2.3, [MQTT-1.5.5-1]).
    #[error("malformed variable byte integer")]
    MalformedVarInt,

    /// A field runs past the end of the packet's remaining length (or past
    /// the property length).
    #[error("field extends past the end of the packet")]
    UnexpectedEnd,

    /// The remaining length is larger than the packet's content (3.1.1
    /// section 2.2.3, 5.0 section 2.1.4).
    #[error("packet has bytes after its last field")]
    TrailingBytes,

    /// A string that is not well-formed UTF-8, e.g. holding a surrogate
    /// [MQTT-1.5.3-1].
    #[error("string is not well-formed utf-8")]
    InvalidUtf8,

    /// A string containing U+0000 [MQTT-1.5.3-2].
    #[error("string contains the null character")]
    NullCharacter,

    /// A PUBLISH or will topic name that is empty, contains a wildcard or
    /// is otherwise invalid [MQTT-3.3.2-2], [MQTT-4.7.3-1].
    #[error("invalid topic name: {0}")]
    InvalidTopicName(InvalidValue),

    /// A SUBSCRIBE or UNSUBSCRIBE topic filter that breaks the wildcard
    /// rules [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1].
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(InvalidValue),

    /// A packet identifier of zero where one is required [MQTT-2.3.1-1].
    #[error("packet identifier is zero")]
    ZeroPacketId,

    /// SUBSCRIBE without a topic filter [MQTT-3.8.3-3], UNSUBSCRIBE
    /// without one [MQTT-3.10.3-2], or SUBACK/UNSUBACK without reason codes.
    #[error("{packet} has an empty payload")]
    EmptyPayload { packet: &'static str },

    /// Reserved bits of a subscription options byte are set
    /// [MQTT-3.8.3-4] (3.1.1), [MQTT-3.8.3-5] (5.0).
    #[error("reserved bits set in subscription options {options:#010b}")]
    SubscriptionReservedBits { options: u8 },

    /// A subscription asking for QoS 3 [MQTT-3.8.3-4].
    #[error("subscription qos 3 is invalid")]
    InvalidSubscriptionQoS,

    /// Retain handling 3 (5.0 section 3.8.3.1).
    #[error("retain handling 3 is invalid")]
    InvalidRetainHandling,

    /// No Local set on a shared subscription [MQTT-3.8.3-4] (5.0).
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,

    /// The protocol name is neither `MQTT` nor `MQIsdp` [MQTT-3.1.2-1];
    /// the peer does not speak MQTT, close without CONNACK.
    #[error("invalid protocol name")]
    InvalidProtocolName,

    /// A protocol name/level combination this broker does not speak; the
    /// broker answers CONNACK 0x01 (3.x) or 0x84 (5.0) then closes
    /// [MQTT-3.1.2-2].
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocol { level: u8 },

    /// CONNECT reserved flag (bit 0) set [MQTT-3.1.2-3].
    #[error("connect reserved flag is set")]
    ConnectReservedFlag,

    /// Will QoS or Will Retain set without the Will Flag [MQTT-3.1.2-11],
    /// [MQTT-3.1.2-13], [MQTT-3.1.2-15].
    #[error("will qos or will retain set without the will flag")]
    WillFlagsWithoutWill,

    /// Will QoS 3 [MQTT-3.1.2-14].
    #[error("will qos 3 is invalid")]
    InvalidWillQoS,

    /// Password flag without user name flag (3.1 and 3.1.1 only)
    /// [MQTT-3.1.2-22].
    #[error("password flag set without the user name flag")]
    PasswordWithoutUsername,

    /// CONNACK acknowledge flags with reserved bits set [MQTT-3.2.2-1], or
    /// session present with a non-zero return code [MQTT-3.2.2-4].
    #[error("invalid connack flags {flags:#010b}")]
    InvalidConnAckFlags { flags: u8 },

    /// A reason or return code the packet type does not allow
    /// [MQTT-3.2.2-6], [MQTT-3.4.2-1], [MQTT-3.9.3-2] and siblings.
    #[error("reason code {code:#04x} is not allowed in {packet}")]
    InvalidReasonCode { packet: &'static str, code: u8 },

    /// An unknown property identifier (5.0 section 2.2.2.2).
    #[error("unknown property identifier {id:#04x}")]
    UnknownProperty { id: u8 },

    /// A property the packet type may not carry (5.0 section 2.2.2.2).
    #[error("property {id:#04x} is not allowed in {packet}")]
    PropertyNotAllowed { id: u8, packet: &'static str },

    /// A single-valued property included twice (5.0 section 3.x.2.x, e.g.
    /// "It is a Protocol Error to include the Topic Alias more than once").
    #[error("property {id:#04x} is included more than once")]
    DuplicateProperty { id: u8 },

    /// A property with a value out of its range: a 0/1 flag holding
    /// another value, Receive Maximum, Maximum Packet Size, Topic Alias or
    /// Subscription Identifier of 0 (5.0 section 3.x.2.x).
    #[error("property {id:#04x} has an invalid value")]
    InvalidPropertyValue { id: u8 },

    /// Authentication Data without an Authentication Method (5.0 sections
    /// 3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3).
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,

    /// An empty topic name without a Topic Alias (5.0 section 3.3.2.1).
    #[error("empty topic name without a topic alias")]
    MissingTopicAlias,
}

impl DecodeError {
    /// The MQTT 5.0 reason code for this error (5.0 section 4.13): what a
    /// 5.0 peer is told in DISCONNECT (or CONNACK) before the close.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            InvalidTopicName(_) | MissingTopicAlias => ReasonCode::TOPIC_NAME_INVALID,
            InvalidTopicFilter(_) => ReasonCode::TOPIC_FILTER_INVALID,
            FirstPacketNotConnect { .. }
            | ZeroPacketId
            | EmptyPayload { .. }
            | InvalidSubscriptionQoS
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | InvalidReasonCode { .. }
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod => ReasonCode::PROTOCOL_ERROR,
            ReservedPacketType { .. }
            | InvalidHeaderFlags { .. }
            | InvalidPublishQoS
            | DupWithQoS0
            | MalformedVarInt
            | UnexpectedEnd
            | TrailingBytes
            | InvalidUtf8
            | NullCharacter
            | SubscriptionReservedBits { .. }
            | InvalidProtocolName
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | InvalidWillQoS
            | PasswordWithoutUsername
            | InvalidConnAckFlags { .. }
            | UnknownProperty { .. }
            | PropertyNotAllowed { .. } => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet cannot be encoded. On error nothing is appended to the
/// output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The remaining length would exceed 268,435,455 bytes.
    #[error("packet of {0} bytes exceeds the protocol's maximum remaining length")]
    TooLarge(usize),

    /// A string or binary field longer than 65,535 bytes.
    #[error("field of {0} bytes exceeds the maximum of 65535")]
    FieldTooLong(usize),

    /// The packet does not exist in the peer's protocol version (AUTH
    /// before 5.0).
    #[error("{packet} does not exist in mqtt {version}")]
    NotInVersion {
        packet: &'static str,
        version: ProtocolVersion,
    },

    /// A PUBLISH whose packet identifier does not match its QoS (present
    /// if and only if QoS > 0).
    #[error("publish packet identifier does not match its qos")]
    PacketIdQoSMismatch,

    /// A Subscription Identifier outside 1..=268,435,455.
    #[error("subscription identifier {0} is out of range")]
    SubscriptionIdOutOfRange(u32),
}
