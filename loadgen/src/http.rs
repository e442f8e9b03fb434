//! HTTP/1.1 for `loadgen http`, without sockets: the request, built once from the command
//! line and shared by every connection; the URL form (`http://HOST:PORT/PATH`, as wrk takes
//! it); and the reader of replies, which any server may send.
//!
//! A reply is read as a stream: its head is parsed by httparse straight from the bytes read
//! when it arrives whole (the common case: no copy, no allocation), and only a head, a chunk
//! size line or a trailer section split across reads is kept, in a buffer bounded by
//! [`MAX_HEAD`]. Bodies are compared as they pass and never stored, so loadgen's memory per
//! connection does not depend on what a server sends. Anything HTTP/1.1 does not allow (a bad
//! status line, a head too large, a bad chunk size, bytes past the declared end) is
//! [`Failure::Protocol`]; a well-formed reply with another status or body is
//! [`Failure::Mismatch`].

use std::mem::MaybeUninit;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::workload::{Failure, Progress};

/// What the built-in servers answer to `GET /`, and what loadgen expects when the request is
/// not described otherwise.
pub const HELLO: &str = "Hello, World!";
/// The largest reply head, and the largest trailer section, loadgen accepts (nginx's default
/// `large_client_header_buffers` is 8 KiB for a request; a reply head is usually far smaller).
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header fields in a reply head or its trailers.
const MAX_HEADERS: usize = 64;
/// The longest chunk-size line (hex digits, extensions, CRLF).
const MAX_CHUNK_LINE: usize = 1024;

/// The request as the result records it (`load.http`): what was sent and what was checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub method: String,
    pub path: String,
    pub host: String,
    /// Headers given with `--header`, as given.
    pub headers: Vec<String>,
    /// Bytes of the request body (`--body`, `--body-file`).
    pub body_bytes: u64,
    pub expect_status: u16,
    /// The body every reply must carry; `null` when bodies are not checked.
    pub expect_body: Option<String>,
}

impl Settings {
    /// The request the built-in servers answer: `GET /`, expecting 200 and `Hello, World!`.
    pub fn hello(host: &str) -> Settings {
        Settings {
            method: "GET".into(),
            path: "/".into(),
            host: host.into(),
            headers: Vec::new(),
            body_bytes: 0,
            expect_status: 200,
            expect_body: Some(HELLO.into()),
        }
    }
}

/// What every request of a run sends and what its reply must be.
#[derive(Debug)]
pub struct Spec {
    pub settings: Settings,
    /// The whole request, head and body, as written to every connection.
    pub bytes: Arc<[u8]>,
    expect_body: Option<Box<[u8]>>,
    /// A reply to HEAD has no body, whatever its head says.
    head_only: bool,
}

impl Spec {
    /// Checks every part of the request and builds its bytes. A `body`, even an empty one,
    /// is sent with a Content-Length unless a header already frames it (a POST without one
    /// may be refused with 411).
    pub fn new(settings: Settings, body: Option<&[u8]>) -> Result<Spec, String> {
        let Settings {
            method,
            path,
            host,
            headers,
            expect_status,
            ..
        } = &settings;
        if method.is_empty() || !method.bytes().all(is_token) {
            return Err(format!(
                "--method '{method}' is not an HTTP method (a token: GET, POST, PUT...)"
            ));
        }
        if path.is_empty() || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "--path '{path}' is not a request target: printable ASCII without spaces \
                 (percent-encode the rest), such as /index.html?q=1"
            ));
        }
        if !(100..=999).contains(expect_status) {
            return Err(format!(
                "--expect-status {expect_status} is not a status code (100 to 999)"
            ));
        }
        let mut fields = Vec::with_capacity(headers.len());
        for header in headers {
            fields.push(parse_header(header)?);
        }
        let has = |name: &str| fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        // A Host header given with --header is the one sent, and the one recorded.
        let host = match fields.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")) {
            Some((_, value)) => value.to_string(),
            None if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(format!(
                    "--host '{host}' is not a host (printable ASCII without spaces)"
                ));
            }
            None => {
                head.push_str(&format!("Host: {host}\r\n"));
                host.clone()
            }
        };
        for (name, value) in &fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body.filter(|_| !has("content-length") && !has("transfer-encoding")) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        Ok(Spec {
            expect_body: settings.expect_body.as_ref().map(|b| b.as_bytes().into()),
            head_only: method.eq_ignore_ascii_case("HEAD"),
            bytes: bytes.into(),
            settings: Settings { host, ..settings },
        })
    }
}

