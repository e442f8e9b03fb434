//! `poll`: poll(2) over an array of `pollfd`.
//!
//! The whole array goes to the kernel on every call, and the kernel checks every entry, so
//! each wait costs O(open connections) however few are ready; afterwards the loop scans the
//! array for non-zero `revents`, also O(open connections). No FD_SETSIZE limit. Readiness is
//! level-triggered: one read per event, the next poll reports what is left.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use super::{run_loops, Config};
use crate::connection::{Connection, Connections, Interest, Next, Trigger, SCRATCH_SIZE};
use crate::listener::Acceptor;

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    // Entry 0 is the listener; entry i > 0 is a connection, found by its descriptor.
    let mut fds = vec![pollfd(listener.as_raw_fd(), libc::POLLIN)];
    let mut connections = Connections::new(config);
    let mut acceptor = Acceptor::default();
    let mut scratch = vec![0u8; SCRATCH_SIZE];
    loop {
        fds[0].events = if acceptor.is_paused() {
            0
        } else {
            libc::POLLIN
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as _,
                connections.wait_ms(acceptor.timeout_ms()),
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        // Backwards, so that swap_remove moves an already visited entry into the hole.
        for i in (1..fds.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            let fd = fds[i].fd;
            match connections.drive(fd, Trigger::Level, &mut scratch) {
                None => {}
                Some(Next::Close) => {
                    connections.remove(fd);
                    fds.swap_remove(i);
                }
                Some(Next::Wait { interest, .. }) => fds[i].events = events_for(interest),
            }
        }
        // Lingering closes and idle connections past their deadline (crate::closing).
        let expired = connections.expired();
        if !expired.is_empty() {
            for fd in expired {
                connections.remove(fd);
            }
            let mut entries = fds.drain(1..).collect::<Vec<_>>();
            entries.retain(|entry| connections.contains(entry.fd));
            fds.extend(entries);
        }
        if fds[0].revents & libc::POLLIN != 0 || acceptor.resume_due() {
            acceptor.accept_pending("poll", &listener, |stream| {
                let connection = Connection::new(stream, config);
                fds.push(pollfd(connection.fd(), libc::POLLIN));
                connections.insert(connection);
                Ok(())
            })?;
        }
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn events_for(interest: Interest) -> i16 {
    let mut events = 0;
    if interest.read {
        events |= libc::POLLIN;
    }
    if interest.write {
        events |= libc::POLLOUT;
    }
    events
}
