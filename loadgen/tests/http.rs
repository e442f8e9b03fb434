//! `loadgen http` against small HTTP servers written here, each answering in one known way
//! (chunked, closing, HTTP/1.0, 404, garbage), so every count loadgen reports can be checked
//! against what the server did. Every loadgen run is killed at a deadline: a hang fails the
//! test instead of stalling it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");
/// Longer than any run here (at most a few hundred requests, or 0.5 s) takes on a busy machine.
const DEADLINE: Duration = Duration::from_secs(20);

const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
    7\r\nHello, \r\n6;name=value\r\nWorld!\r\n0\r\nX-Checksum: 42\r\n\r\n";
const CLOSING: &[u8] =
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 13\r\n\r\nHello, World!";
const HTTP_1_0: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
/// HTTP/1.0 without a length: the body ends when the server closes.
const HTTP_1_0_TO_CLOSE: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nHello, World!";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nHello, World!";

/// A request as the server saw it: its head's lines and its body.
#[derive(Clone, Debug)]
struct Seen {
    head: Vec<String>,
    body: Vec<u8>,
}

/// How the server answers its n-th request (counted over all clients, from 1): the reply,
/// and whether it then closes the connection.
type Answer = Arc<dyn Fn(u64) -> (Vec<u8>, bool) + Send + Sync>;

/// Every `k`-th request gets `odd` (then the connection closes if `close`), the others `usual`.
fn every(k: u64, odd: &[u8], close: bool, usual: &[u8]) -> Answer {
    let (odd, usual) = (odd.to_vec(), usual.to_vec());
    Arc::new(move |n| match n % k {
        0 => (odd.clone(), close),
        _ => (usual.clone(), false),
    })
}

fn always(reply: &[u8], close: bool) -> Answer {
    every(1, reply, close, reply)
}

/// A thread-per-connection HTTP server answering as `answer` says; returns its address and
/// every request it read.
fn server(answer: Answer) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicU64::new(0));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (log, count, answer) = (Arc::clone(&log), Arc::clone(&count), Arc::clone(&answer));
            thread::spawn(move || serve(stream, &*answer, &log, &count));
        }
    });
    (addr, seen)
}

fn serve(
    mut stream: TcpStream,
    answer: &(dyn Fn(u64) -> (Vec<u8>, bool) + Send + Sync),
    log: &Mutex<Vec<Seen>>,
    count: &AtomicU64,
) {
    let _ = stream.set_nodelay(true);
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(request) = take_request(&mut input) {
            log.lock().unwrap().push(request);
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let (reply, close) = answer(n);
            if stream.write_all(&reply).is_err() || close {
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
}

/// The first whole request in `input` (head, and a body of its Content-Length), taken off.
fn take_request(input: &mut Vec<u8>) -> Option<Seen> {
    let end = input.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head: Vec<String> = String::from_utf8_lossy(&input[..end - 4])
        .split("\r\n")
        .map(str::to_string)
        .collect();
    let length = head
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if input.len() < end + length {
        return None;
    }
    let body = input[end..end + length].to_vec();
    input.drain(..end + length);
    Some(Seen { head, body })
}

/// Runs loadgen, killed at [`DEADLINE`]: its exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(LOADGEN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained as it runs: a result larger than a pipe's buffer must not block its exit.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadgen {args:?} still running after {DEADLINE:?}: it hung");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let code = status.code().expect("loadgen exited");
    (code, stdout.join().unwrap(), stderr.join().unwrap())
}

/// Runs loadgen with --json: its exit code, its JSON (Null if it printed none) and stderr.
fn loadgen(args: &[&str]) -> (i32, Value, String) {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, stdout, stderr) = run(&args);
    (
        code,
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr,
    )
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {path} in {v}"))
}

/// `loadgen http TARGET... -c 1 --requests N`: one connection, one request after another, so
/// the server's n-th request is loadgen's n-th.
fn one_by_one(target: &[&str], requests: u64) -> (i32, Value, String) {
    let n = requests.to_string();
    let mut args = vec!["http"];
    args.extend_from_slice(target);
    args.extend_from_slice(&["-c", "1", "--requests", &n, "--timeout", "2s"]);
    loadgen(&args)
}