/// `Name: value` from `--header`, both checked against HTTP's grammar.
fn parse_header(text: &str) -> Result<(&str, &str), String> {
    let Some((name, value)) = text.split_once(':') else {
        return Err(format!(
            "--header '{text}' has no colon: give it as \"Name: value\""
        ));
    };
    if name.is_empty() || !name.bytes().all(is_token) {
        return Err(format!("--header '{text}': '{name}' is not a header name"));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(format!(
            "--header '{text}': the value holds a control character"
        ));
    }
    Ok((name, value))
}

/// RFC 9110's tchar: what a method or a header name is made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A URL as wrk takes it, split into what loadgen needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    /// HOST:PORT to resolve (port 80 when the URL has none).
    pub addr: String,
    /// The Host header: the URL's authority as written.
    pub host: String,
    /// Path and query (`/` when the URL has none).
    pub path: String,
}

/// Splits `http://host[:port][/path][?query]`; refuses https and everything else with a
/// message for the user.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "{text}: loadgen speaks plain HTTP only, not https:// (measure the server behind \
             its TLS terminator, or use http://)"
        ));
    }
    let Some(rest) = lower
        .starts_with("http://")
        .then(|| &text["http://".len()..])
    else {
        return Err(format!(
            "'{text}' is not an http:// URL (such as http://127.0.0.1:8080/)"
        ));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("{text}: the URL names no host"));
    }
    if authority.contains('@') {
        return Err(format!(
            "{text}: user names and passwords in a URL are not supported"
        ));
    }
    let has_port = match authority.rfind(':') {
        // [::1] alone: the colon is inside the brackets.
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let path = match target {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    Ok(Url {
        addr,
        host: authority.to_string(),
        path,
    })
}

/// How a reply's body ends (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Head,
    /// Content-Length: this many body bytes still to come.
    Sized {
        left: u64,
    },
    ChunkSize,
    ChunkData {
        left: u64,
    },
    /// The CRLF after a chunk's data; `cr` once its CR has arrived.
    ChunkEnd {
        cr: bool,
    },
    Trailers,
    /// No length given: the body ends when the server closes the connection.
    UntilClose,
    Done,
}

/// What a reply head says, copied out of the parsed head so no borrow of the input remains.
struct Head {
    code: u16,
    stage: Stage,
    close: bool,
}

/// One reply being read.
pub struct Reply {
    spec: Arc<Spec>,
    stage: Stage,
    /// A head, chunk-size line or trailer section split across reads (at most [`MAX_HEAD`]).
    stash: Vec<u8>,
    /// Body bytes received so far.
    body: u64,
    /// The server ends the connection after this reply.
    close: bool,
}

impl Reply {
    pub fn new(spec: Arc<Spec>) -> Reply {
        Reply {
            spec,
            stage: Stage::Head,
            stash: Vec::new(),
            body: 0,
            close: false,
        }
    }

    /// Feeds the bytes read; all of them belong to this reply (one request in flight), so
    /// bytes past its end are a protocol error.
    pub fn receive(&mut self, mut data: &[u8]) -> Result<Progress, Failure> {
        while !data.is_empty() {
            let used = match self.stage {
                Stage::Head => self.head(data)?,
                Stage::Sized { left } => {
                    let n = (data.len() as u64).min(left);
                    self.body(&data[..n as usize])?;
                    self.stage = match left - n {
                        0 => Stage::Done,
                        left => Stage::Sized { left },
                    };
                    n as usize
                }
                Stage::ChunkSize => self.chunk_size(data)?,
                Stage::ChunkData { left } => {
                    let n = (data.len() as u64).min(left);
                    self.body(&data[..n as usize])?;
                    self.stage = match left - n {
                        0 => Stage::ChunkEnd { cr: false },
                        left => Stage::ChunkData { left },
                    };
                    n as usize
                }
                Stage::ChunkEnd { cr } => {
                    self.stage = match (cr, data[0]) {
                        (false, b'\r') => Stage::ChunkEnd { cr: true },
                        (true, b'\n') => Stage::ChunkSize,
                        _ => return Err(Failure::Protocol),
                    };
                    1
                }
                Stage::Trailers => self.trailers(data)?,
                Stage::UntilClose => {
                    self.body(data)?;
                    data.len()
                }
                Stage::Done => return Err(Failure::Protocol),
            };
            data = &data[used..];
        }
        self.progress()
    }

    /// The server closed the connection: the end of a body that runs until then, or `None`
    /// when the reply was cut short.
    pub fn eof(&mut self) -> Option<Result<Progress, Failure>> {
        if self.stage != Stage::UntilClose {
            return None;
        }
        self.stage = Stage::Done;
        self.close = true;
        Some(self.progress())
    }

