//! One file per I/O model, each readable on its own like a textbook listing. The registry
//! that names and describes them is `crate::registry`.

use std::io;
use std::net::TcpListener;
use std::thread;

pub use crate::registry::{
    find, names, Clients, Config, Family, FdTable, Knob, Model, DEFAULT_MAX_CONNS, DEFAULT_WORKERS,
    MODELS,
};

pub(crate) mod epoll;
pub(crate) mod fork;
pub(crate) mod iterative;
pub(crate) mod mio;
pub(crate) mod poll;
pub(crate) mod polling;
pub(crate) mod prefork;
pub(crate) mod prethreaded;
pub(crate) mod select;
pub(crate) mod sigio;
pub(crate) mod spin;
pub(crate) mod threads;
pub(crate) mod tokio;
pub(crate) mod uring;
pub(crate) mod uring_multishot;

/// Runs one event loop per listener (`--threads N` gives N listeners sharing the port through
/// SO_REUSEPORT): the first on this thread, the others on threads of their own. A loop that
/// fails ends the server, with the loop's error.
fn run_loops(
    listeners: Vec<TcpListener>,
    event_loop: impl Fn(TcpListener) -> io::Result<()> + Sync,
) -> io::Result<()> {
    let fail = |index: usize, error: io::Error| -> ! {
        if crate::signals::stopping() {
            crate::signals::wait_for_exit(); // the accept failed because we are stopping
        }
        eprintln!("event loop {index}: {error}");
        std::process::exit(1)
    };
    thread::scope(|scope| {
        let mut listeners = listeners.into_iter().enumerate();
        let (_, first) = listeners
            .next()
            .expect("bind returns at least one listener");
        for (index, listener) in listeners {
            let event_loop = &event_loop;
            thread::Builder::new()
                .name(format!("loop-{index}"))
                .spawn_scoped(scope, move || {
                    if let Err(e) = event_loop(listener) {
                        fail(index, e);
                    }
                })
                .unwrap_or_else(|e| fail(index, e));
        }
        event_loop(first).map_err(|e| fail(0, e))
    })
}

/// Logs a connection's error; ordinary disconnects never get here (the drivers return them
/// as `Ok`: they are how clients leave, not faults).
fn log_connection_error(model: &str, result: io::Result<()>) {
    if let Err(e) = result {
        eprintln!("{model}: connection: {e}");
    }
}
