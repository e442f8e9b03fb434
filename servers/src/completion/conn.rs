//! The connection state of a completion model, its slots, and what follows each completion.
//!
//! Completion I/O hands buffers to the kernel: a buffer given to a recv or a send belongs to
//! the kernel until that request completes. So a connection here keeps its output in two
//! parts: `in_flight`, which the kernel is sending and nobody touches until the send
//! completes, and `pending`, where new replies accumulate meanwhile. A connection is freed
//! only when none of its requests is in flight, so no completion can ever name a freed slot.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, SubmissionQueue, Submitter};

use super::{Backlog, Op};
use crate::closing::{IdleClock, LINGER};
use crate::protocol::{Protocol, Session, HIGH_WATER};

/// How a connection's socket is named in submissions: an ordinary descriptor, or a direct
/// descriptor (an index into the ring's registered file table, `--fixed-files`), which the
/// kernel resolves without a lookup in the process's descriptor table and without taking a
/// reference on every request. A direct descriptor has no ordinary one: it is shut down and
/// closed by submissions, not by `shutdown(2)` and `close(2)`.
pub enum ConnFd {
    Owned(OwnedFd),
    Fixed(u32),
}

/// [`ConnFd`] as a submission names it (what `io_uring`'s opcodes take as their file).
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Fd(types::Fd),
    Fixed(types::Fixed),
}

/// Builds an entry for either kind of [`Target`]: `on_target!(target, |t| opcode::Send::new(t,
/// ..).build())`.
#[macro_export]
macro_rules! on_target {
    ($target:expr, |$t:ident| $build:expr) => {
        match $target {
            $crate::completion::Target::Fd($t) => $build,
            $crate::completion::Target::Fixed($t) => $build,
        }
    };
}

/// Sends at least this long go out with IORING_OP_SEND_ZC under `--zerocopy`: below it,
/// pinning the pages and waiting for a second completion costs more than the copy it saves
/// (the kernel's own advice for MSG_ZEROCOPY is "above about 10 KB").
pub const ZEROCOPY_MIN: usize = 16 * 1024;

/// A provided buffer a send reads from in place (`--send-in-place`): it goes back to the
/// ring only once the whole of it is sent.
struct Borrowed {
    bid: u16,
    ptr: *const u8,
    len: usize,
}

/// A connection of a completion model.
pub struct Conn {
    pub fd: ConnFd,
    session: Session,
    /// Input the session has not consumed yet.
    input: Vec<u8>,
    /// Replies not yet handed to the kernel.
    pending: Vec<u8>,
    /// The bytes a send in flight reads from; untouched until it completes.
    in_flight: Vec<u8>,
    /// Instead of `in_flight`: the provided buffer an echo is sent from in place.
    borrowed: Option<Borrowed>,
    /// How much of `in_flight` (or `borrowed`) the kernel has sent.
    sent: usize,
    /// A zero-copy send completed with this result; its buffer is the kernel's until the
    /// notification completion that follows.
    zc_result: Option<i32>,
    pub recv_armed: bool,
    pub send_armed: bool,
    /// An AsyncCancel for this connection's recv is in the kernel.
    pub cancel_armed: bool,
    pub eof: bool,
    pub closing: bool,
    /// The client is gone (a completion failed), or a deadline passed: nothing more is sent
    /// or received.
    dead: bool,
    idle: IdleClock,
    /// Set once the session ended with the client still connected: the write side is shut
    /// and what still arrives is dropped until EOF or this instant (crate::closing).
    linger_until: Option<Instant>,
}

impl Conn {
    pub fn new(fd: ConnFd, protocol: Protocol, idle_timeout: Option<Duration>) -> Conn {
        Conn {
            fd,
            session: Session::new(protocol),
            input: Vec::new(),
            pending: Vec::new(),
            in_flight: Vec::new(),
            borrowed: None,
            sent: 0,
            zc_result: None,
            recv_armed: false,
            send_armed: false,
            cancel_armed: false,
            eof: false,
            closing: false,
            dead: false,
            idle: IdleClock::new(idle_timeout),
            linger_until: None,
        }
    }

    pub fn is_lingering(&self) -> bool {
        self.linger_until.is_some()
    }

    /// Past its lingering deadline, or idle past the idle timeout.
    fn expired(&self, now: Instant) -> bool {
        !self.dead
            && match self.linger_until {
                Some(until) => now >= until,
                None => self.idle.expired(now),
            }
    }

