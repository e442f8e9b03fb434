//! `--start-at`: the measured window opens no earlier than the time given (after the warmup),
//! and a start in the past or far ahead is refused before anything runs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An echo server on a free loopback port, one thread per connection.
fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn the_window_opens_at_the_start_time_after_the_warmup() {
    let addr = echo_server();
    let at = now() + 1.0;
    let output = Command::new(LOADGEN)
        .args([
            "echo", "-a", &addr, "-c", "2", "-t", "300ms", "--warmup", "200ms",
        ])
        .args([
            "--threads",
            "1",
            "--json",
            "--start-at",
            &format!("{at:.3}"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let start = result["start_unix_s"].as_f64().unwrap();
    // Rounding of the time given is a millisecond at most.
    assert!(
        start >= at + 0.2 - 0.001,
        "measured from {start}, before the start {at} + the 200 ms warmup"
    );
    assert!(result["requests"].as_u64().unwrap() > 0);
}

#[test]
fn a_start_in_the_past_or_far_ahead_is_refused() {
    for (at, says) in [
        (now() - 5.0, "in the past"),
        (now() + 7200.0, "more than the 3600 s allowed"),
    ] {
        // Refused before the address is tried: nothing listens there.
        let output = Command::new(LOADGEN)
            .args([
                "echo",
                "-a",
                "127.0.0.1:1",
                "--start-at",
                &format!("{at:.3}"),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
