//! `prefork`: N processes forked up front, each blocking in accept (UNP's `serv02`).
//!
//! Every child inherits the listener and loops: accept, serve that client to EOF, accept
//! again. The kernel wakes one waiting child per connection. At most `--workers` clients are
//! served at once. The parent only keeps the pool full: when a child dies, it forks another.

use std::io;
use std::net::TcpListener;

use super::{log_connection_error, Config};
use crate::blocking;
use crate::children::CHILDREN;
use crate::listener::{accept_blocking, BurstLog, EXHAUSTION_BACKOFF};

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    let listener = &listeners[0];
    let spawn = || {
        CHILDREN.fork(|| match worker(listener, config) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("prefork: worker {}: {e}", std::process::id());
                1
            }
        })
    };
    for _ in 0..config.workers {
        spawn()?;
    }
    loop {
        let live = CHILDREN.wait_below(config.workers);
        eprintln!("prefork: a worker exited ({live} left); forking a replacement");
        // Pace replacements so a worker that dies at once cannot become a fork storm.
        std::thread::sleep(EXHAUSTION_BACKOFF);
        spawn()?;
    }
}

fn worker(listener: &TcpListener, config: &Config) -> io::Result<()> {
    let mut exhaustion = BurstLog::default();
    loop {
        let mut stream = accept_blocking("prefork", listener, &mut exhaustion)?;
        log_connection_error(
            "prefork",
            blocking::serve(&mut stream, config.protocol, config.idle_timeout),
        );
    }
}
