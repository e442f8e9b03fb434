//! The CI gate: instructions per request, counted by valgrind's callgrind (DESIGN.md
//! section 7).
//!
//! Wall-clock figures on a shared runner swing by more than the regressions worth catching;
//! the number of user-space instructions a server executes for a fixed workload does not. For
//! each model the server runs under `valgrind --tool=callgrind` (forked children are followed
//! and written to their own files, which are summed) while a client in this process sends
//! 128-byte echo requests over 10 connections, one request in flight at a time, so the server
//! does the same work in the same order on every run. Two runs, with a short and a long
//! request count, differ only in the requests between them: the difference divided by their
//! number is the figure, free of start-up, accept and shutdown costs.
//!
//! Before the server is stopped, the client waits until the server has gone quiet (its
//! threads and processes back to what they were before the client came, and no CPU time
//! used for a while): a handler thread that is still exiting when the process ends would
//! otherwise leave its teardown out of one run and in the other.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{cell, external, process_tree};

/// The gate's fixed workload.
#[derive(Clone, Debug)]
pub struct Workload {
    pub connections: usize,
    pub size: usize,
    /// Requests in the short run (start-up, accept and shutdown cost, plus these).
    pub short: u64,
    /// Requests in the long run; `long - short` of them make the figure.
    pub long: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            connections: 10,
            size: 128,
            short: 1_000,
            long: 21_000,
        }
    }
}

impl Workload {
    pub fn to_json(&self) -> Value {
        json!({
            "protocol": "echo",
            "connections": self.connections,
            "size": self.size,
            "requests": [self.short, self.long],
            "in_flight": 1,
        })
    }
}

/// What `server --list --json` says about a model, as far as bench needs it.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub summary: String,
    pub family: String,
    pub clients: String,
    pub fd_table: String,
    pub supported: bool,
    pub reason: Option<String>,
}

impl ModelInfo {
    pub fn from_listing(m: &Value) -> ModelInfo {
        let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
        ModelInfo {
            name: s("name"),
            summary: s("summary"),
            family: s("family"),
            clients: s("clients"),
            fd_table: s("fd_table"),
            supported: m["supported"].as_bool().unwrap_or(false),
            reason: m["reason"].as_str().map(str::to_string),
        }
    }

    /// Why the model's count cannot gate a build, if it cannot: a busy-polling model executes
    /// instructions for as long as it waits, so its count measures time, not work.
    pub fn not_gated(&self) -> Option<&'static str> {
        (self.family == "non-blocking")
            .then_some("busy-polls: its count grows with the time it waits, not with the work")
    }

    /// Server arguments for the workload: pool models get exactly one worker per connection.
    fn args(&self, workload: &Workload) -> Vec<String> {
        let mut args = vec![
            "--model".to_string(),
            self.name.clone(),
            "--protocol".into(),
            "echo".into(),
            "--addr".into(),
            "127.0.0.1:0".into(),
        ];
        if self.clients == "workers" {
            args.extend(["--workers".into(), workload.connections.to_string()]);
        }
        args
    }

    /// How many processes write a count: the server, plus a child per connection or per
    /// worker when the model forks.
    fn processes(&self, workload: &Workload) -> usize {
        match (self.fd_table.as_str(), self.clients.as_str()) {
            ("per-process", "per-connection" | "workers") => 1 + workload.connections,
            _ => 1,
        }
    }
}

/// Builds `server` in release from the workspace at `workspace` (with `features`) into the
/// target directory `target`, and returns the binary's path.
pub fn build_server(workspace: &Path, target: &Path, features: &[&str]) -> Result<PathBuf, String> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "servers",
            "--bin",
            "server",
        ])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(workspace);
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    let status = command.status().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the server in {} failed",
            workspace.display()
        ));
    }
    Ok(target.join("release/server"))
}

/// Every model the server binary lists.
pub fn models(server: &Path) -> Result<Vec<ModelInfo>, String> {
    let output = Command::new(server)
        .args(["--list", "--json"])
        .output()
        .map_err(|e| format!("{}: {e}", server.display()))?;
    let list: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("{} --list --json: {e}", server.display()))?;
    Ok(list
        .as_array()
        .map(|a| a.iter().map(ModelInfo::from_listing).collect())
        .unwrap_or_default())
}

