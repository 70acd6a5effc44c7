//! The MQTT 5.0 property block (section 2.2.2) on the wire: which
//! properties each packet may carry, decoding with duplicate and range
//! checks, and encoding.
//!
//! A property the packet may not carry, or an unknown identifier, is a
//! Malformed Packet (section 2.2.2.2); a single-valued property given twice
//! or a value out of range is a Protocol Error.

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::properties::{id, Properties};
use super::wire::{prefixed_len, put_prefixed, put_varint, varint_len, Reader, MAX_VARINT};
use crate::types::TopicName;

/// Where a property block sits: which properties are allowed there, and
/// the packet's name for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    bit: u16,
    pub name: &'static str,
}

const B_CONNECT: u16 = 1 << 0;
const B_CONNACK: u16 = 1 << 1;
const B_PUBLISH: u16 = 1 << 2;
const B_WILL: u16 = 1 << 3;
const B_RESP: u16 = 1 << 4;
const B_SUBSCRIBE: u16 = 1 << 5;
const B_SUBACK: u16 = 1 << 6;
const B_UNSUBSCRIBE: u16 = 1 << 7;
const B_UNSUBACK: u16 = 1 << 8;
const B_DISCONNECT: u16 = 1 << 9;
const B_AUTH: u16 = 1 << 10;

impl Ctx {
    pub const CONNECT: Ctx = Ctx::new(B_CONNECT, "CONNECT");
    pub const CONNACK: Ctx = Ctx::new(B_CONNACK, "CONNACK");
    pub const PUBLISH: Ctx = Ctx::new(B_PUBLISH, "PUBLISH");
    pub const WILL: Ctx = Ctx::new(B_WILL, "will properties");
    pub const PUBACK: Ctx = Ctx::new(B_RESP, "PUBACK");
    pub const PUBREC: Ctx = Ctx::new(B_RESP, "PUBREC");
    pub const PUBREL: Ctx = Ctx::new(B_RESP, "PUBREL");
    pub const PUBCOMP: Ctx = Ctx::new(B_RESP, "PUBCOMP");
    pub const SUBSCRIBE: Ctx = Ctx::new(B_SUBSCRIBE, "SUBSCRIBE");
    pub const SUBACK: Ctx = Ctx::new(B_SUBACK, "SUBACK");
    pub const UNSUBSCRIBE: Ctx = Ctx::new(B_UNSUBSCRIBE, "UNSUBSCRIBE");
    pub const UNSUBACK: Ctx = Ctx::new(B_UNSUBACK, "UNSUBACK");
    pub const DISCONNECT: Ctx = Ctx::new(B_DISCONNECT, "DISCONNECT");
    pub const AUTH: Ctx = Ctx::new(B_AUTH, "AUTH");

    const fn new(bit: u16, name: &'static str) -> Ctx {
        Ctx { bit, name }
    }
}

/// Where each property may appear (MQTT 5.0 table 2-4); `None` for an
/// unknown identifier.
fn allowed_in(prop: u8) -> Option<u16> {
    const APP_MESSAGE: u16 = B_PUBLISH | B_WILL;
    const ACKS: u16 = B_CONNACK | B_RESP | B_SUBACK | B_UNSUBACK | B_DISCONNECT | B_AUTH;
    Some(match prop {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => APP_MESSAGE,
        id::SUBSCRIPTION_IDENTIFIER => B_PUBLISH | B_SUBSCRIBE,
        id::SESSION_EXPIRY_INTERVAL => B_CONNECT | B_CONNACK | B_DISCONNECT,
        id::ASSIGNED_CLIENT_IDENTIFIER
        | id::SERVER_KEEP_ALIVE
        | id::RESPONSE_INFORMATION
        | id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => B_CONNACK,
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => B_CONNECT | B_CONNACK | B_AUTH,
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => B_CONNECT,
        id::WILL_DELAY_INTERVAL => B_WILL,
        id::SERVER_REFERENCE => B_CONNACK | B_DISCONNECT,
        id::REASON_STRING => ACKS,
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
            B_CONNECT | B_CONNACK
        }
        id::TOPIC_ALIAS => B_PUBLISH,
        id::USER_PROPERTY => u16::MAX,
        _ => return None,
    })
}

