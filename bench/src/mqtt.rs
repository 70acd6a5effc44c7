//! A minimal MQTT client on the broker's own codec: connect, subscribe,
//! send packets, and read incoming frames (PUBLISH through the copy-free
//! reader of [`crate::frame`], everything else through the codec).

use anyhow::{anyhow, bail, Context as _};
use bytes::{Bytes, BytesMut};
use mqttd::codec::{
    self, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish,
    Subscribe, SubscriptionOptions,
};
use mqttd::types::{PacketId, QoS, TopicFilter, TopicName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::frame::{self, PUBLISH_TYPE};
use crate::net::{BoxRead, BoxWrite, Target};
use crate::payload::Stamp;

/// Largest frame accepted from the broker.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Read buffer of a connection that only handshakes (idle, churn): small,
/// so that holding 100,000 of them stays cheap.
pub const SMALL_BUFFER: usize = 256;
/// Read buffer of a connection that receives a message stream.
pub const STREAM_BUFFER: usize = 64 * 1024;
/// Session expiry a persistent MQTT 5.0 session asks for, in seconds (a
/// day): clean start 0 alone keeps a 5.0 session only while connected,
/// whereas 3.1.1's clean_session=0 keeps it until the broker drops it.
pub const PERSISTENT_SESSION_EXPIRY_SECS: u32 = 86_400;

/// The CONNECT a benchmark client sends.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub client_id: String,
    pub clean: bool,
    /// Seconds; 0 disables keep alive.
    pub keep_alive: u16,
    pub version: ProtocolVersion,
}

/// A frame received from the broker. Returned by value and matched at
/// once, never stored, so the size of `Packet` costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Incoming {
    /// A PUBLISH, read in place: its stamp if the payload has one.
    Publish {
        qos: u8,
        packet_id: Option<u16>,
        stamp: Option<Stamp>,
    },
    Packet(Packet),
}

/// The receiving half: a buffer and the frames in it.
pub struct Reader {
    rd: BoxRead,
    buf: BytesMut,
    version: ProtocolVersion,
    /// Bytes to make room for before each read.
    chunk: usize,
}

/// A connected client (CONNACK received).
pub struct Client {
    pub reader: Reader,
    pub writer: BoxWrite,
    pub version: ProtocolVersion,
    out: BytesMut,
}

impl Reader {
    pub fn new(rd: BoxRead, version: ProtocolVersion, chunk: usize) -> Self {
        Reader {
            rd,
            buf: BytesMut::new(),
            version,
            chunk,
        }
    }

    pub fn set_chunk(&mut self, chunk: usize) {
        self.chunk = chunk;
    }

    /// Reads more bytes; `false` on end of stream. Cancel safe.
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.buf.capacity() - self.buf.len() < self.chunk / 2 {
            self.buf.reserve(self.chunk);
        }
        let n = self
            .rd
            .read_buf(&mut self.buf)
            .await
            .context("read from broker failed")?;
        Ok(n > 0)
    }

    /// The next complete frame in the buffer, if any (nothing is read).
    pub fn next(&mut self) -> anyhow::Result<Option<Incoming>> {
        let Some(len) = frame::frame_len(&self.buf, MAX_FRAME)? else {
            return Ok(None);
        };
        let bytes = &self.buf[..len];
        let incoming = if bytes[0] >> 4 == PUBLISH_TYPE {
            let v = frame::parse_publish(bytes, self.version.is_v5())?;
            Incoming::Publish {
                qos: v.qos,
                packet_id: v.packet_id,
                stamp: Stamp::from_payload(v.payload),
            }
        } else {
            match codec::decode(bytes, Some(self.version), MAX_FRAME as u32) {
                Ok(Some((packet, _))) => Incoming::Packet(packet),
                Ok(None) => bail!("broker sent a truncated {len}-byte frame"),
                Err(e) => bail!("broker sent a malformed packet: {e}"),
            }
        };
        let _ = self.buf.split_to(len);
        Ok(Some(incoming))
    }

    /// Waits for the next frame; `None` on end of stream.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Incoming>> {
        loop {
            if let Some(frame) = self.next()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

/// Appends the encoding of `packet` to `buf`.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> anyhow::Result<()> {
    codec::encode(packet, version, buf).map_err(|e| anyhow!("cannot encode {}: {e}", packet.name()))
}

pub fn connect_packet(opts: &ConnectOpts) -> Packet {
    let mut properties = Properties::default();
    if !opts.clean && opts.version.is_v5() {
        properties.session_expiry_interval = Some(PERSISTENT_SESSION_EXPIRY_SECS);
    }
    Packet::Connect(Box::new(Connect {
        protocol: opts.version,
        clean_start: opts.clean,
        keep_alive: opts.keep_alive,
        client_id: opts.client_id.clone(),
        will: None,
        username: None,
        password: None,
        properties,
    }))
}

