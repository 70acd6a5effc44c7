//! The MQTT wire format: packet types, decoder, encoder and their errors.
//!
//! - `packet`: the control packets as Rust values, for every version;
//! - `properties`: MQTT 5.0 properties;
//! - `decode`: bytes to packets, strictly validated;
//! - `encode`: packets to bytes for a given protocol version;
//! - `error`: decode errors, each naming the rule broken.

pub mod decode;
pub mod encode;
pub mod error;
pub mod packet;
pub mod properties;

pub use decode::{decode, Decoder};
pub use encode::encode;
pub use error::DecodeError;
pub use packet::*;
pub use properties::Properties;
