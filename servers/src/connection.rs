//! The non-blocking connection every readiness model drives: input kept between events,
//! the protocol session, pending output, the high-water mark, and the interest it wants next.
//!
//! A model only learns "this descriptor is ready" (from select, poll, epoll, a signal, or a
//! busy retry) and calls [`Connection::drive`]. Everything else (partial writes, write
//! interest only while output is pending, reading paused above the high-water mark, EOF,
//! ECONNRESET and EPIPE) is handled here, once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::blocking::is_disconnect;
use crate::closing::{sweep_interval, IdleClock, LINGER};
use crate::protocol::{Session, HIGH_WATER};
use crate::registry::Config;

/// The most unconsumed input a connection keeps: one read's worth on top of what the
/// protocol is still waiting to complete (an HTTP head is refused beyond 8 KiB).
const INPUT_LIMIT: usize = 64 * 1024;

/// Size of the scratch buffer an event loop lends to [`Connection::drive`].
pub const SCRATCH_SIZE: usize = 64 * 1024;
const _: () = assert!(SCRATCH_SIZE >= crate::protocol::MIN_INPUT_CAPACITY);

/// How readiness is reported, and so how far `drive` must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Readiness is reported again as long as it holds (select, poll, epoll without
    /// EPOLLET): one read per event is enough, the next wait reports what is left.
    Level,
    /// epoll with EPOLLET (and mio): readiness is reported when it changes, so reads go on
    /// until the socket is empty, or no event may ever come for bytes already queued. epoll
    /// raises a new edge for every arrival, so a read that returns less than it asked for
    /// already shows the socket was emptied, and the extra read that would only say EAGAIN is
    /// skipped (tokio relies on the same rule). Not so for a FIN that arrived before the
    /// event was reported: the short read returns the data, and no later edge announces the
    /// EOF. So an event that says the peer closed (EPOLLRDHUP, EPOLLHUP, EPOLLERR) must be
    /// followed with `EdgeToEagain`.
    Edge,
    /// Signal-driven I/O, and edge-triggered events that report the peer closed: like
    /// `Edge`, but only EAGAIN (or EOF) counts as empty.
    EdgeToEagain,
}

/// What a connection wants to be told about next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

/// What the model must do after [`Connection::drive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection; if `changed`, register the new interest.
    Wait { interest: Interest, changed: bool },
    /// Close it (drop the `Connection`): the client left or the session ended.
    Close,
}

pub struct Connection {
    stream: TcpStream,
    session: Session,
    /// Input the session has not consumed yet; empty most of the time.
    input: Vec<u8>,
    /// Replies not yet written. Reading stops while it holds `HIGH_WATER` bytes or more.
    output: Vec<u8>,
    eof: bool,
    closing: bool,
    /// The session stopped because output reached the high-water mark while complete
    /// requests were still in `input`: they must be acted on once output drains, since no
    /// readiness event will ever announce bytes that were already read.
    held_back: bool,
    interest: Interest,
    idle: IdleClock,
    /// Set once the session ended with the client still sending: the write side is shut
    /// and input is discarded until the client closes or this instant (lingering close).
    linger_until: Option<Instant>,
}

impl Connection {
    /// Wraps an accepted, already non-blocking socket. It starts wanting to read.
    pub fn new(stream: TcpStream, config: &Config) -> Connection {
        Connection {
            stream,
            session: Session::new(config.protocol),
            input: Vec::new(),
            output: Vec::new(),
            eof: false,
            closing: false,
            held_back: false,
            interest: Interest {
                read: true,
                write: false,
            },
            idle: IdleClock::new(config.idle_timeout),
            linger_until: None,
        }
    }

    /// In a lingering close: only waiting for the client's EOF, or its deadline.
    pub fn is_lingering(&self) -> bool {
        self.linger_until.is_some()
    }

