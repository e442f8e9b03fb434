//! The runner end to end on the smoke suite and on small suites written here: every result
//! line complete and plausible, a server killed mid-cell recorded as failed while the run goes
//! on (and the run then exiting 1), `--resume` running only what is missing, an unsupported
//! model recorded as such; and what it refuses: a second run into a directory in use, a
//! scenario over a protocol it does not speak, a full disk (named in full).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::{bin_dir, BENCH};

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
        assert_eq!(line["schema"], 2);
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
        // Schema 2: the series covers the 300 ms window, the fairness the 10 connections.
        let series = load["series"]["intervals"].as_array().unwrap();
        assert_eq!(load["series"]["interval_ms"], 100.0, "{load}");
        assert_eq!(series.len(), 3, "{load}");
        let per_interval: u64 = series.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
        assert_eq!(per_interval, load["requests"].as_u64().unwrap());
        assert_eq!(load["fairness"]["connections"], 10);
        assert_eq!(load["fairness"]["served"], 10);
        assert!(load["fairness"]["jain"].as_f64().unwrap() > 0.9, "{load}");
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
        // The stall watch, where threads may have real-time priority.
        if benches::stalls::realtime_allowed() {
            for side in ["server", "load"] {
                let s = &noise["stalls"][side];
                let (longest, total) = (s["longest_us"].as_u64(), s["total_us"].as_u64());
                assert!(
                    longest.is_some() && total >= longest,
                    "{side}: {}",
                    noise["stalls"]
                );
            }
        }
    }
    // How far apart the server's and the load's CPU were, before and after each cell: a
    // probe may give up when tests beside this one hold a CPU, but not every one.
    let probed = lines
        .iter()
        .filter(|l| {
            l["noise"]["cpu_link_ns"]["before"]
                .as_u64()
                .is_some_and(|ns| ns > 0)
        })
        .count();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        probed > 0 || cores < 2,
        "no cell has a cross-CPU round trip"
    );
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("env.json")).unwrap()).unwrap();
    assert!(
        env["cpu_link_ns"]["probes"].is_array(),
        "{}",
        env["cpu_link_ns"]
    );
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
    // When the run started, whatever its directory is called (here --out): within this test.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let started = env["started_unix_s"].as_i64().expect("started_unix_s");
    assert!(started <= now && now - started < 600, "{started} vs {now}");
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
    let child = Command::new(BENCH)
        .args([
            "run",
            "--suite",
            &suite,
            "--out",
            out.to_str().unwrap(),
            "--bin-dir",
            bin_dir().to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines = lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], "failed", "{}", lines[0]);
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("server killed by signal 9 (SIGKILL) during the cell"),
        "{reason}"
    );
    assert!(
        !reason.ends_with(':') && !reason.ends_with(char::is_whitespace),
        "no empty detail: {reason:?}"
    );
    assert_eq!(lines[1]["status"], "ok", "the run went on: {}", lines[1]);
    assert_eq!(output.status.code(), Some(1), "a cell failed: {stderr}");
    let cell = lines[0]["cell"].as_str().unwrap();
    assert!(
        stderr.contains(&format!("1 cell failed:\n  {cell} trial 1: {reason}")),
        "{stderr}"
    );
}

/// A bin directory whose `server` lists the models as the real one does, then fails every
/// cell before listening; `loadgen` is the real one.
fn failing_server_bin_dir(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("server");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in --list) exec {} \"$@\";; esac\n\
             echo 'simulated failure' >&2\nexit 1\n",
            bin_dir().join("server").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(bin_dir().join("loadgen"), bin.join("loadgen")).unwrap();
    bin
}

