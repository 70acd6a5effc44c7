//! Packet bodies (variable header and payload) to packets, once the fixed
//! header has been checked and the whole body has arrived. CONNECT and
//! CONNACK live in `decode_connect`.

use bytes::Bytes;

use super::decode_connect::{decode_connack, decode_connect};
use super::error::DecodeError;
use super::packet::{
    Auth, Disconnect, Packet, ProtocolVersion, PubResp, Publish, ReasonCode, RetainHandling,
    SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use super::properties::Properties;
use super::props::{self, Ctx};
use super::wire::{kind, Reader};
use crate::types::{PacketId, QoS, TopicFilter, TopicName};

/// PUBACK and PUBREC reason codes (5.0 sections 3.4.2.1, 3.5.2.1).
pub const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// PUBREL and PUBCOMP reason codes (5.0 sections 3.6.2.1, 3.7.2.1).
pub const PUBREL_CODES: &[u8] = &[0x00, 0x92];
/// SUBACK reason codes (5.0 section 3.9.3).
pub const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// SUBACK return codes of 3.1 and 3.1.1 [MQTT-3.9.3-2].
pub const SUBACK_CODES_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
/// UNSUBACK reason codes (5.0 section 3.11.3).
pub const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// DISCONNECT reason codes (5.0 section 3.14.2.1).
pub const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// AUTH reason codes (5.0 section 3.15.2.1).
pub const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

/// Decodes the body of a packet whose first byte passed the header checks.
/// Before CONNECT (`version` `None`) that is a CONNECT.
pub fn decode(
    first_byte: u8,
    body: &Bytes,
    version: Option<ProtocolVersion>,
) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body);
    let packet_type = first_byte >> 4;
    let Some(version) = version else {
        let connect = decode_connect(&mut r)?;
        return finish(&r, Packet::Connect(Box::new(connect)));
    };
    let v5 = version.is_v5();
    let packet = match packet_type {
        kind::CONNECT => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        kind::CONNACK => Packet::ConnAck(decode_connack(&mut r, version)?),
        kind::PUBLISH => Packet::Publish(publish(&mut r, first_byte, v5)?),
        kind::PUBACK => Packet::PubAck(pub_resp(&mut r, v5, Ctx::PUBACK, PUBACK_CODES)?),
        kind::PUBREC => Packet::PubRec(pub_resp(&mut r, v5, Ctx::PUBREC, PUBACK_CODES)?),
        kind::PUBREL => Packet::PubRel(pub_resp(&mut r, v5, Ctx::PUBREL, PUBREL_CODES)?),
        kind::PUBCOMP => Packet::PubComp(pub_resp(&mut r, v5, Ctx::PUBCOMP, PUBREL_CODES)?),
        kind::SUBSCRIBE => Packet::Subscribe(subscribe(&mut r, v5)?),
        kind::SUBACK => Packet::SubAck(suback(&mut r, v5)?),
        kind::UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        kind::UNSUBACK => Packet::UnsubAck(unsuback(&mut r, v5)?),
        kind::PINGREQ => Packet::PingReq,
        kind::PINGRESP => Packet::PingResp,
        kind::DISCONNECT => Packet::Disconnect(disconnect(&mut r, v5)?),
        kind::AUTH if v5 => Packet::Auth(auth(&mut r)?),
        _ => return Err(DecodeError::ReservedPacketType { packet_type }),
    };
    finish(&r, packet)
}

/// The remaining length must match the content exactly.
fn finish(r: &Reader<'_>, packet: Packet) -> Result<Packet, DecodeError> {
    r.finish()?;
    Ok(packet)
}

/// Reads a packet identifier that must be non-zero [MQTT-2.3.1-1].
fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).map_err(|_| DecodeError::ZeroPacketId)
}

/// Reads one reason code from `allowed`.
pub(super) fn reason_code(
    r: &mut Reader<'_>,
    allowed: &[u8],
    packet: &'static str,
) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    if allowed.contains(&code) {
        Ok(ReasonCode(code))
    } else {
        Err(DecodeError::InvalidReasonCode { packet, code })
    }
}

