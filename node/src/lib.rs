//! The vmq-rs broker node.

pub mod mqtt;