fn set<T>(slot: &mut Option<T>, value: T, prop: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty { id: prop });
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property whose only values are 0 and 1.
fn flag(r: &mut Reader<'_>, prop: u8) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::InvalidPropertyValue { id: prop }),
    }
}

fn non_zero_u16(r: &mut Reader<'_>, prop: u8) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue { id: prop }),
        v => Ok(v),
    }
}

/// Reads a property length and the properties it covers, checking each
/// against `ctx`.
pub fn decode(r: &mut Reader<'_>, ctx: Ctx) -> Result<Properties, DecodeError> {
    let len = r.varint()?;
    let mut block = r.sub(len as usize)?;
    let mut props = Properties::default();
    while !block.is_empty() {
        let prop = block.u8()?;
        let allowed = allowed_in(prop).ok_or(DecodeError::UnknownProperty { id: prop })?;
        if allowed & ctx.bit == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                id: prop,
                packet: ctx.name,
            });
        }
        decode_one(&mut block, prop, ctx, &mut props)?;
    }
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(props)
}

fn decode_one(
    r: &mut Reader<'_>,
    prop: u8,
    ctx: Ctx,
    p: &mut Properties,
) -> Result<(), DecodeError> {
    match prop {
        id::PAYLOAD_FORMAT_INDICATOR => set(&mut p.payload_format_indicator, flag(r, prop)?, prop),
        id::MESSAGE_EXPIRY_INTERVAL => set(&mut p.message_expiry_interval, r.u32()?, prop),
        id::CONTENT_TYPE => set(&mut p.content_type, r.string()?, prop),
        id::RESPONSE_TOPIC => {
            // A Topic Name: no wildcards [MQTT-3.3.2-14].
            let topic = TopicName::new(r.str()?).map_err(DecodeError::InvalidTopicName)?;
            set(&mut p.response_topic, topic.as_str().to_owned(), prop)
        }
        id::CORRELATION_DATA => set(&mut p.correlation_data, r.binary()?, prop),
        id::SUBSCRIPTION_IDENTIFIER => {
            let v = r.varint()?;
            if v == 0 {
                return Err(DecodeError::InvalidPropertyValue { id: prop });
            }
            // Repeatable only in PUBLISH (one per matching subscription).
            if ctx.bit != B_PUBLISH && !p.subscription_identifiers.is_empty() {
                return Err(DecodeError::DuplicateProperty { id: prop });
            }
            p.subscription_identifiers.push(v);
            Ok(())
        }
        id::SESSION_EXPIRY_INTERVAL => set(&mut p.session_expiry_interval, r.u32()?, prop),
        id::ASSIGNED_CLIENT_IDENTIFIER => set(&mut p.assigned_client_identifier, r.string()?, prop),
        id::SERVER_KEEP_ALIVE => set(&mut p.server_keep_alive, r.u16()?, prop),
        id::AUTHENTICATION_METHOD => set(&mut p.authentication_method, r.string()?, prop),
        id::AUTHENTICATION_DATA => set(&mut p.authentication_data, r.binary()?, prop),
        id::REQUEST_PROBLEM_INFORMATION => {
            set(&mut p.request_problem_information, flag(r, prop)?, prop)
        }
        id::WILL_DELAY_INTERVAL => set(&mut p.will_delay_interval, r.u32()?, prop),
        id::REQUEST_RESPONSE_INFORMATION => {
            set(&mut p.request_response_information, flag(r, prop)?, prop)
        }
        id::RESPONSE_INFORMATION => set(&mut p.response_information, r.string()?, prop),
        id::SERVER_REFERENCE => set(&mut p.server_reference, r.string()?, prop),
        id::REASON_STRING => set(&mut p.reason_string, r.string()?, prop),
        id::RECEIVE_MAXIMUM => set(&mut p.receive_maximum, non_zero_u16(r, prop)?, prop),
        id::TOPIC_ALIAS_MAXIMUM => set(&mut p.topic_alias_maximum, r.u16()?, prop),
        id::TOPIC_ALIAS => set(&mut p.topic_alias, non_zero_u16(r, prop)?, prop),
        id::MAXIMUM_QOS => set(&mut p.maximum_qos, flag(r, prop)?, prop),
        id::RETAIN_AVAILABLE => set(&mut p.retain_available, flag(r, prop)?, prop),
        id::USER_PROPERTY => {
            let key = r.string()?;
            let value = r.string()?;
            p.user_properties.push((key, value));
            Ok(())
        }
        id::MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => Err(DecodeError::InvalidPropertyValue { id: prop }),
            v => set(&mut p.maximum_packet_size, v, prop),
        },
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            set(&mut p.wildcard_subscription_available, flag(r, prop)?, prop)
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => set(
            &mut p.subscription_identifier_available,
            flag(r, prop)?,
            prop,
        ),
        id::SHARED_SUBSCRIPTION_AVAILABLE => {
            set(&mut p.shared_subscription_available, flag(r, prop)?, prop)
        }
        _ => Err(DecodeError::UnknownProperty { id: prop }),
    }
}

