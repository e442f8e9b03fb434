//! The connection loop every blocking model runs: read, let the protocol act, write it all.
//!
//! Backpressure needs no bookkeeping here: `write_all` blocks while the client is not reading,
//! and while it blocks nothing more is read, so a connection never holds more than one input
//! buffer and one high-water mark of output.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::closing::{IdleClock, LINGER};
use crate::protocol::{Protocol, Session, HIGH_WATER};

/// Bytes read per `read` call; also the input buffer's size.
const INPUT_CAPACITY: usize = 64 * 1024;
const _: () = assert!(INPUT_CAPACITY >= crate::protocol::MIN_INPUT_CAPACITY);

/// Serves one client until it closes, resets, the protocol ends the session (then a
/// lingering close), or it stays idle past `idle_timeout`.
///
/// EOF, ECONNRESET and EPIPE end this connection only; they are returned as `Ok` because they
/// are how clients leave, not server faults; so is an idle timeout.
pub fn serve(
    stream: &mut TcpStream,
    protocol: Protocol,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    match run(stream, protocol, idle_timeout) {
        Err(e) if is_disconnect(&e) || is_timeout(&e) => Ok(()),
        other => other,
    }
}

fn run(
    stream: &mut TcpStream,
    protocol: Protocol,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    let mut idle = IdleClock::new(idle_timeout);
    // A write that makes no progress for the idle timeout fails with EAGAIN.
    stream.set_write_timeout(idle_timeout)?;
    let mut session = Session::new(protocol);
    let mut input = vec![0u8; INPUT_CAPACITY];
    let (mut start, mut end) = (0, 0);
    let mut output = Vec::with_capacity(HIGH_WATER);
    let mut eof = false;
    loop {
        let step = session.advance(&input[start..end], &mut output, HIGH_WATER);
        start += step.consumed;
        if start == end {
            (start, end) = (0, 0);
        }
        if step.consumed > 0 {
            idle.progress();
        }
        if !output.is_empty() {
            stream.write_all(&output)?;
            output.clear();
            idle.progress();
        }
        if step.close {
            if !eof {
                linger(stream, &mut input);
            }
            return Ok(());
        }
        // More can be done without reading: a download still streaming, or pipelined input
        // that the output limit held back.
        if session.is_streaming() || (step.consumed > 0 && start < end) {
            continue;
        }
        if eof {
            // Half-close: everything the client sent has been answered.
            return Ok(());
        }
        if end == input.len() {
            if start == 0 {
                // Unreachable with the protocols' limits (an HTTP head is refused at 8 KiB).
                return Err(io::Error::other("request larger than the input buffer"));
            }
            input.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if let Some(left) = idle.remaining() {
            if left.is_zero() {
                return Ok(()); // idle too long: close
            }
            stream.set_read_timeout(Some(left))?;
        }
        match stream.read(&mut input[end..]) {
            Ok(0) => eof = true,
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {} // the idle check above decides
            Err(e) => return Err(e),
        }
    }
}

/// Lingering close (see `crate::closing`): shut the write side, discard input until the
/// client closes or [`LINGER`] has passed. The caller's drop then closes the socket.
pub fn linger(stream: &mut TcpStream, scratch: &mut [u8]) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A socket timeout (SO_RCVTIMEO, SO_SNDTIMEO) ran out.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The ways a client leaves that are not errors of the server.
pub fn is_disconnect(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}
