//! `bench anatomy`: the system calls and context switches each model spends per request.
//!
//! Each model's server runs under a counting tool while `loadgen` sends a known number of
//! echo requests over `--connections` connections (a closed loop: one request in flight per
//! connection, every reply verified). Two runs, with a short and a long request count, differ
//! only in the requests between them, so the difference divided by their number is free of
//! start-up, accept and shutdown costs (the gate's method, `gate.rs`).
//!
//! The counting tool is `perf stat` with the kernel's syscall tracepoints when it can be used
//! (an in-kernel counter per event: the server runs at nearly full speed, so how many
//! requests one `epoll_wait` or `io_uring_enter` covers is what it would be in a cell), and
//! `strace -f -c` otherwise (every call stops the server twice: it slows down, so each wait
//! finds more ready work and the calls per request shrink; the counts stay exact). Either
//! tool changes the timing of what it watches, which is why it never runs inside a measured
//! cell: the anatomy explains the cells, it does not replace them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cell;
use crate::gate::{self, ModelInfo};

/// The system calls counted by name with `perf`; every other call is counted in the total
/// (`raw_syscalls:sys_enter`) and shown as `other`. These are the calls a server's I/O path
/// can make; the ones this kernel has no tracepoint for are left out.
const NAMED: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "io_uring_enter",
    "accept",
    "accept4",
    "close",
    "shutdown",
    "setsockopt",
    "fcntl",
    "rt_sigtimedwait",
    "rt_sigprocmask",
    "futex",
    "sched_yield",
    "clone",
    "clone3",
    "wait4",
    "mmap",
    "munmap",
    "madvise",
    "mprotect",
    "nanosleep",
    "clock_nanosleep",
    "exit",
];

const TRACEFS: &str = "/sys/kernel/tracing";

