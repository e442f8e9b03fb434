//! Termination and child signals, handled on one dedicated thread.
//!
//! Before any other thread exists, `main` blocks SIGTERM, SIGINT and SIGCHLD; every thread
//! created afterwards inherits that mask, so those signals stay pending until the signal
//! thread dequeues them with sigwaitinfo. No async-signal-safety puzzles, no EINTR in the
//! models' blocking calls: SIGCHLD reaps children, SIGTERM/SIGINT end the process.
//!
//! The completion models hear SIGTERM/SIGINT in band instead: each loop keeps a poll on a
//! signalfd in its ring and ends the process itself when it completes ([`Stop::InBand`]).
//! A loop that only ever waits in io_uring_enter then needs no other thread to be scheduled
//! for the server to stop; valgrind before 3.20 (which the CI gate runs servers under) does
//! not treat io_uring_enter as a call that may block and so runs no other thread while one
//! waits there.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::children::CHILDREN;

static STOPPING: AtomicBool = AtomicBool::new(false);

/// True once SIGTERM or SIGINT arrived: the listeners are being shut down, so an accept that
/// fails now is the server stopping, not a fault.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// For a thread whose accept failed because the server is stopping: wait for the signal
/// thread to end the process with status 0.
pub fn wait_for_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// The listening sockets, so the signal thread can stop accepting on every one of them.
static LISTENERS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Registers a listening socket to be shut down when the server stops.
pub fn on_stop_shut_down(fd: i32) {
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner()).push(fd);
}

/// Stops accepting: shutdown(2) takes each listener out of LISTEN at once, even while an
/// io_uring accept in flight (torn down by the kernel only after the process exits) still
/// holds a reference to it, so the port is free when the server has exited.
fn stop_accepting() {
    for &fd in LISTENERS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        // SAFETY: shutdown takes plain integers; a descriptor closed meanwhile only fails.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// A signal set holding `signals`.
pub fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and modify the local set only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

fn termination_set() -> libc::sigset_t {
    sigset(&[libc::SIGTERM, libc::SIGINT, libc::SIGCHLD])
}

/// The realtime signal `sigio` asks the kernel to queue for descriptor events (the first
/// one glibc leaves to applications).
pub fn io_signal() -> i32 {
    libc::SIGRTMIN()
}

/// Who ends the process on SIGTERM or SIGINT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The signal thread (every model but the completion ones).
    SignalThread,
    /// The event loops, through [`stop_signalfd`]; the signal thread only reaps children.
    InBand,
}

/// A non-blocking signalfd for the stop signals, for a loop that hears them in band: when it
/// polls readable, read it with [`stop_if_signalled`].
pub fn stop_signalfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let set = sigset(&[libc::SIGTERM, libc::SIGINT]);
    // SAFETY: `set` is valid; -1 asks for a new descriptor, which we then own.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// After a poll on a [`stop_signalfd`] completed: ends the process if a stop signal was
/// pending (another loop may have taken it first; then this returns and the poll is re-armed).
pub fn stop_if_signalled(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: signalfd_siginfo is plain data; all zeroes is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    if n == size as isize {
        stop();
    }
}

/// Ends the server: stop accepting, stop forking, end and reap every child, exit 0. Open
/// sockets, threads and io_uring instances go with the process; nothing is buffered on stdout
/// after `listening`. The first caller does it; any other parks until the process is gone.
pub fn stop() -> ! {
    if STOPPING.swap(true, Ordering::AcqRel) {
        wait_for_exit();
    }
    stop_accepting();
    CHILDREN.terminate_all();
    std::process::exit(0);
}

/// Blocks the signals in the calling thread (and so in every thread it creates later) and
/// starts the signal thread. Call first thing in `main`.
///
/// The I/O signals of `sigio` are blocked too, everywhere: their default action is to end the
/// process, and they are only ever dequeued with sigtimedwait by the loop they are sent to.
pub fn start_signal_thread(who_stops: Stop) -> io::Result<()> {
    let set = sigset(&[
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGCHLD,
        libc::SIGIO,
        io_signal(),
    ]);
    // SAFETY: `set` is a valid, initialised sigset_t; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let set = match who_stops {
        Stop::SignalThread => termination_set(),
        Stop::InBand => sigset(&[libc::SIGCHLD]),
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            // SAFETY: `set` is valid; a null info pointer is allowed.
            let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
            match signal {
                libc::SIGCHLD => CHILDREN.reap(),
                libc::SIGTERM | libc::SIGINT => stop(),
                _ => {} // EINTR
            }
        })?;
    Ok(())
}

/// In a forked child: unblock the signals so SIGTERM from the parent ends it at once.
pub fn unblock_in_child() {
    let set = termination_set();
    // SAFETY: `set` is valid; only the calling (the child's only) thread is affected.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}
