//! A raw MQTT connection with a read buffer: packets are written by hand
//! (3.1.1, and the few 5.0 packets the tests need), read whole from the
//! buffer, and a read may be cancelled (in a `select!`) without losing
//! bytes. Never the broker's own codec.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame;

/// One packet: its first byte and its body.
#[derive(Debug, Clone)]
pub struct Frame {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// The packet id that leads the body (PUBACK, PUBREC, PUBREL,
    /// PUBCOMP, SUBACK, UNSUBACK).
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
}

/// A received PUBLISH (3.1.1 layout).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub id: Option<u16>,
    pub payload: Vec<u8>,
}

impl Incoming {
    pub fn parse(f: &Frame) -> Incoming {
        let (topic, id, payload) = super::parse_publish(f.first, &f.body);
        Incoming {
            dup: f.first & 0x08 != 0,
            qos: (f.first >> 1) & 3,
            retain: f.first & 1 != 0,
            topic,
            id,
            payload,
        }
    }
}

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const UNSUBACK: u8 = 11;
pub const PINGRESP: u8 = 13;

pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects, sends `connect` (a CONNECT packet) and reads the CONNACK:
    /// the connection and the session-present flag. `Err` if the broker
    /// cannot be reached, closes, or refuses.
    pub async fn open(addr: SocketAddr, connect: &[u8]) -> io::Result<(Conn, bool)> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut c = Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        c.send(connect).await?;
        let ack = c.read().await?.ok_or_else(closed)?;
        if ack.kind() != CONNACK || ack.body.len() < 2 {
            return Err(io::Error::other(format!("expected CONNACK, got {ack:?}")));
        }
        if ack.body[1] != 0 {
            return Err(io::Error::other(format!("refused: {:#x}", ack.body[1])));
        }
        Ok((c, ack.body[0] & 1 == 1))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next packet; `None` when the broker closed the connection.
    /// Cancel safe.
    pub async fn read(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(f) = take_frame(&mut self.buf)? {
                return Ok(Some(f));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next packet of `kind`, others dropped; `Err` if the broker
    /// closes first.
    pub async fn expect(&mut self, kind: u8) -> io::Result<Frame> {
        loop {
            let f = self.read().await?.ok_or_else(closed)?;
            if f.kind() == kind {
                return Ok(f);
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "broker closed the connection")
}

/// Takes one whole packet off the front of `buf`, if it holds one.
fn take_frame(buf: &mut BytesMut) -> io::Result<Option<Frame>> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(io::Error::other("malformed remaining length"));
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(i);
    let body = buf.split_to(len).to_vec();
    Ok(Some(Frame { first, body }))
}

/// A 3.1.1 CONNECT: `clean` session or not, keep alive 60 s.
pub fn connect(client_id: &str, clean: bool) -> Vec<u8> {
    super::connect_bytes(client_id, if clean { 0x02 } else { 0 }, 60)
}

/// A 5.0 CONNECT with the Session Expiry Interval `expiry` (absent: 0).
pub fn connect_v5(client_id: &str, clean_start: bool, expiry: Option<u32>) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        if clean_start { 0x02 } else { 0 },
    ];
    body.extend_from_slice(&60u16.to_be_bytes());
    match expiry {
        Some(secs) => {
            body.push(5);
            body.push(0x11);
            body.extend_from_slice(&secs.to_be_bytes());
        }
        None => body.push(0),
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body)
}

/// A 3.1.1 PUBLISH, with the DUP flag if `dup`.
pub fn publish(topic: &str, qos: u8, retain: bool, dup: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = super::publish_bytes(topic, qos, retain, id, payload);
    if dup {
        p[0] |= 0x08;
    }
    p
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP for `id`.
pub fn ack(kind: u8, id: u16) -> Vec<u8> {
    let flags = if kind == PUBREL { 0x02 } else { 0 };
    let id = id.to_be_bytes();
    vec![kind << 4 | flags, 2, id[0], id[1]]
}

/// A 3.1.1 SUBSCRIBE for one filter.
pub fn subscribe(id: u16, filter: &str, qos: u8) -> Vec<u8> {
    super::subscribe_bytes(id, filter, qos)
}

/// A 5.0 SUBSCRIBE for one filter, no properties.
pub fn subscribe_v5(id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    frame(0x82, &body)
}

/// A 3.1.1 UNSUBSCRIBE for one filter.
pub fn unsubscribe(id: u16, filter: &str) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    frame(0xA2, &body)
}

pub const PINGREQ: [u8; 2] = [0xC0, 0];
/// DISCONNECT (3.1.1; for 5.0 it means reason 0x00, no properties).
pub const DISCONNECT: [u8; 2] = [0xE0, 0];
