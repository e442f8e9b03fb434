//! `loadgen` drives thousands of connections against an iomodels server, closed or open loop,
//! with coordinated-omission-corrected latency and byte-exact verification of every reply.
//!
//! Not built yet: its issue fills this crate. Nothing here pretends to work before then.