/// The property block of a 5.0 packet, or nothing before 5.0.
fn properties(r: &mut Reader<'_>, v5: bool, ctx: Ctx) -> Result<Properties, DecodeError> {
    if v5 {
        props::decode(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

fn publish(r: &mut Reader<'_>, first_byte: u8, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((first_byte >> 1) & 0b11).map_err(|_| DecodeError::InvalidPublishQoS)?;
    let topic = r.str()?;
    // An empty name is allowed in 5.0 only, with a Topic Alias (checked below).
    let topic = if v5 {
        TopicName::new_allow_empty(topic)
    } else {
        TopicName::new(topic)
    }
    .map_err(DecodeError::InvalidTopicName)?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(packet_id(r)?),
    };
    let properties = properties(r, v5, Ctx::PUBLISH)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::MissingTopicAlias);
    }
    Ok(Publish {
        dup: first_byte & 0b1000 != 0,
        qos,
        retain: first_byte & 0b0001 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code may be left
/// out (remaining length 2: success) and so may the property length
/// (remaining length 3: no properties) (5.0 section 3.4.2.1).
fn pub_resp(r: &mut Reader<'_>, v5: bool, ctx: Ctx, codes: &[u8]) -> Result<PubResp, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 || r.is_empty() {
        return Ok(PubResp::success(packet_id));
    }
    let code = reason_code(r, codes, ctx.name)?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        props::decode(r, ctx)?
    };
    Ok(PubResp {
        packet_id,
        code,
        properties,
    })
}

fn subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, v5, Ctx::SUBSCRIBE)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = TopicFilter::new(r.str()?).map_err(DecodeError::InvalidTopicFilter)?;
        let options = subscription_options(r.u8()?, v5, &filter)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: "SUBSCRIBE",
        });
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The requested QoS byte (3.1.1) or Subscription Options (5.0 section
/// 3.8.3.1).
fn subscription_options(
    byte: u8,
    v5: bool,
    filter: &TopicFilter,
) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::SubscriptionReservedBits { options: byte });
    }
    let qos = QoS::from_u8(byte & 0b11).map_err(|_| DecodeError::InvalidSubscriptionQoS)?;
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    let no_local = byte & 0b0100 != 0;
    if no_local && filter.as_str().starts_with("$share/") {
        return Err(DecodeError::NoLocalOnSharedSubscription);
    }
    Ok(SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

/// The reason codes filling the rest of a SUBACK/UNSUBACK; at least one.
fn codes(
    r: &mut Reader<'_>,
    allowed: &[u8],
    packet: &'static str,
) -> Result<Vec<ReasonCode>, DecodeError> {
    let mut codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        codes.push(reason_code(r, allowed, packet)?);
    }
    if codes.is_empty() {
        return Err(DecodeError::EmptyPayload { packet });
    }
    Ok(codes)
}

fn suback(r: &mut Reader<'_>, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, v5, Ctx::SUBACK)?;
    let allowed = if v5 { SUBACK_CODES } else { SUBACK_CODES_V3 };
    Ok(SubAck {
        packet_id,
        codes: codes(r, allowed, "SUBACK")?,
        properties,
    })
}

fn unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, v5, Ctx::UNSUBSCRIBE)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(TopicFilter::new(r.str()?).map_err(DecodeError::InvalidTopicFilter)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: "UNSUBSCRIBE",
        });
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// UNSUBACK: before 5.0 only the packet identifier.
fn unsuback(r: &mut Reader<'_>, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            codes: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = props::decode(r, Ctx::UNSUBACK)?;
    Ok(UnsubAck {
        packet_id,
        codes: codes(r, UNSUBACK_CODES, "UNSUBACK")?,
        properties,
    })
}

/// DISCONNECT: empty before 5.0; in 5.0 remaining length 0 means normal
/// disconnection and 1 means no properties (5.0 section 3.14.2.1).
fn disconnect(r: &mut Reader<'_>, v5: bool) -> Result<Disconnect, DecodeError> {
    if !v5 || r.is_empty() {
        return Ok(Disconnect::normal());
    }
    let code = reason_code(r, DISCONNECT_CODES, "DISCONNECT")?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        props::decode(r, Ctx::DISCONNECT)?
    };
    Ok(Disconnect { code, properties })
}

/// AUTH: remaining length 0 means success without properties; otherwise
/// both the reason code and the property length are present (5.0 section
/// 3.15.2.1).
fn auth(r: &mut Reader<'_>) -> Result<Auth, DecodeError> {
    if r.is_empty() {
        return Ok(Auth {
            code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        });
    }
    let code = reason_code(r, AUTH_CODES, "AUTH")?;
    let properties = props::decode(r, Ctx::AUTH)?;
    Ok(Auth { code, properties })
}
