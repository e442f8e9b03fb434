//! The registry of models: what each is called, its family, how many clients it serves at
//! once, its options, whether this machine can run it, and the function that runs it.
//!
//! [`MODELS`] is what the `server` binary, `--list` and the conformance suite read: a model
//! added here is served, listed and tested without touching anything else.

use std::io;
use std::net::TcpListener;

use serde::Serialize;

use crate::models::{
    epoll, fork, iterative, mio, poll, polling, prefork, prethreaded, select, sigio, spin, threads,
    tokio, uring, uring_multishot,
};
use crate::protocol::Protocol;

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
    /// io_uring models: `--sqpoll`, `--taskrun`, `--plain-ring-fd`, `--batch`.
    pub ring: crate::completion::RingOptions,
    /// `--idle-timeout`: close a connection after this long without progress (no input
    /// consumed by the protocol, no reply byte written). `None`, the default, waits forever:
    /// the lesson the blocking models teach (a silent client holds a worker).
    pub idle_timeout: Option<std::time::Duration>,
    /// `tokio`: `--global-queue-interval` (`None`: tokio's self-tuned interval).
    pub global_queue_interval: Option<u32>,
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
    Sqpoll,
    DeferTaskrun,
    Taskrun,
    PlainRingFd,
    Batch,
    FixedFiles,
    Zerocopy,
    SendInPlace,
    Bundle,
    GlobalQueueInterval,
}

impl Knob {
    pub fn flag(self) -> &'static str {
        match self {
            Knob::Threads => "--threads",
            Knob::Workers => "--workers",
            Knob::MaxConns => "--max-conns",
            Knob::Sqpoll => "--sqpoll",
            Knob::DeferTaskrun => "--defer-taskrun",
            Knob::Taskrun => "--taskrun",
            Knob::PlainRingFd => "--plain-ring-fd",
            Knob::Batch => "--batch",
            Knob::FixedFiles => "--fixed-files",
            Knob::Zerocopy => "--zerocopy",
            Knob::SendInPlace => "--send-in-place",
            Knob::Bundle => "--bundle",
            Knob::GlobalQueueInterval => "--global-queue-interval",
        }
    }
}

pub struct Model {
    pub name: &'static str,
    pub family: Family,
    pub clients: Clients,
    pub fd_table: FdTable,
    /// Connections on descriptors at or above this are refused (select's FD_SETSIZE).
    pub max_fd: Option<i32>,
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

fn io_uring_here() -> Result<(), String> {
    crate::completion::support(false)
}

fn multishot_here() -> Result<(), String> {
    crate::completion::support(true)
}

/// What the io_uring models take: loops, and how the ring is set up and driven.
const RING_KNOBS: &[Knob] = &[
    Knob::Threads,
    Knob::Sqpoll,
    Knob::Taskrun,
    Knob::DeferTaskrun,
    Knob::PlainRingFd,
    Knob::Batch,
    Knob::Zerocopy,
];

/// `uring-multishot` also accepts into direct descriptors, sends echoes from the provided
/// buffers, and receives in bundles.
const MULTISHOT_KNOBS: &[Knob] = &[
    Knob::Threads,
    Knob::Sqpoll,
    Knob::Taskrun,
    Knob::DeferTaskrun,
    Knob::PlainRingFd,
    Knob::Batch,
    Knob::Zerocopy,
    Knob::FixedFiles,
    Knob::SendInPlace,
    Knob::Bundle,
];

pub static MODELS: &[Model] = &[
    Model {
        name: "iterative",
        family: Family::Blocking,
        fd_table: FdTable::Shared,
        max_fd: None,
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
        max_fd: None,
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
        max_fd: None,
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
        max_fd: None,
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
        max_fd: None,
        clients: Clients::Workers,
        knobs: &[Knob::Workers],
        summary: "N processes forked up front, each blocking in accept, then serving that client",
        support: runs_everywhere,
        run: prefork::run,
    },
    Model {
        name: "spin",
        family: Family::NonBlocking,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads],
        summary: "O_NONBLOCK sockets retried in a loop with no wait call: burns a CPU by design",
        support: runs_everywhere,
        run: spin::run,
    },
    Model {
        name: "select",
        family: Family::Multiplexing,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: Some(select::FD_SETSIZE),
        knobs: &[Knob::Threads],
        summary: "select(2); connections on descriptors >= FD_SETSIZE (1024) are closed at accept",
        support: runs_everywhere,
        run: select::run,
    },
    Model {
        name: "poll",
        family: Family::Multiplexing,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads],
        summary: "poll(2) over a pollfd array, level-triggered",
        support: runs_everywhere,
        run: poll::run,
    },
    Model {
        name: "epoll-lt",
        family: Family::Multiplexing,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads],
        summary: "epoll, level-triggered: one read per event",
        support: runs_everywhere,
        run: epoll::run_level,
    },
    Model {
        name: "epoll-et",
        family: Family::Multiplexing,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads],
        summary: "epoll, edge-triggered (EPOLLET): reads, writes and accepts drained to EAGAIN",
        support: runs_everywhere,
        run: epoll::run_edge,
    },
    Model {
        name: "sigio",
        family: Family::SignalDriven,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads],
        summary:
            "O_ASYNC + F_SETSIG realtime signal, sigtimedwait; queue overflow -> poll(2) sweep",
        support: runs_everywhere,
        run: sigio::run,
    },
    Model {
        name: "mio",
        family: Family::LibraryReactor,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads],
        summary: "the mio crate (epoll, edge-triggered)",
        support: runs_everywhere,
        run: mio::run,
    },
    Model {
        name: "polling",
        family: Family::LibraryReactor,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads],
        summary: "the polling crate (epoll, level-triggered mode)",
        support: runs_everywhere,
        run: polling::run,
    },
    Model {
        name: "uring",
        family: Family::Completion,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: RING_KNOBS,
        summary: "io_uring: one-shot accept, recv and send, batched submissions",
        support: io_uring_here,
        run: uring::run,
    },
    Model {
        name: "uring-multishot",
        family: Family::Completion,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: MULTISHOT_KNOBS,
        summary: "io_uring: multishot accept, multishot recv from a provided buffer ring",
        support: multishot_here,
        run: uring_multishot::run,
    },
    Model {
        name: "tokio",
        family: Family::ReferenceRuntime,
        clients: Clients::EventLoop,
        fd_table: FdTable::Shared,
        max_fd: None,
        knobs: &[Knob::Threads, Knob::GlobalQueueInterval],
        summary: "the tokio multi-threaded runtime, a task per connection (--threads workers)",
        support: runs_everywhere,
        run: tokio::run,
    },
];

pub fn find(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.name).collect()
}
