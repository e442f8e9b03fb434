//! `spin`: non-blocking sockets and a loop that retries every one of them, with no wait call.
//!
//! The non-blocking I/O model of the textbooks, taken literally: `accept4` and every
//! connection's `read` are tried in turn, and EAGAIN means "not yet, try again". Nothing ever
//! sleeps, so the loop burns a whole CPU even with no client at all, and each pass costs one
//! syscall per open connection whether or not anything arrived. That is the lesson: it is why
//! select, poll and epoll exist.

use std::io;
use std::net::TcpListener;
use std::time::Instant;

use super::{run_loops, Config};
use crate::connection::{Connection, Next, Trigger, SCRATCH_SIZE};
use crate::listener::Acceptor;

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut connections: Vec<Connection> = Vec::new();
    let mut acceptor = Acceptor::default();
    let mut scratch = vec![0u8; SCRATCH_SIZE];
    loop {
        // Anyone waiting to connect? EAGAIN says no (and costs a syscall to learn).
        if !acceptor.is_paused() || acceptor.resume_due() {
            acceptor.accept_pending("spin", &listener, |stream| {
                connections.push(Connection::new(stream, config));
                Ok(())
            })?;
        }
        // Anything to read or write on any connection? Try them all to find out.
        for i in (0..connections.len()).rev() {
            let connection = &mut connections[i];
            // Lingering closes and idle connections past their deadline (crate::closing):
            // a clock is read only for a connection that has one.
            let expired = (connection.is_lingering() || config.idle_timeout.is_some())
                && connection.expired(Instant::now());
            if expired || connection.drive(Trigger::Level, &mut scratch) == Next::Close {
                connections.swap_remove(i);
            }
        }
    }
}