    /// The session ended and every reply is sent, but the client has not closed: time to
    /// shut the write side and linger (crate::closing). Marks it lingering; the caller shuts
    /// the socket down (`follow_up`).
    fn start_linger(&mut self) -> bool {
        if !self.closing || self.eof || self.dead || self.linger_until.is_some() {
            return false;
        }
        if self.backlog() > 0 || self.send_armed {
            return false;
        }
        self.linger_until = Some(Instant::now() + LINGER);
        true
    }

    pub fn target(&self) -> Target {
        match &self.fd {
            ConnFd::Owned(fd) => Target::Fd(types::Fd(fd.as_raw_fd())),
            ConnFd::Fixed(index) => Target::Fixed(types::Fixed(*index)),
        }
    }

    fn backlog(&self) -> usize {
        self.pending.len() + self.in_flight_len() - self.sent
    }

    /// The length of what the send in flight reads from.
    fn in_flight_len(&self) -> usize {
        match &self.borrowed {
            Some(b) => b.len,
            None => self.in_flight.len(),
        }
    }

    /// Whether an echo of the next arrival can be sent straight from its provided buffer:
    /// nothing is waiting to be sent before it, and no earlier input is waiting to be
    /// consumed, so the reply is exactly those bytes, in order.
    pub fn can_send_in_place(&self) -> bool {
        !self.closing
            && !self.dead
            && !self.send_armed
            && self.input.is_empty()
            && self.pending.is_empty()
            && self.sent == self.in_flight_len()
    }

    /// `--send-in-place` (echo only): the `len` bytes at `ptr`, provided buffer `bid`, are
    /// both what arrived and the reply. The buffer stays out of the ring until the send of
    /// it completes ([`Conn::send_completion`] hands `bid` back).
    pub fn echo_in_place(&mut self, bid: u16, ptr: *const u8, len: usize) {
        debug_assert!(self.can_send_in_place());
        self.in_flight.clear();
        self.sent = 0;
        self.borrowed = Some(Borrowed { bid, ptr, len });
        self.idle.progress();
    }

    /// Bytes that arrived: the session acts on them, replies go to `pending`.
    pub fn received(&mut self, data: &[u8]) {
        if self.closing {
            return;
        }
        if !self.input.is_empty() {
            self.input.extend_from_slice(data);
            self.process();
            return;
        }
        // The common case: act on the received bytes directly, keep only the leftover.
        let room = self.output_room();
        let step = self.session.advance(data, &mut self.pending, room);
        self.input.extend_from_slice(&data[step.consumed..]);
        self.closing = step.close;
        if step.consumed > 0 {
            self.idle.progress();
        }
    }

    /// How far `pending` may grow: the high-water mark less what the kernel is still sending.
    fn output_room(&self) -> usize {
        HIGH_WATER.saturating_sub(self.in_flight_len() - self.sent)
    }

    fn process(&mut self) {
        if self.closing {
            return;
        }
        let room = self.output_room();
        let step = self.session.advance(&self.input, &mut self.pending, room);
        self.input.drain(..step.consumed);
        self.closing = step.close;
        if step.consumed > 0 {
            self.idle.progress();
        }
    }

    /// A send completed with `n` bytes written. Returns the provided buffer it was sent
    /// from in place, once all of it is sent, for the ring.
    fn sent(&mut self, n: usize) -> Option<u16> {
        self.send_armed = false;
        if n > 0 {
            self.idle.progress();
        }
        self.sent += n;
        if self.sent < self.in_flight_len() {
            return None; // a short send: the rest goes next
        }
        self.in_flight.clear();
        self.sent = 0;
        let done = self.borrowed.take().map(|b| b.bid);
        self.process(); // room again: held-back input, or the next window of a download
        done
    }

    /// A completion of this connection's send, with its flags: a plain send's, or either of
    /// the two a zero-copy send makes (the result with IORING_CQE_F_MORE, then the
    /// notification that the kernel let go of the buffer). Returns a provided buffer to
    /// hand back to the ring (`--send-in-place`).
    pub fn send_completion(&mut self, result: i32, flags: u32) -> Option<u16> {
        if cqueue::more(flags) {
            self.zc_result = Some(result); // the buffer stays the kernel's for now
            return None;
        }
        let result = match cqueue::notif(flags) {
            true => self.zc_result.take().unwrap_or(0),
            false => result,
        };
        if result >= 0 {
            if let Some(bid) = self.sent(result as usize) {
                return Some(bid);
            }
        } else {
            self.send_armed = false;
            self.fail();
        }
        if self.dead {
            // Failed, or timed out while this send was in flight: the rest is never sent,
            // and a borrowed buffer goes back to the ring now, not with the slot.
            self.sent = 0;
            self.in_flight.clear();
            return self.borrowed.take().map(|b| b.bid);
        }
        None
    }

