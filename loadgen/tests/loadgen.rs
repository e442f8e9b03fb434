//! loadgen against small servers written here, each misbehaving in one known way, so every
//! count loadgen reports can be checked against the truth. No assertion is about speed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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
    let (code, r, stderr) = loadgen_exit(args);
    assert_eq!(code, Some(0), "loadgen {args:?} failed: {stderr}");
    r
}

/// Runs loadgen with --json: its exit code, the JSON it printed, and its stderr.
fn loadgen_exit(args: &[&str]) -> (Option<i32>, Value, String) {
    let output = Command::new(LOADGEN)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let r = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("loadgen {args:?} printed no JSON ({e}): {stderr}"));
    (output.status.code(), r, stderr)
}

/// How a loadgen run under resource limits ended.
struct Limited {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Peak resident memory, from wait4's rusage.
    max_rss_kib: u64,
    elapsed: Duration,
}

/// Runs loadgen with `limits` (resource, soft, hard) set in the child, killed after
/// `deadline`: a test of a runaway (old) loadgen fails instead of eating the machine.
fn loadgen_limited(args: &[&str], limits: &[(u32, u64, u64)], deadline: Duration) -> Limited {
    let limits = limits.to_vec();
    let mut command = Command::new(LOADGEN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for &(resource, soft, hard) in &limits {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource as _, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let started = Instant::now();
    // Reaped below with wait4, which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = command.spawn().unwrap();
    let pipe = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child and fills both.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            break;
        }
        if started.elapsed() > deadline {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    Limited {
        status: ExitStatus::from_raw(status),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        max_rss_kib: usage.ru_maxrss as u64,
        elapsed: started.elapsed(),
    }
}

const GIB: u64 = 1 << 30;

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
        "--max-mismatch-rate",
        "0.01",
    ]);
    let mismatches = u(&r, "/errors/mismatch");
    // Requests and errors settle the quota; each corrupted reply is one mismatch.
    assert_eq!(mismatches, served.load(Ordering::SeqCst) / 1000);
    assert!(mismatches >= 4, "{mismatches} mismatches");
    assert_eq!(u(&r, "/requests") + mismatches, 5000);
}