/// How the calls are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Perf,
    Strace,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Perf => "perf stat (syscall tracepoints)",
            Tool::Strace => "strace -f -c",
        }
    }

    /// `perf` if its syscall tracepoints can be counted here, else `strace`; or why neither.
    pub fn detect() -> Result<Tool, String> {
        let perf_works = Command::new("perf")
            .args(["stat", "-x,", "-e", "syscalls:sys_enter_getpid", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if perf_works {
            return Ok(Tool::Perf);
        }
        let strace_works = Command::new("strace")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if strace_works {
            return Ok(Tool::Strace);
        }
        Err(format!(
            "counting system calls needs perf with syscall tracepoints (Debian: `apt-get install linux-perf`, and tracefs mounted at {TRACEFS}) or strace (`apt-get install strace`)"
        ))
    }

    pub fn parse(name: &str) -> Result<Tool, String> {
        match name {
            "perf" => Ok(Tool::Perf),
            "strace" => Ok(Tool::Strace),
            _ => Err(format!("unknown tool '{name}' (valid: perf, strace)")),
        }
    }
}

/// The workload and where things run.
#[derive(Clone, Debug)]
pub struct Options {
    pub server: PathBuf,
    pub loadgen: PathBuf,
    pub tool: Tool,
    pub connections: usize,
    /// Connections held open and silent beside the active ones (loadgen's `idle` scenario).
    pub idle: usize,
    pub size: usize,
    /// Requests in the long run; the short run has a tenth of them.
    pub requests: u64,
    pub server_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    /// Scratch directory for the tools' output files.
    pub work: PathBuf,
    /// Extra server arguments (e.g. an io_uring option).
    pub server_args: Vec<String>,
}

impl Options {
    fn short(&self) -> u64 {
        (self.requests / 10).max(1)
    }

    /// Connections for `model`: one for a model that serves one client at a time (the
    /// others would wait for ever for a first reply).
    fn connections_for(&self, model: &ModelInfo) -> usize {
        if model.clients == "one-at-a-time" {
            1
        } else {
            self.connections
        }
    }
}

/// What one run counted.
#[derive(Clone, Debug, Default)]
struct Counts {
    calls: BTreeMap<String, u64>,
    total: u64,
    context_switches: Option<u64>,
}

/// One model's anatomy: calls per request by name (those above 0.005), the total, and
/// context switches per request (perf only).
#[derive(Clone, Debug)]
pub struct Anatomy {
    pub per_request: BTreeMap<String, f64>,
    pub total_per_request: f64,
    pub context_switches_per_request: Option<f64>,
    pub connections: usize,
    /// False for a busy-polling model: the long run alone, start-up included.
    pub differenced: bool,
}

impl Anatomy {
    pub fn to_json(&self) -> Value {
        json!({
            "status": "ok",
            "connections": self.connections,
            "syscalls_per_request": self.per_request,
            "total_syscalls_per_request": self.total_per_request,
            "context_switches_per_request": self.context_switches_per_request,
            "differenced": self.differenced,
        })
    }

    /// `recvfrom 1.00, sendto 1.00, epoll_wait 0.02`: the calls, most frequent first.
    pub fn calls_line(per_request: &BTreeMap<String, f64>) -> String {
        let mut calls: Vec<(&String, &f64)> = per_request.iter().collect();
        calls.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        calls
            .iter()
            .map(|(name, n)| format!("{name} {}", fmt_rate(**n)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Two decimals, or three significant digits below 0.01.
fn fmt_rate(x: f64) -> String {
    if x.abs() >= 0.01 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Measures every supported model of `models`; `progress` hears of each as it ends. Returns
/// the JSON document `bench anatomy` writes.
pub fn pass(
    options: &Options,
    models: &[ModelInfo],
    mut progress: impl FnMut(&str),
) -> Result<Value, String> {
    let mut results = serde_json::Map::new();
    for model in models {
        let started = Instant::now();
        let entry = if !model.supported {
            json!({"status": "unsupported", "reason": model.reason})
        } else if options.idle > 0
            && model.clients != "event-loop"
            && model.clients != "per-connection"
        {
            json!({"status": "skipped", "reason": "serves a fixed number of clients at once: silent connections would hold it"})
        } else {
            match measure(options, model) {
                Ok(anatomy) => anatomy.to_json(),
                Err(reason) => json!({"status": "failed", "reason": reason}),
            }
        };
        progress(&format!(
            "{:<16} {} ({:.1} s)",
            model.name,
            match entry["syscalls_per_request"].as_object() {
                Some(_) => line_of(&entry),
                None => format!(
                    "{}: {}",
                    entry["status"].as_str().unwrap_or("?"),
                    entry["reason"].as_str().unwrap_or("")
                ),
            },
            started.elapsed().as_secs_f64()
        ));
        results.insert(model.name.clone(), entry);
    }
    Ok(json!({
        "schema": 1,
        "kind": "iomodels-anatomy",
        "tool": options.tool.name(),
        "workload": {
            "protocol": "echo",
            "connections": options.connections,
            "idle_connections": options.idle,
            "size": options.size,
            "requests": [options.short(), options.requests],
            "in_flight": "one per connection (closed loop)",
        },
        "server_cpus": options.server_cpus,
        "load_cpus": options.load_cpus,
        "extra_args": options.server_args,
        "models": results,
    }))
}

/// A model entry's calls per request, by name.
pub fn per_request_of(entry: &Value) -> BTreeMap<String, f64> {
    entry["syscalls_per_request"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A model's entry as one line: its calls per request, then the total and switches.
fn line_of(entry: &Value) -> String {
    let mut line = Anatomy::calls_line(&per_request_of(entry));
    if let Some(total) = entry["total_syscalls_per_request"].as_f64() {
        line.push_str(&format!(" | total {}", fmt_rate(total)));
    }
    if let Some(cs) = entry["context_switches_per_request"].as_f64() {
        line.push_str(&format!(" | context switches {}", fmt_rate(cs)));
    }
    line
}

/// The pass as a Markdown table, one model a row.
pub fn markdown(pass: &Value) -> String {
    let mut out = format!(
        "System calls per request ({}; echo {} B, {} connections{}, closed loop; start-up and shutdown differenced out)\n\n| model | calls per request, most frequent first | total | context switches |\n|---|---|---:|---:|\n",
        pass["tool"].as_str().unwrap_or("?"),
        pass["workload"]["size"],
        pass["workload"]["connections"],
        match pass["workload"]["idle_connections"].as_u64() {
            Some(n) if n > 0 => format!(" among {n} idle ones"),
            _ => String::new(),
        },
    );
    if let Some(models) = pass["models"].as_object() {
        for (name, entry) in models {
            if entry["status"] != "ok" {
                out.push_str(&format!(
                    "| `{name}` | {}: {} | | |\n",
                    entry["status"].as_str().unwrap_or("?"),
                    entry["reason"].as_str().unwrap_or("")
                ));
                continue;
            }
            let per_request = per_request_of(entry);
            let connections = entry["connections"].as_u64().unwrap_or(0);
            let mut notes = Vec::new();
            if Some(connections) != pass["workload"]["connections"].as_u64() {
                notes.push(format!("{connections} connection"));
            }
            if entry["differenced"] == false {
                notes.push("busy-polls: one run, not differenced".to_string());
            }
            let note = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            out.push_str(&format!(
                "| `{name}`{note} | {} | {} | {} |\n",
                Anatomy::calls_line(&per_request),
                entry["total_syscalls_per_request"]
                    .as_f64()
                    .map(fmt_rate)
                    .unwrap_or_default(),
                entry["context_switches_per_request"]
                    .as_f64()
                    .map(fmt_rate)
                    .unwrap_or_else(|| "-".into()),
            ));
        }
    }
    out
}

/// A short and a long run of `model`, differenced.
pub fn measure(options: &Options, model: &ModelInfo) -> Result<Anatomy, String> {
    let (short, long) = (options.short(), options.requests);
    if long <= short {
        return Err("--requests must be at least 10".into());
    }
    // A busy-polling model makes calls for as long as it runs, not per request: a short run
    // that took longer than its share would make the difference meaningless (even
    // negative). Its calls all come while clients are connected, so the long run alone,
    // divided by its requests, is its anatomy; the JSON says it is not differenced.
    let busy = model.not_gated().is_some();
    let a = if busy {
        Counts::default()
    } else {
        count(options, model, short)?
    };
    let b = count(options, model, long)?;
    let extra = if busy { long } else { long - short } as f64;
    let per = |x: u64, y: u64| (y as f64 - x as f64) / extra;
    let per_request = b
        .calls
        .iter()
        .map(|(name, &n)| {
            (
                name.clone(),
                per(a.calls.get(name).copied().unwrap_or(0), n),
            )
        })
        .filter(|(_, v)| v.abs() >= 0.005)
        .map(|(k, v)| (k, (v * 1000.0).round() / 1000.0))
        .collect();
    Ok(Anatomy {
        per_request,
        total_per_request: (per(a.total, b.total) * 1000.0).round() / 1000.0,
        context_switches_per_request: a
            .context_switches
            .zip(b.context_switches)
            .map(|(x, y)| (per(x, y) * 1000.0).round() / 1000.0),
        connections: options.connections_for(model),
        differenced: !busy,
    })
}

const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One run: the server under the tool, `requests` echo requests from loadgen, then SIGTERM
/// to the server once its process tree is back to how it was before the load.
fn count(options: &Options, model: &ModelInfo, requests: u64) -> Result<Counts, String> {
    let work = options.work.join(&model.name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let out = work.join(format!("counts-{requests}"));
    let connections = options.connections_for(model);
    let mut server_args = vec![
        "--model".to_string(),
        model.name.clone(),
        "--protocol".into(),
        "echo".into(),
        "--addr".into(),
        "127.0.0.1:0".into(),
    ];
    if model.clients == "workers" {
        server_args.extend(["--workers".into(), connections.to_string()]);
    }
    server_args.extend(options.server_args.iter().cloned());
    let mut command = match options.tool {
        Tool::Perf => {
            let mut c = Command::new("perf");
            c.args(["stat", "-x,", "--no-big-num", "-o"]).arg(&out);
            for name in NAMED.iter().filter(|n| has_tracepoint(n)) {
                c.args(["-e", &format!("syscalls:sys_enter_{name}")]);
            }
            c.args([
                "-e",
                "raw_syscalls:sys_enter",
                "-e",
                "context-switches",
                "--",
            ]);
            c
        }
        Tool::Strace => {
            let mut c = Command::new("strace");
            c.args(["-f", "-c", "-o"]).arg(&out).arg("--");
            c
        }
    };
    command.arg(&options.server).args(&server_args);
    cell::ends_with_bench(&mut command);
    let cpus = options.server_cpus.clone();
    // SAFETY: the pinning runs in the child before exec; the tool and the server it starts
    // inherit it.
    unsafe { command.pre_exec(move || cell::pin_this_thread(&cpus)) };
    let stderr_path = work.join("stderr");
    let mut tool = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_path).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{}: {e}", options.tool.name()))?;
    let result = (|| {
        let line = cell::first_line(tool.stdout.take().expect("piped"), LISTEN_TIMEOUT)
            .ok_or_else(|| format!("no `listening` line within {LISTEN_TIMEOUT:?}"))?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("expected `listening <addr>`, got {:?}", line.trim()))?
            .to_string();
        let server_pid = child_of(tool.id() as i32)
            .ok_or("the server process was not found under the counting tool")?;
        // Same threads and processes for a while (CPU is not watched: a busy-polling model
        // never stops using it): before the load it has started; after it, every
        // per-connection thread or process has ended and been counted.
        let before = gate::settle(server_pid, None, true)?;
        drive(options, &addr, connections, requests)?;
        gate::settle(server_pid, Some(before), true)?;
        Ok::<i32, String>(server_pid)
    })();
    if let Ok(pid) = result {
        // SAFETY: kill(2) on the server, a child of our child, still running.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let status = loop {
        if let Ok(Some(status)) = tool.try_wait() {
            break Some(status);
        }
        if result.is_err() || Instant::now() > deadline {
            let _ = tool.kill();
            let _ = tool.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let tail = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    result.map_err(|e| format!("{e} (stderr: {tail})"))?;
    if !status.is_some_and(|s| s.success()) {
        return Err(format!(
            "{} did not end cleanly after SIGTERM to the server (stderr: {tail})",
            options.tool.name()
        ));
    }
    let text = fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    match options.tool {
        Tool::Perf => parse_perf(&text),
        Tool::Strace => parse_strace(&text),
    }
}

fn has_tracepoint(name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events/syscalls")
        .join(format!("sys_enter_{name}"))
        .exists()
        || !Path::new(TRACEFS).join("events").exists() // no tracefs to ask: let perf decide
}

/// The first child process of `pid` (the program a tool started).
fn child_of(pid: i32) -> Option<i32> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    loop {
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().ok();
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Exactly `requests` verified echo requests from loadgen, pinned to the load CPUs.
fn drive(options: &Options, addr: &str, connections: usize, requests: u64) -> Result<(), String> {
    let mut command = Command::new(&options.loadgen);
    if options.idle > 0 {
        command.args(["idle", "--active", &connections.to_string()]);
        command.args(["--idle", &options.idle.to_string()]);
    } else {
        command.args(["echo", "--connections", &connections.to_string()]);
    }
    command.args([
        "--addr",
        addr,
        "--size",
        &options.size.to_string(),
        "--requests",
        &requests.to_string(),
        "--threads",
        "1",
        "--json",
    ]);
    cell::ends_with_bench(&mut command);
    let cpus = options.load_cpus.clone();
    // SAFETY: as for the server: pinning in the child before exec.
    unsafe { command.pre_exec(move || cell::pin_this_thread(&cpus)) };
    let output = command
        .output()
        .map_err(|e| format!("{}: {e}", options.loadgen.display()))?;
    let load: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "loadgen printed no result ({e}): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    let done = load["requests"].as_u64().unwrap_or(0);
    let errors: u64 = load["errors"]
        .as_object()
        .map(|e| e.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    if done != requests || errors != 0 {
        return Err(format!(
            "loadgen completed {done} of {requests} requests with {errors} errors"
        ));
    }
    Ok(())
}

/// `perf stat -x,` output: `count,unit,event,...` lines.
fn parse_perf(text: &str) -> Result<Counts, String> {
    let mut counts = Counts::default();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Ok(n) = value.trim().parse::<u64>() else {
            return Err(format!("perf could not count {event}: {value}"));
        };
        if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            counts.calls.insert(name.to_string(), n);
        } else if *event == "raw_syscalls:sys_enter" {
            counts.total = n;
        } else if *event == "context-switches" {
            counts.context_switches = Some(n);
        }
    }
    if counts.total == 0 {
        return Err(format!("perf counted no system call: {text}"));
    }
    let named: u64 = counts.calls.values().sum();
    counts
        .calls
        .insert("other".into(), counts.total.saturating_sub(named));
    Ok(counts)
}

/// `strace -c` output: a table whose rows end in `calls [errors] syscall`, and a `total` row.
fn parse_strace(text: &str) -> Result<Counts, String> {
    let mut counts = Counts::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].starts_with('-') || fields[0] == "%" {
            continue;
        }
        let name = fields[fields.len() - 1];
        let Ok(calls) = fields[3].parse::<u64>() else {
            continue;
        };
        if name == "total" {
            counts.total = calls;
        } else {
            counts.calls.insert(name.to_string(), calls);
        }
    }
    if counts.total == 0 {
        return Err(format!("strace counted no system call: {text}"));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_output_is_read_with_other_and_switches() {
        let text = "# started on Tue\n\n1200,,syscalls:sys_enter_recvfrom,100.00,,\n1100,,syscalls:sys_enter_sendto,100.00,,\n2500,,raw_syscalls:sys_enter,100.00,,\n40,,context-switches,100.00,,\n";
        let c = parse_perf(text).unwrap();
        assert_eq!(c.calls["recvfrom"], 1200);
        assert_eq!(c.calls["other"], 200);
        assert_eq!(c.total, 2500);
        assert_eq!(c.context_switches, Some(40));
        assert!(parse_perf("<not counted>,,syscalls:sys_enter_read,0,,\n").is_err());
    }

    #[test]
    fn strace_output_is_read_with_and_without_errors() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n------ ----------- ----------- --------- --------- ----------------\n 60.00    0.000600           1       500           recvfrom\n 30.00    0.000300           1       499        12 sendto\n------ ----------- ----------- --------- --------- ----------------\n100.00    0.001000           1       999        12 total\n";
        let c = parse_strace(text).unwrap();
        assert_eq!(c.calls["recvfrom"], 500);
        assert_eq!(c.calls["sendto"], 499);
        assert_eq!(c.total, 999);
        assert_eq!(c.context_switches, None);
    }

    #[test]
    fn calls_line_puts_the_most_frequent_first() {
        let per: BTreeMap<String, f64> = [("epoll_wait", 0.02), ("recvfrom", 1.0), ("sendto", 1.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(
            Anatomy::calls_line(&per),
            "recvfrom 1.00, sendto 1.00, epoll_wait 0.02"
        );
    }
}
