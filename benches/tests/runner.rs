//! The runner end to end on the smoke suite and on small suites written here: every result
//! line complete and plausible, a server killed mid-cell recorded as failed while the run goes
//! on, `--resume` running only what is missing, an unsupported model recorded as such.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_bench");

/// The `server` and `loadgen` binaries, built once next to `bench`.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "servers", "-p", "loadgen"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building server and loadgen failed");
        Path::new(BENCH).parent().unwrap().to_path_buf()
    })
}

/// A scratch directory, removed when the test ends.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bench-test-{name}-"))
        .tempdir()
        .unwrap()
}

fn bench(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(BENCH)
        .args(args)
        .args(["--bin-dir", bin_dir().to_str().unwrap()])
        .envs(envs.iter().copied())
        .output()
        .expect("run bench")
}

fn lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The lines of an interrupted run: complete lines only (the cut one, if any, is skipped, as
/// `--resume` skips it).
fn complete_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("results.jsonl")).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn write_suite(dir: &Path, body: &str) -> String {
    let path = dir.join("suite.toml");
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn smoke_suite_lines_are_complete_and_plausible() {
    let scratch = temp_dir("smoke");
    let dir = scratch.path();
    let out = dir.join("run");
    let output = bench(
        &["run", "--suite", "smoke", "--out", out.to_str().unwrap()],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), 12, "2 models x 2 scenarios x 3 trials");
    for line in &lines {
        assert_eq!(line["schema"], 1);
        assert_eq!(line["status"], "ok", "{line}");
        for field in [
            "run", "cell", "trial", "model", "protocol", "scenario", "params", "reason", "load",
            "server", "loadgen", "noise",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        let load = &line["load"];
        assert!(load["requests"].as_u64().unwrap() > 0, "{load}");
        assert!(load["throughput_rps"].as_f64().unwrap() > 0.0);
        assert!(load["latency_us"]["p50"].as_u64().unwrap() > 0);
        assert!(load["histogram"].as_str().unwrap().len() > 10);
        let server = &line["server"];
        let cpu = server["cpu_user_s"].as_f64().unwrap() + server["cpu_sys_s"].as_f64().unwrap();
        assert!(cpu > 0.0, "server CPU {server}");
        assert!(server["peak_pss_kib"].as_u64().unwrap() > 100, "{server}");
        assert!(server["cpu_us_per_request"].as_f64().unwrap() > 0.0);
        assert!(server["peak_threads"].as_u64().unwrap() >= 1);
        assert_eq!(server["peak_processes"], 1);
        assert_eq!(server["clean_exit"], true);
        assert!(line["loadgen"]["cpu_sys_s"].as_f64().unwrap() > 0.0);
        let noise = &line["noise"];
        for side in ["server_cpus", "load_cpus"] {
            let busy = noise[side]["busy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&busy), "{noise}");
            assert!(noise[side]["steal"].as_f64().is_some(), "{noise}");
        }
        assert!(noise["loadgen_cpu"].as_f64().unwrap() > 0.0, "{noise}");
    }
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("env.json")).unwrap()).unwrap();
    for field in [
        "kernel",
        "cpu_model",
        "cores",
        "governor",
        "memory_kib",
        "rustc",
        "git_commit",
        "git_dirty",
        "nofile",
        "pinning",
        "suite",
    ] {
        assert!(env.get(field).is_some(), "env.json lacks {field}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("tier") && stdout.contains("epoll-et"),
        "summary table: {stdout}"
    );
    assert!(
        stdout.contains("Tiers: models share a tier") && stdout.contains("throughput: "),
        "the rule and the tiers in words: {stdout}"
    );
}

const TWO_SECOND_CELLS: &str = r#"
description = "two slow cells"
trials = 1
warmup = "0ms"
duration = "2s"
models = ["threads", "epoll-et"]
[[scenario]]
scenario = "echo"
connections = [4]
"#;

/// Pids of cell servers (`server --model ...`, not bench's `server --list`) whose parent is
/// `parent`.
fn servers_of(parent: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((name, rest)) = stat.split_once(") ") else {
                return false;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            name.ends_with("(server")
                && rest.split_whitespace().nth(1) == Some(&parent.to_string())
                && cmdline.split(|&b| b == 0).any(|arg| arg == b"--model")
        })
        .collect()
}

