//! `epoll-lt` and `epoll-et`: epoll(7), level- or edge-triggered.
//!
//! Interest is registered once per connection with `epoll_ctl(ADD)` and changed with
//! `epoll_ctl(MOD)` only when the connection's interest changes (write interest while output
//! is pending, read interest off above the high-water mark). `epoll_wait` returns only the
//! ready descriptors: its cost scales with the number of ready connections, not the number
//! of open ones. The two variants differ in one flag and in how far each event is followed:
//! level-triggered reads once per event (the next wait reports what is left), edge-triggered
//! (EPOLLET) must drain reads, writes and accepts to EAGAIN, because no event comes again
//! for bytes that were already there.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{run_loops, Config};
use crate::connection::{Connection, Connections, Interest, Next, Trigger, SCRATCH_SIZE};
use crate::listener::Acceptor;

const MAX_EVENTS: usize = 1024;

pub fn run_level(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| {
        event_loop(listener, config, Trigger::Level)
    })
}

pub fn run_edge(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| {
        event_loop(listener, config, Trigger::Edge)
    })
}

fn event_loop(listener: TcpListener, config: &Config, trigger: Trigger) -> io::Result<()> {
    let (name, mode) = if trigger == Trigger::Level {
        ("epoll-lt", 0)
    } else {
        ("epoll-et", libc::EPOLLET as u32)
    };
    let epoll = Epoll::new()?;
    listener.set_nonblocking(true)?;
    let listen_fd = listener.as_raw_fd();
    epoll.ctl(libc::EPOLL_CTL_ADD, listen_fd, libc::EPOLLIN as u32 | mode)?;
    let mut connections = Connections::new(config);
    let mut acceptor = Acceptor::default();
    let mut scratch = vec![0u8; SCRATCH_SIZE];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    loop {
        let ready = epoll.wait(&mut events, connections.wait_ms(acceptor.timeout_ms()))?;
        let mut accept = acceptor.resume_due();
        if accept {
            epoll.ctl(libc::EPOLL_CTL_MOD, listen_fd, libc::EPOLLIN as u32 | mode)?;
        }
        for event in &events[..ready] {
            let fd = event.u64 as RawFd;
            if fd == listen_fd {
                accept = true;
                continue;
            }
            // The peer closed before this event was reported: no later edge will say so.
            let closed =
                event.events & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
            let trigger = if closed && trigger == Trigger::Edge {
                Trigger::EdgeToEagain
            } else {
                trigger
            };
            match connections.drive(fd, trigger, &mut scratch) {
                Some(Next::Close) => drop(connections.remove(fd)), // close() leaves the epoll set
                Some(Next::Wait {
                    interest,
                    changed: true,
                }) => epoll.ctl(libc::EPOLL_CTL_MOD, fd, events_for(interest) | mode)?,
                Some(Next::Wait { .. }) | None => {}
            }
        }
        // Lingering closes and idle connections past their deadline (crate::closing).
        for fd in connections.expired() {
            drop(connections.remove(fd));
        }
        if accept {
            acceptor.accept_pending(name, &listener, |stream| {
                let connection = Connection::new(stream, config);
                epoll.ctl(
                    libc::EPOLL_CTL_ADD,
                    connection.fd(),
                    events_for(connection.interest()) | mode,
                )?;
                connections.insert(connection);
                Ok(())
            })?;
            if acceptor.is_paused() {
                // Out of descriptors: stop watching the listener, or a level-triggered wait
                // would report it ready again at once, forever.
                epoll.ctl(libc::EPOLL_CTL_MOD, listen_fd, 0)?;
            }
        }
    }
}

/// EPOLLRDHUP always: an edge-triggered loop must know when an event includes the FIN.
fn events_for(interest: Interest) -> u32 {
    let mut events = libc::EPOLLRDHUP as u32;
    if interest.read {
        events |= libc::EPOLLIN as u32;
    }
    if interest.write {
        events |= libc::EPOLLOUT as u32;
    }
    events
}

/// An epoll instance: the three calls this file is about.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events; returns how many were stored at the front of `events`.
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        match n {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(0),
            -1 => Err(io::Error::last_os_error()),
            n => Ok(n as usize),
        }
    }
}
