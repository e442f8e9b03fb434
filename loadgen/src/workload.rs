//! What one request is and how its reply is verified, for each protocol; no sockets here.
//!
//! Every request differs from the one before (echo payloads carry the connection and the
//! sequence number), so a stale, misordered or corrupted reply is caught byte by byte.

use std::sync::{Arc, LazyLock};

use crate::http;

/// How a verified exchange can fail; each counts in its own error class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The reply's bytes differ from what was sent or expected.
    Mismatch,
    /// The reply is not what the protocol allows (bad status line, bad `OK` line, extra bytes).
    Protocol,
}

/// What a connection sends and expects back.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Send `size` bytes, expect the same bytes back.
    Echo { size: usize },
    /// The same HTTP request on every connection (by default a keep-alive `GET /`, expecting
    /// 200 with `Hello, World!`).
    Http(Arc<http::Spec>),
    /// Alternate `PUT <size>` (expect `OK <size> <crc32c>`) and `GET <size>` (expect the pattern).
    Bulk { size: u64 },
}

/// Result of feeding reply bytes to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More reply bytes are needed.
    More,
    /// The reply is complete and correct.
    Done,
    /// The reply is complete and correct, and the server ends the connection after it
    /// (`Connection: close`, HTTP/1.0, a body that ran to the close).
    DoneClose,
}

/// One request in flight: the bytes still to send and the reply still expected.
pub struct Request {
    head: Head,
    sent: usize,
    /// Upload body still to send (bulk PUT), streamed from [`UPLOAD`].
    body_left: u64,
    body_offset: usize,
    crc: u32,
    reply: Reply,
    /// Payload bytes of this request: uploaded (PUT) or downloaded (GET) for bulk.
    pub up_bytes: u64,
    pub down_bytes: u64,
}

/// A request's first bytes: its own (echo, transfer), or the run's one HTTP request, shared.
enum Head {
    Own(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for Head {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Head::Own(bytes) => bytes,
            Head::Shared(bytes) => bytes,
        }
    }
}

enum Reply {
    Echo { received: usize },
    Http(http::Reply),
    PutAck { line: Vec<u8>, size: u64 },
    Download { received: u64, size: u64 },
}

/// Upload bytes: a fixed pseudo-random block, sent from a rotating offset.
static UPLOAD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..UPLOAD_BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
});
const UPLOAD_BLOCK: usize = 64 * 1024;

/// The download pattern (byte i is (i*31+7) % 251), as the server defines it; a table long
/// enough that any window of `WINDOW` bytes at any phase is one slice.
const PERIOD: usize = 251;
const WINDOW: usize = 16 * 1024;
static PATTERN: LazyLock<Vec<u8>> = LazyLock::new(|| {
    (0..PERIOD + WINDOW)
        .map(|i| ((i * 31 + 7) % PERIOD) as u8)
        .collect()
});

impl Workload {
    /// The `seq`-th request of connection `conn`.
    pub fn request(&self, conn: u32, seq: u64) -> Request {
        let (head, body_left, reply) = match self {
            Workload::Echo { size } => (
                Head::Own(echo_payload(conn, seq, *size)),
                0,
                Reply::Echo { received: 0 },
            ),
            Workload::Http(spec) => (
                Head::Shared(Arc::clone(&spec.bytes)),
                0,
                Reply::Http(http::Reply::new(Arc::clone(spec))),
            ),
            Workload::Bulk { size } if seq.is_multiple_of(2) => (
                Head::Own(format!("PUT {size}\n").into_bytes()),
                *size,
                Reply::PutAck {
                    line: Vec::new(),
                    size: *size,
                },
            ),
            Workload::Bulk { size } => (
                Head::Own(format!("GET {size}\n").into_bytes()),
                0,
                Reply::Download {
                    received: 0,
                    size: *size,
                },
            ),
        };
        Request {
            head,
            sent: 0,
            body_left,
            body_offset: (seq as usize).wrapping_mul(4099) % UPLOAD_BLOCK,
            crc: 0,
            reply,
            up_bytes: body_left,
            down_bytes: 0,
        }
    }
}

/// Echo payload: connection and sequence number up front, then bytes that depend on both.
fn echo_payload(conn: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut tag = [0u8; 12];
    tag[..8].copy_from_slice(&seq.to_le_bytes());
    tag[8..].copy_from_slice(&conn.to_le_bytes());
    let fill = (seq as u8).wrapping_mul(31).wrapping_add(conn as u8);
    (0..size)
        .map(|i| match tag.get(i) {
            Some(&b) => b,
            None => fill.wrapping_add(i as u8),
        })
        .collect()
}

impl Request {
    /// The next bytes to write, or `None` when the whole request is sent.
    pub fn unsent(&self) -> Option<&[u8]> {
        if self.sent < self.head.len() {
            return Some(&self.head[self.sent..]);
        }
        if self.body_left > 0 {
            let end = (self.body_offset + self.body_left as usize).min(UPLOAD_BLOCK);
            return Some(&UPLOAD[self.body_offset..end]);
        }
        None
    }

    /// Records that `n` bytes of [`Request::unsent`] were written.
    pub fn advance(&mut self, n: usize) {
        if self.sent < self.head.len() {
            self.sent += n;
            return;
        }
        let chunk = &UPLOAD[self.body_offset..self.body_offset + n];
        self.crc = crc32c::crc32c_append(self.crc, chunk);
        self.body_left -= n as u64;
        self.body_offset = (self.body_offset + n) % UPLOAD_BLOCK;
    }

