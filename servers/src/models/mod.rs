//! One file per I/O model, each readable on its own like a textbook listing.
//!
//! [`MODELS`] is the registry the `server` binary, `--list` and the conformance suite read: a
//! model added here is served, listed and tested without touching anything else.

use std::io;
use std::net::TcpListener;

use serde::Serialize;

use crate::protocol::Protocol;

mod fork;
mod iterative;
mod prefork;
mod prethreaded;
mod threads;

/// What every model is started with (the `server` command line).
#[derive(Clone, Debug)]
pub struct Config {
    pub protocol: Protocol,
    /// Event loops: how many independent loops (each with its own listener).
    pub threads: usize,
    /// Pools: how many workers are created up front.
    pub workers: usize,
    /// `threads` and `fork`: the most live connections; more are closed at once.
    pub max_conns: usize,
}

pub const DEFAULT_WORKERS: usize = 64;
pub const DEFAULT_MAX_CONNS: usize = 10_000;

/// The five I/O models of the textbooks, plus the library-based references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Blocking,
    NonBlocking,
    Multiplexing,
    SignalDriven,
    Completion,
    LibraryReactor,
    ReferenceRuntime,
}

/// How many clients a model serves at the same time; the conformance suite derives what it
/// expects of a model from this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clients {
    /// One client at a time; the others wait in the listen queue.
    OneAtATime,
    /// At most `--workers` clients at a time.
    Workers,
    /// One worker (thread or process) per client, at most `--max-conns`.
    PerConnection,
    /// Every client, multiplexed by an event loop.
    EventLoop,
}

/// Whether all connections live in one process's descriptor table (and so share its
/// RLIMIT_NOFILE), or each worker process has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FdTable {
    Shared,
    PerProcess,
}

/// An option a model takes besides `--model`, `--protocol` and `--addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    Threads,
    Workers,
    MaxConns,
}

impl Knob {
    pub fn flag(self) -> &'static str {
        match self {
            Knob::Threads => "--threads",
            Knob::Workers => "--workers",
            Knob::MaxConns => "--max-conns",
        }
    }
}

pub struct Model {
    pub name: &'static str,
    pub family: Family,
    pub clients: Clients,
    pub fd_table: FdTable,
    pub knobs: &'static [Knob],
    /// One line: the mechanism, as `--list` shows it.
    pub summary: &'static str,
    /// `Err(reason)` when this machine cannot run the model.
    pub support: fn() -> Result<(), String>,
    /// Serves forever on the listeners (`--threads` of them for event loops, else one).
    pub run: fn(Vec<TcpListener>, &Config) -> io::Result<()>,
}

fn runs_everywhere() -> Result<(), String> {
    Ok(())
}

pub static MODELS: &[Model] = &[
    Model {
        name: "iterative",
        family: Family::Blocking,
        fd_table: FdTable::Shared,
        clients: Clients::OneAtATime,
        knobs: &[],
        summary: "accept, serve that one client to EOF, accept the next (the others wait)",
        support: runs_everywhere,
        run: iterative::run,
    },
    Model {
        name: "threads",
        family: Family::Blocking,
        fd_table: FdTable::Shared,
        clients: Clients::PerConnection,
        knobs: &[Knob::MaxConns],
        summary: "one OS thread per connection, blocking read/write",
        support: runs_everywhere,
        run: threads::run,
    },
    Model {
        name: "prethreaded",
        family: Family::Blocking,
        fd_table: FdTable::Shared,
        clients: Clients::Workers,
        knobs: &[Knob::Workers],
        summary: "N threads created up front, each blocking in accept, then serving that client",
        support: runs_everywhere,
        run: prethreaded::run,
    },
    Model {
        name: "fork",
        family: Family::Blocking,
        fd_table: FdTable::PerProcess,
        clients: Clients::PerConnection,
        knobs: &[Knob::MaxConns],
        summary: "one process per connection, children reaped on SIGCHLD, count capped",
        support: runs_everywhere,
        run: fork::run,
    },
    Model {
        name: "prefork",
        family: Family::Blocking,
        fd_table: FdTable::PerProcess,
        clients: Clients::Workers,
        knobs: &[Knob::Workers],
        summary: "N processes forked up front, each blocking in accept, then serving that client",
        support: runs_everywhere,
        run: prefork::run,
    },
];

pub fn find(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.name).collect()
}

/// Logs a connection's error; ordinary disconnects never get here (the drivers return them
/// as `Ok`: they are how clients leave, not faults).
fn log_connection_error(model: &str, result: io::Result<()>) {
    if let Err(e) = result {
        eprintln!("{model}: connection: {e}");
    }
}
