//! Server-Wide Clocks metadata replica.