/// One run under callgrind.
#[derive(Clone, Debug)]
pub struct Count {
    pub requests: u64,
    pub instructions: u64,
    pub processes: usize,
}

/// A model's figure.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub model: String,
    /// User-space instructions per request, summed over the server's processes.
    pub per_request: f64,
    /// What the runs cost besides their requests: start-up, accepts, shutdown.
    pub fixed: f64,
    pub runs: [Count; 2],
}

impl Measurement {
    pub fn to_json(&self) -> Value {
        json!({
            "instructions_per_request": self.per_request,
            "fixed_instructions": self.fixed.round(),
            "runs": self.runs.iter().map(|r| json!({
                "requests": r.requests,
                "instructions": r.instructions,
                "processes": r.processes,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The valgrind in PATH (`valgrind-3.19.0`), or how to get one.
pub fn valgrind_version() -> Result<String, String> {
    let hint =
        "the gate counts instructions with valgrind: install it (`apt-get install valgrind`)";
    let output = Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|e| format!("valgrind: {e}; {hint}"))?;
    if !output.status.success() {
        return Err(format!("`valgrind --version` failed; {hint}"));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Measures one model: a short and a long run under callgrind, in `work` (emptied first).
pub fn measure(
    server: &Path,
    model: &ModelInfo,
    workload: &Workload,
    extra_args: &[String],
    work: &Path,
) -> Result<Measurement, String> {
    difference(&model.name, workload, |requests| {
        count(server, model, workload, requests, extra_args, work)
    })
}

/// Measures an external server (`bench gate --server`) as [`measure`] does a model: its
/// command under callgrind, children traced through exec (a shell's, a script
/// interpreter's), every process's count summed.
pub fn measure_external(
    server: &external::Server,
    workload: &Workload,
    work: &Path,
) -> Result<Measurement, String> {
    difference(&server.name, workload, |requests| {
        count_external(server, workload, requests, work)
    })
}

/// The figure from a short and a long run of `count`.
fn difference(
    name: &str,
    workload: &Workload,
    mut count: impl FnMut(u64) -> Result<Count, String>,
) -> Result<Measurement, String> {
    if workload.long <= workload.short {
        return Err("the long run must have more requests than the short one".into());
    }
    let short = count(workload.short)?;
    let long = count(workload.long)?;
    let extra = long.requests - short.requests;
    let per_request = (long.instructions as f64 - short.instructions as f64) / extra as f64;
    let fixed = short.instructions as f64 - per_request * short.requests as f64;
    Ok(Measurement {
        model: name.to_string(),
        per_request,
        fixed,
        runs: [short, long],
    })
}

const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// One server run under callgrind with `requests` requests; the instructions of every
/// process it had.
fn count(
    server: &Path,
    model: &ModelInfo,
    workload: &Workload,
    requests: u64,
    extra_args: &[String],
    work: &Path,
) -> Result<Count, String> {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let out_file = work.join("callgrind.out.%p");
    let mut command = Command::new("valgrind");
    cell::ends_with_bench(&mut command);
    let mut child = command
        .args([
            "--tool=callgrind",
            "--quiet",
            // No gdb server polling in the background: nothing runs that the workload did
            // not cause.
            "--vgdb=no",
        ])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(server)
        .args(model.args(workload))
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(work.join("stderr")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("valgrind: {e}"))?;
    let pid = child.id() as i32;
    let result = (|| {
        let addr = listening(child.stdout.take().expect("stdout is piped"))?;
        // A busy-polling server never stops using CPU: for it, quiet means the same threads
        // and processes only.
        let busy = model.not_gated().is_some();
        let before = settle(pid, None, busy)?;
        let idle = || if busy { Ok(()) } else { wait_idle(pid) };
        drive(
            addr,
            workload,
            requests,
            model.clients == "one-at-a-time",
            idle,
        )?;
        settle(pid, Some(before), busy)?;
        Ok::<_, String>(())
    })();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = wait_timeout(&mut child, EXIT_TIMEOUT);
    let stderr = fs::read_to_string(work.join("stderr")).unwrap_or_default();
    result.map_err(|e| with_stderr(e, &stderr))?;
    match status {
        Some(s) if s.success() => {}
        Some(s) => return Err(with_stderr(format!("server exited with {s}"), &stderr)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "server still running {EXIT_TIMEOUT:?} after SIGTERM"
            ));
        }
    }
    let (instructions, processes) = totals(work)?;
    let expected = model.processes(workload);
    if processes != expected {
        return Err(format!(
            "{processes} processes wrote counts, expected {expected}: a process's instructions would be missing"
        ));
    }
    Ok(Count {
        requests,
        instructions,
        processes,
    })
}

/// One run of an external server under callgrind with `requests` requests, as [`count`].
fn count_external(
    server: &external::Server,
    workload: &Workload,
    requests: u64,
    work: &Path,
) -> Result<Count, String> {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let prefix: Vec<String> = [
        "valgrind",
        "--tool=callgrind",
        "--quiet",
        "--vgdb=no",
        "--trace-children=yes",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!(
        "--callgrind-out-file={}",
        work.join("callgrind.out.%p").display()
    )])
    .collect();
    // Under callgrind a start is slower, and so is the exit that writes the counts.
    let server = external::Server {
        ready_timeout: server.ready_timeout.max(LISTEN_TIMEOUT),
        stop_grace: EXIT_TIMEOUT,
        ..server.clone()
    };
    let cpus: Vec<usize> = (0..thread::available_parallelism().map_or(1, |n| n.get())).collect();
    // A daemonised child of the server is re-parented to bench, so the stop can end it.
    external::adopt_orphans();
    let mut running = external::start(&server, "echo", &cpus, work, &prefix)?;
    let pid = running.child.id() as i32;
    let addr: SocketAddr = running.addr.parse().expect("an address bench wrote");
    let result = (|| {
        let before = settle(pid, None, false)?;
        drive(addr, workload, requests, false, || wait_idle(pid))?;
        settle(pid, Some(before), false)?;
        Ok::<_, String>(())
    })();
    let stopped = running.stop();
    result.map_err(|e| cell::with_tail(e, &running.log))?;
    let how = stopped.map_err(|e| cell::with_tail(e, &running.log))?;
    if !how.starts_with("SIGTERM") {
        return Err(format!("{how}: callgrind wrote no counts"));
    }
    let (instructions, processes) = totals(work)?;
    if processes == 0 {
        return Err("no process wrote a count".into());
    }
    Ok(Count {
        requests,
        instructions,
        processes,
    })
}

fn with_stderr(message: String, stderr: &str) -> String {
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    if tail.is_empty() {
        message
    } else {
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{message} (server stderr: {})", tail.join(" | "))
    }
}

fn listening(stdout: impl Read + Send + 'static) -> Result<SocketAddr, String> {
    let line = cell::first_line(stdout, LISTEN_TIMEOUT)
        .ok_or_else(|| format!("no `listening` line within {LISTEN_TIMEOUT:?}"))?;
    line.trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("expected `listening <addr>`, got {:?}", line.trim()))
}

/// Waits until the server's process tree is quiet: the same threads and processes and (unless
/// it is `busy` polling) no CPU time used over three samples in a row, and, given `floor`, no
/// more threads and processes than it had then. Returns its (threads, processes).
pub(crate) fn settle(
    pid: i32,
    floor: Option<(u64, u64)>,
    busy: bool,
) -> Result<(u64, u64), String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = process_tree::sample(pid, false);
    let mut quiet = 0;
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = process_tree::sample(pid, false);
        let still = now.threads == last.threads
            && now.processes == last.processes
            && (busy || now.runtime_ns == last.runtime_ns);
        let back = floor.is_none_or(|(t, p)| now.threads <= t && now.processes <= p);
        quiet = if still && back { quiet + 1 } else { 0 };
        if quiet >= 3 {
            return Ok((now.threads, now.processes));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the server did not go quiet within {SETTLE_TIMEOUT:?} ({} threads, {} processes)",
                now.threads, now.processes
            ));
        }
        last = now;
    }
}

