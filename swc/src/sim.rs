//! A simulated cluster of SWC replicas: the simulation shared by the metadata backends
//! (`vmq_storage::sim`) with this crate's [`Replica`], plus what only SWC offers.

pub use vmq_storage::sim::{NetConfig, NetStats};

use crate::Replica;

/// The simulated cluster of SWC replicas.
pub type Sim = vmq_storage::sim::Sim<Replica>;

/// Starts an exchange from node `a` with node `b` in every group now, and sends what it
/// produces.
pub fn sync_with(sim: &mut Sim, a: usize, b: usize) {
    let now = sim.now();
    let peer = sim.id(b).clone();
    sim.replica_mut(a).sync_with(now, &peer);
    sim.drain(a);
}
