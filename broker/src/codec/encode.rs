//! Packets to bytes, for a peer speaking a given protocol version.
//!
//! Each packet's remaining length is computed first, so the output buffer
//! is grown once and the body written in place (no intermediate buffer).
//! For 5.0 the short forms are used where the spec allows them (PUBACK
//! with remaining length 2, DISCONNECT and AUTH with 0, ...).

use bytes::{BufMut, BytesMut};

use super::error::EncodeError;
use super::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, PubResp, Publish, ReasonCode,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use super::props;
use super::wire::{kind, prefixed_len, put_prefixed, put_varint, varint_len, MAX_VARINT};
use crate::types::QoS;

/// Appends the encoding of `packet` for a peer speaking `version` to `buf`.
/// Fields the version does not have (properties, reason codes before 5.0)
/// are left out. A CONNECT is encoded in its own `protocol` version.
///
/// On error nothing is appended. To enforce a peer's Maximum Packet Size,
/// compare how much `buf` grew and truncate it back.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let result = encode_packet(packet, version, buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn encode_packet(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(c, buf),
        Packet::ConnAck(c) => connack(c, version, buf),
        Packet::Publish(p) => publish(p, v5, buf),
        Packet::PubAck(p) => pub_resp(kind::PUBACK << 4, p, v5, buf),
        Packet::PubRec(p) => pub_resp(kind::PUBREC << 4, p, v5, buf),
        Packet::PubRel(p) => pub_resp(kind::PUBREL << 4 | 0b0010, p, v5, buf),
        Packet::PubComp(p) => pub_resp(kind::PUBCOMP << 4, p, v5, buf),
        Packet::Subscribe(s) => subscribe(s, v5, buf),
        Packet::SubAck(s) => suback(s, v5, buf),
        Packet::Unsubscribe(u) => unsubscribe(u, v5, buf),
        Packet::UnsubAck(u) => unsuback(u, v5, buf),
        Packet::PingReq => header(buf, kind::PINGREQ << 4, 0),
        Packet::PingResp => header(buf, kind::PINGRESP << 4, 0),
        Packet::Disconnect(d) => disconnect(d, v5, buf),
        Packet::Auth(a) if v5 => auth(a, buf),
        Packet::Auth(_) => Err(EncodeError::NotInVersion {
            packet: "AUTH",
            version,
        }),
    }
}

/// Writes the fixed header and reserves room for the body.
fn header(buf: &mut BytesMut, first_byte: u8, remaining: usize) -> Result<(), EncodeError> {
    if remaining > MAX_VARINT as usize {
        return Err(EncodeError::TooLarge(remaining));
    }
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(first_byte);
    put_varint(buf, remaining)
}

/// Property content length for 5.0, `None` before (nothing is written).
fn props_len(p: &super::properties::Properties, v5: bool) -> Result<Option<usize>, EncodeError> {
    if v5 {
        props::content_len(p).map(Some)
    } else {
        Ok(None)
    }
}

fn block_len(content_len: Option<usize>) -> usize {
    content_len.map_or(0, props::block_len)
}

fn put_props(
    p: &super::properties::Properties,
    content_len: Option<usize>,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    match content_len {
        Some(len) => props::encode(p, len, buf),
        None => Ok(()),
    }
}

fn connect(c: &Connect, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let version = c.protocol;
    let v5 = version.is_v5();
    let name = version.protocol_name();
    let plen = props_len(&c.properties, v5)?;
    let mut flags = u8::from(c.clean_start) << 1;
    let mut len = prefixed_len(name.len())? + 4 + block_len(plen);
    len += prefixed_len(c.client_id.len())?;
    let mut will_plen = None;
    if let Some(w) = &c.will {
        flags |= 0b100 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
        will_plen = props_len(&w.properties, v5)?;
        len += block_len(will_plen);
        len += prefixed_len(w.topic.as_str().len())? + prefixed_len(w.payload.len())?;
    }
    if let Some(u) = &c.username {
        flags |= 0b1000_0000;
        len += prefixed_len(u.len())?;
    }
    if let Some(p) = &c.password {
        flags |= 0b0100_0000;
        len += prefixed_len(p.len())?;
    }
    header(buf, kind::CONNECT << 4, len)?;
    put_prefixed(buf, name.as_bytes())?;
    buf.put_u8(version.level());
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    put_props(&c.properties, plen, buf)?;
    put_prefixed(buf, c.client_id.as_bytes())?;
    if let Some(w) = &c.will {
        put_props(&w.properties, will_plen, buf)?;
        put_prefixed(buf, w.topic.as_str().as_bytes())?;
        put_prefixed(buf, &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_prefixed(buf, u.as_bytes())?;
    }
    if let Some(p) = &c.password {
        put_prefixed(buf, p)?;
    }
    Ok(())
}

/// CONNACK: before 5.0 flags and return code only; 3.1 has no Session
/// Present flag, so it is sent as 0.
fn connack(c: &ConnAck, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let plen = props_len(&c.properties, version.is_v5())?;
    header(buf, kind::CONNACK << 4, 2 + block_len(plen))?;
    let session_present = c.session_present && version != ProtocolVersion::V31;
    buf.put_u8(u8::from(session_present));
    buf.put_u8(c.code.0);
    put_props(&c.properties, plen, buf)
}

fn publish(p: &Publish, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let id_len = match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => 0,
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(_)) => 2,
        _ => return Err(EncodeError::PacketIdQoSMismatch),
    };
    let plen = props_len(&p.properties, v5)?;
    let topic = p.topic.as_str().as_bytes();
    let len = prefixed_len(topic.len())? + id_len + block_len(plen) + p.payload.len();
    let first = kind::PUBLISH << 4 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain);
    header(buf, first, len)?;
    put_prefixed(buf, topic)?;
    if let Some(id) = p.packet_id {
        buf.put_u16(id.get());
    }
    put_props(&p.properties, plen, buf)?;
    buf.put_slice(&p.payload);
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: the packet identifier, then in 5.0
/// the reason code and properties unless they can be left out.
fn pub_resp(first: u8, p: &PubResp, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let plen = props_len(&p.properties, v5)?.unwrap_or(0);
    if !v5 || (p.code == ReasonCode::SUCCESS && plen == 0) {
        header(buf, first, 2)?;
        buf.put_u16(p.packet_id.get());
    } else if plen == 0 {
        header(buf, first, 3)?;
        buf.put_u16(p.packet_id.get());
        buf.put_u8(p.code.0);
    } else {
        header(buf, first, 3 + props::block_len(plen))?;
        buf.put_u16(p.packet_id.get());
        buf.put_u8(p.code.0);
        props::encode(&p.properties, plen, buf)?;
    }
    Ok(())
}