    /// The cancel of this connection's recv completed (whatever it found to cancel).
    pub fn cancel_completed(&mut self) {
        self.cancel_armed = false;
    }

    /// A request failed (reset, broken pipe, cancelled): the client is gone.
    pub fn fail(&mut self) {
        self.dead = true;
    }

    /// The next bytes to send, if no send is in flight and there is something to send. The
    /// returned slice stays valid and unmoved until [`Conn::sent`] is called.
    pub fn next_send(&mut self) -> Option<(*const u8, u32)> {
        if self.send_armed || self.dead {
            return None;
        }
        if let Some(b) = &self.borrowed {
            self.send_armed = true;
            // SAFETY: `sent` < `len` (a fully sent borrowed buffer is dropped in `sent`), and
            // the provided buffer stays out of the ring, unwritten, until it is handed back.
            let rest = unsafe { b.ptr.add(self.sent) };
            return Some((rest, (b.len - self.sent) as u32));
        }
        if self.sent == self.in_flight.len() {
            std::mem::swap(&mut self.in_flight, &mut self.pending);
            self.pending.clear();
            self.sent = 0;
        }
        let rest = &self.in_flight[self.sent..];
        if rest.is_empty() {
            return None;
        }
        self.send_armed = true;
        Some((rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32))
    }

    /// Whether to have a recv in flight: not after EOF, and not while replies above the
    /// high-water mark wait for the client to read them. After the end of the session a recv
    /// stays armed and what it brings is dropped: the lingering close (crate::closing).
    pub fn wants_recv(&self) -> bool {
        if self.eof || self.dead {
            return false;
        }
        if self.closing {
            return true; // what arrives is dropped (a lingering close follows the replies)
        }
        self.backlog() < HIGH_WATER && self.input.len() < HIGH_WATER
    }

    /// Nothing more to do: the client is gone or timed out, or everything is answered and
    /// sent after EOF (a half-close, or the end of a lingering close).
    pub fn finished(&self) -> bool {
        self.dead
            || (self.eof
                && (self.closing || !self.session.is_streaming())
                && self.backlog() == 0
                && !self.send_armed)
    }

    /// Nothing of this connection is in the kernel's hands: its slot may be freed.
    pub fn idle_in_kernel(&self) -> bool {
        !self.recv_armed && !self.send_armed && !self.cancel_armed
    }
}