/// The payload of request `i`: different for every request, so a stale reply is caught.
fn payload(i: u64, size: usize, buf: &mut [u8]) {
    for (j, b) in buf[..size].iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(7).wrapping_add(j) as u8;
    }
}

/// Waits until every thread of the server is asleep (twice in a row): it has finished what
/// the last reply set off (a completion still to reap, a thread on its way back to read) and
/// waits for the next request. Without this, whether such work shares a wake-up with the next
/// request depends on timing, and so does the count: by up to 10% for io_uring's batches.
fn wait_idle(pid: i32) -> Result<(), String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut asleep = 0;
    while asleep < 2 {
        asleep = if all_asleep(pid) { asleep + 1 } else { 0 };
        if Instant::now() > deadline {
            return Err(format!("the server never went idle within {IO_TIMEOUT:?}"));
        }
    }
    Ok(())
}

/// True when no thread of the process tree is running or runnable.
fn all_asleep(root: i32) -> bool {
    process_tree::tree(root).into_iter().all(|pid| {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // gone
        };
        tasks.flatten().all(|task| {
            fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
                // The state is the first field after the parenthesised command name.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state != "R")
            })
        })
    })
}

/// Sends `requests` echo requests, one in flight at a time, round-robin over the
/// connections (or over one connection after another for a model that serves one client at
/// a time), checking every reply byte for byte; after each reply, `idle` waits for the server
/// to go back to waiting.
fn drive(
    addr: SocketAddr,
    w: &Workload,
    requests: u64,
    one_at_a_time: bool,
    idle: impl Fn() -> Result<(), String>,
) -> Result<(), String> {
    let connect = || -> Result<TcpStream, String> {
        let s =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(s)
    };
    let (mut sent, mut got) = (vec![0u8; w.size], vec![0u8; w.size]);
    let mut round_trip = |s: &mut TcpStream, i: u64| -> Result<(), String> {
        payload(i, w.size, &mut sent);
        s.write_all(&sent)
            .map_err(|e| format!("request {i}: {e}"))?;
        s.read_exact(&mut got)
            .map_err(|e| format!("reply {i}: {e}"))?;
        if got != sent {
            return Err(format!("reply {i} differs from its request"));
        }
        idle()
    };
    let c = w.connections as u64;
    if one_at_a_time {
        for k in 0..c {
            let mut s = connect()?;
            for i in (k..requests).step_by(w.connections) {
                round_trip(&mut s, i)?;
            }
        }
    } else {
        let mut conns: Vec<TcpStream> = (0..c).map(|_| connect()).collect::<Result<_, _>>()?;
        for i in 0..requests {
            round_trip(&mut conns[(i % c) as usize], i)?;
        }
    }
    Ok(())
}

