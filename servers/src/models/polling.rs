//! `polling`: the same event loop on the polling crate (epoll underneath), level-triggered.
//!
//! polling's default is one-shot interest, re-armed after every event (one `epoll_ctl` per
//! event, as async-io uses it). This model asks for `PollMode::Level` instead, so it makes the
//! same calls as `epoll-lt` and the comparison measures the crate, not a different mode.

use std::io;
use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;

use ::polling::{Event, Events, PollMode, Poller};

use super::{run_loops, Config};
use crate::connection::{Connection, Connections, Interest, Next, Trigger, SCRATCH_SIZE};
use crate::listener::Acceptor;

const MAX_EVENTS: NonZeroUsize = NonZeroUsize::new(1024).unwrap();

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listen_key = listener.as_raw_fd() as usize;
    let poller = Poller::new()?;
    // SAFETY: the listener outlives its registration: it is never closed while the loop runs.
    unsafe { poller.add_with_mode(&listener, Event::readable(listen_key), PollMode::Level)? };
    let mut events = Events::with_capacity(MAX_EVENTS);
    let mut connections = Connections::new(config);
    let mut acceptor = Acceptor::default();
    let mut scratch = vec![0u8; SCRATCH_SIZE];
    loop {
        events.clear();
        if let Err(e) = poller.wait(&mut events, connections.wait_for(acceptor.timeout())) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut accept = acceptor.resume_due();
        if accept {
            poller.modify_with_mode(&listener, Event::readable(listen_key), PollMode::Level)?;
        }
        for event in events.iter() {
            if event.key == listen_key {
                accept = true;
                continue;
            }
            let fd = event.key as i32;
            let Some(next) = connections.drive(fd, Trigger::Level, &mut scratch) else {
                continue;
            };
            let Some(connection) = connections.get_mut(fd) else {
                continue;
            };
            match next {
                Next::Close => {
                    poller.delete(connection.stream())?;
                    connections.remove(fd);
                }
                Next::Wait {
                    interest,
                    changed: true,
                } => poller.modify_with_mode(
                    connection.stream(),
                    event_for(fd, interest),
                    PollMode::Level,
                )?,
                Next::Wait { .. } => {}
            }
        }
        // Lingering closes and idle connections past their deadline (crate::closing).
        for fd in connections.expired() {
            if let Some(connection) = connections.remove(fd) {
                poller.delete(connection.stream())?;
            }
        }
        if accept {
            acceptor.accept_pending("polling", &listener, |stream| {
                let connection = Connection::new(stream, config);
                let key = connection.fd() as usize;
                // SAFETY: the connection is deleted from the poller before it is dropped.
                unsafe {
                    poller.add_with_mode(
                        connection.stream(),
                        Event::readable(key),
                        PollMode::Level,
                    )?
                };
                connections.insert(connection);
                Ok(())
            })?;
            if acceptor.is_paused() {
                poller.modify_with_mode(&listener, Event::none(listen_key), PollMode::Level)?;
            }
        }
    }
}

fn event_for(fd: i32, interest: Interest) -> Event {
    let key = fd as usize;
    match (interest.read, interest.write) {
        (true, true) => Event::all(key),
        (true, false) => Event::readable(key),
        (false, true) => Event::writable(key),
        (false, false) => Event::none(key),
    }
}