#[test]
fn any_mismatch_fails_the_run_by_default() {
    let (addr, _) = server(Fault::CorruptEvery(1000));
    let args = [
        "echo",
        "-a",
        &addr,
        "-c",
        "4",
        "--requests",
        "3000",
        "--threads",
        "1",
    ];
    let (code, r, stderr) = loadgen_exit(&args);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        u(&r, "/errors/mismatch") >= 2,
        "the result is printed all the same"
    );
    assert!(
        stderr.contains("replies mismatched") && stderr.contains("--max-mismatch-rate 0"),
        "{stderr}"
    );
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
    // Where the delay went: those requests waited for the one connection (the server's
    // doing), while loadgen's own lateness with a connection free stays a small part of it.
    let (wait_p99, late_p99) = (u(&r, "/pacing/wait_us/p99"), u(&r, "/pacing/late_us/p99"));
    assert!(
        wait_p99 > 100_000,
        "wait p99 {wait_p99} us: {}",
        r["pacing"]
    );
    assert!(
        late_p99 * 10 < wait_p99,
        "late p99 {late_p99} us: {}",
        r["pacing"]
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
    assert!(
        parts[0].get("pacing").is_none() && merged.get("pacing").is_none(),
        "pacing is the open loop's"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_flags_and_unreachable_address_fail_clearly() {
    let run = |args: &[&str]| Command::new(LOADGEN).args(args).output().unwrap();
    let out = run(&["echo", "-a", "127.0.0.1:1", "-t", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unreachable is a runtime failure"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
    let out = run(&["rate", "-a", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
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
    // The probe connection is the first, and the one served.
    let (code, r, stderr) =
        loadgen_exit(&["echo", "-a", &addr, "-c", "5", "-t", "1", "--threads", "1"]);
    assert_eq!(u(&r, "/starved_connections"), 5, "{r}");
    assert_eq!(u(&r, "/unconnected_connections"), 0, "all five connected");
    assert_eq!(u(&r, "/requests"), 0);
    assert_eq!(code, Some(1), "a run that measured nothing fails");
    assert!(stderr.contains("no request completed"), "{stderr}");
}

// Issue 14, item 2: loadgen bounds what it is given.

#[test]
fn a_rate_beyond_scheduling_is_refused() {
    let (addr, _) = server(Fault::None);
    // The old schedule never advanced at this rate and queued sends until the OOM killer; the
    // address-space limit makes such a loadgen die in a second or two instead.
    let out = loadgen_limited(
        &[
            "rate",
            "-a",
            &addr,
            "--rate",
            "18446744073709551615",
            "-t",
            "1",
        ],
        &[(libc::RLIMIT_AS, GIB, GIB)],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{:?}: {}",
        out.status,
        out.stderr
    );
    assert!(
        out.stderr.contains("--rate") && out.stderr.contains("at most 1e9"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_schedule_far_behind_keeps_memory_bounded_and_counts_what_it_never_sent() {
    let (addr, _) = server(Fault::None);
    // A billion requests a second: the schedule falls behind at once and stays behind.
    // Slots that wait longer than --timeout are missed; those still waiting at the end are
    // unsent. Neither may cost memory.
    let out = loadgen_limited(
        &[
            "rate",
            "-a",
            &addr,
            "--rate",
            "1e9",
            "-c",
            "4",
            "-t",
            "1",
            "--timeout",
            "300ms",
            "--threads",
            "1",
            "--json",
        ],
        &[(libc::RLIMIT_AS, GIB, GIB)],
        Duration::from_secs(10),
    );
    assert!(
        out.status.signal().is_none(),
        "killed by {:?} after {:?}, peak RSS {} KiB: {}",
        out.status.signal(),
        out.elapsed,
        out.max_rss_kib,
        out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
    assert!(
        out.max_rss_kib < 200 * 1024,
        "peak RSS {} KiB",
        out.max_rss_kib
    );
    let r: Value = serde_json::from_str(&out.stdout).expect("one JSON object");
    let (missed, unsent) = (u(&r, "/missed"), u(&r, "/unsent"));
    assert!(missed > 100_000_000, "missed {missed}");
    assert!(
        unsent > 0 && unsent <= 300_000_001,
        "unsent {unsent}: at most --timeout of the schedule waits"
    );
    assert!(u(&r, "/requests") > 0, "{r}");
    assert_eq!(r["behind_schedule"], Value::Bool(true));
    assert_eq!(out.status.code(), Some(1), "never-sent requests are errors");
    assert!(
        out.stderr.contains("missed") && out.stderr.contains("--max-error-rate"),
        "{}",
        out.stderr
    );
}

#[test]
fn sizes_beyond_the_machine_are_refused() {
    let (addr, _) = server(Fault::None);
    let limited = |args: &[&str]| {
        loadgen_limited(
            args,
            &[(libc::RLIMIT_AS, GIB, GIB)],
            Duration::from_secs(10),
        )
    };
    // 50 connections of 100 TB messages: the old loadgen aborted on the allocation.
    let out = limited(&["echo", "-a", &addr, "-l", "99999999999999", "-t", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{:?}: {}",
        out.status,
        out.stderr
    );
    assert!(
        out.stderr.contains("-l 99999999999999 with -c 50")
            && out.stderr.contains("of memory available"),
        "{}",
        out.stderr
    );
    let out = limited(&["bulk", "-a", &addr, "-l", "99999999999999", "-t", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("2^40"), "{}", out.stderr);
    for (args, says) in [
        (&["-c", "18446744073709551615"][..], "RLIMIT_NOFILE"),
        (&["--threads", "0"][..], "--threads 0"),
        (&["--threads", "100000"][..], "--threads 100000"),
        (&["--timeout", "0"][..], "--timeout"),
    ] {
        let mut all = vec!["echo", "-a", &addr, "-t", "1"];
        all.extend_from_slice(args);
        let out = limited(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}

// Issue 14, item 3: loadgen's exit status tells the truth.

/// A server that takes each connection and does `what` with it.
fn server_that(what: fn(std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || what(stream));
        }
    });
    addr
}

#[test]
fn a_run_where_every_request_fails_exits_1() {
    // Closes every connection at once: every request is a reset.
    let closes = server_that(drop);
    let (code, r, stderr) = loadgen_exit(&[
        "echo",
        "-a",
        &closes,
        "-c",
        "2",
        "-t",
        "0.5",
        "--threads",
        "1",
    ]);
    assert!(u(&r, "/errors/reset") > 0, "{r}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no request completed") && stderr.contains("--max-error-rate 0.01"),
        "{stderr}"
    );
    // Never reads: every request times out.
    let mute = server_that(|stream| {
        thread::sleep(Duration::from_secs(5));
        drop(stream);
    });
    let (code, r, stderr) = loadgen_exit(&[
        "echo",
        "-a",
        &mute,
        "-c",
        "2",
        "-t",
        "1",
        "--timeout",
        "200ms",
        "--threads",
        "1",
    ]);
    assert!(u(&r, "/errors/timeout") > 0, "{r}");
    assert_eq!(code, Some(1), "{stderr}");
    // -t 0 measures nothing.
    let out = Command::new(LOADGEN)
        .args(["echo", "-a", &mute, "-t", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-t 0 measures nothing"));
}

#[test]
fn errors_within_max_error_rate_pass_and_beyond_fail() {
    // A reset every 50 requests is 2%: over the 1% default, under an allowance of 5%.
    let (addr, _) = server(Fault::ResetEvery(50));
    let args = [
        "echo",
        "-a",
        &addr,
        "-c",
        "2",
        "--requests",
        "2000",
        "--threads",
        "1",
    ];
    let (code, r, stderr) = loadgen_exit(&args);
    assert!(u(&r, "/errors/reset") > 20, "{r}");
    assert_eq!(code, Some(1), "{stderr}");
    let mut lenient = args.to_vec();
    lenient.extend(["--max-error-rate", "5%"]);
    let (code, _, stderr) = loadgen_exit(&lenient);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn descriptors_are_raised_to_the_hard_limit_and_checked_against_it() {
    let (addr, _) = server(Fault::None);
    let nofile = libc::RLIMIT_NOFILE;
    let args = [
        "echo",
        "-a",
        &addr,
        "-c",
        "100",
        "-t",
        "0.5",
        "--threads",
        "1",
        "--json",
    ];
    // Soft 32, hard 1024: 100 connections fit once the soft limit is raised. (100, not more:
    // the test server's listen queue is 128, and a SYN dropped waits a second to retry.)
    let out = loadgen_limited(&args, &[(nofile, 32, 1024)], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(u(&r, "/errors/connect"), 0, "{r}");
    assert_eq!(u(&r, "/connects"), 100, "{r}");
    // Hard 64: they cannot fit, and loadgen says so before it starts.
    let out = loadgen_limited(&args, &[(nofile, 64, 64)], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("-c 100 needs 100 descriptors")
            && out.stderr.contains("RLIMIT_NOFILE allows 64"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn connections_still_connecting_at_the_end_are_named() {
    // A listen queue of one that is never accepted from: the probe and one connection fill
    // it, and the kernel drops the other connections' SYNs, so they are still connecting
    // when the one-second run ends.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(1).unwrap();
    let addr = socket
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .to_string();
    let out = Command::new(LOADGEN)
        .args(["echo", "-a", &addr, "-c", "6", "-t", "1", "--threads", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "active connections never connected: connecting took longer than the 1.00s run"
        ),
        "{text}"
    );
    drop(socket);
}

#[test]
fn addresses_resolve_and_bad_ones_are_usage_errors() {
    let (addr, _) = server(Fault::None);
    let port = addr.rsplit_once(':').unwrap().1;
    let r = loadgen(&[
        "echo",
        "-a",
        &format!("localhost:{port}"),
        "-c",
        "1",
        "--requests",
        "10",
    ]);
    assert_eq!(u(&r, "/requests"), 10);
    // A name's addresses are tried in turn: a dead one first does not stop the run.
    let live: SocketAddr = addr.parse().unwrap();
    let dead: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert_eq!(
        loadgen::run::probe(&[dead, live], Duration::from_secs(1)).unwrap(),
        live
    );
    // IPv6 loopback, written either way, where the machine has it.
    if let Ok(listener) = TcpListener::bind("[::1]:0") {
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut message = [0u8; 128];
                    while stream.read_exact(&mut message).is_ok()
                        && stream.write_all(&message).is_ok()
                    {}
                });
            }
        });
        for a in [format!("[::1]:{port}"), format!("::1:{port}")] {
            let r = loadgen(&["echo", "-a", &a, "-c", "1", "--requests", "10"]);
            assert_eq!(u(&r, "/requests"), 10, "{a}");
        }
    }
    for bad in ["localhost", "::1", "127.0.0.1:99999", "localhost:http", ""] {
        let out = Command::new(LOADGEN)
            .args(["echo", "-a", bad, "-t", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-a '{bad}': {err}");
        assert!(err.contains("HOST:PORT"), "-a '{bad}': {err}");
    }
}

// Issue 17: what happens over time and across connections.

/// The series' intervals as (requests, errors), from a `--json` result.
fn series_counts(r: &Value) -> Vec<(u64, u64)> {
    r["series"]["intervals"]
        .as_array()
        .unwrap_or_else(|| panic!("no series in {r}"))
        .iter()
        .map(|p| (u(p, "/requests"), u(p, "/errors")))
        .collect()
}

#[test]
fn a_server_that_pauses_300ms_every_second_shows_three_dips_in_three_seconds() {
    // Echoes, but from its first request on holds every reply while the clock is 500 to
    // 800 ms into a second: loadgen's measured window (from its first request) holds three
    // pauses whole, and each shows as a dip of three intervals.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let epoch: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let epoch = Arc::clone(&epoch);
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut message = [0u8; 128];
                while stream.read_exact(&mut message).is_ok() {
                    let into = epoch.get_or_init(Instant::now).elapsed().as_millis() % 1000;
                    if (500..800).contains(&into) {
                        thread::sleep(Duration::from_millis((800 - into) as u64));
                    }
                    if stream.write_all(&message).is_err() {
                        return;
                    }
                }
            });
        }
    });
    // An open loop: outside the pauses every interval completes its 200 requests whatever
    // else the machine is doing, so only the pauses dip.
    let r = loadgen(&[
        "rate",
        "-a",
        &addr,
        "-c",
        "4",
        "--rate",
        "2000",
        "-t",
        "3",
        "--threads",
        "1",
        "--interval",
        "100ms",
    ]);
    assert_eq!(f(&r, "/series/interval_ms"), 100.0);
    let counts = series_counts(&r);
    assert_eq!(counts.len(), 30, "{counts:?}");
    assert_eq!(
        counts.iter().map(|c| c.0).sum::<u64>(),
        u(&r, "/requests"),
        "the intervals add up to the run"
    );
    let series: loadgen::series::Series = serde_json::from_value(r["series"].clone()).unwrap();
    let (dips, longest_ms) = loadgen::series::stalls(&series, f(&r, "/duration_s")).unwrap();
    let rates: Vec<u64> = counts.iter().map(|c| c.0).collect();
    assert_eq!(dips, 3, "per interval: {rates:?}");
    // 300 ms, or 400 when a pause straddles an interval's start; more only when the test
    // server's threads wake late on a loaded machine (one did 190 ms late among other builds).
    assert!(
        (300.0..=600.0).contains(&longest_ms),
        "longest {longest_ms} ms: {rates:?}"
    );
    // Inside each pause nothing completes.
    for second in 0..3 {
        assert_eq!(rates[second * 10 + 6], 0, "{rates:?}");
    }
    // The corrected p99 of an interval that waited out a pause is in the hundreds of ms.
    let worst = r["series"]["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| u(p, "/max"))
        .max()
        .unwrap();
    assert!(worst >= 250_000, "worst interval max {worst} us");
}

#[test]
fn a_server_that_serves_half_its_connections_gives_jain_near_one_half() {
    // Accepts every connection but answers only the even-numbered ones (the probe is 0).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().flatten().enumerate() {
            if n % 2 == 1 {
                held.push(stream);
                continue;
            }
            thread::spawn(move || {
                let mut stream = stream;
                let mut message = [0u8; 128];
                while stream.read_exact(&mut message).is_ok() && stream.write_all(&message).is_ok()
                {
                }
            });
        }
    });
    let r = loadgen(&["echo", "-a", &addr, "-c", "10", "-t", "1", "--threads", "1"]);
    let jain = f(&r, "/fairness/jain");
    assert!((0.4..=0.6).contains(&jain), "Jain's index {jain}: {r}");
    assert_eq!(u(&r, "/fairness/connections"), 10);
    assert_eq!(u(&r, "/fairness/served"), 5);
    assert_eq!(u(&r, "/fairness/min"), 0);
    assert!(u(&r, "/fairness/max") > 100);
    assert_eq!(
        u(&r, "/starved_connections"),
        5,
        "starved_connections stays"
    );
    assert!(f(&r, "/fairness/cv") > 0.9, "cv of five n and five 0 is 1");
    // And an even server is fair.
    let (even, _) = server(Fault::None);
    let r = loadgen(&["echo", "-a", &even, "-c", "10", "-t", "1", "--threads", "1"]);
    assert!(f(&r, "/fairness/jain") > 0.95, "{}", r["fairness"]);
}

/// Every interval of an `--hlog` file, read with the hdrhistogram crate's own log reader:
/// (tag, start s, duration s, histogram).
fn read_hlog(path: &std::path::Path) -> Vec<(String, f64, f64, hdrhistogram::Histogram<u64>)> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut base = None;
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.unwrap_or_else(|e| panic!("{}: {e:?}", path.display())) {
            LogEntry::BaseTime(t) => base = Some(t),
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(iv) => {
                assert!(base.is_some(), "BaseTime comes before the intervals");
                use base64::Engine as _;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(iv.encoded_histogram())
                    .unwrap();
                let h: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut raw.as_slice())
                    .unwrap();
                out.push((
                    iv.tag().unwrap().as_str().to_string(),
                    iv.start_timestamp().as_secs_f64(),
                    iv.duration().as_secs_f64(),
                    h,
                ));
            }
        }
    }
    out
}

#[test]
fn hlog_is_read_back_by_the_hdrhistogram_log_reader() {
    let (addr, _) = server(Fault::None);
    let dir = tempdir("hlog");
    let path = dir.join("run.hlog");
    let r = loadgen(&[
        "echo",
        "-a",
        &addr,
        "-c",
        "3",
        "-t",
        "1",
        "--threads",
        "2",
        "--interval",
        "200ms",
        "--hlog",
        path.to_str().unwrap(),
    ]);
    let log = read_hlog(&path);
    let corrected: Vec<_> = log.iter().filter(|e| e.0 == "corrected").collect();
    let uncorrected: Vec<_> = log.iter().filter(|e| e.0 == "uncorrected").collect();
    assert_eq!(corrected.len(), 5, "1 s in 200 ms intervals");
    assert_eq!(uncorrected.len(), 5);
    for (i, e) in corrected.iter().enumerate() {
        assert!((e.1 - 0.2 * i as f64).abs() < 1e-3, "start {}", e.1);
        assert!((e.2 - 0.2).abs() < 1e-3, "duration {}", e.2);
    }
    let total: u64 = corrected.iter().map(|e| e.3.len()).sum();
    assert_eq!(
        total,
        u(&r, "/requests"),
        "every request is in one interval"
    );
    let counts = series_counts(&r);
    for (e, c) in corrected.iter().zip(&counts) {
        assert_eq!(e.3.len(), c.0, "the log and the JSON series agree");
    }
    let mut whole = loadgen::stats::decode(r["histogram"].as_str().unwrap()).unwrap();
    for e in &corrected {
        whole.subtract(&e.3).unwrap();
    }
    assert!(
        whole.is_empty(),
        "the intervals add up to the run's histogram exactly"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "loadgen-{what}-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn merge_adds_interval_logs_and_series_of_several_processes() {
    let (addr, _) = server(Fault::None);
    let dir = tempdir("merge-hlog");
    // Two loadgen processes at once, as on two hosts.
    let runs: Vec<_> = (0..2)
        .map(|i| {
            let (addr, hlog, json) = (
                addr.clone(),
                dir.join(format!("{i}.hlog")),
                dir.join(format!("{i}.json")),
            );
            thread::spawn(move || {
                let r = loadgen(&[
                    "echo",
                    "-a",
                    &addr,
                    "-c",
                    "2",
                    "-t",
                    "1",
                    "--threads",
                    "1",
                    "--hlog",
                    hlog.to_str().unwrap(),
                ]);
                std::fs::write(&json, r.to_string()).unwrap();
                (hlog, json, r)
            })
        })
        .collect();
    let runs: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    let merged_log = dir.join("merged.hlog");
    let out = Command::new(LOADGEN)
        .arg("merge")
        .args(runs.iter().map(|r| &r.0))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&merged_log, &out.stdout).unwrap();
    let log = read_hlog(&merged_log);
    let requests: u64 = runs.iter().map(|r| u(&r.2, "/requests")).sum();
    for tag in ["corrected", "uncorrected"] {
        let mine: Vec<_> = log.iter().filter(|e| e.0 == tag).collect();
        assert!(
            (10..=11).contains(&mine.len()),
            "{tag}: {} intervals",
            mine.len()
        );
        assert_eq!(mine.iter().map(|e| e.3.len()).sum::<u64>(), requests);
    }
    // One interval after another from the earliest start, each the sum of those that line up.
    for (i, e) in log.iter().filter(|e| e.0 == "corrected").enumerate() {
        assert!(
            (e.1 - 0.1 * i as f64).abs() < 1e-3,
            "interval {i} at {}",
            e.1
        );
    }
    // The JSON results merge their series the same way.
    let out = Command::new(LOADGEN)
        .arg("merge")
        .args(runs.iter().map(|r| &r.1))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = series_counts(&merged);
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), requests);
    assert_eq!(u(&merged, "/fairness/connections"), 4);
    assert!(merged["fairness"]["median"].is_null());
    std::fs::remove_dir_all(dir).unwrap();
}