    /// Past its lingering deadline, or idle past the idle timeout.
    pub fn expired(&self, now: Instant) -> bool {
        match self.linger_until {
            Some(until) => now >= until,
            None => self.idle.expired(now),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn interest(&self) -> Interest {
        self.interest
    }

    /// Does all the work the socket allows now: reads (once, or until EAGAIN for `Edge`),
    /// lets the protocol act, writes until the socket is full. `scratch` is the event loop's
    /// read buffer, lent so idle connections hold no read buffer of their own.
    pub fn drive(&mut self, trigger: Trigger, scratch: &mut [u8]) -> Next {
        if self.linger_until.is_some() {
            return self.discard(scratch);
        }
        match self.pump(trigger, scratch) {
            Ok(()) => {}
            Err(e) if is_disconnect(&e) => return Next::Close,
            Err(e) => {
                eprintln!("connection fd {}: {e}", self.fd());
                return Next::Close;
            }
        }
        if self.closing && self.output.is_empty() {
            if self.eof || self.stream.shutdown(Shutdown::Write).is_err() {
                return Next::Close;
            }
            // Lingering close: the client reads the reply, then EOF; what it still sends is
            // read and dropped, so that no reset destroys the reply (crate::closing).
            self.linger_until = Some(Instant::now() + LINGER);
            return self.discard(scratch);
        }
        // Half-close: the client is done sending and everything it sent is answered.
        if self.eof && self.output.is_empty() && !self.session.is_streaming() {
            return Next::Close;
        }
        let interest = Interest {
            read: !self.eof && !self.closing && self.output.len() < HIGH_WATER,
            write: !self.output.is_empty(),
        };
        let changed = interest != self.interest;
        self.interest = interest;
        Next::Wait { interest, changed }
    }

    /// Lingering: reads and drops input until EAGAIN (waiting for more), EOF or an error.
    fn discard(&mut self, scratch: &mut [u8]) -> Next {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Next::Close,
            }
        }
        let interest = Interest {
            read: true,
            write: false,
        };
        let changed = interest != self.interest;
        self.interest = interest;
        Next::Wait { interest, changed }
    }

