//! `http`: HTTP/1.1 parsed with `httparse`.
//!
//! `GET` (any path) answers 200 with the body `Hello, World!`. Keep-alive is the default for
//! HTTP/1.1, `Connection: close` is honoured, and pipelined requests are answered in order.
//! A malformed request gets 400 and a close; a head over [`MAX_HEAD`] bytes gets 431 and a
//! close; any other method gets 405. A request body announced by `Content-Length` is skipped
//! so the next pipelined request is found; a body in `Transfer-Encoding` (chunked) is not
//! parsed, so such a request is answered and the connection closed after it.

use super::Step;

/// The largest request head (request line and headers, with the blank line) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// More headers than this in one request is treated like an oversized head (431).
const MAX_HEADERS: usize = 64;

pub const BODY: &[u8] = b"Hello, World!";

const OK_KEEP_ALIVE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
const OK_KEEP_ALIVE_10: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, World!";
const METHOD_NOT_ALLOWED: &[u8] = b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n";
const METHOD_NOT_ALLOWED_BODY: &[u8] = b"Method Not Allowed\n";
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n";
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n";

#[derive(Debug, Default)]
pub struct Http {
    /// Bytes of the current request's body still to be skipped.
    skip: u64,
    /// Close once the body being skipped is gone (set with `skip`).
    close_after_skip: bool,
}

/// What a parsed head asks of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persistence {
    /// HTTP/1.1 default: keep the connection.
    KeepAlive,
    /// HTTP/1.0 with `Connection: keep-alive`: keep it, and say so in the reply.
    KeepAlive10,
    /// `Connection: close`, or HTTP/1.0 without keep-alive, or a body we cannot skip.
    Close,
}

/// A request head reduced to what the server acts on.
struct Head {
    len: usize,
    is_get: bool,
    persistence: Persistence,
    body: u64,
}

enum Parsed {
    Complete(Head),
    Partial,
    Reject(&'static [u8]),
}

impl Http {
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Step {
        let mut consumed = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min((input.len() - consumed) as u64);
                self.skip -= n;
                consumed += n as usize;
                if self.skip > 0 {
                    return Step {
                        consumed,
                        close: false,
                    };
                }
                if self.close_after_skip {
                    return Step {
                        consumed,
                        close: true,
                    };
                }
            }
            if out.len() >= limit || consumed == input.len() {
                return Step {
                    consumed,
                    close: false,
                };
            }
            let head = match parse(&input[consumed..]) {
                Parsed::Partial => {
                    return Step {
                        consumed,
                        close: false,
                    }
                }
                Parsed::Reject(reply) => {
                    out.extend_from_slice(reply);
                    return Step {
                        consumed: input.len(),
                        close: true,
                    };
                }
                Parsed::Complete(head) => head,
            };
            consumed += head.len;
            if head.is_get {
                out.extend_from_slice(match head.persistence {
                    Persistence::KeepAlive => OK_KEEP_ALIVE,
                    Persistence::KeepAlive10 => OK_KEEP_ALIVE_10,
                    Persistence::Close => OK_CLOSE,
                });
            } else {
                out.extend_from_slice(METHOD_NOT_ALLOWED);
                out.extend_from_slice(match head.persistence {
                    Persistence::KeepAlive => b"\r\n",
                    Persistence::KeepAlive10 => b"Connection: keep-alive\r\n\r\n",
                    Persistence::Close => b"Connection: close\r\n\r\n",
                });
                out.extend_from_slice(METHOD_NOT_ALLOWED_BODY);
            }
            self.skip = head.body;
            self.close_after_skip = head.persistence == Persistence::Close;
            if head.persistence == Persistence::Close && self.skip == 0 {
                return Step {
                    consumed,
                    close: true,
                };
            }
        }
    }
}