/// Sums the `totals:` (or `summary:`) line of every callgrind file in `dir`.
fn totals(dir: &Path) -> Result<(u64, usize), String> {
    let mut sum = 0u64;
    let mut files = 0;
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("callgrind.out."))
        {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let line = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let total = line("totals:")
            .or_else(|| line("summary:"))
            .ok_or_else(|| format!("{}: no totals line", path.display()))?;
        sum += total;
        files += 1;
    }
    Ok((sum, files))
}

fn wait_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A gate pass over `models`: the JSON document `bench gate` writes. Each model is measured
/// in its own directory under `work`; `progress` hears about each one as it ends.
/// `externals` are measured after the models, each keyed by its name and gated.
pub fn pass(
    server: &Path,
    models: &[ModelInfo],
    externals: &[external::Server],
    workload: &Workload,
    extra_args: &[String],
    work: &Path,
    mut progress: impl FnMut(&str),
) -> Result<Value, String> {
    let valgrind = valgrind_version()?;
    let mut results = serde_json::Map::new();
    let subjects = models
        .iter()
        .map(|m| (m.name.as_str(), Some(m), None))
        .chain(externals.iter().map(|s| (s.name.as_str(), None, Some(s))));
    for (name, model, external) in subjects {
        let started = Instant::now();
        let measured = match (model, external) {
            (Some(model), _) if !model.supported => Err(None),
            (Some(model), _) => {
                measure(server, model, workload, extra_args, &work.join(name)).map_err(Some)
            }
            (None, Some(s)) => measure_external(s, workload, &work.join(name)).map_err(Some),
            (None, None) => unreachable!("a subject is a model or an external server"),
        };
        let not_gated = model.and_then(ModelInfo::not_gated);
        let entry = match measured {
            Ok(m) => {
                let mut v = m.to_json();
                v["status"] = json!("ok");
                v["gated"] = json!(not_gated.is_none());
                if let Some(why) = not_gated {
                    v["why_not_gated"] = json!(why);
                }
                if let Some(s) = external {
                    v["external"] = json!({"command": s.command});
                }
                v
            }
            Err(None) => {
                json!({"status": "unsupported", "reason": model.and_then(|m| m.reason.clone())})
            }
            Err(Some(reason)) => json!({"status": "failed", "reason": reason}),
        };
        progress(&format!(
            "{:<16} {} ({:.1} s)",
            name,
            match entry["instructions_per_request"].as_f64() {
                Some(v) => format!("{v:.1} instructions/request"),
                None => entry["status"].as_str().unwrap_or("?").to_string(),
            },
            started.elapsed().as_secs_f64()
        ));
        results.insert(name.to_string(), entry);
    }
    Ok(json!({
        "schema": 1,
        "kind": "iomodels-gate",
        "measure": "user-space instructions per request (callgrind), summed over the server's processes",
        "valgrind": valgrind,
        "server": server,
        "extra_args": extra_args,
        "workload": workload.to_json(),
        "models": results,
    }))
}