    fn pump(&mut self, trigger: Trigger, scratch: &mut [u8]) -> io::Result<()> {
        let mut reads = 0;
        let mut drained = false;
        loop {
            self.process(&[]);
            let write_blocked = self.flush()?;
            if self.closing {
                return Ok(());
            }
            if self.output.len() >= HIGH_WATER {
                return Ok(()); // backpressure: wait until the client reads
            }
            if self.session.is_streaming() || self.held_back {
                if write_blocked {
                    // The socket will report writability once it drains; the kept input
                    // or the download resumes then.
                    return Ok(());
                }
                // Room again: the next window of a download, or pipelined requests that
                // were read before the output limit held them back.
                continue;
            }
            if self.eof || drained || (trigger == Trigger::Level && reads > 0) {
                return Ok(());
            }
            let room = scratch
                .len()
                .min(INPUT_LIMIT.saturating_sub(self.input.len()));
            if room == 0 {
                return Ok(());
            }
            match self.stream.read(&mut scratch[..room]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    reads += 1;
                    self.process(&scratch[..n]);
                    if trigger == Trigger::Edge && n < room {
                        drained = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Feeds `fresh` bytes (after any kept input) to the session; keeps what it leaves.
    fn process(&mut self, fresh: &[u8]) {
        if self.closing {
            return; // the session ended: whatever else arrives is not answered
        }
        if fresh.is_empty() && self.input.is_empty() && !self.session.is_streaming() {
            return; // nothing to act on (the common case at the top of `pump`)
        }
        if self.output.len() >= HIGH_WATER {
            self.input.extend_from_slice(fresh);
            self.held_back = !self.input.is_empty();
            return;
        }
        if self.input.is_empty() {
            // The common case: act on the scratch buffer directly, keep only the leftover.
            let step = self.session.advance(fresh, &mut self.output, HIGH_WATER);
            self.input.extend_from_slice(&fresh[step.consumed..]);
            self.closing = step.close;
            if step.consumed > 0 {
                self.idle.progress();
            }
        } else {
            self.input.extend_from_slice(fresh);
            let step = self
                .session
                .advance(&self.input, &mut self.output, HIGH_WATER);
            self.input.drain(..step.consumed);
            self.closing = step.close;
            if step.consumed > 0 {
                self.idle.progress();
            }
        }
        self.held_back = self.output.len() >= HIGH_WATER && !self.input.is_empty();
    }

    /// Writes pending output until it is gone or the socket is full. Returns whether the
    /// socket is full. A short write means the send buffer filled up; the kernel reports
    /// writability (level or edge) once it drains, so no extra write to see EAGAIN is made.
    fn flush(&mut self) -> io::Result<bool> {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(n) if n == self.output.len() => {
                    self.output.clear();
                    self.idle.progress();
                }
                Ok(n) => {
                    self.output.drain(..n);
                    self.idle.progress();
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// The connections of one event loop, indexed by descriptor: descriptors are small dense
/// integers, so a vector is the cheapest map from "this fd is ready" to its connection.
///
/// It also keeps the deadlines (lingering closes, `--idle-timeout`): while any can expire, a
/// loop sweeps its connections every [`sweep_interval`] and closes the expired ones, waiting
/// no longer than [`Connections::wait_ms`] so the sweep is not late. Without deadlines
/// nothing here reads a clock.
pub struct Connections {
    slots: Vec<Option<Connection>>,
    len: usize,
    /// Every connection can expire (`--idle-timeout` is set).
    idle_timeout: Option<Duration>,
    /// Connections in a lingering close.
    lingering: usize,
    next_sweep: Option<Instant>,
}

impl Connections {
    pub fn new(config: &Config) -> Connections {
        Connections {
            slots: Vec::new(),
            len: 0,
            idle_timeout: config.idle_timeout,
            lingering: 0,
            next_sweep: None,
        }
    }

    pub fn insert(&mut self, connection: Connection) {
        let fd = connection.fd() as usize;
        if fd >= self.slots.len() {
            self.slots.resize_with(fd + 1, || None);
        }
        if self.slots[fd].replace(connection).is_none() {
            self.len += 1;
        }
    }

    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut Connection> {
        self.slots.get_mut(fd as usize)?.as_mut()
    }

    /// [`Connection::drive`] on the connection of `fd`, if there is one, keeping count of
    /// the lingering ones.
    #[inline]
    pub fn drive(&mut self, fd: RawFd, trigger: Trigger, scratch: &mut [u8]) -> Option<Next> {
        let connection = self.slots.get_mut(fd as usize)?.as_mut()?;
        let was_lingering = connection.is_lingering();
        let next = connection.drive(trigger, scratch);
        if !was_lingering && connection.is_lingering() {
            self.lingering += 1;
        }
        Some(next)
    }

    pub fn remove(&mut self, fd: RawFd) -> Option<Connection> {
        let removed = self.slots.get_mut(fd as usize)?.take();
        if let Some(connection) = &removed {
            self.len -= 1;
            if connection.is_lingering() {
                self.lingering -= 1;
            }
        }
        removed
    }

    #[inline]
    fn has_deadlines(&self) -> bool {
        self.idle_timeout.is_some() || self.lingering > 0
    }

    /// The connections whose deadline has passed, if a sweep is due; the loop closes them
    /// as it closes any connection. Without deadlines this is a test and an empty vector
    /// (no allocation, no clock), on every turn of the loop.
    #[inline]
    pub fn expired(&mut self) -> Vec<RawFd> {
        if !self.has_deadlines() {
            return Vec::new();
        }
        self.sweep()
    }

    #[cold]
    #[inline(never)]
    fn sweep(&mut self) -> Vec<RawFd> {
        let now = Instant::now();
        if self.next_sweep.is_some_and(|due| now < due) {
            return Vec::new();
        }
        self.next_sweep = Some(now + sweep_interval(self.idle_timeout));
        self.slots
            .iter()
            .flatten()
            .filter(|c| c.expired(now))
            .map(Connection::fd)
            .collect()
    }

    /// How long a wait may block so that the next sweep is on time, given how long the
    /// loop would wait otherwise (`None`: for ever).
    #[inline]
    pub fn wait_for(&self, otherwise: Option<Duration>) -> Option<Duration> {
        if !self.has_deadlines() {
            return otherwise;
        }
        let due = self.next_sweep.map_or(Duration::ZERO, |due| {
            due.saturating_duration_since(Instant::now())
        });
        Some(otherwise.map_or(due, |t| t.min(due)))
    }

    /// [`Connections::wait_for`] in milliseconds for poll(2) and epoll_wait(2) (-1: for
    /// ever), rounded up so a wait does not end a fraction early and spin.
    #[inline]
    pub fn wait_ms(&self, otherwise: i32) -> i32 {
        if !self.has_deadlines() {
            return otherwise;
        }
        let otherwise = u64::try_from(otherwise).ok().map(Duration::from_millis);
        match self.wait_for(otherwise) {
            None => -1,
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        }
    }

    pub fn contains(&self, fd: RawFd) -> bool {
        matches!(self.slots.get(fd as usize), Some(Some(_)))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every descriptor with a connection, in ascending order.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.is_some())
            .map(|(fd, _)| fd as RawFd)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.slots.iter_mut().flatten()
    }
}
