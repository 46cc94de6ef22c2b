//! A simulated cluster of SWC replicas: the simulation shared by the metadata backends
//! (`vmq_storage::sim`) with this crate's [`Replica`], plus what only SWC offers.

pub use vmq_storage::sim::{NetConfig, NetStats};

use crate::{Replica, SwcConfig};

/// The simulated cluster of SWC replicas.
pub type Sim = vmq_storage::sim::Sim<Replica>;

/// A simulated cluster of `nodes` replicas on the network `net`.
pub fn sim(seed: u64, nodes: usize, config: SwcConfig, net: NetConfig) -> Sim {
    let mut sim = Sim::new(nodes, config, seed);
    sim.set_net(net);
    sim
}

/// Node `i` of the tests, counted from 1 as VerneMQ's suites name them.
pub fn n(i: usize) -> usize {
    i - 1
}

/// Starts an exchange from node `a` with node `b` in every group now, and sends what it
/// produces.
pub fn sync_with(sim: &mut Sim, a: usize, b: usize) {
    let now = sim.now();
    let peer = sim.id(b).clone();
    sim.replica_mut(a).sync_with(now, &peer);
    sim.drain(a);
}
