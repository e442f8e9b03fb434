//! Creating listening sockets, and accepting without ever spinning on descriptor exhaustion.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

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
                return Ok(stream);
            }
            Err(e) if is_transient(&e) => continue,
            Err(e) if is_exhaustion(&e) => {
                exhaustion.hit(|| format!("{model}: accept: {e}; serving open connections, accepting again when descriptors free up"));
                std::thread::sleep(EXHAUSTION_BACKOFF);
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{model}: accept: {e}"))),
        }
    }
}
