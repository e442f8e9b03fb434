//! loadgen against small servers written here, each misbehaving in one known way, so every
//! count loadgen reports can be checked against the truth. No assertion is about speed.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// What the test server does to the n-th echo chunk it handles (counted over all clients).
#[derive(Clone, Copy)]
enum Fault {
    None,
    /// Flip one byte of every n-th reply.
    CorruptEvery(u64),
    /// Reset the connection instead of answering every n-th request.
    ResetEvery(u64),
    /// Sleep before answering the n-th request, once.
    StallOnce(u64, Duration),
}

/// A thread-per-connection echo server for 128-byte messages; returns its address and a
/// counter of replies sent.
fn server(fault: Fault) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&count);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let count = Arc::clone(&counter);
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut message = [0u8; 128];
                while stream.read_exact(&mut message).is_ok() {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    match fault {
                        Fault::CorruptEvery(k) if n.is_multiple_of(k) => message[77] ^= 0xff,
                        Fault::ResetEvery(k) if n.is_multiple_of(k) => {
                            socket2::SockRef::from(&stream)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                            return;
                        }
                        Fault::StallOnce(k, pause) if n == k => thread::sleep(pause),
                        _ => {}
                    }
                    if stream.write_all(&message).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

fn loadgen(args: &[&str]) -> Value {
    let output = Command::new(LOADGEN)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} in {v}"))
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} in {v}"))
}

#[test]
fn fixed_request_count_is_exact() {
    let (addr, served) = server(Fault::None);
    let r = loadgen(&[
        "echo",
        "-a",
        &addr,
        "-c",
        "7",
        "--requests",
        "1000",
        "--threads",
        "2",
    ]);
    assert_eq!(u(&r, "/requests"), 1000);
    assert_eq!(u(&r, "/errors/mismatch") + u(&r, "/errors/reset"), 0);
    assert_eq!(
        served.load(Ordering::SeqCst),
        1000,
        "the server saw exactly 1000 requests"
    );
    assert!(u(&r, "/latency_us/p50") > 0 && u(&r, "/latency_us/max") >= u(&r, "/latency_us/p99"));
}

#[test]
fn a_corrupt_reply_in_a_thousand_is_counted() {
    let (addr, served) = server(Fault::CorruptEvery(1000));
    let r = loadgen(&[
        "echo",
        "-a",
        &addr,
        "-c",
        "4",
        "--requests",
        "5000",
        "--threads",
        "1",
    ]);
    let mismatches = u(&r, "/errors/mismatch");
    // Requests and errors settle the quota; each corrupted reply is one mismatch.
    assert_eq!(mismatches, served.load(Ordering::SeqCst) / 1000);
    assert!(mismatches >= 4, "{mismatches} mismatches");
    assert_eq!(u(&r, "/requests") + mismatches, 5000);
}

#[test]
fn resets_are_counted_and_the_run_completes() {
    let (addr, _) = server(Fault::ResetEvery(500));
    let r = loadgen(&["echo", "-a", &addr, "-c", "4", "-t", "1", "--threads", "1"]);
    assert!(u(&r, "/errors/reset") >= 2, "{r}");
    assert!(u(&r, "/requests") > 1000, "the run went on after resets");
    assert!(
        u(&r, "/connects") > u(&r, "/errors/reset"),
        "reconnected after each reset"
    );
}

#[test]
fn a_stall_shows_in_corrected_latency_only() {
    // 2000 requests/s on one connection; the server stalls 500 ms once. About a thousand
    // scheduled requests wait behind the stall: their corrected latency counts the wait, their
    // uncorrected latency (from when they were finally sent) does not.
    let (addr, _) = server(Fault::StallOnce(1500, Duration::from_millis(500)));
    let r = loadgen(&[
        "rate",
        "-a",
        &addr,
        "-c",
        "1",
        "--rate",
        "2000",
        "-t",
        "3",
        "--threads",
        "1",
    ]);
    let (corrected_p99, uncorrected_p99) = (
        u(&r, "/latency_us/p99"),
        u(&r, "/uncorrected_latency_us/p99"),
    );
    assert!(
        corrected_p99 > 100_000,
        "corrected p99 {corrected_p99} us hides the stall"
    );
    assert!(u(&r, "/latency_us/max") >= 480_000);
    assert!(
        uncorrected_p99 < 50_000,
        "uncorrected p99 {uncorrected_p99} us"
    );
}

