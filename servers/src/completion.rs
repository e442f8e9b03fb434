//! What the io_uring models share: the ring set up from the command line, a submission path
//! that never drops a request, the support check, and the connection state of a completion
//! model.
//!
//! Completion I/O hands buffers to the kernel: a buffer given to a recv or a send belongs to
//! the kernel until that request completes. So a connection here keeps its output in two
//! parts: `in_flight`, which the kernel is sending and nobody touches until the send
//! completes, and `pending`, where new replies accumulate meanwhile. A connection is freed
//! only when none of its requests is in flight, so no completion can ever name a freed slot.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::{opcode, squeue, types, IoUring, SubmissionQueue, Submitter};

use crate::protocol::{Protocol, Session, HIGH_WATER};

/// Submission queue entries per ring; the completion queue is twice that, and the kernel
/// keeps overflowing completions rather than dropping them (IORING_FEAT_NODROP, 5.5).
pub const RING_ENTRIES: u32 = 4096;

/// How the ring is set up (`--sqpoll`, `--defer-taskrun`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RingOptions {
    pub sqpoll: bool,
    pub defer_taskrun: bool,
}

pub fn ring(options: RingOptions) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    if options.sqpoll {
        // A kernel thread polls the submission queue, so submitting needs no syscall while
        // it is awake; it sleeps after 1 s without work. Its CPU is charged to this process:
        // it is one of its threads (iou-sqp-PID in /proc/PID/task since 5.12).
        builder.setup_sqpoll(1000);
    }
    if options.defer_taskrun {
        // Completions are processed only when this thread asks (io_uring_enter with
        // GETEVENTS), not by interrupting it; requires a single issuing thread (6.1).
        builder.setup_single_issuer().setup_defer_taskrun();
    }
    builder.build(RING_ENTRIES)
}

/// Whether this machine can run io_uring (and, for `multishot`, multishot recv with a
/// provided buffer ring, Linux 6.0).
pub fn support(multishot: bool) -> Result<(), String> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if let Err(e) = IoUring::new(8) {
        return Err(if disabled != 0 {
            format!("io_uring is disabled (kernel.io_uring_disabled = {disabled}): {e}")
        } else {
            format!("io_uring_setup failed: {e} (kernel without io_uring, or a seccomp filter)")
        });
    }
    let (major, minor) = kernel_version();
    let (need, what) = if multishot {
        ((6, 0), "multishot recv with a provided buffer ring")
    } else {
        ((5, 6), "io_uring accept, recv and send")
    };
    if (major, minor) < need {
        return Err(format!(
            "{what} needs Linux {}.{}, this is {major}.{minor}",
            need.0, need.1
        ));
    }
    Ok(())
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Submissions that did not fit yet: the queue was full and the kernel busy. They go first
/// at the next turn of the loop; none is ever dropped.
#[derive(Default)]
pub struct Backlog(VecDeque<squeue::Entry>);

impl Backlog {
    /// Queues `entry`; when the queue is full, submits what it holds and tries again, and
    /// keeps the entry for later if the kernel cannot take more now (EBUSY).
    pub fn push(&mut self, submitter: &Submitter, sq: &mut SubmissionQueue, entry: squeue::Entry) {
        if !self.0.is_empty() {
            self.0.push_back(entry);
            return;
        }
        // SAFETY (both pushes): every buffer an entry points to is owned by a connection or
        // by the loop and stays put until the entry's completion is handled.
        if unsafe { sq.push(&entry) }.is_ok() {
            return;
        }
        sq.sync();
        if submitter.submit().is_ok() {
            sq.sync();
            if unsafe { sq.push(&entry) }.is_ok() {
                return;
            }
        }
        self.0.push_back(entry);
    }

    /// Moves waiting entries into the queue, as many as fit.
    pub fn drain_into(&mut self, sq: &mut SubmissionQueue) {
        while let Some(entry) = self.0.front() {
            // SAFETY: as in `push`.
            if unsafe { sq.push(entry) }.is_err() {
                break;
            }
            self.0.pop_front();
        }
        sq.sync();
    }
}

/// Submits and waits for at least one completion. EINTR and EBUSY (completions must be
/// reaped first) are not errors: the loop reaps and comes back.
pub fn submit_and_wait(submitter: &Submitter) -> io::Result<()> {
    match submitter.submit_and_wait(1) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINTR | libc::EBUSY | libc::ETIME)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A connection of a completion model.
