//! `threads`: one OS thread per connection, blocking reads and writes.
//!
//! The accept loop spawns a thread for each client; the thread serves it until it leaves.
//! Simple and concurrent, at the price of a kernel thread (stack, scheduler entry, context
//! switches) per connection. Live connections are capped by `--max-conns`: beyond the cap a
//! new connection is closed at once, never a crash.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use super::{log_connection_error, Config};
use crate::blocking;
use crate::listener::{accept_blocking, BurstLog, EXHAUSTION_BACKOFF};

/// Serving a connection needs little stack: its buffers are on the heap.
const STACK_SIZE: usize = 128 * 1024;

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    let listener = &listeners[0];
    let live = Arc::new(AtomicUsize::new(0));
    let (mut exhaustion, mut refused) = (BurstLog::default(), BurstLog::default());
    loop {
        let mut stream = accept_blocking("threads", listener, &mut exhaustion)?;
        if live.load(Ordering::Acquire) >= config.max_conns {
            refused.hit(|| {
                format!(
                    "threads: {} live connections (--max-conns); closing new ones",
                    config.max_conns
                )
            });
            continue; // `stream` is dropped: closed.
        }
        refused.clear();
        live.fetch_add(1, Ordering::AcqRel);
        let (live_in_thread, protocol, idle_timeout) =
            (Arc::clone(&live), config.protocol, config.idle_timeout);
        let spawned = thread::Builder::new()
            .stack_size(STACK_SIZE)
            .spawn(move || {
                log_connection_error(
                    "threads",
                    blocking::serve(&mut stream, protocol, idle_timeout),
                );
                live_in_thread.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            // The closure, and the connection in it, were dropped: the client sees a close.
            live.fetch_sub(1, Ordering::AcqRel);
            eprintln!("threads: spawn: {e}; connection closed");
            thread::sleep(EXHAUSTION_BACKOFF);
        }
    }
}