    fn progress(&self) -> Result<Progress, Failure> {
        if self.stage != Stage::Done {
            return Ok(Progress::More);
        }
        if let Some(expected) = &self.spec.expect_body {
            if self.body != expected.len() as u64 {
                return Err(Failure::Mismatch);
            }
        }
        Ok(if self.close {
            Progress::DoneClose
        } else {
            Progress::Done
        })
    }

    /// Compares body bytes with the expected body as they pass.
    fn body(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        if let Some(expected) = &self.spec.expect_body {
            let from = self.body as usize;
            if expected.get(from..from + bytes.len()) != Some(bytes) {
                return Err(Failure::Mismatch);
            }
        }
        self.body += bytes.len() as u64;
        Ok(())
    }

    fn head(&mut self, data: &[u8]) -> Result<usize, Failure> {
        let head_only = self.spec.head_only;
        let Some((head, used)) = split_parse(&mut self.stash, data, MAX_HEAD, |buf| {
            parse_head(buf, head_only)
        })?
        else {
            return Ok(data.len());
        };
        match head.code {
            // A 1xx reply is interim (100 Continue, 103 Early Hints): the real one follows.
            // 101 would switch protocols, which loadgen never asks for.
            101 => return Err(Failure::Protocol),
            100..=199 => return Ok(used),
            _ => {}
        }
        if head.code != self.spec.settings.expect_status {
            return Err(Failure::Mismatch);
        }
        if let (Stage::Sized { left }, Some(expected)) = (head.stage, &self.spec.expect_body) {
            if left != expected.len() as u64 {
                return Err(Failure::Mismatch);
            }
        }
        self.stage = head.stage;
        self.close = head.close;
        Ok(used)
    }

    fn chunk_size(&mut self, data: &[u8]) -> Result<usize, Failure> {
        let parsed = split_parse(&mut self.stash, data, MAX_CHUNK_LINE, |buf| {
            // httparse reads an empty size as 0, the last chunk; HTTP wants a digit.
            if !buf[0].is_ascii_hexdigit() {
                return Err(());
            }
            httparse::parse_chunk_size(buf).map_err(drop)
        })?;
        if let Some((size, used)) = parsed {
            self.stage = match size {
                0 => Stage::Trailers,
                left => Stage::ChunkData { left },
            };
            return Ok(used);
        }
        Ok(data.len())
    }

    fn trailers(&mut self, data: &[u8]) -> Result<usize, Failure> {
        let parsed = split_parse(&mut self.stash, data, MAX_HEAD, |buf| {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((n, _))) => Ok(httparse::Status::Complete((n, ()))),
                Ok(httparse::Status::Partial) => Ok(httparse::Status::Partial),
                Err(_) => Err(()),
            }
        })?;
        if let Some(((), used)) = parsed {
            self.stage = Stage::Done;
            return Ok(used);
        }
        Ok(data.len())
    }
}

/// Parses a head, chunk-size line or trailer section that may arrive in pieces: straight from
/// `data` when the stash is empty, else from the stash with `data` appended. Returns what was
/// parsed and how many bytes of `data` it took, or `None` when all of `data` was kept for
/// the next read. More than `limit` bytes without an end is a protocol error.
fn split_parse<T>(
    stash: &mut Vec<u8>,
    data: &[u8],
    limit: usize,
    parse: impl Fn(&[u8]) -> Result<httparse::Status<(usize, T)>, ()>,
) -> Result<Option<(T, usize)>, Failure> {
    if stash.is_empty() {
        return match parse(data) {
            Ok(httparse::Status::Complete((n, t))) => Ok(Some((t, n))),
            Ok(httparse::Status::Partial) if data.len() <= limit => {
                stash.extend_from_slice(data);
                Ok(None)
            }
            _ => Err(Failure::Protocol),
        };
    }
    let kept = stash.len();
    // Never more than one byte past the limit: enough to know it was passed.
    let take = data.len().min((limit + 1).saturating_sub(kept));
    stash.extend_from_slice(&data[..take]);
    match parse(stash) {
        Ok(httparse::Status::Complete((n, t))) => {
            stash.clear();
            Ok(Some((t, n - kept)))
        }
        Ok(httparse::Status::Partial) if stash.len() <= limit => Ok(None),
        _ => Err(Failure::Protocol),
    }
}

