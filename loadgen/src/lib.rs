//! `loadgen` drives thousands of connections against an iomodels server, closed or open loop,
//! with coordinated-omission-corrected latency and byte-exact verification of every reply.
//!
//! `workload` says what a request is and how its reply is verified (no sockets), `http` the
//! same for any HTTP/1.1 server; `engine` is one event loop per thread; `stats` holds the
//! histograms and the JSON `load` object; `series` keeps what happened per interval (and
//! writes and merges HdrHistogram interval logs); `summary` prints the human report; `run`
//! ties them together for the binary; `start_at` starts a run at a given time, so loadgens on
//! several hosts measure one window.

pub mod engine;
pub mod http;
pub mod limits;
pub mod run;
pub mod series;
pub mod start_at;
pub mod stats;
pub mod summary;
pub mod verdict;
pub mod workload;
