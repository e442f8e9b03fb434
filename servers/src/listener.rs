//! Creating listening sockets, and accepting without ever spinning on descriptor exhaustion.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Large enough that a burst of thousands of connects waits in the queue instead of failing;
/// the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// How long a blocking acceptor sleeps after EMFILE/ENFILE before it tries again. The pending
/// connections stay in the kernel's queue meanwhile, and are accepted once descriptors free up.
pub const EXHAUSTION_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `count` listeners to `addr`. With more than one they share the port through
/// SO_REUSEPORT, so the kernel spreads incoming connections over them; the first one's port
/// (chosen by the kernel when `addr` has port 0) is used for the others.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket
            .bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
        socket.listen(BACKLOG)?;
        let listener: TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// True for the accept errors that mean "out of descriptors or kernel memory": retrying at
/// once would fail again, so the caller must back off (and keep serving what it has).
pub fn is_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// True for accept errors that concern only the connection being accepted (it was reset
/// while queued, or a signal interrupted the call): accept again.
pub fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    ) || error.kind() == io::ErrorKind::WouldBlock
}

/// Logs a condition that comes in bursts (descriptor exhaustion, refused connections) once
/// per burst, with how many times it happened in all, rather than once per occurrence.
#[derive(Debug, Default)]
pub struct BurstLog {
    in_burst: bool,
    total: u64,
}

impl BurstLog {
    /// Records one occurrence; logs `message` if it starts a burst.
    pub fn hit(&mut self, message: impl FnOnce() -> String) {
        self.total += 1;
        if !self.in_burst {
            self.in_burst = true;
            eprintln!("{} (so far: {})", message(), self.total);
        }
    }

    /// The condition is over; the next occurrence starts a new burst.
    pub fn clear(&mut self) {
        self.in_burst = false;
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Blocking accept for the blocking models: returns the next connection, sleeping through
/// descriptor exhaustion instead of spinning on it. Errors that are not about the listener
/// itself are retried; anything else is returned.
pub fn accept_blocking(
    model: &str,
    listener: &TcpListener,
    exhaustion: &mut BurstLog,
) -> io::Result<TcpStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                exhaustion.clear();
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) if is_transient(&e) => continue,
            Err(e) if is_exhaustion(&e) => {
                exhaustion.hit(|| format!("{model}: accept: {e}; serving open connections, accepting again when descriptors free up"));
                std::thread::sleep(EXHAUSTION_BACKOFF);
            }
            // The listener was shut down to stop the server: wait for the exit rather than
            // race it with a worker's error and teardown.
            Err(_) if crate::signals::stopping() => crate::signals::wait_for_exit(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{model}: accept: {e}"))),
        }
    }
}

/// What an event loop's acceptor keeps between wake-ups.
#[derive(Debug, Default)]
pub struct Acceptor {
    exhaustion: BurstLog,
    paused_until: Option<Instant>,
}

impl Acceptor {
    /// Accepts every pending connection (until EAGAIN, as edge-triggered readiness needs),
    /// each non-blocking with TCP_NODELAY, and hands it to `register`. On descriptor
    /// exhaustion it stops and pauses accepting for [`EXHAUSTION_BACKOFF`]: the loop must stop
    /// watching the listener meanwhile (or it would wake at once, again and again) and call
    /// this again when [`Acceptor::resume_due`] says so.
    pub fn accept_pending(
        &mut self,
        model: &str,
        listener: &TcpListener,
        mut register: impl FnMut(TcpStream) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            // SAFETY: null address pointers are allowed; the flags are valid.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                self.exhaustion.clear();
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                let stream = unsafe { TcpStream::from_raw_fd(fd) };
                stream.set_nodelay(true)?;
                register(stream)?;
                continue;
            }
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::WouldBlock {
                return Ok(());
            } else if is_exhaustion(&error) {
                self.exhaustion.hit(|| format!("{model}: accept: {error}; serving open connections, accepting again when descriptors free up"));
                self.paused_until = Some(Instant::now() + EXHAUSTION_BACKOFF);
                return Ok(());
            } else if !is_transient(&error) {
                return Err(io::Error::new(
                    error.kind(),
                    format!("{model}: accept: {error}"),
                ));
            }
        }
    }

    /// True while accepting is paused after exhaustion: do not watch the listener.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// True once when the pause is over: watch the listener again and accept.
    pub fn resume_due(&mut self) -> bool {
        match self.paused_until {
            Some(until) if Instant::now() >= until => {
                self.paused_until = None;
                true
            }
            _ => false,
        }
    }

    /// How long a wait call may block: until the pause ends, or forever (`None`).
    pub fn timeout(&self) -> Option<Duration> {
        self.paused_until
            .map(|until| until.saturating_duration_since(Instant::now()))
    }

    /// [`Acceptor::timeout`] in milliseconds for poll(2)/epoll_wait(2): rounded up, so the
    /// wait does not return a fraction of a millisecond early and spin until the deadline;
    /// -1 means forever.
    pub fn timeout_ms(&self) -> i32 {
        match self.timeout() {
            None => -1,
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        }
    }
}