fn parse_head(buf: &[u8], head_only: bool) -> Result<httparse::Status<(usize, Head)>, ()> {
    // Left uninitialised: httparse writes only the fields it parses, and zeroing 64 of them
    // for every reply showed in loadgen's profile.
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed.map_err(drop)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(httparse::Status::Partial),
    };
    let code = response.code.ok_or(())?;
    let (mut length, mut chunked, mut framed_by_coding) = (None, false, false);
    let mut connection = (false, false); // (close, keep-alive)
    for field in response.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = field.value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n: u64 = std::str::from_utf8(value)
                .map_err(drop)?
                .parse()
                .map_err(drop)?;
            // Several Content-Length fields must agree (RFC 9112 section 6.3).
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            framed_by_coding = true;
            // Only the last coding frames the body; anything else before it is content.
            chunked = tokens(field.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(field.value) {
                connection.0 |= token.eq_ignore_ascii_case(b"close");
                connection.1 |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // HTTP/1.0 closes unless asked to keep the connection; 1.1 keeps it unless told to close.
    let mut close = connection.0 || (response.version == Some(0) && !connection.1);
    let no_body = head_only || code < 200 || code == 204 || code == 304;
    let stage = if no_body {
        Stage::Done
    } else if framed_by_coding && chunked {
        Stage::ChunkSize
    } else if framed_by_coding {
        // A coding other than chunked last: the body runs to the close.
        Stage::UntilClose
    } else {
        match length {
            Some(0) => Stage::Done,
            Some(left) => Stage::Sized { left },
            None => Stage::UntilClose,
        }
    };
    close |= stage == Stage::UntilClose;
    Ok(httparse::Status::Complete((
        len,
        Head { code, stage, close },
    )))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, expect_body: Option<&str>) -> Arc<Spec> {
        let settings = Settings {
            method: method.into(),
            expect_body: expect_body.map(Into::into),
            ..Settings::hello("h")
        };
        Arc::new(Spec::new(settings, None).unwrap())
    }

    /// Feeds `reply` split at every byte boundary (and whole); each split must give `want`.
    fn at_every_split(spec: &Arc<Spec>, reply: &[u8], want: Result<Progress, Failure>) {
        for split in 0..=reply.len() {
            let mut r = Reply::new(Arc::clone(spec));
            let (a, b) = reply.split_at(split);
            let got = match r.receive(a) {
                Ok(Progress::More) => r.receive(b),
                other if b.is_empty() => other,
                Err(e) => Err(e),
                Ok(p) => panic!("{p:?} before the end at split {split}"),
            };
            assert_eq!(
                got,
                want,
                "split at {split} of {:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    #[test]
    fn content_length_chunked_and_trailers_at_every_split() {
        let hello = spec("GET", Some(HELLO));
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
        at_every_split(&hello, sized, Ok(Progress::Done));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        7;ext=1\r\nHello, \r\n6\r\nWorld!\r\n0\r\nX-Sum: 1\r\n\r\n";
        at_every_split(&hello, chunked, Ok(Progress::Done));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
        at_every_split(&hello, interim, Ok(Progress::Done));
    }

    #[test]
    fn the_connection_ends_on_close_on_http_1_0_and_without_a_length() {
        let hello = spec("GET", Some(HELLO));
        let close =
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 13\r\n\r\nHello, World!";
        at_every_split(&hello, close, Ok(Progress::DoneClose));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
        at_every_split(&hello, old, Ok(Progress::DoneClose));
        let old_kept =
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 13\r\n\r\nHello, World!";
        at_every_split(&hello, old_kept, Ok(Progress::Done));
        let mut r = Reply::new(Arc::clone(&hello));
        assert_eq!(
            r.receive(b"HTTP/1.0 200 OK\r\n\r\nHello, "),
            Ok(Progress::More)
        );
        assert_eq!(r.receive(b"World!"), Ok(Progress::More));
        assert_eq!(r.eof(), Some(Ok(Progress::DoneClose)));
        let mut r = Reply::new(hello);
        assert_eq!(
            r.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello"),
            Ok(Progress::More)
        );
        assert_eq!(r.eof(), None, "a reply cut short");
    }

    #[test]
    fn garbage_is_a_protocol_error_and_another_reply_a_mismatch() {
        let hello = spec("GET", Some(HELLO));
        let protocol = [
            &b"HTPT/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!!",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Length: 14\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nHX",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ];
        for reply in protocol {
            let got = Reply::new(Arc::clone(&hello)).receive(reply);
            assert_eq!(
                got,
                Err(Failure::Protocol),
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
        let mismatch = [
            &b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nHello, World!"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n0\r\n\r\n",
        ];
        for reply in mismatch {
            let got = Reply::new(Arc::clone(&hello)).receive(reply);
            assert_eq!(
                got,
                Err(Failure::Mismatch),
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
        // Without an expected body, any body of the right status passes.
        let any = spec("GET", None);
        let other = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHello";
        assert_eq!(Reply::new(any).receive(other), Ok(Progress::Done));
    }

    #[test]
    fn heads_and_chunk_lines_are_bounded() {
        let any = spec("GET", None);
        let mut r = Reply::new(Arc::clone(&any));
        let mut got = Ok(Progress::More);
        let filler = format!("X-Filler: {}\r\n", "x".repeat(1000));
        r.receive(b"HTTP/1.1 200 OK\r\n").unwrap();
        for _ in 0..MAX_HEAD / filler.len() + 2 {
            got = r.receive(filler.as_bytes());
            if got.is_err() {
                break;
            }
        }
        assert_eq!(got, Err(Failure::Protocol));
        assert!(r.stash.len() <= MAX_HEAD + 1, "{}", r.stash.len());
        let mut r = Reply::new(any);
        r.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;")
            .unwrap();
        let ext = "e".repeat(MAX_CHUNK_LINE);
        assert_eq!(r.receive(ext.as_bytes()), Err(Failure::Protocol));
    }

    #[test]
    fn head_replies_and_204_have_no_body() {
        let head = spec("HEAD", None);
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n";
        at_every_split(&head, reply, Ok(Progress::Done));
        let get = spec("GET", None);
        let mut r = Reply::new(get);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            r.receive(no_content),
            Err(Failure::Mismatch),
            "204 is not 200"
        );
    }

    #[test]
    fn requests_are_built_once_and_checked() {
        let settings = Settings {
            method: "POST".into(),
            path: "/submit?x=1".into(),
            host: "example:8080".into(),
            headers: vec!["X-Token:  abc ".into()],
            body_bytes: 4,
            expect_status: 201,
            expect_body: None,
        };
        let s = Spec::new(settings.clone(), Some(b"data")).unwrap();
        assert_eq!(
            &*s.bytes,
            b"POST /submit?x=1 HTTP/1.1\r\nHost: example:8080\r\nX-Token: abc\r\n\
              Content-Length: 4\r\n\r\ndata"
        );
        let with_host = Settings {
            headers: vec!["host: other".into()],
            ..settings.clone()
        };
        let s = Spec::new(with_host, Some(b"")).unwrap();
        assert_eq!(
            &*s.bytes,
            b"POST /submit?x=1 HTTP/1.1\r\nhost: other\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            s.settings.host, "other",
            "the Host sent is the one recorded"
        );
        for (bad, why) in [
            (vec!["nocolon".to_string()], "no colon"),
            (vec!["Bad Name: x".to_string()], "not a header name"),
            (vec!["X: a\rb".to_string()], "control character"),
        ] {
            let e = Spec::new(
                Settings {
                    headers: bad,
                    ..settings.clone()
                },
                None,
            )
            .unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let e = Spec::new(
            Settings {
                path: "/a b".into(),
                ..settings.clone()
            },
            None,
        )
        .unwrap_err();
        assert!(e.contains("not a request target"), "{e}");
        let e = Spec::new(
            Settings {
                method: "G T".into(),
                ..settings
            },
            None,
        )
        .unwrap_err();
        assert!(e.contains("not an HTTP method"), "{e}");
    }

    #[test]
    fn urls_as_wrk_takes_them() {
        let url = |addr: &str, host: &str, path: &str| Url {
            addr: addr.into(),
            host: host.into(),
            path: path.into(),
        };
        assert_eq!(
            parse_url("http://127.0.0.1:8080/a/b?c=d#frag"),
            Ok(url("127.0.0.1:8080", "127.0.0.1:8080", "/a/b?c=d"))
        );
        assert_eq!(
            parse_url("HTTP://localhost"),
            Ok(url("localhost:80", "localhost", "/"))
        );
        assert_eq!(parse_url("http://[::1]"), Ok(url("[::1]:80", "[::1]", "/")));
        assert_eq!(
            parse_url("http://[::1]:9000?q"),
            Ok(url("[::1]:9000", "[::1]:9000", "/?q"))
        );
        assert!(parse_url("https://127.0.0.1/")
            .unwrap_err()
            .contains("plain HTTP only"));
        assert!(parse_url("127.0.0.1:80")
            .unwrap_err()
            .contains("not an http:// URL"));
        assert!(parse_url("http:///x").unwrap_err().contains("no host"));
        assert!(parse_url("http://u:p@h/")
            .unwrap_err()
            .contains("passwords"));
    }
}
