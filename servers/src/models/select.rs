//! `select`: select(2) over two `fd_set` bitmaps.
//!
//! Before every call the loop rebuilds the read and write sets from each connection's
//! interest (select overwrites them), the kernel scans every descriptor below `nfds`, and the
//! loop scans them again with FD_ISSET: three passes over all open connections per wait.
//! An `fd_set` holds descriptors below FD_SETSIZE (1024) only, and FD_SET with a larger one
//! writes past the bitmap. So a connection whose descriptor is FD_SETSIZE or more is closed
//! right after accept, counted, and logged once per burst: this model serves at most about
//! 1000 clients at once. Readiness is level-triggered.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use super::{run_loops, Config};
use crate::connection::{Connection, Connections, Next, Trigger, SCRATCH_SIZE};
use crate::listener::{Acceptor, BurstLog};

pub const FD_SETSIZE: i32 = libc::FD_SETSIZE as i32;

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listen_fd = listener.as_raw_fd();
    let mut connections = Connections::new(config);
    let mut acceptor = Acceptor::default();
    let mut refused = BurstLog::default();
    let mut scratch = vec![0u8; SCRATCH_SIZE];
    loop {
        let mut read_set = FdSet::new();
        let mut write_set = FdSet::new();
        let mut max_fd = listen_fd;
        if !acceptor.is_paused() {
            read_set.insert(listen_fd);
        }
        for connection in connections.iter_mut() {
            let (fd, interest) = (connection.fd(), connection.interest());
            if interest.read {
                read_set.insert(fd);
            }
            if interest.write {
                write_set.insert(fd);
            }
            max_fd = max_fd.max(fd);
        }
        let mut timeout = connections
            .wait_for(acceptor.timeout())
            .map(|t| libc::timeval {
                tv_sec: t.as_secs() as _,
                tv_usec: t.subsec_micros() as _,
            });
        let timeout_ptr = timeout
            .as_mut()
            .map_or(std::ptr::null_mut(), |t| t as *mut _);
        // SAFETY: both sets are valid fd_sets holding only descriptors below FD_SETSIZE;
        // the timeout is null (block) or points to a live timeval.
        let ready = unsafe {
            libc::select(
                max_fd + 1,
                &mut read_set.0,
                &mut write_set.0,
                std::ptr::null_mut(),
                timeout_ptr,
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        for fd in 0..=max_fd {
            if fd == listen_fd || !(read_set.contains(fd) || write_set.contains(fd)) {
                continue;
            }
            if connections.drive(fd, Trigger::Level, &mut scratch) == Some(Next::Close) {
                connections.remove(fd);
            }
        }
        // Lingering closes and idle connections past their deadline (crate::closing).
        for fd in connections.expired() {
            connections.remove(fd);
        }
        if read_set.contains(listen_fd) || acceptor.resume_due() {
            acceptor.accept_pending("select", &listener, |stream| {
                if stream.as_raw_fd() >= FD_SETSIZE {
                    refused.hit(|| format!("select: descriptor {} is past FD_SETSIZE ({FD_SETSIZE}); closing such connections", stream.as_raw_fd()));
                    return Ok(()); // dropped: closed, never passed to FD_SET
                }
                refused.clear();
                connections.insert(Connection::new(stream, config));
                Ok(())
            })?;
        }
    }
}

/// An `fd_set` that only ever holds descriptors below FD_SETSIZE.
struct FdSet(libc::fd_set);

impl FdSet {
    fn new() -> FdSet {
        // SAFETY: an all-zero fd_set is valid; FD_ZERO makes it empty explicitly.
        let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid fd_set.
        unsafe { libc::FD_ZERO(&mut set) };
        FdSet(set)
    }

    fn insert(&mut self, fd: i32) {
        assert!(
            (0..FD_SETSIZE).contains(&fd),
            "fd {fd} outside FD_SETSIZE reached FD_SET"
        );
        // SAFETY: 0 <= fd < FD_SETSIZE, checked above.
        unsafe { libc::FD_SET(fd, &mut self.0) };
    }

    fn contains(&self, fd: i32) -> bool {
        // SAFETY: FD_ISSET reads only; callers pass 0 <= fd <= max_fd < FD_SETSIZE.
        (0..FD_SETSIZE).contains(&fd) && unsafe { libc::FD_ISSET(fd, &self.0) }
    }
}
