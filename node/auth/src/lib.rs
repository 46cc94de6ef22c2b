//! VerneMQ's file-based authentication and authorisation, as plain data and functions (no
//! I/O beyond reading and writing the files, no async): the node wraps them in its
//! `Authorizer` and reloads the files on their intervals.
//!
//! - [`passwd`]: the `vmq_passwd` password file (`user:$6$salt$hash` lines, as VerneMQ's
//!   `vmq-passwd` and `mosquitto_passwd -H sha512` write them).
//! - [`acl`]: the `vmq_acl` ACL file (`topic`, `user`, `pattern` lines with `%c`, `%u`, `%m`).

pub mod acl;
pub mod passwd;
