//! `vmq-jepsen`: drives real broker processes from outside over MQTT.
//!
//! - [`mqtt`]: a minimal MQTT 3.1.1 / 5.0 client written for throughput;
//! - [`accounting`]: per (publisher, sequence) histories and their check;
//! - [`bench`]: the `vmq-jepsen bench` scenarios, runner and report;
//! - [`harness`]: `vmq-jepsen test`, a cluster in network namespaces under a nemesis;
//! - [`history`]: the JSONL history a test run records;
//! - [`check`]: the checkers that read a history and name what was violated.
//!
//! It links none of the workspace crates, so a bug shared with the broker cannot hide itself.

pub mod accounting;
pub mod bench;
pub mod check;
pub mod harness;
pub mod history;
pub mod mqtt;