/// Receives the properties [`walk`] visits: one sink measures, one writes,
/// so the field list exists once.
trait Sink {
    fn byte(&mut self, prop: u8, v: u8);
    fn two(&mut self, prop: u8, v: u16);
    fn four(&mut self, prop: u8, v: u32);
    fn var(&mut self, prop: u8, v: u32) -> Result<(), EncodeError>;
    fn data(&mut self, prop: u8, v: &[u8]) -> Result<(), EncodeError>;
    fn pair(&mut self, prop: u8, k: &str, v: &str) -> Result<(), EncodeError>;
}

/// Visits every present property in identifier order.
fn walk<S: Sink>(p: &Properties, s: &mut S) -> Result<(), EncodeError> {
    fn opt_str<S: Sink>(s: &mut S, prop: u8, v: &Option<String>) -> Result<(), EncodeError> {
        v.as_deref().map_or(Ok(()), |v| s.data(prop, v.as_bytes()))
    }
    if let Some(v) = p.payload_format_indicator {
        s.byte(id::PAYLOAD_FORMAT_INDICATOR, v);
    }
    if let Some(v) = p.message_expiry_interval {
        s.four(id::MESSAGE_EXPIRY_INTERVAL, v);
    }
    opt_str(s, id::CONTENT_TYPE, &p.content_type)?;
    opt_str(s, id::RESPONSE_TOPIC, &p.response_topic)?;
    if let Some(v) = &p.correlation_data {
        s.data(id::CORRELATION_DATA, v)?;
    }
    for &v in &p.subscription_identifiers {
        s.var(id::SUBSCRIPTION_IDENTIFIER, v)?;
    }
    if let Some(v) = p.session_expiry_interval {
        s.four(id::SESSION_EXPIRY_INTERVAL, v);
    }
    opt_str(
        s,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        &p.assigned_client_identifier,
    )?;
    if let Some(v) = p.server_keep_alive {
        s.two(id::SERVER_KEEP_ALIVE, v);
    }
    opt_str(s, id::AUTHENTICATION_METHOD, &p.authentication_method)?;
    if let Some(v) = &p.authentication_data {
        s.data(id::AUTHENTICATION_DATA, v)?;
    }
    if let Some(v) = p.request_problem_information {
        s.byte(id::REQUEST_PROBLEM_INFORMATION, v);
    }
    if let Some(v) = p.will_delay_interval {
        s.four(id::WILL_DELAY_INTERVAL, v);
    }
    if let Some(v) = p.request_response_information {
        s.byte(id::REQUEST_RESPONSE_INFORMATION, v);
    }
    opt_str(s, id::RESPONSE_INFORMATION, &p.response_information)?;
    opt_str(s, id::SERVER_REFERENCE, &p.server_reference)?;
    opt_str(s, id::REASON_STRING, &p.reason_string)?;
    let twos = [
        (id::RECEIVE_MAXIMUM, p.receive_maximum),
        (id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum),
        (id::TOPIC_ALIAS, p.topic_alias),
    ];
    for (prop, v) in twos {
        if let Some(v) = v {
            s.two(prop, v);
        }
    }
    let bytes = [
        (id::MAXIMUM_QOS, p.maximum_qos),
        (id::RETAIN_AVAILABLE, p.retain_available),
    ];
    for (prop, v) in bytes {
        if let Some(v) = v {
            s.byte(prop, v);
        }
    }
    for (k, v) in &p.user_properties {
        s.pair(id::USER_PROPERTY, k, v)?;
    }
    if let Some(v) = p.maximum_packet_size {
        s.four(id::MAXIMUM_PACKET_SIZE, v);
    }
    let bytes = [
        (
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            p.wildcard_subscription_available,
        ),
        (
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            p.subscription_identifier_available,
        ),
        (
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            p.shared_subscription_available,
        ),
    ];
    for (prop, v) in bytes {
        if let Some(v) = v {
            s.byte(prop, v);
        }
    }
    Ok(())
}

