//! `prethreaded`: N threads created up front, each blocking in accept (UNP chapter 30).
//!
//! The kernel hands each new connection to one of the threads waiting in accept on the
//! shared listener. No thread is created per connection, but at most `--workers` clients are
//! served at once: the rest wait in the listen queue until a worker is free.

use std::io;
use std::net::TcpListener;
use std::thread;

use super::{log_connection_error, Config};
use crate::blocking;
use crate::listener::{accept_blocking, BurstLog};

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    let listener = &listeners[0];
    thread::scope(|scope| {
        let workers: Vec<_> = (0..config.workers)
            .map(|_| scope.spawn(|| worker(listener, config)))
            .collect();
        // Workers only return on a listener error; report the first.
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("worker panicked")))
            })
            .find(Result::is_err)
            .unwrap_or(Ok(()))
    })
}

fn worker(listener: &TcpListener, config: &Config) -> io::Result<()> {
    let mut exhaustion = BurstLog::default();
    loop {
        let mut stream = accept_blocking("prethreaded", listener, &mut exhaustion)?;
        log_connection_error(
            "prethreaded",
            blocking::serve(&mut stream, config.protocol, config.idle_timeout),
        );
    }
}
