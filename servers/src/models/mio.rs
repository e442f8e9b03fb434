//! `mio`: the same event loop on the mio crate (epoll underneath, edge-triggered).
//!
//! mio registers every source edge-triggered, so each event is followed to EAGAIN, exactly
//! as in `epoll-et`; the difference is the portable API (`Poll`, `Registry`, `Token`) and
//! the cost, if any, of going through it. Sockets stay std sockets registered as `SourceFd`.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use ::mio::unix::SourceFd;
use ::mio::{Events, Interest as MioInterest, Poll, Token};

use super::{run_loops, Config};
use crate::connection::{Connection, Connections, Interest, Next, Trigger, SCRATCH_SIZE};
use crate::listener::Acceptor;

const MAX_EVENTS: usize = 1024;

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listen_fd = listener.as_raw_fd();
    let listen_token = Token(listen_fd as usize);
    let mut poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&listen_fd),
        listen_token,
        MioInterest::READABLE,
    )?;
    let mut events = Events::with_capacity(MAX_EVENTS);
    let mut connections = Connections::new(config);
    let mut acceptor = Acceptor::default();
    let mut scratch = vec![0u8; SCRATCH_SIZE];
    loop {
        if let Err(e) = poll.poll(&mut events, connections.wait_for(acceptor.timeout())) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut accept = acceptor.resume_due();
        if accept {
            poll.registry().register(
                &mut SourceFd(&listen_fd),
                listen_token,
                MioInterest::READABLE,
            )?;
        }
        for event in events.iter() {
            if event.token() == listen_token {
                accept = true;
                continue;
            }
            let fd = event.token().0 as i32;
            // mio registers EPOLLRDHUP: an event that says the peer closed is drained to EOF.
            let trigger = if event.is_read_closed() || event.is_error() {
                Trigger::EdgeToEagain
            } else {
                Trigger::Edge
            };
            match connections.drive(fd, trigger, &mut scratch) {
                Some(Next::Close) => {
                    poll.registry().deregister(&mut SourceFd(&fd))?;
                    connections.remove(fd);
                }
                Some(Next::Wait {
                    interest,
                    changed: true,
                }) => poll.registry().reregister(
                    &mut SourceFd(&fd),
                    event.token(),
                    mio_interest(interest),
                )?,
                Some(Next::Wait { .. }) | None => {}
            }
        }
        // Lingering closes and idle connections past their deadline (crate::closing).
        for fd in connections.expired() {
            poll.registry().deregister(&mut SourceFd(&fd))?;
            connections.remove(fd);
        }
        if accept {
            acceptor.accept_pending("mio", &listener, |stream| {
                let connection = Connection::new(stream, config);
                let fd = connection.fd();
                poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(fd as usize),
                    MioInterest::READABLE,
                )?;
                connections.insert(connection);
                Ok(())
            })?;
            if acceptor.is_paused() {
                poll.registry().deregister(&mut SourceFd(&listen_fd))?;
            }
        }
    }
}

/// mio has no empty interest; a live connection always wants to read or to write.
fn mio_interest(interest: Interest) -> MioInterest {
    match (interest.read, interest.write) {
        (true, true) => MioInterest::READABLE | MioInterest::WRITABLE,
        (false, true) => MioInterest::WRITABLE,
        _ => MioInterest::READABLE,
    }
}
