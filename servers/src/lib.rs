//! `servers`: one small, correct server per Linux I/O model, all speaking the same protocols.
//!
//! `protocol` holds the sans-I/O state machines (echo, HTTP, transfer); `models` holds one
//! file per I/O model, each driving those machines with its own mechanism; the `server`
//! binary puts any model behind one command line (DESIGN.md section 2).

pub mod blocking;
pub mod children;
pub mod closing;
pub mod completion;
pub mod connection;
pub mod listener;
pub mod models;
pub mod protocol;
pub mod registry;
pub mod signals;
