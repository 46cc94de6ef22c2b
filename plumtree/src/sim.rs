//! A simulated cluster of plumtree replicas: the simulation shared by the metadata backends
//! (`vmq_storage::sim`) with this crate's [`Replica`]. Frames go through the real postcard
//! encoding and are counted by [`Message::kind`](crate::Message::kind).

pub use vmq_storage::sim::{NetConfig, NetStats};

use crate::replica::Replica;

/// The simulated cluster of plumtree replicas.
pub type Sim = vmq_storage::sim::Sim<Replica>;
