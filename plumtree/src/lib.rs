//! Plumtree metadata replica.