#[test]
fn failed_cells_exit_1_and_are_listed_unless_allowed() {
    let scratch = temp_dir("failures");
    let dir = scratch.path();
    let suite = write_suite(
        dir,
        &TWO_SECOND_CELLS
            .replace("trials = 1", "trials = 2")
            .replace(r#"["threads", "epoll-et"]"#, r#"["epoll-et"]"#),
    );
    let bin = failing_server_bin_dir(dir);
    let run = |out: &Path, extra: &[&str]| {
        Command::new(BENCH)
            .args(["run", "--suite", &suite, "--out", out.to_str().unwrap()])
            .args(["--bin-dir", bin.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let listed = "bench: 2 cells failed:\n  \
        echo/epoll-et/c=4 trial 1: server exit status 1 before listening: simulated failure\n  \
        echo/epoll-et/c=4 trial 2: server exit status 1 before listening: simulated failure\n";
    let output = run(&dir.join("strict"), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(listed), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("echo c=4"),
        "the summary still printed: {stdout}"
    );
    assert!(dir.join("strict/report.html").is_file(), "and the report");

    let output = run(&dir.join("allowed"), &["--allow-failures"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(listed), "listed either way: {stderr}");
}

#[test]
fn a_second_run_into_a_directory_in_use_is_refused() {
    let scratch = temp_dir("lock");
    let dir = scratch.path();
    let suite = write_suite(
        dir,
        &TWO_SECOND_CELLS
            .replace(r#"["threads", "epoll-et"]"#, r#"["epoll-et"]"#)
            .replace("2s", "1500ms"),
    );
    let out = dir.join("run");
    let first = Command::new(BENCH)
        .args(["run", "--suite", &suite, "--out", out.to_str().unwrap()])
        .args(["--bin-dir", bin_dir().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while servers_of(first.id()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no server started"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let in_use = format!(
        "bench: {} is in use by another bench run (pid {})",
        out.display(),
        first.id()
    );
    for extra in [&[][..], &["--resume"][..]] {
        let mut args = vec!["run", "--suite", &suite, "--out", out.to_str().unwrap()];
        args.extend(extra);
        let second = bench(&args, &[]);
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(&in_use), "{extra:?}: {stderr}");
    }
    let output = first.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cells: Vec<String> = lines(&out)
        .iter()
        .map(|l| format!("{}#{}", l["cell"].as_str().unwrap(), l["trial"]))
        .collect();
    assert_eq!(cells, ["echo/epoll-et/c=4#1"], "each cell once");
    // The lock ends with the run that held it.
    let resumed = bench(
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
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("1 cell already done, 0 to run"), "{stderr}");
}

#[test]
fn a_scenario_over_a_protocol_it_does_not_speak_is_refused() {
    let scratch = temp_dir("protocol");
    let dir = scratch.path();
    let suite = write_suite(
        dir,
        &TWO_SECOND_CELLS.replace(
            "scenario = \"echo\"",
            "scenario = \"bulk\"\nprotocol = \"http\"",
        ),
    );
    let out = dir.join("run");
    let output = bench(
        &["run", "--suite", &suite, "--out", out.to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "bench: {suite}: scenario 'bulk' cannot run over protocol 'http' (valid protocols for bulk: transfer)"
        )),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing ran");
}

/// `bench run` on a disk that "fills" at `bytes`: with RLIMIT_FSIZE a write past it fails
/// with EFBIG (once SIGXFSZ, which would kill the process, is ignored).
fn bench_on_full_disk(args: &[&str], bytes: u64) -> Output {
    let mut command = Command::new(BENCH);
    command
        .args(args)
        .args(["--bin-dir", bin_dir().to_str().unwrap()]);
    // SAFETY: signal and setrlimit only change the child's own state, before exec.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().unwrap()
}

#[test]
fn a_full_disk_is_named_in_full_and_leaves_no_cut_file() {
    let scratch = temp_dir("full");
    let dir = scratch.path();
    let suite = write_suite(
        dir,
        &TWO_SECOND_CELLS
            .replace(r#"["threads", "epoll-et"]"#, r#"["epoll-et"]"#)
            .replace("2s", "300ms"),
    );
    // Room for the lock file's pid, not for plan.json.
    let out = dir.join("run");
    let output = bench_on_full_disk(
        &["run", "--suite", &suite, "--out", out.to_str().unwrap()],
        64,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "bench: {}: File too large",
            out.join("plan.json").display()
        )),
        "{stderr}"
    );
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["bench.lock"], "no cut plan.json, no cell run");

    // Room for plan.json and env.json (each under 1.5 KiB), not for a result line (its
    // histogram alone is more).
    let out = dir.join("run2");
    let output = bench_on_full_disk(
        &["run", "--suite", &suite, "--out", out.to_str().unwrap()],
        1536,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let results = out.join("results.jsonl");
    assert!(
        stderr.contains(&format!("bench: {}: File too large", results.display())),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&results).unwrap(),
        b"",
        "the cut line is undone"
    );
    // Space is back: --resume finishes the run.
    let output = bench(&["run", "--resume", "--out", out.to_str().unwrap()], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(complete_lines(&out).len(), 1, "the cell, once");
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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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

/// `max_time` is the run's budget, not each session's: a run that stopped for it gets no
/// fresh budget from `--resume`.
#[test]
fn a_resumed_run_keeps_the_time_it_spent() {
    let scratch = temp_dir("budget");
    let dir = scratch.path();
    // A target no cell meets, and a budget the three first trials (at least 750 ms of
    // warmup and measurement) already fill: no extra round fits.
    let suite = write_suite(
        dir,
        r#"
description = "a budget the first trials spend"
trials = 3
precision = "0.01%"
max_trials = 6
max_time = "900ms"
warmup = "50ms"
duration = "200ms"
models = ["epoll-et"]
[[scenario]]
scenario = "echo"
connections = [4]
"#,
    );
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    let outcome = || {
        let text = std::fs::read_to_string(Path::new(out).join("precision.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["cells"]["echo/epoll-et/c=4"]["outcome"].to_string()
    };
    let first = bench(&["run", "--suite", &suite, "--out", out], &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(lines(Path::new(out)).len(), 3);
    assert_eq!(outcome(), r#""max_time""#);
    let resumed = bench(&["run", "--suite", &suite, "--out", out, "--resume"], &[]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert_eq!(lines(Path::new(out)).len(), 3, "{stderr}");
    assert_eq!(outcome(), r#""max_time""#);
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

/// Processes whose command line names `needle` (a test's private directory).
fn processes_naming(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// SIGINT (a real one, to bench only) stops the cell under way with its server and loadgen,
/// keeps the finished cells, says how to finish and exits 130; `--resume` then runs exactly
/// the rest of the plan, refusing other filters or a rebuilt binary unless told.
#[test]
fn an_interrupted_run_keeps_its_cells_and_resumes_its_plan() {
    let scratch = temp_dir("interrupt");
    let dir = scratch.path();
    let suite = write_suite(
        dir,
        &TWO_SECOND_CELLS
            .replace("trials = 1", "trials = 2")
            .replace(r#"duration = "2s""#, r#"duration = "1s""#),
    );
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["server", "loadgen"] {
        std::os::unix::fs::symlink(bin_dir().join(name), bin.join(name)).unwrap();
    }
    let out = dir.join("run");
    let run = |extra: &[&str]| {
        Command::new(BENCH)
            .args(["run", "--out", out.to_str().unwrap()])
            .args(["--bin-dir", bin.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let child = Command::new(BENCH)
        .args(["run", "--suite", &suite, "--out", out.to_str().unwrap()])
        .args(["--bin-dir", bin.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while complete_lines(&out).is_empty() {
        assert!(Instant::now() < deadline, "no cell finished");
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300)); // into the second cell
                                               // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly"
    );
    let saved = complete_lines(&out).len();
    assert!((1..4).contains(&saved), "{saved} cells saved");
    assert!(
        stderr.contains(&format!(
            "interrupted: {saved} of 4 cells saved in {}; `bench run --resume --out {}` finishes it",
            out.display(),
            out.display()
        )),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("echo c=4"),
        "the partial summary"
    );
    let left = processes_naming(bin.to_str().unwrap());
    assert!(left.is_empty(), "no server or loadgen left: {left:?}");

    // The plan decides what runs: other filters are refused, naming them.
    let refused = run(&["--resume", "--models", "threads"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("drop --models"), "{stderr}");
    // A rebuilt binary would mix two builds into one run.
    std::fs::remove_file(bin.join("loadgen")).unwrap();
    std::fs::write(
        bin.join("loadgen"),
        format!(
            "#!/bin/sh\nexec {} \"$@\"\n",
            bin_dir().join("loadgen").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("loadgen"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let refused = run(&["--resume"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("loadgen changed since the run started")
            && stderr.contains("--allow-rebuilt"),
        "{stderr}"
    );
    let finished = run(&["--resume", "--allow-rebuilt"]);
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "{stderr}");
    let mut keys: Vec<String> = complete_lines(&out)
        .iter()
        .map(|l| format!("{} {}", l["cell"], l["trial"]))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        4,
        "each cell of the plan exactly once: {keys:?}"
    );
    assert_eq!(complete_lines(&out).len(), 4);
}

/// Every estimate of a suite's length uses the start/stop overhead per cell that this
/// machine's last run measured: `bench list` says so once a run has measured it.
#[test]
fn suite_lengths_come_from_the_overhead_this_machine_measured() {
    let scratch = temp_dir("overhead");
    let dir = scratch.path();
    let results = dir.join("results");
    let env = [("IOMODELS_RESULTS", results.to_str().unwrap())];
    let list = || {
        let out = bench(&["list"], &env);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(list().contains("until a run on this machine measures it"));
    let suite = write_suite(
        dir,
        &TWO_SECOND_CELLS
            .replace("trials = 1", "trials = 2")
            .replace("2s", "200ms"),
    );
    let out = bench(&["run", "--suite", &suite], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let measured: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("cell-overhead.json")).unwrap())
            .unwrap();
    let per_cell = measured["per_cell_s"].as_f64().unwrap();
    assert!(per_cell > 0.0 && per_cell < 10.0, "{measured}");
    let text = list();
    assert!(
        text.contains(&format!(
            "{per_cell:.2} s a cell to start and stop it (as this machine's last run measured"
        )),
        "{text}"
    );
}