    /// The server closed the connection while this request was in flight: the end of an
    /// HTTP body that runs to the close, or `None` when the reply was cut short.
    pub fn eof(&mut self) -> Option<Result<Progress, Failure>> {
        match &mut self.reply {
            Reply::Http(reply) => reply.eof(),
            _ => None,
        }
    }

    /// Feeds reply bytes; all of `data` belongs to this request (one request in flight).
    pub fn receive(&mut self, data: &[u8]) -> Result<Progress, Failure> {
        match &mut self.reply {
            Reply::Echo { received } => {
                let expected = self
                    .head
                    .get(*received..*received + data.len())
                    .ok_or(Failure::Protocol)?;
                if expected != data {
                    return Err(Failure::Mismatch);
                }
                *received += data.len();
                Ok(if *received == self.head.len() {
                    Progress::Done
                } else {
                    Progress::More
                })
            }
            Reply::Http(reply) => reply.receive(data),
            Reply::PutAck { line, size } => {
                line.extend_from_slice(data);
                let Some(end) = line.iter().position(|&b| b == b'\n') else {
                    return if line.len() > 64 {
                        Err(Failure::Protocol)
                    } else {
                        Ok(Progress::More)
                    };
                };
                if end + 1 != line.len() {
                    return Err(Failure::Protocol);
                }
                let expected = format!("OK {size} {:08x}\n", self.crc);
                if line.starts_with(b"OK ") && line.as_slice() != expected.as_bytes() {
                    return Err(Failure::Mismatch);
                }
                if line.as_slice() != expected.as_bytes() {
                    return Err(Failure::Protocol);
                }
                Ok(Progress::Done)
            }
            Reply::Download { received, size } => {
                if *received + data.len() as u64 > *size {
                    return Err(Failure::Protocol);
                }
                for chunk in data.chunks(WINDOW) {
                    let phase = (*received % PERIOD as u64) as usize;
                    if chunk != &PATTERN[phase..phase + chunk.len()] {
                        return Err(Failure::Mismatch);
                    }
                    *received += chunk.len() as u64;
                }
                self.down_bytes = *received;
                Ok(if *received == *size {
                    Progress::Done
                } else {
                    Progress::More
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_all(request: &mut Request) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = request.unsent() {
            let n = chunk.len().min(1000);
            out.extend_from_slice(&chunk[..n]);
            request.advance(n);
        }
        out
    }

    #[test]
    fn echo_requests_differ_and_verify() {
        let w = Workload::Echo { size: 128 };
        let (mut a, b) = (w.request(1, 5), w.request(1, 6));
        let sent = send_all(&mut a);
        assert_ne!(sent, &*b.head, "consecutive requests differ");
        assert_eq!(a.receive(&sent[..100]), Ok(Progress::More));
        assert_eq!(a.receive(&sent[100..]), Ok(Progress::Done));
        let mut c = w.request(1, 7);
        let mut stale = send_all(&mut c);
        stale[20] ^= 1;
        assert_eq!(c.receive(&stale), Err(Failure::Mismatch));
        assert_eq!(
            w.request(1, 8).receive(&b.head),
            Err(Failure::Mismatch),
            "a stale reply is caught"
        );
    }

    #[test]
    fn http_reply_verified() {
        let spec = http::Spec::new(http::Settings::hello("x"), None).unwrap();
        let w = Workload::Http(Arc::new(spec));
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
        let mut r = w.request(0, 0);
        assert_eq!(r.receive(&ok[..20]), Ok(Progress::More));
        assert_eq!(r.receive(&ok[20..]), Ok(Progress::Done));
        let mut r = w.request(0, 0);
        assert_eq!(
            r.receive(b"HTTP/1.1 500 Oops\r\nContent-Length: 13\r\n\r\n"),
            Err(Failure::Mismatch)
        );
        let mut r = w.request(0, 0);
        assert_eq!(
            r.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!"),
            Err(Failure::Mismatch)
        );
    }

    #[test]
    fn bulk_put_crc_and_get_pattern() {
        let w = Workload::Bulk { size: 200_000 };
        let mut put = w.request(0, 0);
        let sent = send_all(&mut put);
        let body = &sent[b"PUT 200000\n".len()..];
        assert_eq!(body.len(), 200_000);
        let ack = format!("OK 200000 {:08x}\n", crc32c::crc32c(body));
        assert_eq!(put.receive(ack.as_bytes()), Ok(Progress::Done));
        let mut bad = w.request(0, 2);
        send_all(&mut bad);
        assert_eq!(bad.receive(b"OK 200000 00000000\n"), Err(Failure::Mismatch));

        let mut get = w.request(0, 1);
        assert_eq!(send_all(&mut get), b"GET 200000\n");
        let data: Vec<u8> = (0..200_000u64)
            .map(|i| ((i * 31 + 7) % 251) as u8)
            .collect();
        assert_eq!(get.receive(&data[..70_000]), Ok(Progress::More));
        assert_eq!(get.receive(&data[70_000..]), Ok(Progress::Done));
        let mut get = w.request(0, 3);
        let mut wrong = data.clone();
        wrong[123_456] ^= 0x40;
        assert_eq!(get.receive(&wrong), Err(Failure::Mismatch));
    }
}