#[test]
fn chunked_replies_with_trailers_complete() {
    let (addr, seen) = server(always(CHUNKED, false));
    let (code, r, stderr) = one_by_one(&["-a", &addr], 200);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&r, "/requests"), 200);
    assert_eq!(u(&r, "/errors/protocol") + u(&r, "/errors/mismatch"), 0);
    assert_eq!((u(&r, "/connects"), u(&r, "/server_closes")), (1, 0));
    assert_eq!(seen.lock().unwrap().len(), 200);
}

#[test]
fn closing_replies_are_followed_by_a_new_connection_each() {
    // Every third reply closes its connection.
    let (addr, seen) = server(every(3, CLOSING, true, HELLO));
    let (code, r, stderr) = one_by_one(&["-a", &addr], 99);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&r, "/requests"), 99);
    assert_eq!(u(&r, "/server_closes"), 33);
    assert_eq!(u(&r, "/errors/reset") + u(&r, "/errors/protocol"), 0);
    // The first connect, and one after each close (the last may not finish before the end).
    assert!((33..=34).contains(&u(&r, "/connects")), "{r}");
    assert_eq!(seen.lock().unwrap().len(), 99);
    let (code, summary, _) = run(&["http", "-a", &addr, "-c", "1", "--requests", "30"]);
    assert_eq!(code, 0);
    for line in [
        "keep-alive GET /, expecting 200 \"Hello, World!\"",
        "Server closes: 10 ",
    ] {
        assert!(summary.contains(line), "{line:?} not in\n{summary}");
    }
}

#[test]
fn http_1_0_replies_close_with_or_without_a_length() {
    for (reply, what) in [
        (HTTP_1_0, "with a length"),
        (HTTP_1_0_TO_CLOSE, "to the close"),
    ] {
        let (addr, _) = server(always(reply, true));
        let (code, r, stderr) = one_by_one(&["-a", &addr], 20);
        assert_eq!(code, 0, "{what}: {stderr}");
        assert_eq!(u(&r, "/requests"), 20, "{what}");
        assert_eq!(u(&r, "/server_closes"), 20, "{what}");
        assert_eq!(
            u(&r, "/errors/reset") + u(&r, "/errors/protocol"),
            0,
            "{what}"
        );
    }
}

#[test]
fn a_404_is_a_mismatch_and_fails_the_run() {
    // Every fourth request is not found.
    let (addr, _) = server(every(4, NOT_FOUND, false, HELLO));
    let (code, r, stderr) = one_by_one(&["-a", &addr], 100);
    assert_eq!(code, 1, "any mismatch fails the run: {stderr}");
    assert_eq!((u(&r, "/requests"), u(&r, "/errors/mismatch")), (75, 25));
    assert_eq!(u(&r, "/errors/protocol"), 0);
    // Expected, it is no error.
    let (addr, _) = server(always(NOT_FOUND, false));
    let (code, r, stderr) = one_by_one(&["-a", &addr, "--expect-status", "404"], 10);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&r, "/requests"), 10);
    assert_eq!(u(&r, "/http/expect_status"), 404);
}

#[test]
fn garbage_is_counted_as_protocol_errors_and_never_hangs() {
    // Each kind of garbage as every fifth reply: loadgen closes that connection, opens a new
    // one and goes on.
    let mut oversized = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..16_384 {
        oversized.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "x".repeat(48)).as_bytes());
    }
    let garbage = [
        (
            "bad status line",
            &b"HTTP/1.1 two hundred OK\r\n\r\n"[..],
            HELLO,
        ),
        // A head that never ends: 1 MiB of headers, far past loadgen's bound.
        ("oversized head", &oversized, HELLO),
        (
            "bad chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nHello\r\n",
            CHUNKED,
        ),
        // Longer than declared: the extra bytes belong to no request.
        (
            "long body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!!!",
            HELLO,
        ),
    ];
    for (kind, odd, usual) in garbage {
        let (addr, _) = server(every(5, odd, false, usual));
        let (code, r, stderr) = one_by_one(&["-a", &addr], 100);
        assert_eq!(
            code, 1,
            "{kind}: 20% protocol errors exceed the 1% allowed: {stderr}"
        );
        assert_eq!(
            (u(&r, "/requests"), u(&r, "/errors/protocol")),
            (80, 20),
            "{kind}: {r}"
        );
        assert_eq!(u(&r, "/errors/mismatch"), 0, "{kind}");
        assert!(
            u(&r, "/connects") >= 20,
            "{kind}: a new connection after each: {r}"
        );
    }
}

