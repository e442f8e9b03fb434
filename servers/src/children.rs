//! The child processes of the process-based models (`fork`, `prefork`): forked, counted,
//! reaped on SIGCHLD, and all terminated and reaped on shutdown.
//!
//! One registry per server process. The signal thread reaps (see `signals`), the model's
//! thread forks; a lock around `fork` and `terminate_all` guarantees that no child is forked
//! after shutdown began, so none outlives the server.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// After SIGTERM, how long children get to exit before they are killed outright.
const TERMINATE_GRACE: Duration = Duration::from_millis(700);

pub static CHILDREN: Children = Children::new();

pub struct Children {
    state: Mutex<State>,
    exited: Condvar,
}

struct State {
    live: BTreeSet<libc::pid_t>,
    stopping: bool,
}

impl Children {
    const fn new() -> Children {
        Children {
            state: Mutex::new(State {
                live: BTreeSet::new(),
                stopping: false,
            }),
            exited: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the set inconsistent (each operation
        // is a single insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many children are alive (forked and not yet reaped).
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    /// Forks a child that runs `child` and exits with its return value. In the parent, `child`
    /// is dropped (closing, for example, the parent's copy of an accepted socket).
    /// Returns `Ok(None)` without forking once shutdown has begun.
    pub fn fork(&self, child: impl FnOnce() -> i32) -> io::Result<Option<libc::pid_t>> {
        let mut state = self.lock();
        if state.stopping {
            return Ok(None);
        }
        // SAFETY: fork has no memory-safety preconditions. The child runs only `child` and
        // then `_exit`s, never returning into the parent's code or unwinding through it; the
        // only other threads of this process (the signal thread, blocked in sigwaitinfo)
        // hold no lock that the child's code takes; glibc's fork resets the malloc locks.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                prepare_child();
                let code =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
                // SAFETY: _exit ends the child at once, without running the parent's atexit
                // handlers or flushing buffers that belong to the parent.
                unsafe { libc::_exit(code) }
            }
            pid => {
                state.live.insert(pid);
                Ok(Some(pid))
            }
        }
    }

    /// Reaps every child that has exited, without blocking. Called on SIGCHLD.
    pub fn reap(&self) {
        let mut state = self.lock();
        let mut any = false;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only into `status`, a valid i32.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            state.live.remove(&pid);
            any = true;
        }
        if any {
            self.exited.notify_all();
        }
    }

    /// Blocks until fewer than `n` children are alive; returns how many are.
    pub fn wait_below(&self, n: usize) -> usize {
        let mut state = self.lock();
        while state.live.len() >= n {
            state = self.exited.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.live.len()
    }

    /// Stops forking, sends SIGTERM to every child, and reaps them all; a child still alive
    /// after a short grace period gets SIGKILL. Returns when no child is left.
    pub fn terminate_all(&self) {
        let mut state = self.lock();
        state.stopping = true;
        for &pid in &state.live {
            // SAFETY: kill has no memory effects; `pid` is our unreaped child, so it cannot
            // have been recycled for another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + TERMINATE_GRACE;
        while !state.live.is_empty() {
            let mut status = 0;
            // SAFETY: as in `reap`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                state.live.remove(&pid);
            } else if pid < 0 {
                break; // ECHILD: nothing left to wait for.
            } else if Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            } else {
                for &pid in &state.live {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        state.live.clear();
    }
}

/// In a freshly forked child: take the default signal dispositions back (the parent blocks
/// termination signals and leaves them to its signal thread, which the child does not have),
/// and die with the parent if it is killed outright.
fn prepare_child() {
    crate::signals::unblock_in_child();
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}
