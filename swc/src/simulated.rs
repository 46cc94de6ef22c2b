//! The replica in `vmq_storage::sim`, the simulation shared by the metadata backends.

use vmq_storage::MemStore;
use vmq_storage::StoreError;
use vmq_storage::metadata::NodeId;
use vmq_storage::sim::SimBackend;

use crate::{Recovered, Replica, SwcConfig};

impl SimBackend for Replica {
    type Config = SwcConfig;

    fn boot(config: &SwcConfig, node: NodeId, seed: u64, store: &MemStore) -> Result<Self, StoreError> {
        Ok(Replica::new(config.clone(), node, seed, Recovered::load(store)?))
    }

    fn exchanges_completed(&self) -> u64 {
        self.stats().exchanges_completed
    }

    fn tombstones(&self) -> usize {
        let s = self.stats();
        s.tombstones + s.delete_markers
    }

    fn check_invariants(&self) -> Result<(), String> {
        Replica::check_invariants(self)
    }
}
