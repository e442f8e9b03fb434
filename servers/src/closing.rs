//! How a connection ends when the server, not the client, ends it.
//!
//! **Lingering close.** After a reply that ends the session (a 400 or 431, a transfer `ERR`,
//! `Connection: close`), closing a socket with unread input makes the kernel send a reset,
//! and a reset can destroy the reply before the client has read it. So every model shuts its
//! write side down (the client sees the reply, then EOF), reads and discards whatever still
//! arrives for at most [`LINGER`], and closes once the client closes or the time is up: the
//! lingering close of Apache and nginx.
//!
//! **Idle timeout** (`--idle-timeout`, off by default). A connection that makes no progress
//! (no input consumed by the protocol, no reply byte written) for that long is closed. A
//! slowloris client that sends one byte of an HTTP head at a time makes no progress: the
//! protocol consumes a head only once it is complete.

use std::time::{Duration, Instant};

/// The longest a lingering close waits for the client to close.
pub const LINGER: Duration = Duration::from_secs(2);

/// Event loops look for expired connections at most this often (and at least ten times per
/// idle timeout), so a deadline is kept to within this much.
const SWEEP_MAX: Duration = Duration::from_millis(100);

/// How often an event loop sweeps its connections for deadlines, given the idle timeout.
pub fn sweep_interval(idle_timeout: Option<Duration>) -> Duration {
    match idle_timeout {
        Some(idle) => SWEEP_MAX.min(idle / 10).max(Duration::from_millis(1)),
        None => SWEEP_MAX,
    }
}

/// When a connection last made progress, kept only when an idle timeout is set (no clock is
/// read otherwise).
#[derive(Clone, Copy, Debug)]
pub struct IdleClock {
    timeout: Option<Duration>,
    last: Instant,
}

impl IdleClock {
    pub fn new(timeout: Option<Duration>) -> IdleClock {
        IdleClock {
            timeout,
            last: Instant::now(),
        }
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The connection made progress: the idle time starts again.
    #[inline]
    pub fn progress(&mut self) {
        if self.timeout.is_some() {
            self.last = Instant::now();
        }
    }

    /// How long the connection may stay idle from now; `None` without a timeout (and then
    /// no clock is read).
    #[inline]
    pub fn remaining(&self) -> Option<Duration> {
        self.timeout.map(|t| self.left_at(t, Instant::now()))
    }

    fn left_at(&self, timeout: Duration, now: Instant) -> Duration {
        timeout.saturating_sub(now.saturating_duration_since(self.last))
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.timeout.is_some_and(|t| self.left_at(t, now).is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_clock_expires_only_with_a_timeout() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert!(!IdleClock::new(None).expired(later));
        let clock = IdleClock::new(Some(Duration::from_secs(1)));
        assert!(!clock.expired(now));
        assert!(clock.expired(later));
        assert_eq!(
            sweep_interval(Some(Duration::from_millis(200))),
            Duration::from_millis(20)
        );
        assert_eq!(sweep_interval(Some(Duration::from_secs(60))), SWEEP_MAX);
    }
}
