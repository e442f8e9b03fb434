//! Termination and child signals, handled on one dedicated thread.
//!
//! Before any other thread exists, `main` blocks SIGTERM, SIGINT and SIGCHLD; every thread
//! created afterwards inherits that mask, so those signals stay pending until the signal
//! thread dequeues them with sigwaitinfo. No async-signal-safety puzzles, no EINTR in the
//! models' blocking calls: SIGCHLD reaps children, SIGTERM/SIGINT end the process.

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

/// Blocks the signals in the calling thread (and so in every thread it creates later) and
/// starts the signal thread. Call first thing in `main`.
///
/// The I/O signals of `sigio` are blocked too, everywhere: their default action is to end the
/// process, and they are only ever dequeued with sigtimedwait by the loop they are sent to.
pub fn start_signal_thread() -> io::Result<()> {
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
    let set = termination_set();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            // SAFETY: `set` is valid; a null info pointer is allowed.
            let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
            match signal {
                libc::SIGCHLD => CHILDREN.reap(),
                libc::SIGTERM | libc::SIGINT => {
                    // Stop accepting, stop forking, end and reap every child; open sockets,
                    // threads and io_uring instances go with the process. Nothing is
                    // buffered on stdout after `listening`.
                    STOPPING.store(true, Ordering::Release);
                    stop_accepting();
                    CHILDREN.terminate_all();
                    std::process::exit(0);
                }
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
