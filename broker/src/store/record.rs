//! The stored records' bytes: messages, sessions, subscriptions and
//! in-flight marks, each led by a record version byte.
//!
//! A message keeps its MQTT 5.0 properties by carrying them as the body of
//! a PUBLISH in our own wire codec (the most tested code in the broker);
//! the few fields a PUBLISH does not carry (QoS to deliver at, when it was
//! received, its publisher) come before it. Times are wall-clock
//! milliseconds since the Unix epoch, so expiries hold across a restart.
//!
//! Decoding never panics: anything that does not parse is a
//! [`RecordError`] (the loader quarantines the record).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

use crate::codec::{
    self, LastWill, Packet, ProtocolVersion, Publish, RetainHandling, SubscriptionOptions,
};
use crate::message::Message;
use crate::types::{ClientId, PacketId, QoS};

/// The version byte every record starts with.
const RECORD_V1: u8 = 1;

/// Largest encoded PUBLISH a record may hold (the codec's own bound).
const MAX_RECORD_PACKET: u32 = 268_435_460;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("record version {0} is unknown")]
    Version(u8),
    #[error("record field is invalid: {0}")]
    Invalid(&'static str),
    #[error("record's message does not decode: {0}")]
    Message(String),
}

/// Wall-clock milliseconds since the epoch for an `Instant` of this process.
pub fn wall_ms(at: Instant) -> u64 {
    let age = at.elapsed();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(u64::MAX)
}

/// Now, in wall-clock milliseconds since the epoch.
pub fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

/// The `Instant` of this process for a stored wall-clock time (never in
/// the future: a clock set back does not make a message younger than now).
pub fn instant_of(ms: u64) -> Instant {
    let age = Duration::from_millis(now_ms().saturating_sub(ms));
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

/// A message queued for a session: the message, and how it is delivered.
#[derive(Debug, Clone)]
pub struct QueuedRecord {
    pub msg: Arc<Message>,
    /// The QoS it is delivered at (the published QoS downgraded to the
    /// subscription's).
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
}

/// Where an outgoing QoS 1/2 message stands with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentStage {
    /// PUBLISH sent with this packet id (resent with DUP).
    Published(PacketId),
    /// PUBREC received, PUBREL sent (resent as PUBREL).
    Released(PacketId),
}

/// A persistent session's own fields.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub protocol: ProtocolVersion,
    pub expiry_secs: u32,
    /// When its connection went; `None` while connected (a broker that
    /// stops uncleanly leaves it so).
    pub disconnected_at_ms: Option<u64>,
    pub will: Option<LastWill>,
    /// When a delayed will is due (wall clock), if one is pending.
    pub will_due_ms: Option<u64>,
}

/// A subscription as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// Appends `msg` as a PUBLISH body (QoS 0 form, so no packet id).
fn put_message_packet(buf: &mut BytesMut, msg: &Message) {
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: None,
        payload: msg.payload.clone(),
        properties: msg.properties.clone(),
    };
    put_publish(buf, &p);
}

fn put_publish(buf: &mut BytesMut, p: &Publish) {
    let mut packet = BytesMut::new();
    // A message that was decoded from the wire encodes again; a failure
    // would be a codec bug, and leaves an empty packet that fails to
    // decode, so the record is quarantined at load rather than lost silently.
    if let Err(e) = codec::encode(
        &Packet::Publish(p.clone()),
        ProtocolVersion::V5,
        &mut packet,
    ) {
        tracing::error!(topic = %p.topic, error = %e, "message cannot be encoded for the store");
        packet.clear();
    }
    buf.put_u32(u32::try_from(packet.len()).unwrap_or(u32::MAX));
    buf.put_slice(&packet);
}