fn check_sub_id(v: u32) -> Result<(), EncodeError> {
    if v == 0 || v > MAX_VARINT {
        Err(EncodeError::SubscriptionIdOutOfRange(v))
    } else {
        Ok(())
    }
}

struct Measure(usize);

impl Sink for Measure {
    fn byte(&mut self, _: u8, _: u8) {
        self.0 += 2;
    }
    fn two(&mut self, _: u8, _: u16) {
        self.0 += 3;
    }
    fn four(&mut self, _: u8, _: u32) {
        self.0 += 5;
    }
    fn var(&mut self, _: u8, v: u32) -> Result<(), EncodeError> {
        check_sub_id(v)?;
        self.0 += 1 + varint_len(v as usize);
        Ok(())
    }
    fn data(&mut self, _: u8, v: &[u8]) -> Result<(), EncodeError> {
        self.0 += 1 + prefixed_len(v.len())?;
        Ok(())
    }
    fn pair(&mut self, _: u8, k: &str, v: &str) -> Result<(), EncodeError> {
        self.0 += 1 + prefixed_len(k.len())? + prefixed_len(v.len())?;
        Ok(())
    }
}

struct Write<'a>(&'a mut BytesMut);

impl Sink for Write<'_> {
    fn byte(&mut self, prop: u8, v: u8) {
        self.0.put_u8(prop);
        self.0.put_u8(v);
    }
    fn two(&mut self, prop: u8, v: u16) {
        self.0.put_u8(prop);
        self.0.put_u16(v);
    }
    fn four(&mut self, prop: u8, v: u32) {
        self.0.put_u8(prop);
        self.0.put_u32(v);
    }
    fn var(&mut self, prop: u8, v: u32) -> Result<(), EncodeError> {
        check_sub_id(v)?;
        self.0.put_u8(prop);
        put_varint(self.0, v as usize)
    }
    fn data(&mut self, prop: u8, v: &[u8]) -> Result<(), EncodeError> {
        self.0.put_u8(prop);
        put_prefixed(self.0, v)
    }
    fn pair(&mut self, prop: u8, k: &str, v: &str) -> Result<(), EncodeError> {
        self.0.put_u8(prop);
        put_prefixed(self.0, k.as_bytes())?;
        put_prefixed(self.0, v.as_bytes())
    }
}

/// Length of the property block's content (without its length prefix).
pub fn content_len(p: &Properties) -> Result<usize, EncodeError> {
    let mut m = Measure(0);
    walk(p, &mut m)?;
    Ok(m.0)
}

/// Wire length of the whole block: length prefix plus content.
pub fn block_len(content_len: usize) -> usize {
    varint_len(content_len) + content_len
}

/// Appends the property length `content_len` (from [`content_len`]) and
/// the properties.
pub fn encode(p: &Properties, content_len: usize, buf: &mut BytesMut) -> Result<(), EncodeError> {
    put_varint(buf, content_len)?;
    walk(p, &mut Write(buf))
}
