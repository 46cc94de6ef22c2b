//! Cluster membership: an add-wins set of node names (ORSWOT, `crdts`), with the address
//! each member's cluster endpoint is dialed at, persisted in [`Column::Node`] and gossiped
//! whole on the `Metadata` stream (docs/architecture.md "Cluster membership"; VerneMQ keeps the
//! same set in `vmq_swc_peer_service` / `plumtree_peer_service` as a riak_dt ORSWOT).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crdts::{CmRDT, CvRDT, Orswot};
use serde::{Deserialize, Serialize};
use vmq_storage::metadata::NodeId;
use vmq_storage::{Column, Store, StoreError, WriteBatch};

/// The key of the membership record in [`Column::Node`].
const MEMBERSHIP_KEY: &[u8] = b"cluster/membership";

/// The state gossiped and persisted: the set and the members' addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MembershipState {
    set: Orswot<String, String>,
    addrs: BTreeMap<String, SocketAddr>,
}

/// The persisted record, versioned.
#[derive(Debug, Serialize, Deserialize)]
enum StoredMembership {
    V1(MembershipState),
}

/// This node's view of the membership.
#[derive(Debug)]
pub(crate) struct Membership {
    me: String,
    state: MembershipState,
}

impl Membership {
    /// A membership of this node alone.
    pub fn alone(me: &NodeId, addr: SocketAddr) -> Membership {
        let mut m =
            Membership { me: me.0.clone(), state: MembershipState { set: Orswot::new(), addrs: BTreeMap::new() } };
        m.add(me, addr);
        m
    }

    /// The persisted membership, or this node alone on first start. This node's address is
    /// refreshed (it may have been given another one).
    pub fn load(store: &dyn Store, me: &NodeId, addr: SocketAddr) -> Result<Membership, StoreError> {
        let Some(bytes) = store.get(Column::Node, MEMBERSHIP_KEY)? else {
            return Ok(Membership::alone(me, addr));
        };
        let Ok(StoredMembership::V1(state)) = postcard::from_bytes::<StoredMembership>(&bytes) else {
            return Err(StoreError::Corrupt {
                column: Column::Node.name(),
                reason: format!("membership record of {} bytes does not decode", bytes.len()),
            });
        };
        let mut m = Membership { me: me.0.clone(), state };
        if m.contains(me) {
            m.state.addrs.insert(me.0.clone(), addr);
        } else {
            m = Membership::alone(me, addr);
        }
        Ok(m)
    }

    /// The record to persist.
    pub fn batch(&self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        let bytes = postcard::to_stdvec(&StoredMembership::V1(self.state.clone())).unwrap_or_default();
        batch.put(Column::Node, MEMBERSHIP_KEY, bytes);
        batch
    }

    /// The members, sorted.
    pub fn members(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self.state.set.read().val.into_iter().map(NodeId).collect();
        out.sort();
        out
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.state.set.contains(&node.0).val
    }

    /// Where `node`'s cluster endpoint listens.
    pub fn addr(&self, node: &NodeId) -> Option<SocketAddr> {
        self.state.addrs.get(&node.0).copied()
    }

    /// Adds `node` (at `addr`); true when it was not a member.
    pub fn add(&mut self, node: &NodeId, addr: SocketAddr) -> bool {
        let added = !self.contains(node);
        let ctx = self.state.set.read_ctx().derive_add_ctx(self.me.clone());
        let op = self.state.set.add(node.0.clone(), ctx);
        self.state.set.apply(op);
        self.state.addrs.insert(node.0.clone(), addr);
        added
    }

    /// Removes `node`; true when it was a member.
    pub fn remove(&mut self, node: &NodeId) -> bool {
        let read = self.state.set.contains(&node.0);
        if !read.val {
            return false;
        }
        let op = self.state.set.rm(node.0.clone(), read.derive_rm_ctx());
        self.state.set.apply(op);
        self.state.addrs.remove(&node.0);
        true
    }

    /// The state to gossip.
    pub fn state(&self) -> &MembershipState {
        &self.state
    }

    /// Merges a peer's state; true when the member list changed. Addresses of other nodes
    /// are taken from the peer; this node's own address is never overwritten.
    pub fn merge(&mut self, other: MembershipState) -> bool {
        let before = self.members();
        let my_addr = self.state.addrs.get(&self.me).copied();
        self.state.set.merge(other.set);
        for (node, addr) in other.addrs {
            self.state.addrs.insert(node, addr);
        }
        if let Some(addr) = my_addr {
            self.state.addrs.insert(self.me.clone(), addr);
        }
        let members = self.members();
        self.state.addrs.retain(|n, _| members.iter().any(|m| &m.0 == n));
        members != before
    }

    /// Whether `state` (a peer's) contains `node`.
    pub fn state_contains(state: &MembershipState, node: &NodeId) -> bool {
        state.set.contains(&node.0).val
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmq_storage::MemStore;

    fn n(s: &str) -> NodeId {
        NodeId::new(s)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn join_merge_and_leave_converge() {
        let mut a = Membership::alone(&n("a"), addr(1));
        let mut b = Membership::alone(&n("b"), addr(2));
        b.add(&n("c"), addr(3));
        // b accepts a's join and gossips its state to a.
        b.add(&n("a"), addr(1));
        assert!(a.merge(b.state().clone()));
        assert_eq!(a.members(), vec![n("a"), n("b"), n("c")]);
        assert_eq!(a.addr(&n("c")), Some(addr(3)));
        // a removes c; b learns it, and an old state of b does not bring c back (add-wins
        // only for concurrent adds).
        let old_b = b.state().clone();
        a.remove(&n("c"));
        b.merge(a.state().clone());
        assert_eq!(b.members(), vec![n("a"), n("b")]);
        a.merge(old_b);
        assert_eq!(a.members(), vec![n("a"), n("b")]);
    }

    #[test]
    fn persists_and_reloads() {
        let store = MemStore::new();
        let mut m = Membership::alone(&n("a"), addr(1));
        m.add(&n("b"), addr(2));
        store.write(m.batch(), vmq_storage::Durability::Buffered).unwrap();
        let back = Membership::load(&store, &n("a"), addr(9)).unwrap();
        assert_eq!(back.members(), vec![n("a"), n("b")]);
        assert_eq!(back.addr(&n("a")), Some(addr(9)), "own address is refreshed");
        assert_eq!(back.addr(&n("b")), Some(addr(2)));
    }
}
