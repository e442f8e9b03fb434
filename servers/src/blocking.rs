//! The connection loop every blocking model runs: read, let the protocol act, write it all.
//!
//! Backpressure needs no bookkeeping here: `write_all` blocks while the client is not reading,
//! and while it blocks nothing more is read, so a connection never holds more than one input
//! buffer and one high-water mark of output.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::protocol::{Protocol, Session, HIGH_WATER};

/// Bytes read per `read` call; also the input buffer's size.
const INPUT_CAPACITY: usize = 64 * 1024;
const _: () = assert!(INPUT_CAPACITY >= crate::protocol::MIN_INPUT_CAPACITY);

/// Serves one client until it closes, resets, or the protocol ends the session.
///
/// EOF, ECONNRESET and EPIPE end this connection only; they are returned as `Ok` because they
/// are how clients leave, not server faults.
pub fn serve(stream: &mut TcpStream, protocol: Protocol) -> io::Result<()> {
    match run(stream, protocol) {
        Err(e) if is_disconnect(&e) => Ok(()),
        other => other,
    }
}

fn run(stream: &mut TcpStream, protocol: Protocol) -> io::Result<()> {
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
        if !output.is_empty() {
            stream.write_all(&output)?;
            output.clear();
        }
        if step.close {
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
        match stream.read(&mut input[end..]) {
            Ok(0) => eof = true,
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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