/// One pass as a plain table: each model's figure, what the runs cost besides their
/// requests, and why a model has none.
pub fn table(pass: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "{:<16} {:>14} {:>14}  NOTE\n",
        "MODEL", "INSTR/REQUEST", "FIXED"
    );
    if let Some(models) = pass["models"].as_object() {
        for (name, m) in models {
            let _ = match m["status"].as_str() {
                Some("ok") => writeln!(
                    s,
                    "{name:<16} {:>14.1} {:>14.0}  {}",
                    m["instructions_per_request"].as_f64().unwrap_or(0.0),
                    m["fixed_instructions"].as_f64().unwrap_or(0.0),
                    m["why_not_gated"]
                        .as_str()
                        .map_or(String::new(), |w| format!("not gated: {w}"))
                ),
                status => writeln!(
                    s,
                    "{name:<16} {:>14} {:>14}  {}: {}",
                    "-",
                    "-",
                    status.unwrap_or("?"),
                    m["reason"].as_str().unwrap_or("")
                ),
            };
        }
    }
    s
}

/// How one model fared between a base and a new gate pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Same,
    /// Changed by less than the threshold.
    WithinThreshold,
    Improvement,
    Regression,
    /// The new build could not be measured where the base could: as bad as a regression.
    Failed,
    /// Measured, but not a figure a build can be failed on (busy-polling).
    NotGated,
    /// Measured in only one of the two, or unsupported.
    NotCompared,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::WithinThreshold => "within threshold",
            Verdict::Improvement => "improvement",
            Verdict::Regression => "**REGRESSION**",
            Verdict::Failed => "**FAILED**",
            Verdict::NotGated => "not gated",
            Verdict::NotCompared => "not compared",
        }
    }

    /// Whether this verdict fails the gate.
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Regression | Verdict::Failed)
    }
}

pub struct Row {
    pub model: String,
    pub base: Option<f64>,
    pub new: Option<f64>,
    /// (new - base) / base.
    pub change: Option<f64>,
    pub verdict: Verdict,
    pub note: String,
}