/// After a completion: submits the send the connection has ready, a recv if it wants one
/// (`recv` builds it: one-shot or multishot), a cancel of its recv once it is finished, and
/// frees the slot when nothing of it is left in the kernel.
///
/// A multishot recv (`multishot`) keeps delivering until cancelled, so one that is no longer
/// wanted (output above the high-water mark) is cancelled too, and re-armed once output drains.
pub fn follow_up(
    slots: &mut Slots,
    slot: usize,
    submitter: &Submitter,
    sq: &mut SubmissionQueue,
    backlog: &mut Backlog,
    multishot: bool,
    recv: impl FnOnce(Target) -> squeue::Entry,
) {
    let Some(conn) = slots.slots.get_mut(slot).and_then(Option::as_mut) else {
        return;
    };
    let fd = conn.target();
    if conn.start_linger() {
        slots.lingering += 1;
        match &conn.fd {
            ConnFd::Owned(owned) => {
                // SAFETY: shutdown on a descriptor this connection owns.
                if unsafe { libc::shutdown(owned.as_raw_fd(), libc::SHUT_WR) } < 0 {
                    conn.fail();
                }
            }
            ConnFd::Fixed(_) => {
                // In order before anything submitted later for this connection; its result
                // only matters when it fails, and then the recv that follows fails too.
                let shutdown = on_target!(fd, |t| opcode::Shutdown::new(t, libc::SHUT_WR).build());
                let shutdown = shutdown.flags(squeue::Flags::SKIP_SUCCESS);
                backlog.push(submitter, sq, shutdown.user_data(Op::Quiet.encode()));
            }
        }
    }
    if let Some((ptr, len)) = conn.next_send() {
        let send = if slots.zerocopy && len as usize >= ZEROCOPY_MIN {
            on_target!(fd, |t| opcode::SendZc::new(t, ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build())
        } else {
            on_target!(fd, |t| opcode::Send::new(t, ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build())
        };
        backlog.push(submitter, sq, send.user_data(Op::Send(slot).encode()));
    }
    if conn.wants_recv() && !conn.recv_armed {
        conn.recv_armed = true;
        backlog.push(submitter, sq, recv(fd).user_data(Op::Recv(slot).encode()));
    }
    let finished = conn.finished();
    if finished && conn.idle_in_kernel() {
        if let ConnFd::Fixed(_) = conn.fd {
            // A direct descriptor is closed by a submission (an ordinary one by the drop).
            let close = on_target!(fd, |t| opcode::Close::new(t).build());
            let close = close.flags(squeue::Flags::SKIP_SUCCESS);
            backlog.push(submitter, sq, close.user_data(Op::Quiet.encode()));
        }
        slots.remove(slot);
    } else if conn.recv_armed
        && !conn.cancel_armed
        && (finished || (multishot && !conn.wants_recv()))
    {
        // A recv nobody wants any more: cancel it (finished: free the slot on completion).
        conn.cancel_armed = true;
        let cancel = opcode::AsyncCancel::new(Op::Recv(slot).encode()).build();
        backlog.push(submitter, sq, cancel.user_data(Op::Cancel(slot).encode()));
    }
}

/// Connection slots addressed by a small index carried in `user_data`, and their deadlines
/// (lingering closes, `--idle-timeout`): while any can expire, the loop keeps a timeout in
/// the ring ([`super::Sweep`]) and fails the expired connections when it completes.
#[derive(Default)]
pub struct Slots {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    idle_timeout: Option<Duration>,
    lingering: usize,
    /// `--zerocopy`: long sends go out with IORING_OP_SEND_ZC.
    zerocopy: bool,
}

impl Slots {
    pub fn new(idle_timeout: Option<Duration>, zerocopy: bool) -> Slots {
        Slots {
            idle_timeout,
            zerocopy,
            ..Slots::default()
        }
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// Some connection can expire.
    pub fn has_deadlines(&self) -> bool {
        self.idle_timeout.is_some() || self.lingering > 0
    }

    /// Marks the connections past their deadline dead and returns their slots; the loop
    /// runs [`follow_up`] on each, which cancels their recv and frees them.
    pub fn expire(&mut self) -> Vec<usize> {
        if !self.has_deadlines() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        for (i, conn) in self.slots.iter_mut().enumerate() {
            if let Some(conn) = conn.as_mut().filter(|c| c.expired(now)) {
                conn.fail();
                expired.push(i);
            }
        }
        expired
    }

    pub fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(conn);
                i
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Conn> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// Frees a slot (closing its descriptor). Only for a connection idle in the kernel.
    pub fn remove(&mut self, i: usize) {
        if let Some(conn) = self.slots[i].take() {
            debug_assert!(
                conn.idle_in_kernel() && conn.borrowed.is_none(),
                "freeing a connection the kernel still uses, or a provided buffer with it"
            );
            if conn.is_lingering() {
                self.lingering -= 1;
            }
            self.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_in_flight_is_never_touched() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut conn = Conn::new(ConnFd::Owned(OwnedFd::from(a)), Protocol::Echo, None);
        conn.received(b"hello");
        let (ptr, len) = conn.next_send().unwrap();
        assert_eq!(len, 5);
        conn.received(b" world"); // arrives while "hello" is in flight
                                  // SAFETY: the slice is valid until `sent`, which has not been called.
        assert_eq!(
            unsafe { std::slice::from_raw_parts(ptr, len as usize) },
            b"hello"
        );
        assert!(conn.next_send().is_none(), "one send in flight at a time");
        conn.sent(2);
        let (ptr, len) = conn.next_send().unwrap();
        assert_eq!(
            unsafe { std::slice::from_raw_parts(ptr, len as usize) },
            b"llo",
            "a short send resumes"
        );
        conn.sent(3);
        let (ptr, len) = conn.next_send().unwrap();
        assert_eq!(
            unsafe { std::slice::from_raw_parts(ptr, len as usize) },
            b" world"
        );
        conn.sent(6);
        assert!(conn.next_send().is_none());
        conn.eof = true;
        assert!(conn.finished() && conn.idle_in_kernel());
        conn.received(b"late");
        conn.fail();
        assert!(
            conn.next_send().is_none() && !conn.wants_recv(),
            "a dead connection asks nothing"
        );
    }
}
