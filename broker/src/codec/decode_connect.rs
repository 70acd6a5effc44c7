//! CONNECT and CONNACK bodies: protocol name and level, connect flags and
//! their consistency rules, the will, credentials; CONNACK flags and codes.
//!
//! Client id rules (length, empty id with a persistent session) are not
//! the codec's: the connect flow applies them and answers with a CONNACK.

use super::decode_body::reason_code;
use super::error::DecodeError;
use super::packet::{ConnAck, Connect, LastWill, ProtocolVersion, ReasonCode};
use super::properties::Properties;
use super::props::{self, Ctx};
use super::wire::Reader;
use crate::types::{QoS, TopicName};

/// CONNACK reason codes of 5.0 (section 3.2.2.2).
pub const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// CONNACK return codes of 3.1 and 3.1.1 (3.1.1 section 3.2.2.3).
pub const CONNACK_CODES_V3: &[u8] = &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05];

/// The protocol a name/level pair announces [MQTT-3.1.2-1], [MQTT-3.1.2-2].
fn protocol(name: &[u8], level: u8) -> Result<ProtocolVersion, DecodeError> {
    match (name, level) {
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V31),
        (b"MQTT", 4) => Ok(ProtocolVersion::V311),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp" | b"MQTT", level) => Err(DecodeError::UnsupportedProtocol { level }),
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

/// The CONNECT flags byte (3.1.1 section 3.1.2.3).
struct ConnectFlags(u8);

impl ConnectFlags {
    fn clean_start(&self) -> bool {
        self.0 & 0b0000_0010 != 0
    }
    fn will(&self) -> bool {
        self.0 & 0b0000_0100 != 0
    }
    fn will_qos(&self) -> u8 {
        (self.0 >> 3) & 0b11
    }
    fn will_retain(&self) -> bool {
        self.0 & 0b0010_0000 != 0
    }
    fn password(&self) -> bool {
        self.0 & 0b0100_0000 != 0
    }
    fn username(&self) -> bool {
        self.0 & 0b1000_0000 != 0
    }

    /// The consistency rules between the flags.
    fn check(&self, version: ProtocolVersion) -> Result<(), DecodeError> {
        if self.0 & 1 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        if !self.will() && (self.will_qos() != 0 || self.will_retain()) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        if self.will_qos() == 3 {
            return Err(DecodeError::InvalidWillQoS);
        }
        // 5.0 allows a password without a user name (section 3.1.2.9).
        if self.password() && !self.username() && !version.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        Ok(())
    }
}

pub fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.prefixed()?;
    let level = r.u8()?;
    let protocol = protocol(name, level)?;
    let v5 = protocol.is_v5();
    let flags = ConnectFlags(r.u8()?);
    flags.check(protocol)?;
    let keep_alive = r.u16()?;
    let properties = if v5 {
        props::decode(r, Ctx::CONNECT)?
    } else {
        Properties::default()
    };
    let client_id = r.string()?;
    let will = if flags.will() {
        Some(will(r, v5, &flags)?)
    } else {
        None
    };
    let username = if flags.username() {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags.password() {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags.clean_start(),
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn will(r: &mut Reader<'_>, v5: bool, flags: &ConnectFlags) -> Result<LastWill, DecodeError> {
    let properties = if v5 {
        props::decode(r, Ctx::WILL)?
    } else {
        Properties::default()
    };
    let topic = TopicName::new(r.str()?).map_err(DecodeError::InvalidTopicName)?;
    let payload = r.binary()?;
    let qos = QoS::from_u8(flags.will_qos()).map_err(|_| DecodeError::InvalidWillQoS)?;
    Ok(LastWill {
        topic,
        payload,
        qos,
        retain: flags.will_retain(),
        properties,
    })
}

/// CONNACK: acknowledge flags (only Session Present) and the return or
/// reason code; session present must be 0 with an error code
/// [MQTT-3.2.2-4].
pub fn decode_connack(
    r: &mut Reader<'_>,
    version: ProtocolVersion,
) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::InvalidConnAckFlags { flags });
    }
    let v5 = version.is_v5();
    let allowed = if v5 { CONNACK_CODES } else { CONNACK_CODES_V3 };
    let code = reason_code(r, allowed, "CONNACK")?;
    // 3.1 has no Session Present flag: the byte is unused there.
    let session_present = flags & 1 != 0 && version != ProtocolVersion::V31;
    if session_present && code != ReasonCode::SUCCESS {
        return Err(DecodeError::InvalidConnAckFlags { flags });
    }
    let properties = if v5 {
        props::decode(r, Ctx::CONNACK)?
    } else {
        Properties::default()
    };
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}
