//! `iterative`: accept one client, serve it until it leaves, then accept the next.
//!
//! The simplest server there is (UNP's `serv00`). While one client is served, the others
//! wait in the kernel's listen queue: one slow client stalls everyone. That is the lesson.

use std::io;
use std::net::TcpListener;

use super::{log_connection_error, Config};
use crate::blocking;
use crate::listener::{accept_blocking, BurstLog};

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    let listener = &listeners[0];
    let mut exhaustion = BurstLog::default();
    loop {
        let mut stream = accept_blocking("iterative", listener, &mut exhaustion)?;
        log_connection_error(
            "iterative",
            blocking::serve(&mut stream, config.protocol, config.idle_timeout),
        );
    }
}