/// Compares two gate passes, model by model; `threshold` is a fraction (0.02 = 2%).
pub fn compare(base: &Value, new: &Value, threshold: f64) -> Vec<Row> {
    let empty = serde_json::Map::new();
    let (b, n) = (
        base["models"].as_object().unwrap_or(&empty),
        new["models"].as_object().unwrap_or(&empty),
    );
    let mut names: Vec<&String> = n.keys().collect();
    names.extend(b.keys().filter(|k| !n.contains_key(*k)));
    names
        .into_iter()
        .map(|name| {
            let (bm, nm) = (b.get(name), n.get(name));
            fn figure(m: Option<&Value>) -> Option<f64> {
                m.filter(|m| m["status"] == "ok")
                    .and_then(|m| m["instructions_per_request"].as_f64())
            }
            fn status(m: Option<&Value>) -> &str {
                m.and_then(|m| m["status"].as_str()).unwrap_or("absent")
            }
            fn reason(m: Option<&Value>) -> String {
                m.and_then(|m| m["reason"].as_str())
                    .unwrap_or("")
                    .to_string()
            }
            let (base_v, new_v) = (figure(bm), figure(nm));
            let change = base_v.zip(new_v).map(|(b, n)| (n - b) / b);
            let (verdict, note) = match (status(bm), status(nm)) {
                ("ok", "ok") => {
                    let gated = nm.is_some_and(|m| m["gated"] != false);
                    let c = change.unwrap_or(0.0);
                    let v = if !gated {
                        Verdict::NotGated
                    } else if c > threshold {
                        Verdict::Regression
                    } else if c < -threshold {
                        Verdict::Improvement
                    } else if c.abs() < 0.0005 {
                        Verdict::Same
                    } else {
                        Verdict::WithinThreshold
                    };
                    let note = nm
                        .and_then(|m| m["why_not_gated"].as_str())
                        .unwrap_or("")
                        .to_string();
                    (v, note)
                }
                ("ok", "failed") => (Verdict::Failed, reason(nm)),
                (_, "failed") => (
                    Verdict::NotCompared,
                    format!("failed in both: {}", reason(nm)),
                ),
                ("absent", _) => (Verdict::NotCompared, "new model".into()),
                (_, "absent") => (Verdict::NotCompared, "not in the new build".into()),
                (_, "unsupported") => {
                    (Verdict::NotCompared, format!("unsupported: {}", reason(nm)))
                }
                (bs, _) => (Verdict::NotCompared, format!("base {bs}: {}", reason(bm))),
            };
            Row {
                model: name.clone(),
                base: base_v,
                new: new_v,
                change,
                verdict,
                note,
            }
        })
        .collect()
}

/// The comparison as Markdown, for a pull-request comment.
pub fn markdown(rows: &[Row], threshold: f64, workload: &Value) -> String {
    use std::fmt::Write as _;
    let failing = rows.iter().filter(|r| r.verdict.fails()).count();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Gate: instructions per request (callgrind): {}
",
        if failing == 0 {
            "pass".to_string()
        } else {
            format!(
                "**{failing} regression{}**",
                if failing == 1 { "" } else { "s" }
            )
        }
    );
    let requests = workload["requests"]
        .as_array()
        .and_then(|r| Some(r.get(1)?.as_u64()? - r.first()?.as_u64()?))
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "Echo, {} B, {} connections, one request in flight; the difference between runs of {} and {} requests ({requests} requests), over every server process. Fails above +{:.1}%.
",
        workload["size"],
        workload["connections"],
        workload["requests"][0],
        workload["requests"][1],
        threshold * 100.0
    );
    let _ = writeln!(
        s,
        "| model | base | new | change | verdict |
|---|---:|---:|---:|---|"
    );
    for r in rows {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let change = r
            .change
            .map_or("-".to_string(), |c| format!("{:+.2}%", c * 100.0));
        let verdict = if r.note.is_empty() {
            r.verdict.text().to_string()
        } else {
            format!("{} ({})", r.verdict.text(), r.note.replace('|', "/"))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {change} | {verdict} |",
            r.model,
            num(r.base),
            num(r.new)
        );
    }
    s
}

