//! What runs loadgen on several hosts relies on: `--start-at` (the measured window opens no
//! earlier than the time given, after the warmup; a start in the past or far ahead is refused
//! before anything runs), and the Kubernetes manifests in deploy/kubernetes/ (checked line by
//! line, their loadgen arguments run as the Job's pods run them, and their logs merged).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
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

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes");

/// The YAML documents of a manifest file.
fn documents(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(MANIFESTS).join(name)).unwrap();
    text.split("\n---\n").map(str::to_string).collect()
}

/// The values of `key:` on every line of `doc` that holds it (quotes dropped); a flow list
/// (`["a", "b"]`) stays as written.
fn values(doc: &str, key: &str) -> Vec<String> {
    doc.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .strip_prefix(&format!("{key}:"))
        })
        .map(|v| v.trim().trim_matches('"').to_string())
        .collect()
}

fn value(doc: &str, key: &str) -> String {
    let found = values(doc, key);
    assert_eq!(found.len(), 1, "one `{key}:` in {doc}");
    found[0].clone()
}

/// A container's `args`, written as a flow list of double-quoted strings (which is JSON).
fn args(doc: &str) -> Vec<String> {
    serde_json::from_str(&value(doc, "args")).expect("args: a list of quoted strings")
}

/// The word after `flag` in `args`.
fn after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag}"));
    &args[i + 1]
}

#[test]
fn the_kubernetes_job_reaches_the_service_and_its_logs_merge_exactly() {
    let server = documents("server.yaml");
    let deployment = server
        .iter()
        .find(|d| value(d, "kind") == "Deployment")
        .unwrap();
    let service = server
        .iter()
        .find(|d| value(d, "kind") == "Service")
        .unwrap();
    let job = &documents("loadgen-job.yaml")[0];
    assert_eq!(value(job, "kind"), "Job");
    assert_eq!(value(job, "apiVersion"), "batch/v1");
    assert_eq!(value(job, "completionMode"), "Indexed");
    let pods: usize = value(job, "completions").parse().unwrap();
    assert!(pods > 1, "several pods");
    assert_eq!(value(job, "parallelism"), pods.to_string(), "all at once");
    // A pod that missed the start must fail, not be retried into another window.
    assert_eq!(value(job, "backoffLimit"), "0");
    assert_eq!(value(job, "restartPolicy"), "Never");
    assert_eq!(value(job, "image"), value(deployment, "image"));
    let load = args(job);
    let served = args(deployment);
    let service_name = values(service, "name")[0].clone();
    let port = value(service, "port");
    assert_eq!(after(&load, "--addr"), format!("{service_name}:{port}"));
    assert_eq!(
        after(&served, "--addr"),
        format!("0.0.0.0:{}", value(service, "targetPort"))
    );
    assert_eq!(
        after(&served, "--protocol"),
        load[0],
        "the scenario's protocol"
    );
    assert_eq!(after(&load, "--start-at"), "START_AT");
    assert!(load.contains(&"--json".to_string()));

    // The pods, as the documented `sed` makes them, against a local echo server for a short
    // window.
    let addr = echo_server();
    let start = format!("{}", now() as u64 + 2);
    let pod_args: Vec<String> = load
        .iter()
        .zip(std::iter::once(&String::new()).chain(&load))
        .map(|(arg, before)| match (before.as_str(), arg.as_str()) {
            ("--addr", _) => addr.clone(),
            ("-t", _) => "300ms".into(),
            ("--warmup", _) => "100ms".into(),
            (_, "START_AT") => start.clone(),
            _ => arg.clone(),
        })
        .collect();
    let pods: Vec<thread::JoinHandle<Output>> = (0..2)
        .map(|_| {
            let args = pod_args.clone();
            thread::spawn(move || Command::new(LOADGEN).args(&args).output().unwrap())
        })
        .collect();
    // `kubectl logs -l job-name=...`: each pod's stdout and stderr, one pod after another.
    let mut log = String::new();
    let mut results = Vec::new();
    for pod in pods {
        let out = pod.join().unwrap();
        assert!(out.status.success(), "{out:?}");
        results.push(serde_json::from_slice::<Value>(&out.stdout).unwrap());
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    log.push_str("loadgen: a line of stderr, as a pod that exited 1 leaves in its log\n");
    let dir = tempfile_dir();
    let path = dir.join("load.log");
    std::fs::write(&path, &log).unwrap();
    let out = Command::new(LOADGEN)
        .args(["merge", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sum = |key: &str| {
        results
            .iter()
            .map(|r| r[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(merged["requests"].as_u64().unwrap(), sum("requests"));
    assert_eq!(merged["connections"].as_u64().unwrap(), sum("connections"));
    let decode = |h: &Value| loadgen::stats::decode(h.as_str().unwrap()).unwrap();
    let mut histogram = decode(&results[0]["histogram"]);
    histogram.add(decode(&results[1]["histogram"])).unwrap();
    assert_eq!(
        decode(&merged["histogram"]),
        histogram,
        "the merge is the sum"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
