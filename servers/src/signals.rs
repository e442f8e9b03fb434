//! Termination and child signals, handled on one dedicated thread.
//!
//! Before any other thread exists, `main` blocks SIGTERM, SIGINT and SIGCHLD; every thread
//! created afterwards inherits that mask, so those signals stay pending until the signal
//! thread dequeues them with sigwaitinfo. No async-signal-safety puzzles, no EINTR in the
//! models' blocking calls: SIGCHLD reaps children, SIGTERM/SIGINT end the process.

use std::io;

use crate::children::CHILDREN;

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
                    // Stop forking, end and reap every child; open sockets and threads go
                    // with the process. Nothing is buffered on stdout after `listening`.
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
