//! `transfer`: the multi-user upload/download workload.
//!
//! A request is one ASCII line. `PUT <n>\n` is followed by n bytes, which the server consumes
//! and answers with `OK <n> <crc32c as 8 hex digits>\n`. `GET <n>\n` is answered with n bytes
//! where byte i is `(i * 31 + 7) % 251`, produced a window at a time as output drains (a 2^40
//! byte download never exists in memory). n is at most 2^40. Anything else is answered with
//! `ERR <reason>\n` and a close. Several requests may follow one another on a connection.

use super::Step;

/// The largest n a request may name.
pub const MAX_SIZE: u64 = 1 << 40;
/// A request line longer than this (without its newline) is an error.
pub const MAX_LINE: usize = 64;

/// The pattern repeats every 251 bytes, because 251 is prime and 31 is not a multiple of it.
const PERIOD: usize = 251;
/// Largest slice of the pattern copied in one go.
const WINDOW: usize = 16 * 1024;
/// The pattern from phase 0, long enough that any window of `WINDOW` bytes starting at any
/// phase is one contiguous slice.
static PATTERN: [u8; PERIOD + WINDOW] = pattern_table();

const fn pattern_table() -> [u8; PERIOD + WINDOW] {
    let mut table = [0u8; PERIOD + WINDOW];
    let mut i = 0;
    while i < table.len() {
        table[i] = ((i * 31 + 7) % PERIOD) as u8;
        i += 1;
    }
    table
}

/// Byte `i` of every download.
pub fn pattern_byte(i: u64) -> u8 {
    (((i % PERIOD as u64) * 31 + 7) % PERIOD as u64) as u8
}

#[derive(Debug, Default)]
pub struct Transfer {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    RequestLine,
    Receiving {
        size: u64,
        remaining: u64,
        crc: u32,
    },
    Sending {
        sent: u64,
        size: u64,
    },
}