#[test]
fn a_server_killed_mid_cell_is_a_failed_line_and_the_run_goes_on() {
    let scratch = temp_dir("kill");
    let dir = scratch.path();
    let suite = write_suite(dir, TWO_SECOND_CELLS);
    let out = dir.join("run");
    let mut child = Command::new(BENCH)
        .args([
            "run",
            "--suite",
            &suite,
            "--out",
            out.to_str().unwrap(),
            "--bin-dir",
            bin_dir().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the first cell's server once it is under load.
    let start = Instant::now();
    let victim = loop {
        if let Some(&pid) = servers_of(child.id()).first() {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no server started"
        );
        thread::sleep(Duration::from_millis(20));
    };
    thread::sleep(Duration::from_millis(700));
    // SAFETY: kill only sends a signal.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    assert!(child.wait().unwrap().success());
    let lines = lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], "failed", "{}", lines[0]);
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("server") && reason.contains("signal 9"),
        "{reason}"
    );
    assert_eq!(lines[1]["status"], "ok", "the run went on: {}", lines[1]);
}

#[test]
fn resume_runs_only_the_missing_cells() {
    let scratch = temp_dir("resume");
    let dir = scratch.path();
    let suite = write_suite(
        dir,
        &TWO_SECOND_CELLS
            .replace("trials = 1", "trials = 2")
            .replace("2s", "500ms"),
    );
    let out = dir.join("run");
    let mut child = Command::new(BENCH)
        .args([
            "run",
            "--suite",
            &suite,
            "--out",
            out.to_str().unwrap(),
            "--bin-dir",
            bin_dir().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while complete_lines(&out).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // interrupted in the third cell
    child.wait().unwrap();
    for pid in servers_of(child.id()) {
        // SAFETY: kill only sends a signal (an orphaned server of the killed run).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let before: Vec<String> = complete_lines(&out)
        .iter()
        .map(|l| format!("{}#{}", l["cell"], l["trial"]))
        .collect();
    assert!(before.len() >= 2 && before.len() < 4, "{before:?}");
    let output = bench(
        &[
            "run",
            "--suite",
            &suite,
            "--out",
            out.to_str().unwrap(),
            "--resume",
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{} cells already done, {} to run",
            before.len(),
            4 - before.len()
        )),
        "{stderr}"
    );
    let after: Vec<String> = lines(&out)
        .iter()
        .map(|l| format!("{}#{}", l["cell"], l["trial"]))
        .collect();
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "finished cells kept, not redone"
    );
    let mut unique = after.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "no cell twice: {after:?}");
}

#[test]
fn an_unsupported_model_is_recorded_with_its_reason() {
    let scratch = temp_dir("unsupported");
    let dir = scratch.path();
    let out = dir.join("run");
    let output = bench(
        &[
            "run",
            "--suite",
            "smoke",
            "--scenarios",
            "echo",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("IOMODELS_SIMULATE_UNSUPPORTED", "threads")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = lines(&out);
    let threads = lines.iter().find(|l| l["model"] == "threads").unwrap();
    assert_eq!(threads["status"], "unsupported", "{threads}");
    assert!(threads["reason"]
        .as_str()
        .unwrap()
        .contains("IOMODELS_SIMULATE_UNSUPPORTED"));
    let epoll = lines.iter().find(|l| l["model"] == "epoll-et").unwrap();
    assert_eq!(epoll["status"], "ok");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("unsupported"),
        "the summary shows it"
    );
}