/// An echo server for 128-byte messages that counts the requests each connection carried.
fn counting_server() -> (String, Arc<Mutex<Vec<Arc<AtomicU64>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counts: Arc<Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
    let registry = Arc::clone(&counts);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let count = Arc::new(AtomicU64::new(0));
            registry.lock().unwrap().push(Arc::clone(&count));
            thread::spawn(move || {
                let mut message = [0u8; 128];
                while stream.read_exact(&mut message).is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                    if stream.write_all(&message).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, counts)
}

#[test]
fn achieved_rate_matches_a_moderate_target_on_every_connection() {
    let (addr, counts) = counting_server();
    let r = loadgen(&[
        "rate",
        "-a",
        &addr,
        "-c",
        "8",
        "--rate",
        "4000",
        "-t",
        "2",
        "--threads",
        "1",
    ]);
    let achieved = f(&r, "/throughput_rps");
    assert!(
        (achieved - 4000.0).abs() / 4000.0 < 0.01,
        "achieved {achieved}/s for 4000/s"
    );
    assert_eq!(r["behind_schedule"], Value::Bool(false));
    assert_eq!(f(&r, "/target_rps"), 4000.0);
    // A reply is back long before the next request is due, so one connection could carry
    // them all: each of the 8 must carry its share all the same. (loadgen's reachability
    // probe is a connection that sends nothing.)
    assert_eq!(u(&r, "/starved_connections"), 0);
    let per_conn: Vec<u64> = counts
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .filter(|&n| n > 0)
        .collect();
    let total: u64 = per_conn.iter().sum();
    assert_eq!(per_conn.len(), 8, "{per_conn:?}");
    assert!(
        per_conn.iter().all(|&n| n * 8 >= total / 2),
        "every connection carries at least half its share: {per_conn:?}"
    );
}

#[test]
fn idle_connections_stay_open() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let open = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&open);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            thread::spawn(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let watcher = {
        let open = Arc::clone(&open);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(1500));
            open.load(Ordering::SeqCst)
        })
    };
    let r = loadgen(&[
        "idle",
        "-a",
        &addr,
        "--active",
        "2",
        "--idle",
        "40",
        "-t",
        "2",
        "--threads",
        "1",
    ]);
    // The probe connection is gone by then; 42 remain open in the middle of the run.
    assert_eq!(
        watcher.join().unwrap(),
        42,
        "the server side saw every connection open"
    );
    assert_eq!(u(&r, "/idle_open"), 40);
    assert_eq!(u(&r, "/idle_total"), 40);
    assert!(u(&r, "/requests") > 0);
}

#[test]
fn merge_adds_histograms_exactly() {
    let (addr, _) = server(Fault::None);
    let dir = std::env::temp_dir().join(format!("loadgen-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    let mut parts = Vec::new();
    for (i, n) in ["300", "500"].iter().enumerate() {
        let r = loadgen(&[
            "echo",
            "-a",
            &addr,
            "-c",
            "3",
            "--requests",
            n,
            "--threads",
            "1",
        ]);
        let path = dir.join(format!("{i}.json"));
        std::fs::write(&path, r.to_string()).unwrap();
        paths.push(path.to_string_lossy().into_owned());
        parts.push(r);
    }
    let output = Command::new(LOADGEN)
        .args(["merge", &paths[0], &paths[1], "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let merged: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(u(&merged, "/requests"), 800);
    let decode = |v: &Value| loadgen::stats::decode(v["histogram"].as_str().unwrap()).unwrap();
    let mut union = decode(&parts[0]);
    union.add(decode(&parts[1])).unwrap();
    let merged_h = decode(&merged);
    assert_eq!(merged_h.len(), 800);
    assert_eq!(
        merged_h, union,
        "the merged histogram is the sum, bucket for bucket"
    );
    assert_eq!(u(&merged, "/latency_us/max"), union.max());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_flags_and_unreachable_address_fail_clearly() {
    let run = |args: &[&str]| Command::new(LOADGEN).args(args).output().unwrap();
    let out = run(&["echo", "-a", "127.0.0.1:1", "-t", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
    let out = run(&["rate", "-a", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
    let out = run(&["echo", "-a", "127.0.0.1:1", "-t", "ten"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    let out = run(&["teleport", "-a", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn human_summary_names_errors_loudly() {
    let (addr, _) = server(Fault::CorruptEvery(100));
    let out = Command::new(LOADGEN)
        .args([
            "echo",
            "-a",
            &addr,
            "-c",
            "2",
            "--requests",
            "1000",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Requests/sec:"), "{text}");
    assert!(text.contains("2 connections, 128-byte messages"), "{text}");
    assert!(
        text.contains("!!! ERRORS:") && text.contains("mismatch 10"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no progress bar when stdout is not a terminal"
    );
}

#[test]
fn connections_never_served_are_reported() {
    // Serves its first client only; the others are accepted and ignored, like an iterative
    // server busy with someone else.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let mut held = Vec::new();
        let mut first = true;
        for stream in listener.incoming().flatten() {
            if std::mem::take(&mut first) {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut message = [0u8; 128];
                    while stream.read_exact(&mut message).is_ok()
                        && stream.write_all(&message).is_ok()
                    {}
                });
            } else {
                held.push(stream);
            }
        }
    });
    // The probe connection is the first: make it the served one by connecting it ourselves.
    let r = loadgen(&["echo", "-a", &addr, "-c", "5", "-t", "1", "--threads", "1"]);
    assert_eq!(u(&r, "/starved_connections"), 5, "{r}");
    assert_eq!(u(&r, "/requests"), 0);
}
