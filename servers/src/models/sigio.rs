//! `sigio`: signal-driven I/O with a realtime signal per descriptor event.
//!
//! Each socket is set O_ASYNC|O_NONBLOCK, owned by this loop's thread (F_SETOWN_EX with
//! F_OWNER_TID) and given a realtime signal (F_SETSIG), so the kernel queues one signal per
//! readiness change carrying the descriptor (`si_fd`) and the event bits (`si_band`). The
//! signal is blocked and dequeued synchronously with `sigtimedwait`, so no handler runs and
//! nothing is async-signal-unsafe. Signals report changes, not states: like edge-triggered
//! epoll, each one is followed to EAGAIN.
//!
//! The realtime queue is bounded (RLIMIT_SIGPENDING, logged at start). When it is full the
//! kernel sends a plain SIGIO instead and the lost signals are gone: the loop then sweeps every
//! descriptor with one poll(2), counts the overflow, and carries on.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::{run_loops, Config};
use crate::connection::{Connection, Connections, Next, Trigger, SCRATCH_SIZE};
use crate::listener::{Acceptor, BurstLog};
use crate::signals::{io_signal, sigset};

// From <fcntl.h>; the libc crate does not export them for Linux glibc.
const F_SETSIG: i32 = 10;
const F_SETOWN_EX: i32 = 15;
const F_OWNER_TID: i32 = 0;

/// `struct f_owner_ex`: who gets a descriptor's signals (here: one thread).
#[repr(C)]
struct OwnerEx {
    kind: i32,
    pid: libc::pid_t,
}

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`, a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut limit) };
    eprintln!(
        "sigio: RLIMIT_SIGPENDING is {} queued signals; beyond it, SIGIO and a poll(2) sweep",
        limit.rlim_cur
    );
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    let signal = io_signal();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let listen_fd = listener.as_raw_fd();
    arm(listen_fd, signal, tid)?;
    let waited = sigset(&[signal, libc::SIGIO]);
    let mut connections = Connections::new(config);
    let mut acceptor = Acceptor::default();
    let mut overflows = BurstLog::default();
    let mut scratch = vec![0u8; SCRATCH_SIZE];
    // A connection arriving before the listener was armed raised no signal: look once.
    let mut accept = true;
    loop {
        if accept || acceptor.resume_due() {
            accept = false;
            acceptor.accept_pending("sigio", &listener, |stream| {
                arm(stream.as_raw_fd(), signal, tid)?;
                let connection = Connection::new(stream, config);
                // Bytes that arrived before O_ASYNC was set raised no signal either.
                let fd = connection.fd();
                connections.insert(connection);
                drive(&mut connections, fd, &mut scratch);
                Ok(())
            })?;
        }
        // Lingering closes and idle connections past their deadline (crate::closing).
        for fd in connections.expired() {
            connections.remove(fd);
        }
        let Some((signo, fd)) = wait(&waited, connections.wait_for(acceptor.timeout()))? else {
            continue; // timed out (accept pause or a sweep due) or interrupted
        };
        if signo == libc::SIGIO {
            overflows.hit(|| {
                format!(
                    "sigio: realtime signal queue overflowed; sweeping {} descriptors with poll(2)",
                    connections.len() + 1
                )
            });
            accept = sweep(&mut connections, listen_fd, &mut scratch)?;
        } else if fd == listen_fd {
            accept = !acceptor.is_paused();
        } else {
            overflows.clear();
            drive(&mut connections, fd, &mut scratch);
        }
    }
}

/// Follows one descriptor's event to EAGAIN; closes the connection when it is done. A
/// signal for a descriptor already closed (and maybe reused) only costs an EAGAIN.
fn drive(connections: &mut Connections, fd: RawFd, scratch: &mut [u8]) {
    if connections.drive(fd, Trigger::EdgeToEagain, scratch) == Some(Next::Close) {
        connections.remove(fd);
    }
}

/// Routes a descriptor's readiness changes to `signal`, queued for thread `tid`.
fn arm(fd: RawFd, signal: i32, tid: libc::pid_t) -> io::Result<()> {
    let owner = OwnerEx {
        kind: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY: fcntl with these commands takes a pointer to a valid f_owner_ex, or an int.
    let failed = unsafe {
        libc::fcntl(fd, F_SETOWN_EX, &owner) < 0
            || libc::fcntl(fd, F_SETSIG, signal) < 0
            || libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_ASYNC,
            ) < 0
    };
    if failed {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Dequeues the next signal of `set`; returns it with the descriptor it is about.
fn wait(set: &libc::sigset_t, timeout: Option<Duration>) -> io::Result<Option<(i32, RawFd)>> {
    // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let timeout = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: `set` and `info` are valid; the timeout is null (block) or a live timespec.
    let signo = unsafe { libc::sigtimedwait(set, &mut info, timeout_ptr) };
    if signo < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(None),
            _ => Err(error),
        };
    }
    Ok(Some((signo, poll_fd(&info))))
}

/// `si_fd` of a SIGPOLL-style siginfo: in the kernel's layout the union after the three int
/// header fields starts 8-byte aligned and holds `long si_band; int si_fd;`.
fn poll_fd(info: &libc::siginfo_t) -> RawFd {
    #[repr(C)]
    struct SigPoll {
        signo: i32,
        errno: i32,
        code: i32,
        band: libc::c_long,
        fd: i32,
    }
    const _: () = assert!(std::mem::size_of::<SigPoll>() <= std::mem::size_of::<libc::siginfo_t>());
    // SAFETY: siginfo_t is larger than SigPoll and at least as aligned; repr(C) puts `band`
    // at the same 8-aligned offset as the kernel's union, and every bit pattern is valid.
    let poll = unsafe { &*(info as *const libc::siginfo_t as *const SigPoll) };
    poll.fd
}

/// After an overflow: one poll(2) over every descriptor, and each ready one followed to
/// EAGAIN. Returns whether the listener is ready.
fn sweep(connections: &mut Connections, listen_fd: RawFd, scratch: &mut [u8]) -> io::Result<bool> {
    let mut fds: Vec<libc::pollfd> = std::iter::once(listen_fd)
        .chain(connections.fds())
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries; timeout 0 never blocks.
    if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for pollfd in &fds[1..] {
        if pollfd.revents != 0 {
            drive(connections, pollfd.fd, scratch);
        }
    }
    Ok(fds[0].revents != 0)
}