#[test]
fn a_server_that_answers_only_garbage_ends_the_run_on_time() {
    let (addr, _) = server(always(b"SSH-2.0-OpenSSH_9.2\r\n", false));
    let started = Instant::now();
    let (code, r, _) = loadgen(&["http", "-a", &addr, "-c", "4", "-t", "500ms"]);
    assert_eq!(code, 1);
    assert_eq!(u(&r, "/requests"), 0);
    assert!(u(&r, "/errors/protocol") > 0, "{r}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_url_form_and_the_request_options_reach_the_server() {
    let (addr, seen) = server(always(
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        false,
    ));
    let url = format!("http://{addr}/submit?x=1");
    let request = [
        &url as &str,
        "--method",
        "POST",
        "--header",
        "X-Token: abc",
        "-H",
        "Accept: */*",
        "--body",
        "name=value",
        "--expect-status",
        "201",
    ];
    let (code, r, stderr) = one_by_one(&request, 5);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&r, "/requests"), 5);
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first.head[0], "POST /submit?x=1 HTTP/1.1");
    for line in [
        format!("Host: {addr}"),
        "X-Token: abc".into(),
        "Accept: */*".into(),
    ] {
        assert!(first.head.contains(&line), "{line} not in {:?}", first.head);
    }
    assert_eq!(first.body, b"name=value");
    assert_eq!(r["http"]["method"], "POST");
    assert_eq!(r["http"]["path"], "/submit?x=1");
    assert_eq!(u(&r, "/http/body_bytes"), 10);
    // A described request checks no body unless asked: "ok" passes, and fails against
    // --expect-body.
    assert_eq!(r["http"]["expect_body"], Value::Null);
    let (code, r, _) = one_by_one(&[&url, "--expect-status", "201", "--expect-body", "no"], 5);
    assert_eq!((code, u(&r, "/errors/mismatch")), (1, 5));
}

#[test]
fn the_default_request_is_get_slash_expecting_hello_world() {
    let (addr, seen) = server(always(
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!",
        false,
    ));
    let (code, r, _) = one_by_one(&["-a", &addr], 5);
    assert_eq!(code, 1, "the body is checked against Hello, World!");
    assert_eq!(u(&r, "/errors/mismatch"), 5);
    assert_eq!(r["http"]["expect_body"], "Hello, World!");
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(
        first.head,
        ["GET / HTTP/1.1".to_string(), format!("Host: {addr}")]
    );
}

#[test]
fn the_body_file_is_sent_whole() {
    let (addr, seen) = server(always(HELLO, false));
    let path = std::env::temp_dir().join(format!("loadgen-body-{}", std::process::id()));
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let (code, r, stderr) = loadgen(&[
        "http",
        "-a",
        &addr,
        "-c",
        "2",
        "--requests",
        "6",
        "--method",
        "PUT",
        "--body-file",
        path.to_str().unwrap(),
        "--expect-body",
        "Hello, World!",
    ]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&r, "/requests"), 6);
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|s| s.body == body),
        "every request carried the whole file"
    );
}

#[test]
fn bad_http_options_are_refused_with_exit_2() {
    let (addr, seen) = server(always(HELLO, false));
    let url = format!("http://{addr}/");
    let missing = std::env::temp_dir().join("loadgen-no-such-body-file");
    let cases: [(Vec<&str>, &str); 9] = [
        (
            vec!["http", "-a", &addr, "--header", "nocolon"],
            "has no colon",
        ),
        (vec!["http", "https://127.0.0.1:1/"], "plain HTTP only"),
        (vec!["http", "ftp://127.0.0.1/"], "not an http:// URL"),
        (
            vec![
                "http",
                "-a",
                &addr,
                "--body-file",
                missing.to_str().unwrap(),
            ],
            "--body-file",
        ),
        (
            vec!["echo", "-a", &addr, "--path", "/x"],
            "--path belongs to the http scenario",
        ),
        (vec!["echo", &url], "belongs to the http scenario"),
        (
            vec!["http", &url, "--host", "a", "-H", "host: b"],
            "give the Host header once",
        ),
        (vec!["http", &url, "-a", &addr], "cannot be used with"),
        (vec!["http", &url, "--path", "/a b"], "cannot be used with"),
    ];
    for (args, why) in cases {
        let output = Command::new(LOADGEN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    let output = Command::new(LOADGEN)
        .args(["http", "-a", &addr, "--path", "/a b"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a request target"));
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
}
