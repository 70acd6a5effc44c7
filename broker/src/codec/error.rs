//! Codec errors. STUB: the codec helper completes it.

/// Why bytes from a peer are not a valid packet. `Copy + PartialEq` so tests
/// compare them; [`DecodeError::reason_code`] gives the MQTT 5.0 reason code
/// to send back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: u32 },
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet of {0} bytes exceeds the protocol's maximum remaining length")]
    TooLarge(usize),
}

impl DecodeError {
    pub fn reason_code(&self) -> super::ReasonCode {
        super::ReasonCode::MALFORMED_PACKET
    }
}