/// A reader over a record's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn version(&mut self) -> Result<(), RecordError> {
        match self.u8()? {
            RECORD_V1 => Ok(()),
            v => Err(RecordError::Version(v)),
        }
    }
    fn publish(&mut self) -> Result<Publish, RecordError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        match codec::decode(bytes, Some(ProtocolVersion::V5), MAX_RECORD_PACKET) {
            Ok(Some((Packet::Publish(p), used))) if used == bytes.len() => Ok(p),
            Ok(_) => Err(RecordError::Message("not one whole PUBLISH".into())),
            Err(e) => Err(RecordError::Message(e.to_string())),
        }
    }
    fn str(&mut self) -> Result<&'a str, RecordError> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| RecordError::Invalid("not UTF-8"))
    }
    fn finish(&self) -> Result<(), RecordError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid("trailing bytes"))
        }
    }
}

fn qos(v: u8) -> Result<QoS, RecordError> {
    QoS::from_u8(v).map_err(|_| RecordError::Invalid("QoS"))
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Client ids and publishers are bounded by the codec to 65,535 bytes.
    let bytes = s.as_bytes();
    let len = bytes.len().min(usize::from(u16::MAX));
    buf.put_u16(len as u16);
    buf.put_slice(&bytes[..len]);
}

/// A message as stored: retained, or the body of a queued record.
pub fn encode_message(buf: &mut BytesMut, msg: &Message) {
    buf.put_u8(RECORD_V1);
    buf.put_u8(msg.qos as u8);
    buf.put_u64(wall_ms(msg.received_at));
    match &msg.publisher {
        Some(p) => {
            buf.put_u8(1);
            put_str(buf, p.as_str());
        }
        None => buf.put_u8(0),
    }
    put_message_packet(buf, msg);
}

fn decode_message_from(c: &mut Cursor<'_>) -> Result<Arc<Message>, RecordError> {
    c.version()?;
    let published_qos = qos(c.u8()?)?;
    let received_at = instant_of(c.u64()?);
    let publisher = match c.u8()? {
        0 => None,
        1 => Some(ClientId::new(c.str()?)),
        _ => return Err(RecordError::Invalid("publisher flag")),
    };
    let p = c.publish()?;
    Ok(Arc::new(Message {
        topic: p.topic,
        payload: p.payload,
        qos: published_qos,
        retain: p.retain,
        properties: p.properties,
        publisher,
        received_at,
    }))
}

pub fn decode_message(bytes: &[u8]) -> Result<Arc<Message>, RecordError> {
    let mut c = Cursor { buf: bytes };
    let msg = decode_message_from(&mut c)?;
    c.finish()?;
    Ok(msg)
}

pub fn encode_queued(q: &QueuedRecord) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(64 + q.msg.payload.len() + q.msg.topic.as_str().len());
    buf.put_u8(RECORD_V1);
    buf.put_u8(q.qos as u8);
    buf.put_u8(u8::from(q.retain));
    let ids = q.sub_ids.len().min(usize::from(u8::MAX));
    buf.put_u8(ids as u8);
    for id in &q.sub_ids[..ids] {
        buf.put_u32(*id);
    }
    encode_message(&mut buf, &q.msg);
    Vec::from(buf)
}

pub fn decode_queued(bytes: &[u8]) -> Result<QueuedRecord, RecordError> {
    let mut c = Cursor { buf: bytes };
    c.version()?;
    let qos = qos(c.u8()?)?;
    let retain = match c.u8()? {
        0 => false,
        1 => true,
        _ => return Err(RecordError::Invalid("retain flag")),
    };
    let n = c.u8()?;
    let sub_ids = (0..n).map(|_| c.u32()).collect::<Result<_, _>>()?;
    let msg = decode_message_from(&mut c)?;
    c.finish()?;
    Ok(QueuedRecord {
        msg,
        qos,
        retain,
        sub_ids,
    })
}

pub fn encode_sent(stage: SentStage) -> [u8; 4] {
    let (kind, id) = match stage {
        SentStage::Published(id) => (1, id),
        SentStage::Released(id) => (2, id),
    };
    let id = id.get().to_be_bytes();
    [RECORD_V1, kind, id[0], id[1]]
}