fn parse(input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(HEAD_TOO_LARGE)
        }
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Parsed::Reject(HEAD_TOO_LARGE)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Reject(BAD_REQUEST),
    };
    // A complete parse always sets the method and the version.
    let (Some(method), Some(version)) = (request.method, request.version) else {
        return Parsed::Reject(BAD_REQUEST);
    };
    let mut persistence = if version == 1 {
        Persistence::KeepAlive
    } else {
        Persistence::Close
    };
    let mut body: Option<u64> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    persistence = Persistence::Close;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    persistence = Persistence::KeepAlive10;
                }
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_decimal(header.value) else {
                return Parsed::Reject(BAD_REQUEST);
            };
            if body.is_some_and(|previous| previous != n) {
                return Parsed::Reject(BAD_REQUEST);
            }
            body = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // We do not decode chunked bodies: answer, then close, so we never misread the
            // body as the next request.
            persistence = Persistence::Close;
        }
    }
    Parsed::Complete(Head {
        len,
        is_get: method == "GET",
        persistence,
        body: body.unwrap_or(0),
    })
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_split_invariant, drive};
    use super::super::{Protocol, Session, HIGH_WATER};
    use super::*;

    fn run(chunks: &[&[u8]]) -> (String, bool) {
        let (out, closed) = drive(&mut Session::new(Protocol::Http), chunks, HIGH_WATER);
        (String::from_utf8(out).unwrap(), closed)
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    const GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\n\r\n";

    #[test]
    fn get_answers_hello_world_and_keeps_alive() {
        let (out, closed) = run(&[GET]);
        assert_eq!(out.as_bytes(), OK_KEEP_ALIVE);
        assert!(!closed);
    }

    #[test]
    fn pipelined_requests_answered_in_order() {
        let mut pipeline = Vec::new();
        for i in 0..10 {
            pipeline.extend_from_slice(if i == 4 {
                b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".as_slice()
            } else {
                GET
            });
        }
        let (out, closed) = run(&[&pipeline]);
        assert!(!closed);
        let statuses: Vec<&str> = out.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
        let mut expected = vec!["200"; 10];
        expected[4] = "405";
        assert_eq!(statuses, expected);
    }

    #[test]
    fn connection_close_is_honoured() {
        let (out, closed) = run(&[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", GET]);
        assert_eq!(out.as_bytes(), OK_CLOSE);
        assert!(
            closed,
            "the request after Connection: close is not answered"
        );
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (out, closed) = run(&[b"GET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(out.as_bytes(), OK_CLOSE);
        assert!(closed);
        let (out, closed) = run(&[b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"]);
        assert_eq!(out.as_bytes(), OK_KEEP_ALIVE_10);
        assert!(!closed);
    }

    #[test]
    fn malformed_request_gets_400_and_close() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let (out, closed) = run(&[bad]);
            assert!(out.starts_with("HTTP/1.1 400 "), "{out:?} for {bad:?}");
            assert!(closed);
        }
    }

    #[test]
    fn oversized_head_gets_431_and_close() {
        let mut request = b"GET / HTTP/1.1\r\n".to_vec();
        while request.len() < 9 * 1024 {
            request.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        request.extend_from_slice(b"\r\n");
        let (out, closed) = run(&[&request]);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out:?}");
        assert!(closed);
        // The same without the final blank line: 431 as soon as 8 KiB arrived without an end.
        let (out, closed) = run(&[&request[..request.len() - 2]]);
        assert!(out.starts_with("HTTP/1.1 431 "));
        assert!(closed);
        // Too many (small) headers is the same error.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(run(&[&many]).0.starts_with("HTTP/1.1 431 "));
    }

    #[test]
    fn other_methods_get_405_and_their_body_is_skipped() {
        let (out, closed) = run(&[
            b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello",
            b" world",
            GET,
        ]);
        assert!(
            out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{out:?}"
        );
        assert_eq!(count(&out, "HTTP/1.1 "), 2);
        assert!(out.ends_with("Hello, World!"));
        assert!(!closed);
    }

    #[test]
    fn chunked_body_is_answered_then_closed() {
        let (out, closed) =
            run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]);
        assert!(out.starts_with("HTTP/1.1 405 "));
        assert!(out.contains("Connection: close\r\n"));
        assert!(closed);
    }

    #[test]
    fn partial_head_waits() {
        let (out, closed) = run(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]);
        assert!(out.is_empty() && !closed);
    }

    #[test]
    fn respects_the_output_limit() {
        let pipeline = GET.repeat(10);
        let mut session = Session::new(Protocol::Http);
        let mut out = Vec::new();
        let step = session.advance(&pipeline, &mut out, 1);
        assert_eq!(
            step.consumed,
            GET.len(),
            "one response, then stop at the limit"
        );
        assert_eq!(out.as_slice(), OK_KEEP_ALIVE);
    }

    #[test]
    fn split_anywhere_same_output() {
        let new = || Session::new(Protocol::Http);
        assert_split_invariant(new, GET);
        assert_split_invariant(new, &GET.repeat(3));
        assert_split_invariant(
            new,
            b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
        );
        assert_split_invariant(new, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_split_invariant(new, b"GET / HTTP/1.1\r\nBad\r\n\r\n");
    }
}
