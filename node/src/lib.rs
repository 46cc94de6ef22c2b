//! The vmq-rs broker node: configuration, MQTT codec, sessions, queues, routing and
//! listeners. The `vernemq` binary in `main.rs` is a thin shell around [`server::Node`].

pub mod ack;
pub mod authorize;
pub mod broker;
pub mod cluster;
pub mod file_auth;
// Public for the fuzzers outside the crate (`node/tests/fuzz.rs`, `node/fuzz/`), not an API.
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod listener;
mod pem;
pub mod server;
pub mod session;
pub mod storage;
pub mod systree;
