//! The MQTT wire format: packet types, decoder, encoder and their errors.
//!
//! - `packet`: the control packets as Rust values, for every version;
//! - `properties`: MQTT 5.0 properties;
//! - `decode`: bytes to packets, strictly validated (framing and the
//!   [`Decoder`]; bodies in `decode_body` and `decode_connect`);
//! - `encode`: packets to bytes for a given protocol version;
//! - `props`: the 5.0 property block on the wire;
//! - `wire`: primitive data types (integers, strings, binary data);
//! - `error`: decode errors, each naming the rule broken.

pub mod decode;
mod decode_body;
mod decode_connect;
pub mod encode;
pub mod error;
pub mod packet;
pub mod properties;
mod props;
mod wire;

/// Proptest strategies for valid packets (also used by the store's tests).
#[cfg(test)]
pub(crate) mod arbitrary;
#[cfg(test)]
mod tests;

pub use decode::{decode, Decoder, DEFAULT_MAX_PACKET_SIZE};
pub use encode::encode;
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::Properties;
