//! The replica in `vmq_storage::sim`, the simulation shared by the metadata backends.

use vmq_storage::MemStore;
use vmq_storage::StoreError;
use vmq_storage::metadata::NodeId;
use vmq_storage::sim::SimBackend;

use crate::config::PlumtreeConfig;
use crate::message::Message;
use crate::persist::Recovered;
use crate::replica::Replica;

impl SimBackend for Replica {
    type Config = PlumtreeConfig;

    fn boot(config: &PlumtreeConfig, node: NodeId, seed: u64, store: &MemStore) -> Result<Self, StoreError> {
        Ok(Replica::new(config.clone(), node, seed, Recovered::load(store)?))
    }

    fn exchanges_completed(&self) -> u64 {
        self.stats().exchanges_completed
    }

    fn tombstones(&self) -> usize {
        self.tombstone_count()
    }

    fn message_kind(msg: &Message) -> &'static str {
        msg.kind()
    }
}
