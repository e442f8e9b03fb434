//! `benches` runs suites of models x scenarios x trials with CPU pinning and per-server resource
//! accounting, writing durable JSON results; it also holds the criterion micro-benchmarks.
//!
//! Not built yet: its issue fills this crate. Nothing here pretends to work before then.
