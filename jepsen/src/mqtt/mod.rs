//! A minimal MQTT 3.1.1 and 5.0 client: the sans-IO codec and a tokio connection around it.
//!
//! Kept separate from `node/mqtt/` (`vmq-mqtt`) on purpose: this crate drives the broker from outside and
//! must not share its bugs.

pub mod client;
pub mod codec;

pub use client::{ClientError, Connection};
pub use codec::{Ack, Connect, DecodeError, Packet, PacketId, ProtocolVersion, QoS};