impl Transfer {
    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Sending { .. })
    }

    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Step {
        let mut consumed = 0;
        while out.len() < limit {
            match &mut self.state {
                State::RequestLine => {
                    let rest = &input[consumed..];
                    let end = rest.iter().position(|&b| b == b'\n');
                    // Too long whether or not its newline has arrived yet, so the answer does
                    // not depend on how the bytes were split (found by the fuzzer).
                    if end.unwrap_or(rest.len()) > MAX_LINE {
                        out.extend_from_slice(b"ERR line too long\n");
                        return Step {
                            consumed: input.len(),
                            close: true,
                        };
                    }
                    let Some(end) = end else {
                        break;
                    };
                    consumed += end + 1;
                    match parse_line(&rest[..end]) {
                        Ok(Request::Put(0)) => out.extend_from_slice(b"OK 0 00000000\n"),
                        Ok(Request::Put(size)) => {
                            self.state = State::Receiving {
                                size,
                                remaining: size,
                                crc: 0,
                            }
                        }
                        Ok(Request::Get(size)) => self.state = State::Sending { sent: 0, size },
                        Err(reason) => {
                            out.extend_from_slice(b"ERR ");
                            out.extend_from_slice(reason.as_bytes());
                            out.push(b'\n');
                            return Step {
                                consumed: input.len(),
                                close: true,
                            };
                        }
                    }
                }
                State::Receiving {
                    size,
                    remaining,
                    crc,
                } => {
                    let available = &input[consumed..];
                    if available.is_empty() {
                        break;
                    }
                    let n = (*remaining).min(available.len() as u64) as usize;
                    *crc = crc32c::crc32c_append(*crc, &available[..n]);
                    *remaining -= n as u64;
                    consumed += n;
                    if *remaining == 0 {
                        let reply = format!("OK {size} {crc:08x}\n");
                        out.extend_from_slice(reply.as_bytes());
                        self.state = State::RequestLine;
                    }
                }
                State::Sending { sent, size } => {
                    let room = (limit - out.len()).min(WINDOW) as u64;
                    let n = (*size - *sent).min(room) as usize;
                    let phase = (*sent % PERIOD as u64) as usize;
                    out.extend_from_slice(&PATTERN[phase..phase + n]);
                    *sent += n as u64;
                    if *sent == *size {
                        self.state = State::RequestLine;
                    }
                }
            }
        }
        Step {
            consumed,
            close: false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Request {
    Put(u64),
    Get(u64),
}

fn parse_line(line: &[u8]) -> Result<Request, &'static str> {
    // Tolerate the carriage return that telnet-like clients send.
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (verb, size) = if let Some(size) = line.strip_prefix(b"PUT ") {
        (Request::Put as fn(u64) -> Request, size)
    } else if let Some(size) = line.strip_prefix(b"GET ") {
        (Request::Get as fn(u64) -> Request, size)
    } else {
        return Err("unknown request: expected PUT <n> or GET <n>");
    };
    if size.is_empty() || size.len() > 14 || !size.iter().all(u8::is_ascii_digit) {
        return Err("bad size: expected a decimal number");
    }
    let n = size.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    if n > MAX_SIZE {
        return Err("size exceeds 2^40");
    }
    Ok(verb(n))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_split_invariant, drive};
    use super::super::{Protocol, Session, HIGH_WATER};
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        drive(&mut Session::new(Protocol::Transfer), chunks, HIGH_WATER)
    }

    #[test]
    fn pattern_table_matches_the_formula() {
        for i in 0..(PERIOD + WINDOW) as u64 {
            assert_eq!(PATTERN[i as usize], ((i * 31 + 7) % 251) as u8);
            assert_eq!(pattern_byte(i), ((i * 31 + 7) % 251) as u8);
        }
        let big = MAX_SIZE - 3;
        assert_eq!(pattern_byte(big), ((big * 31 + 7) % 251) as u8);
    }

    #[test]
    fn put_answers_size_and_crc32c() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut request = b"PUT 100000\n".to_vec();
        request.extend_from_slice(&data);
        let (out, closed) = run(&[&request]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("OK 100000 {:08x}\n", crc32c::crc32c(&data))
        );
        assert!(!closed);
        // A known vector: crc32c("123456789") = e3069283.
        assert_eq!(run(&[b"PUT 9\n123456789"]).0, b"OK 9 e3069283\n");
        assert_eq!(run(&[b"PUT 0\n"]).0, b"OK 0 00000000\n");
    }

    #[test]
    fn get_streams_the_pattern_within_the_limit() {
        let mut session = Session::new(Protocol::Transfer);
        let mut out = Vec::new();
        let step = session.advance(b"GET 1000000\n", &mut out, 4096);
        assert_eq!(step.consumed, 12);
        assert_eq!(out.len(), 4096, "never more than the limit at once");
        assert!(session.is_streaming());
        let mut got = std::mem::take(&mut out);
        while session.is_streaming() {
            session.advance(&[], &mut out, 4096);
            assert!(out.len() <= 4096);
            got.append(&mut out);
        }
        assert_eq!(got.len(), 1_000_000);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern_byte(i as u64)));
    }

    #[test]
    fn get_of_the_maximum_size_is_accepted_lazily() {
        let mut session = Session::new(Protocol::Transfer);
        let mut out = Vec::new();
        session.advance(format!("GET {MAX_SIZE}\n").as_bytes(), &mut out, 100);
        assert_eq!(out.len(), 100);
        assert!(session.is_streaming());
    }

    #[test]
    fn requests_follow_one_another() {
        let (out, closed) = run(&[b"GET 3\nPUT 2\nabGET 2\n"]);
        let mut expected = vec![7u8, 38, 69];
        expected.extend_from_slice(format!("OK 2 {:08x}\n", crc32c::crc32c(b"ab")).as_bytes());
        expected.extend_from_slice(&[7, 38]);
        assert_eq!(out, expected);
        assert!(!closed);
    }

    #[test]
    fn bad_lines_get_err_and_close() {
        for (line, reason) in [
            (&b"HELLO\n"[..], "ERR unknown request"),
            (b"PUT\n", "ERR unknown request"),
            (b"PUT x\n", "ERR bad size"),
            (b"GET -1\n", "ERR bad size"),
            (b"GET 1099511627777\n", "ERR size exceeds 2^40"),
            (b"PUT 99999999999999999\n", "ERR bad size"),
            (b"\n", "ERR unknown request"),
        ] {
            let (out, closed) = run(&[line, b"GET 1\n"]);
            let out = String::from_utf8(out).unwrap();
            assert!(out.starts_with(reason), "{line:?} gave {out:?}");
            assert!(out.ends_with('\n') && closed);
        }
        let (out, closed) = run(&[&[b'G'; MAX_LINE + 1]]);
        assert_eq!(out, b"ERR line too long\n");
        assert!(closed);
        let (out, closed) = run(&[b"GET 2\r\n"]);
        assert_eq!((out.as_slice(), closed), (&[7u8, 38][..], false));
    }

    #[test]
    fn a_long_line_is_too_long_however_it_is_split() {
        let mut line = vec![b'X'; MAX_LINE + 16];
        line.push(b'\n');
        assert_eq!(run(&[&line]).0, b"ERR line too long\n");
        assert_split_invariant(|| Session::new(Protocol::Transfer), &line);
    }

    #[test]
    fn split_anywhere_same_output() {
        let new = || Session::new(Protocol::Transfer);
        assert_split_invariant(new, b"PUT 5\nhelloGET 7\nPUT 1\nx");
        assert_split_invariant(new, b"GET 300\nGET 0\n");
        assert_split_invariant(new, b"PUT 3\nabcNOPE\nGET 1\n");
    }
}
