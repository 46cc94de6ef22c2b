//! The cluster: everything that crosses between nodes.
//!
//! [`transport`] is the bottom layer: one QUIC endpoint per node, cookie-authenticated
//! connections, one ordered stream per purpose. Membership, metadata replication, remote
//! routing and RPC are built on its API.

pub mod transport;