fn subscribe(s: &Subscribe, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let plen = props_len(&s.properties, v5)?;
    let mut len = 2 + block_len(plen);
    for (f, _) in &s.filters {
        len += prefixed_len(f.as_str().len())? + 1;
    }
    header(buf, kind::SUBSCRIBE << 4 | 0b0010, len)?;
    buf.put_u16(s.packet_id.get());
    put_props(&s.properties, plen, buf)?;
    for (f, o) in &s.filters {
        put_prefixed(buf, f.as_str().as_bytes())?;
        let mut byte = o.qos as u8;
        if v5 {
            byte |= u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4;
        }
        buf.put_u8(byte);
    }
    Ok(())
}

/// SUBACK; before 5.0 every failure code becomes 0x80 [MQTT-3.9.3-2].
fn suback(s: &SubAck, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let plen = props_len(&s.properties, v5)?;
    header(buf, kind::SUBACK << 4, 2 + block_len(plen) + s.codes.len())?;
    buf.put_u16(s.packet_id.get());
    put_props(&s.properties, plen, buf)?;
    for code in &s.codes {
        let byte = match code.0 {
            c if v5 || c < 0x80 => c,
            _ => 0x80,
        };
        buf.put_u8(byte);
    }
    Ok(())
}

fn unsubscribe(u: &Unsubscribe, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let plen = props_len(&u.properties, v5)?;
    let mut len = 2 + block_len(plen);
    for f in &u.filters {
        len += prefixed_len(f.as_str().len())?;
    }
    header(buf, kind::UNSUBSCRIBE << 4 | 0b0010, len)?;
    buf.put_u16(u.packet_id.get());
    put_props(&u.properties, plen, buf)?;
    for f in &u.filters {
        put_prefixed(buf, f.as_str().as_bytes())?;
    }
    Ok(())
}

/// UNSUBACK: before 5.0 only the packet identifier.
fn unsuback(u: &UnsubAck, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if !v5 {
        header(buf, kind::UNSUBACK << 4, 2)?;
        buf.put_u16(u.packet_id.get());
        return Ok(());
    }
    let plen = props::content_len(&u.properties)?;
    header(
        buf,
        kind::UNSUBACK << 4,
        2 + props::block_len(plen) + u.codes.len(),
    )?;
    buf.put_u16(u.packet_id.get());
    props::encode(&u.properties, plen, buf)?;
    buf.extend(u.codes.iter().map(|c| c.0));
    Ok(())
}

/// DISCONNECT: empty before 5.0, and in 5.0 for a normal disconnection
/// without properties.
fn disconnect(d: &Disconnect, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let first = kind::DISCONNECT << 4;
    let plen = props_len(&d.properties, v5)?.unwrap_or(0);
    if !v5 || (d.code == ReasonCode::SUCCESS && plen == 0) {
        header(buf, first, 0)
    } else if plen == 0 {
        header(buf, first, 1)?;
        buf.put_u8(d.code.0);
        Ok(())
    } else {
        header(buf, first, 1 + props::block_len(plen))?;
        buf.put_u8(d.code.0);
        props::encode(&d.properties, plen, buf)
    }
}

/// AUTH: empty for success without properties, else code and properties.
fn auth(a: &Auth, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let first = kind::AUTH << 4;
    let plen = props::content_len(&a.properties)?;
    if a.code == ReasonCode::SUCCESS && plen == 0 {
        return header(buf, first, 0);
    }
    header(buf, first, 1 + props::block_len(plen))?;
    buf.put_u8(a.code.0);
    props::encode(&a.properties, plen, buf)
}
