//! `vernemq`: the broker binary.
fn main() {}