pub fn publish_packet(topic: &TopicName, qos: QoS, id: Option<PacketId>, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.clone(),
        packet_id: id,
        payload,
        properties: Properties::default(),
    })
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP for `id` (0 is never sent by a
/// correct broker; such a frame gets no answer).
pub fn ack_packet(kind: fn(PubResp) -> Packet, id: u16) -> Option<Packet> {
    PacketId::new(id).ok().map(|id| kind(PubResp::success(id)))
}

impl Client {
    /// A client on an established byte stream (no handshake).
    pub fn from_halves(rd: BoxRead, wr: BoxWrite, version: ProtocolVersion) -> Client {
        Client {
            reader: Reader::new(rd, version, SMALL_BUFFER),
            writer: wr,
            version,
            out: BytesMut::new(),
        }
    }

    /// Dials `target`, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(target: &Target, opts: &ConnectOpts) -> anyhow::Result<(Client, ConnAck)> {
        let (rd, wr) = target.dial().await?;
        Client::handshake(rd, wr, opts).await
    }

    /// Sends CONNECT on an established byte stream and waits for a
    /// successful CONNACK.
    pub async fn handshake(
        rd: BoxRead,
        wr: BoxWrite,
        opts: &ConnectOpts,
    ) -> anyhow::Result<(Client, ConnAck)> {
        let mut client = Client::from_halves(rd, wr, opts.version);
        client.send(&connect_packet(opts)).await?;
        match client.reader.recv().await? {
            Some(Incoming::Packet(Packet::ConnAck(ack)))
                if !ack.code.is_error() && ack.code.0 == 0 =>
            {
                Ok((client, ack))
            }
            Some(Incoming::Packet(Packet::ConnAck(ack))) => {
                bail!("broker refused the connection (code {:#04x})", ack.code.0)
            }
            Some(_) => bail!("broker answered CONNECT with something else than CONNACK"),
            None => bail!("broker closed the connection before CONNACK"),
        }
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        self.out.clear();
        encode(packet, self.version, &mut self.out)?;
        self.writer
            .write_all(&self.out)
            .await
            .context("write to broker failed")
    }

    /// Subscribes to one filter and waits for a successful SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let filter =
            TopicFilter::new(filter).map_err(|e| anyhow!("topic filter {filter:?}: {e}"))?;
        let id = PacketId::new(1).map_err(|e| anyhow!("{e}"))?;
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: id,
            filters: vec![(filter, SubscriptionOptions::with_qos(qos))],
            properties: Properties::default(),
        }))
        .await?;
        loop {
            match self.reader.recv().await? {
                Some(Incoming::Packet(Packet::SubAck(ack))) => {
                    return match ack.codes.first() {
                        Some(code) if !code.is_error() => Ok(()),
                        _ => bail!("broker refused the subscription"),
                    };
                }
                Some(_) => continue,
                None => bail!("broker closed the connection before SUBACK"),
            }
        }
    }

    /// Sends DISCONNECT and closes the connection.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        self.send(&Packet::Disconnect(Disconnect::normal())).await?;
        let _ = self.writer.shutdown().await;
        Ok(())
    }

    /// Sends PINGREQ and waits for PINGRESP (other frames are skipped).
    pub async fn ping(&mut self) -> anyhow::Result<()> {
        self.send(&Packet::PingReq).await?;
        loop {
            match self.reader.recv().await? {
                Some(Incoming::Packet(Packet::PingResp)) => return Ok(()),
                Some(_) => continue,
                None => bail!("broker closed the connection"),
            }
        }
    }
}

/// Parses `--mqtt-version`: "3.1.1" (or 4) and "5" (or 5.0).
pub fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1.1" | "4" | "311" => Ok(ProtocolVersion::V311),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        "3.1" | "3" => Ok(ProtocolVersion::V31),
        other => Err(format!("unknown MQTT version {other:?} (use 3.1.1 or 5)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("3.1.1"), Ok(ProtocolVersion::V311));
        assert_eq!(parse_version("5"), Ok(ProtocolVersion::V5));
        assert!(parse_version("6").is_err());
    }

    #[test]
    fn a_persistent_5_0_session_outlives_its_connection() {
        let opts = |clean, version| ConnectOpts {
            client_id: "c".into(),
            clean,
            keep_alive: 60,
            version,
        };
        let expiry = |o: &ConnectOpts| match connect_packet(o) {
            Packet::Connect(c) => c.properties.session_expiry_interval,
            _ => None,
        };
        assert_eq!(
            expiry(&opts(false, ProtocolVersion::V5)),
            Some(PERSISTENT_SESSION_EXPIRY_SECS)
        );
        assert_eq!(expiry(&opts(true, ProtocolVersion::V5)), None);
        // 3.1.1 has no properties: clean_session=0 is enough.
        assert_eq!(expiry(&opts(false, ProtocolVersion::V311)), None);
    }

    #[test]
    fn zero_id_gets_no_ack() {
        assert!(ack_packet(Packet::PubAck, 0).is_none());
        assert!(matches!(
            ack_packet(Packet::PubAck, 7),
            Some(Packet::PubAck(_))
        ));
    }
}