pub struct Conn {
    pub fd: OwnedFd,
    session: Session,
    /// Input the session has not consumed yet.
    input: Vec<u8>,
    /// Replies not yet handed to the kernel.
    pending: Vec<u8>,
    /// The bytes a send in flight reads from; untouched until it completes.
    in_flight: Vec<u8>,
    /// How much of `in_flight` the kernel has sent.
    sent: usize,
    pub recv_armed: bool,
    pub send_armed: bool,
    /// An AsyncCancel for this connection's recv is in the kernel.
    pub cancel_armed: bool,
    pub eof: bool,
    pub closing: bool,
    /// The client is gone (a completion failed): nothing more is sent or received.
    dead: bool,
}

impl Conn {
    pub fn new(fd: OwnedFd, protocol: Protocol) -> Conn {
        Conn {
            fd,
            session: Session::new(protocol),
            input: Vec::new(),
            pending: Vec::new(),
            in_flight: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            cancel_armed: false,
            eof: false,
            closing: false,
            dead: false,
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn backlog(&self) -> usize {
        self.pending.len() + self.in_flight.len() - self.sent
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
    }

    /// How far `pending` may grow: the high-water mark less what the kernel is still sending.
    fn output_room(&self) -> usize {
        HIGH_WATER.saturating_sub(self.in_flight.len() - self.sent)
    }

    fn process(&mut self) {
        if self.closing {
            return;
        }
        let room = self.output_room();
        let step = self.session.advance(&self.input, &mut self.pending, room);
        self.input.drain(..step.consumed);
        self.closing = step.close;
    }

    /// A send completed with `n` bytes written.
    pub fn sent(&mut self, n: usize) {
        self.send_armed = false;
        self.sent += n;
        if self.sent == self.in_flight.len() {
            self.in_flight.clear();
            self.sent = 0;
            self.process(); // room again: held-back input, or the next window of a download
        }
    }

    /// A send completed with `result` (bytes written, or -errno).
    pub fn send_completed(&mut self, result: i32) {
        if result >= 0 {
            self.sent(result as usize);
        } else {
            self.send_armed = false;
            self.fail();
        }
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

    /// Whether to have a recv in flight: not after EOF or the end of the session, and not
    /// while replies above the high-water mark wait for the client to read them.
    pub fn wants_recv(&self) -> bool {
        !self.eof
            && !self.closing
            && !self.dead
            && self.backlog() < HIGH_WATER
            && self.input.len() < HIGH_WATER
    }

    /// Nothing more to do: the client is gone, or everything is answered and sent after EOF
    /// (half-close) or the session's end.
    pub fn finished(&self) -> bool {
        self.dead
            || ((self.closing || (self.eof && !self.session.is_streaming()))
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
    recv: impl FnOnce(io_uring::types::Fd) -> squeue::Entry,
) {
    use io_uring::{opcode, types};
    let Some(conn) = slots.get_mut(slot) else {
        return;
    };
    let fd = types::Fd(conn.raw_fd());
    if let Some((ptr, len)) = conn.next_send() {
        let send = opcode::Send::new(fd, ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        backlog.push(submitter, sq, send.user_data(Op::Send(slot).encode()));
    }
    if conn.wants_recv() && !conn.recv_armed {
        conn.recv_armed = true;
        backlog.push(submitter, sq, recv(fd).user_data(Op::Recv(slot).encode()));
    }
    let finished = conn.finished();
    if finished && conn.idle_in_kernel() {
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

/// Logs a completion error unless it is a client leaving or a cancellation we asked for.
pub fn log_unexpected(model: &str, result: i32) {
    if result < 0
        && !is_disconnect(-result)
        && !matches!(
            -result,
            libc::ETIME | libc::ENOENT | libc::EALREADY | libc::ENOBUFS
        )
    {
        eprintln!(
            "{model}: completion error: {}",
            io::Error::from_raw_os_error(-result)
        );
    }
}

/// A provided buffer ring (Linux 5.19): buffers the kernel picks from when a multishot recv
/// has data, reporting which one in the completion. The loop gives each buffer back as soon
/// as its bytes are consumed. It lives as long as its event loop (which ends only with the
/// process), so it is never unregistered or unmapped.
pub struct BufRing {
    entries: *mut io_uring::types::BufRingEntry,
    data: Vec<u8>,
    size: usize,
    mask: u16,
    tail: u16,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes as buffer group `group`.
    pub fn new(submitter: &Submitter, count: u16, size: usize, group: u16) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "a buffer ring has a power-of-two size"
        );
        let bytes = count as usize * std::mem::size_of::<io_uring::types::BufRingEntry>();
        // SAFETY: an anonymous private mapping has no preconditions; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `addr` is a page-aligned mapping of `count` entries, zeroed, that stays
        // mapped for the life of the process.
        unsafe { submitter.register_buf_ring_with_flags(addr as u64, count, group, 0)? };
        let mut ring = BufRing {
            entries: addr.cast(),
            // Written once so the pages exist from the start: the ring's memory is a fixed
            // cost of the loop, not something that appears under load.
            data: vec![0x5a; count as usize * size],
            size,
            mask: count - 1,
            tail: 0,
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        Ok(ring)
    }

    /// The first `len` bytes of buffer `bid`, as a completion reported them.
    pub fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.size;
        &self.data[start..start + len.min(self.size)]
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        // SAFETY: the index is masked into the ring; the buffer address points into `data`,
        // which is never resized, so it stays valid while the kernel may write into it.
        unsafe {
            let entry = &mut *self.entries.add((self.tail & self.mask) as usize);
            entry.set_addr(self.data.as_ptr().add(bid as usize * self.size) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            // The kernel reads the tail concurrently: publish it after the entry (Release).
            let tail = io_uring::types::BufRingEntry::tail(self.entries)
                as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Connection slots addressed by a small index carried in `user_data`.
#[derive(Default)]
pub struct Slots {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slots {
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
                conn.idle_in_kernel(),
                "freeing a connection the kernel still uses"
            );
            self.free.push(i);
        }
    }
}

/// What a completion is about: packed into `user_data` as slot << 3 | kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Accept,
    /// The accept pause after EMFILE ended.
    AcceptRetry,
    Recv(usize),
    Send(usize),
    /// The AsyncCancel of a connection's recv. It counts as in flight for its slot: were the
    /// slot freed and reused first, the cancel could hit the new connection's recv.
    Cancel(usize),
    /// The poll on the stop signals' signalfd ([`StopSignal`]).
    Stop,
}

impl Op {
    pub fn encode(self) -> u64 {
        match self {
            Op::Accept => 0,
            Op::AcceptRetry => 1,
            Op::Cancel(slot) => (slot as u64) << 3 | 2,
            Op::Recv(slot) => (slot as u64) << 3 | 3,
            Op::Send(slot) => (slot as u64) << 3 | 4,
            Op::Stop => 5,
        }
    }

    pub fn decode(data: u64) -> Op {
        let slot = (data >> 3) as usize;
        match data & 7 {
            0 => Op::Accept,
            1 => Op::AcceptRetry,
            2 => Op::Cancel(slot),
            3 => Op::Recv(slot),
            4 => Op::Send(slot),
            _ => Op::Stop,
        }
    }
}

/// SIGTERM and SIGINT as a completion: a poll on a signalfd, kept armed in the ring, so the
/// loop hears the stop while it waits in io_uring_enter (see `signals::Stop::InBand`).
pub struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub fn new() -> io::Result<StopSignal> {
        Ok(StopSignal {
            fd: crate::signals::stop_signalfd()?,
        })
    }

    /// The poll to (re-)arm: one-shot, so it is armed again after each completion.
    pub fn poll(&self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Op::Stop.encode())
    }

    /// After the poll completed: ends the process if a stop signal is pending; otherwise
    /// (another loop took it) returns, and the caller re-arms the poll.
    pub fn completed(&self) {
        crate::signals::stop_if_signalled(&self.fd);
    }
}

/// True for completion errors that mean "the client left" (not a server fault).
pub fn is_disconnect(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED | libc::ETIMEDOUT | libc::ECANCELED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Accept,
            Op::AcceptRetry,
            Op::Cancel(3),
            Op::Recv(0),
            Op::Send(7),
            Op::Recv(1 << 40),
        ] {
            assert_eq!(Op::decode(op.encode()), op);
        }
    }

    #[test]
    fn output_in_flight_is_never_touched() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut conn = Conn::new(OwnedFd::from(a), Protocol::Echo);
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
