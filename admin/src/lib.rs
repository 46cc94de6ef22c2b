//! `vmq-admin`: VerneMQ's operator command tree over a node's management API
//! (`/api/v1/...` on `listener.http.<name>`), printed as VerneMQ's tables or `--format=json`.

pub mod cli;
pub mod client;
pub mod command;
pub mod table;