/// The pass in bencher.dev's Benchmark Metric Format: `gate/<model>` with the `instructions`
/// measure (per request).
pub fn bmf(pass: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(models) = pass["models"].as_object() {
        for (name, m) in models {
            if let Some(v) = m["instructions_per_request"].as_f64() {
                out.insert(
                    format!("gate/{name}"),
                    json!({"instructions": {"value": v}}),
                );
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass_of(models: Value) -> Value {
        json!({"models": models})
    }

    #[test]
    fn verdicts_follow_the_threshold() {
        let base = pass_of(json!({
            "a": {"status": "ok", "gated": true, "instructions_per_request": 1000.0},
            "b": {"status": "ok", "gated": true, "instructions_per_request": 1000.0},
            "c": {"status": "ok", "gated": true, "instructions_per_request": 1000.0},
            "d": {"status": "ok", "gated": true, "instructions_per_request": 1000.0},
            "e": {"status": "ok", "gated": false, "instructions_per_request": 1000.0},
            "f": {"status": "ok", "gated": true, "instructions_per_request": 1000.0},
            "g": {"status": "unsupported", "reason": "no io_uring"},
        }));
        let new = pass_of(json!({
            "a": {"status": "ok", "gated": true, "instructions_per_request": 1000.0},
            "b": {"status": "ok", "gated": true, "instructions_per_request": 1015.0},
            "c": {"status": "ok", "gated": true, "instructions_per_request": 1025.0},
            "d": {"status": "ok", "gated": true, "instructions_per_request": 900.0},
            "e": {"status": "ok", "gated": false, "instructions_per_request": 2000.0},
            "f": {"status": "failed", "reason": "reply 3 differs"},
            "g": {"status": "unsupported", "reason": "no io_uring"},
        }));
        let rows = compare(&base, &new, 0.02);
        let verdicts: Vec<(&str, Verdict)> =
            rows.iter().map(|r| (r.model.as_str(), r.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("a", Verdict::Same),
                ("b", Verdict::WithinThreshold),
                ("c", Verdict::Regression),
                ("d", Verdict::Improvement),
                ("e", Verdict::NotGated),
                ("f", Verdict::Failed),
                ("g", Verdict::NotCompared),
            ]
        );
        let md = markdown(&rows, 0.02, &Workload::default().to_json());
        assert!(md.contains("**2 regressions**"), "{md}");
        assert!(
            md.contains("| c | 1000.0 | 1025.0 | +2.50% | **REGRESSION** |"),
            "{md}"
        );
    }

    #[test]
    fn a_model_only_in_one_pass_is_not_compared() {
        let base = pass_of(json!({"old": {"status": "ok", "instructions_per_request": 5.0}}));
        let new = pass_of(json!({"new": {"status": "ok", "instructions_per_request": 5.0}}));
        let rows = compare(&base, &new, 0.02);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.verdict == Verdict::NotCompared));
        assert!(markdown(&rows, 0.02, &Workload::default().to_json()).contains(": pass"));
    }

    #[test]
    fn bmf_names_every_measured_model() {
        let pass = pass_of(json!({
            "a": {"status": "ok", "instructions_per_request": 612.5},
            "b": {"status": "failed", "reason": "x"},
        }));
        assert_eq!(
            bmf(&pass),
            json!({"gate/a": {"instructions": {"value": 612.5}}})
        );
    }

    #[test]
    fn totals_sums_every_process_file() {
        let dir = std::env::temp_dir().join(format!("gate-totals-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("callgrind.out.1"),
            "events: Ir\nsummary: 100\ntotals: 120\n",
        )
        .unwrap();
        fs::write(dir.join("callgrind.out.2"), "events: Ir\nsummary: 30\n").unwrap();
        fs::write(dir.join("stderr"), "totals: 999\n").unwrap();
        assert_eq!(totals(&dir).unwrap(), (150, 2));
        fs::write(dir.join("callgrind.out.3"), "cut short").unwrap();
        assert!(totals(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn processes_follow_the_declared_model() {
        let w = Workload::default();
        let m = |clients: &str, fd_table: &str| ModelInfo {
            name: "m".into(),
            summary: String::new(),
            family: "blocking".into(),
            clients: clients.into(),
            fd_table: fd_table.into(),
            supported: true,
            reason: None,
        };
        assert_eq!(m("per-connection", "per-process").processes(&w), 11);
        assert_eq!(m("workers", "per-process").processes(&w), 11);
        assert_eq!(m("per-connection", "shared").processes(&w), 1);
        assert_eq!(m("event-loop", "shared").processes(&w), 1);
    }
}
