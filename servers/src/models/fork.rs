//! `fork`: one process per connection (UNP's `tcpserv01`, `serv01`).
//!
//! The parent accepts and forks; the child closes its copy of the listener, serves the one
//! client and exits; the parent closes its copy of the connection. Children are reaped on
//! SIGCHLD (by the signal thread, see `children`), and live children are capped by
//! `--max-conns`: beyond the cap a new connection is closed at once. Per-process descriptor
//! limits apply to each child separately, so this model does not run out of descriptors the
//! way a single process does; it pays a fork (page tables copied) per connection instead.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use super::{log_connection_error, Config};
use crate::blocking;
use crate::children::CHILDREN;
use crate::listener::{accept_blocking, BurstLog, EXHAUSTION_BACKOFF};

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    let listener = &listeners[0];
    let listen_fd = listener.as_raw_fd();
    let (mut exhaustion, mut refused) = (BurstLog::default(), BurstLog::default());
    loop {
        let mut stream = accept_blocking("fork", listener, &mut exhaustion)?;
        if CHILDREN.live() >= config.max_conns {
            refused.hit(|| {
                format!(
                    "fork: {} live children (--max-conns); closing new connections",
                    config.max_conns
                )
            });
            continue; // `stream` is dropped: closed.
        }
        refused.clear();
        let (protocol, idle_timeout) = (config.protocol, config.idle_timeout);
        let forked = CHILDREN.fork(move || {
            // SAFETY: the child never uses the listener again (it exits after serving), so
            // closing the descriptor under the `TcpListener` that still names it is harmless.
            unsafe { libc::close(listen_fd) };
            log_connection_error("fork", blocking::serve(&mut stream, protocol, idle_timeout));
            0
        });
        // In the parent the closure was dropped, and with it the parent's copy of `stream`.
        if let Err(e) = forked {
            eprintln!("fork: fork: {e}; connection closed");
            std::thread::sleep(EXHAUSTION_BACKOFF);
        }
    }
}