pub fn decode_sent(bytes: &[u8]) -> Result<SentStage, RecordError> {
    let mut c = Cursor { buf: bytes };
    c.version()?;
    let kind = c.u8()?;
    let id = PacketId::new(c.u16()?).map_err(|_| RecordError::Invalid("packet id 0"))?;
    c.finish()?;
    match kind {
        1 => Ok(SentStage::Published(id)),
        2 => Ok(SentStage::Released(id)),
        _ => Err(RecordError::Invalid("sent stage")),
    }
}

fn protocol_byte(p: ProtocolVersion) -> u8 {
    match p {
        ProtocolVersion::V31 => 3,
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    }
}

pub fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(32);
    buf.put_u8(RECORD_V1);
    buf.put_u8(protocol_byte(s.protocol));
    buf.put_u32(s.expiry_secs);
    buf.put_u64(s.disconnected_at_ms.unwrap_or(0));
    buf.put_u64(s.will_due_ms.unwrap_or(0));
    match &s.will {
        None => buf.put_u8(0),
        Some(w) => {
            buf.put_u8(1);
            buf.put_u8(w.qos as u8);
            let delay = w.properties.will_delay_interval;
            buf.put_u32(delay.unwrap_or(0));
            buf.put_u8(u8::from(delay.is_some()));
            let mut properties = w.properties.clone();
            properties.will_delay_interval = None;
            put_publish(
                &mut buf,
                &Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: w.retain,
                    topic: w.topic.clone(),
                    packet_id: None,
                    payload: w.payload.clone(),
                    properties,
                },
            );
        }
    }
    Vec::from(buf)
}

pub fn decode_session(bytes: &[u8]) -> Result<SessionRecord, RecordError> {
    let mut c = Cursor { buf: bytes };
    c.version()?;
    let protocol = match c.u8()? {
        3 => ProtocolVersion::V31,
        4 => ProtocolVersion::V311,
        5 => ProtocolVersion::V5,
        _ => return Err(RecordError::Invalid("protocol version")),
    };
    let expiry_secs = c.u32()?;
    let nonzero = |v: u64| (v != 0).then_some(v);
    let disconnected_at_ms = nonzero(c.u64()?);
    let will_due_ms = nonzero(c.u64()?);
    let will = match c.u8()? {
        0 => None,
        1 => {
            let qos = qos(c.u8()?)?;
            let delay = c.u32()?;
            let has_delay = c.u8()? == 1;
            let p = c.publish()?;
            let mut properties = p.properties;
            properties.will_delay_interval = has_delay.then_some(delay);
            Some(LastWill {
                topic: p.topic,
                payload: p.payload,
                qos,
                retain: p.retain,
                properties,
            })
        }
        _ => return Err(RecordError::Invalid("will flag")),
    };
    c.finish()?;
    Ok(SessionRecord {
        protocol,
        expiry_secs,
        disconnected_at_ms,
        will,
        will_due_ms,
    })
}

pub fn encode_subscription(s: &SubscriptionRecord) -> [u8; 7] {
    let o = s.options;
    let opts = o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4;
    let id = s.subscription_id.unwrap_or(0).to_be_bytes();
    [
        RECORD_V1,
        opts,
        u8::from(s.subscription_id.is_some()),
        id[0],
        id[1],
        id[2],
        id[3],
    ]
}

pub fn decode_subscription(bytes: &[u8]) -> Result<SubscriptionRecord, RecordError> {
    let mut c = Cursor { buf: bytes };
    c.version()?;
    let opts = c.u8()?;
    let has_id = c.u8()?;
    let id = c.u32()?;
    c.finish()?;
    let retain_handling = match (opts >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(RecordError::Invalid("retain handling")),
    };
    Ok(SubscriptionRecord {
        options: SubscriptionOptions {
            qos: qos(opts & 0b11)?,
            no_local: opts & 0b100 != 0,
            retain_as_published: opts & 0b1000 != 0,
            retain_handling,
        },
        subscription_id: (has_id == 1).then_some(id),
    })
}
