//! One cell: start the server pinned to the server CPUs, wait for `listening`, run loadgen
//! pinned to the load CPUs, sample the server's process tree meanwhile, stop the server and
//! check it exited cleanly, and describe it all as one result line.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::external;
use crate::noise;
use crate::process_tree::{self, Sample};
use crate::suite::Cell;

/// Where the binaries are and how the cell is timed and pinned.
#[derive(Clone, Debug)]
pub struct Setup {
    pub server: PathBuf,
    pub loadgen: PathBuf,
    pub server_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    /// Before each cell's measured time (`Cell::duration`).
    pub warmup: Duration,
    /// loadgen's reply and connect timeout.
    pub timeout: Duration,
    pub run_id: String,
    /// Where the server and the loadgens run when not here (`bench run --server-host`).
    pub hosts: Option<std::sync::Arc<crate::hosts::Prepared>>,
    /// Servers run by command (`[[server]]`, `--server`): models by the names they carry.
    pub externals: Vec<external::Server>,
    /// The run directory (an external server's `{run}`).
    pub run_dir: PathBuf,
}

pub(crate) const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Between samples, how often the runner looks whether loadgen has ended: waiting out a whole
/// sampling interval after it did cost 50 ms per cell on average, a tenth of a quick cell.
const EXIT_POLL: Duration = Duration::from_millis(5);
/// PSS and context switches are read by a thread of their own at this pace: for a server of
/// many threads they are slow to read, and must not hold up the CPU samples.
const FULL_SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How long past its planned time a cell may run before the watchdog ends it.
pub(crate) const WATCHDOG_SLACK: Duration = Duration::from_secs(20);
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one cell and returns its result line (always one: failures are results too).
pub fn run(cell: &Cell, setup: &Setup) -> Value {
    let mut line = json!({
        "schema": 2,
        "run": setup.run_id,
        "cell": cell.id(),
        "trial": cell.trial,
        "model": cell.model,
        "protocol": cell.protocol,
        "scenario": cell.scenario,
        "params": cell.params,
        "status": "ok",
        "reason": null,
        "load": null,
        "server": null,
        "loadgen": null,
        "noise": null,
    });
    if let Some(server) = setup.externals.iter().find(|s| s.name == cell.model) {
        line["external"] = json!({
            "command": server.command,
            "protocols": server.protocols,
        });
    }
    let measured = match &setup.hosts {
        Some(hosts) => crate::hosts::measure(cell, setup, hosts).map(|(parts, figures)| {
            line["hosts"] = figures;
            parts
        }),
        None => measure(cell, setup),
    };
    match measured {
        Ok((load, server, loadgen, noise)) => {
            line["load"] = load;
            line["server"] = server;
            line["loadgen"] = loadgen;
            line["noise"] = noise;
        }
        Err(Outcome::Unsupported(reason)) => {
            line["status"] = json!("unsupported");
            line["reason"] = json!(reason);
        }
        Err(Outcome::Failed(reason)) => {
            line["status"] = json!("failed");
            line["reason"] = json!(reason);
        }
    }
    line
}

pub(crate) enum Outcome {
    Unsupported(String),
    Failed(String),
}

fn pinned(program: &PathBuf, cpus: &[usize]) -> Command {
    let mut command = Command::new(program);
    ends_with_bench(&mut command);
    let cpus = cpus.to_vec();
    // SAFETY: sched_setaffinity only changes the child's own state; the set is built on the
    // stack of the (single-threaded) child before exec.
    unsafe { command.pre_exec(move || pin_this_thread(&cpus)) };
    command
}

/// A server or loadgen outlives nothing of ours: if bench dies (even by SIGKILL), the child
/// gets SIGTERM and stops as usual.
pub(crate) fn ends_with_bench(command: &mut Command) {
    // SAFETY: prctl only changes the child's own state, before exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// The server's first line on stdout, if one comes within `timeout` (`listening <addr>` from
/// a server that started).
pub(crate) fn first_line(stdout: impl Read + Send + 'static, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout).ok()
}

/// Pins the calling thread (and the threads it starts after) to `cpus`.
pub(crate) fn pin_this_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity(0, ..) changes only
    // the calling thread. Allocation-free, so it may run between fork and exec.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            // CPU_SET indexes past the set (and panics) for a CPU it cannot hold.
            if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Collects a child's stderr on a thread; the last lines explain failures.
pub(crate) fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    collect_keeping(pipe, 64 * 1024)
}

/// Collects a child's output on a thread, keeping the last `keep` bytes or so: a log keeps
/// its tail, a result (loadgen's JSON, 100 KiB and more with its interval series) must be
/// kept whole ([`RESULT_LIMIT`]).
pub(crate) fn collect_keeping(
    mut pipe: impl Read + Send + 'static,
    keep: usize,
) -> Arc<Mutex<String>> {
    let sink = Arc::new(Mutex::new(String::new()));
    let writer = Arc::clone(&sink);
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut text = writer.lock().unwrap();
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.len() > keep {
                let cut = text.len() - keep / 2;
                text.replace_range(..cut, "");
            }
        }
    });
    sink
}

/// The most of loadgen's result kept: far above any result (a series of 600 intervals with
/// their histograms is about 1 MiB), and a bound all the same.
pub(crate) const RESULT_LIMIT: usize = 64 << 20;

fn tail(text: &Arc<Mutex<String>>) -> String {
    let text = text.lock().unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// `what`, then the last lines the child wrote to stderr, if it wrote any.
pub(crate) fn with_tail(what: String, log: &Arc<Mutex<String>>) -> String {
    match tail(log) {
        t if t.is_empty() => what,
        t => format!("{what}: {t}"),
    }
}

pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (_, Some(signal)) => format!(
            "killed by signal {signal}{}{}",
            signal_name(signal).map_or(String::new(), |n| format!(" ({n})")),
            if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            }
        ),
        _ => format!("{status}"),
    }
}

/// The name of a signal that ends processes (numbers differ between architectures).
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// A measured cell's `load`, `server`, `loadgen` and `noise` objects.
pub(crate) type Parts = (Value, Value, Value, Value);

fn measure(cell: &Cell, setup: &Setup) -> Result<Parts, Outcome> {
    let external = setup.externals.iter().find(|s| s.name == cell.model);
    // An external server may have CPUs of its own; the noise is read on those then.
    let setup = &match external.and_then(|s| s.cpus.clone()) {
        Some(cpus) => Setup {
            server_cpus: cpus,
            ..setup.clone()
        },
        None => setup.clone(),
    };
    // Where the host has the two CPUs now (see `link`): before the server takes its CPU.
    let link_before = crate::link::probe(&setup.server_cpus, &setup.load_cpus);
    let (mut server, server_log, addr) = match external {
        Some(spec) => {
            let running = external::start(
                spec,
                &cell.protocol,
                &setup.server_cpus,
                &setup.run_dir,
                &[],
            )
            .map_err(Outcome::Failed)?;
            let (log, addr) = (running.log.clone(), running.addr.clone());
            (Server::External(running), log, addr)
        }
        None => {
            let (model, extra_args) =
                crate::suite::server_model(&cell.model).map_err(Outcome::Failed)?;
            let mut child = pinned(&setup.server, &setup.server_cpus)
                .args(extra_args)
                .args([
                    "--model",
                    model,
                    "--protocol",
                    &cell.protocol,
                    "--addr",
                    "127.0.0.1:0",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    Outcome::Failed(format!("cannot start {}: {e}", setup.server.display()))
                })?;
            let log = collect(child.stderr.take().expect("piped"));
            let mut server = Server::BuiltIn(child);
            let addr = wait_listening(server.child(), &log)?;
            (server, log, addr)
        }
    };
    let load_args = external.map(|s| s.load_args.clone()).unwrap_or_default();
    let mut loadgen = pinned(&setup.loadgen, &setup.load_cpus);
    loadgen
        .args(loadgen_args(cell, setup, &addr))
        .args(load_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cell_cpus: Vec<usize> = setup
        .server_cpus
        .iter()
        .chain(&setup.load_cpus)
        .copied()
        .collect();
    // From before loadgen starts; the stops inside its measured window count.
    let watch = crate::stalls::Watch::start(&cell_cpus);
    let mut loadgen = loadgen
        .spawn()
        .map_err(|e| Outcome::Failed(format!("cannot start {}: {e}", setup.loadgen.display())))?;
    let loadgen_log = collect(loadgen.stderr.take().expect("piped"));
    // Whole: a cut result would not parse (a 5 s cell at 500 connections printed over 64 KiB).
    let loadgen_out = collect_keeping(loadgen.stdout.take().expect("piped"), RESULT_LIMIT);
    let started = Instant::now();
    let server_pid = server.child().id() as i32;
    // The samplers stay off the server's CPUs: there, among 500 busy server threads, a
    // sample once waited 760 ms for its turn.
    let _ = pin_this_thread(&setup.load_cpus);
    let (stop_full, stopped) = mpsc::channel::<()>();
    let full_sampler = thread::spawn(move || {
        let mut full = Vec::new();
        loop {
            let began = Instant::now();
            full.push(process_tree::sample(server_pid, true));
            // Rests at least as long as the sample took, so on a server of thousands of
            // threads this thread takes at most half of a load CPU from loadgen.
            let rest = FULL_SAMPLE_EVERY.max(began.elapsed());
            // Ends when `stop_full` is dropped, on every way out of this function.
            if stopped.recv_timeout(rest) != Err(mpsc::RecvTimeoutError::Timeout) {
                return full;
            }
        }
    });
    let mut samples: Vec<Sample> = vec![process_tree::sample(server_pid, false)];
    let loadgen_pid = loadgen.id() as i32;
    let mut noise_samples = vec![noise::Sample::take(&cell_cpus, loadgen_pid)];
    let deadline = started + setup.warmup + cell.duration + WATCHDOG_SLACK;
    let mut next_sample = Instant::now() + SAMPLE_EVERY;
    let status = loop {
        if crate::runner::interrupted().is_some() {
            // bench run was interrupted: stop loadgen here, the server as it drops.
            let _ = loadgen.kill();
            let _ = loadgen.wait();
            return Err(Outcome::Failed("interrupted".into()));
        }
        if let Some(status) = loadgen
            .try_wait()
            .map_err(|e| Outcome::Failed(e.to_string()))?
        {
            break status;
        }
        if let Ok(Some(status)) = server.child().try_wait() {
            let _ = loadgen.kill();
            let _ = loadgen.wait();
            // Let the stderr reader catch the server's last words.
            thread::sleep(Duration::from_millis(20));
            return Err(Outcome::Failed(with_tail(
                format!("server {} during the cell", describe(status)),
                &server_log,
            )));
        }
        if Instant::now() > deadline {
            let _ = loadgen.kill();
            let _ = loadgen.wait();
            return Err(Outcome::Failed(format!(
                "watchdog: the cell overran its {:.1}s by {}s and was stopped",
                (setup.warmup + cell.duration).as_secs_f64(),
                WATCHDOG_SLACK.as_secs()
            )));
        }
        let now = Instant::now();
        if now < next_sample {
            thread::sleep(EXIT_POLL.min(next_sample - now));
            continue;
        }
        samples.push(process_tree::sample(server_pid, false));
        noise_samples.push(noise::Sample::take(&cell_cpus, loadgen_pid));
        next_sample = Instant::now() + SAMPLE_EVERY;
    };
    drop(stop_full);
    samples.extend(full_sampler.join().unwrap_or_default());
    samples.sort_by_key(|s| s.at);
    // No sample after loadgen ended: its connections are closed by then, and the threads or
    // processes that served them are gone with their counts. The window ends at the last
    // sample taken under load.
    // Exit 1 is loadgen's own verdict on a run it measured (errors above its thresholds):
    // the result it printed is kept, errors and all, and judged by the report like any other
    // (a model that refuses connections by design has errors). Anything else is a failure.
    if !status.success() && status.code() != Some(1) {
        return Err(Outcome::Failed(with_tail(
            format!("loadgen {}", describe(status)),
            &loadgen_log,
        )));
    }
    // The reader thread finishes with the pipe; give it a moment.
    let text = wait_for_text(&loadgen_out);
    let load: Value = serde_json::from_str(text.trim()).map_err(|e| {
        Outcome::Failed(with_tail(
            format!("loadgen printed no result ({e})"),
            &loadgen_log,
        ))
    })?;
    let stalls = watch.map(|w| {
        let (server, load) = w.finish(
            load["start_unix_s"].as_f64().unwrap_or(0.0),
            load["duration_s"].as_f64().unwrap_or(0.0),
            &setup.server_cpus,
        );
        crate::stalls::to_json(server, load)
    });
    let clean = server.stop();
    let mut server_stats = server_stats(cell, setup, &samples, started, &load, clean.is_ok());
    if let Ok(Some(how)) = &clean {
        server_stats["stop"] = json!(how);
        server_stats["clean_exit"] = json!(how.starts_with("SIGTERM"));
    }
    if let Err(reason) = clean {
        return Err(Outcome::Failed(with_tail(
            format!("server did not stop cleanly: {reason}"),
            &server_log,
        )));
    }
    let link_after = crate::link::probe(&setup.server_cpus, &setup.load_cpus);
    let loadgen_cpu = json!({
        "cpu_user_s": load["loadgen"]["cpu_user_s"],
        "cpu_sys_s": load["loadgen"]["cpu_sys_s"],
    });
    let from = started + setup.warmup;
    let until = from + cell.duration;
    let server_cpu_s = |window_s: f64| {
        server_stats["cpu_utilization"]
            .as_f64()
            .map(|u| u * window_s)
    };
    let mut noise = noise_of(&noise_samples, from, until, setup, server_cpu_s);
    let link = crate::link::to_json(link_before, link_after);
    // Both kept when the window was too short for /proc/stat's samples too.
    for (key, value) in [
        ("cpu_link_ns", link),
        ("stalls", stalls.unwrap_or(Value::Null)),
    ] {
        if !value.is_null() {
            if noise.is_null() {
                noise = json!({});
            }
            noise[key] = value;
        }
    }
    Ok((load, server_stats, loadgen_cpu, noise))
}

/// The `noise` object: the server's CPU over the noise window is its utilisation over its
/// own window times the noise window's length (both are loadgen's measured window, sampled
/// at the same moments).
fn noise_of(
    samples: &[noise::Sample],
    from: Instant,
    until: Instant,
    setup: &Setup,
    server_cpu_s: impl Fn(f64) -> Option<f64>,
) -> Value {
    let window = noise::summarise(
        samples,
        from,
        until,
        &setup.server_cpus,
        &setup.load_cpus,
        Some(0.0),
    );
    let Some(seconds) = window["window_s"].as_f64() else {
        return Value::Null;
    };
    noise::summarise(
        samples,
        from,
        until,
        &setup.server_cpus,
        &setup.load_cpus,
        server_cpu_s(seconds),
    )
}

pub(crate) fn wait_for_text(text: &Arc<Mutex<String>>) -> String {
    for _ in 0..100 {
        let t = text.lock().unwrap().clone();
        if t.ends_with('\n') {
            return t;
        }
        thread::sleep(Duration::from_millis(10));
    }
    text.lock().unwrap().clone()
}

fn wait_listening(server: &mut Child, log: &Arc<Mutex<String>>) -> Result<String, Outcome> {
    let stdout = server.stdout.take().expect("piped");
    let line = first_line(stdout, LISTEN_TIMEOUT).unwrap_or_default();
    if let Some(addr) = line.trim().strip_prefix("listening ") {
        return Ok(addr.to_string());
    }
    // No line: the server exited (or hangs). Exit 3 is "unsupported here".
    let status = wait_briefly(server);
    match status {
        Some(s) if s.code() == Some(3) => Err(Outcome::Unsupported(
            match tail(log).trim_start_matches("unsupported: ") {
                "" => "the server exited 3 (unsupported) and gave no reason".to_string(),
                reason => reason.to_string(),
            },
        )),
        Some(s) => Err(Outcome::Failed(with_tail(
            format!("server {} before listening", describe(s)),
            log,
        ))),
        None => Err(Outcome::Failed(format!(
            "no `listening` line within {}s",
            LISTEN_TIMEOUT.as_secs()
        ))),
    }
}

fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            // Let the stderr reader catch the last words.
            thread::sleep(Duration::from_millis(20));
            return Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// SIGTERM, then wait: the server must exit with status 0 within the timeout.
fn stop(server: &mut Child) -> Result<(), String> {
    // SAFETY: kill only signals our own, not yet reaped, child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < STOP_TIMEOUT {
        match server.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(describe(status)),
            _ => thread::sleep(Duration::from_millis(5)),
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    Err(format!(
        "still running {}s after SIGTERM",
        STOP_TIMEOUT.as_secs()
    ))
}

pub(crate) fn loadgen_args(cell: &Cell, setup: &Setup, addr: &str) -> Vec<String> {
    let mut args = vec![
        cell.scenario.clone(),
        "--addr".into(),
        addr.into(),
        "--duration".into(),
        format!("{}ms", cell.duration.as_millis()),
        "--warmup".into(),
        format!("{}ms", setup.warmup.as_millis()),
        "--threads".into(),
        setup.load_cpus.len().to_string(),
        "--timeout".into(),
        format!("{}ms", setup.timeout.as_millis()),
        "--json".into(),
    ];
    for (name, value) in &cell.params {
        args.push(format!("--{name}"));
        args.push(value.to_string());
    }
    args
}

/// The `server` object: CPU over the measured window, peaks, and what they cost per unit.
pub(crate) fn server_stats(
    cell: &Cell,
    setup: &Setup,
    samples: &[Sample],
    started: Instant,
    load: &Value,
    clean: bool,
) -> Value {
    let hz = process_tree::ticks_per_second() as f64;
    // The measured window starts after loadgen's warmup ...
    let from = started + setup.warmup;
    // ... and ends with loadgen's measured window: samples taken while loadgen was closing
    // its connections have lost the threads and processes that served them.
    let until = from + cell.duration;
    let peak = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let peak_pss = peak(|s| s.pss_kib);
    let connections = cell.connections().max(1) as f64;
    let mut server = json!({
        "cpu_user_s": null,
        "cpu_sys_s": null,
        "cpu_total_s": null,
        "cpu_utilization": null,
        "cpu_us_per_request": null,
        "peak_pss_kib": peak_pss,
        "pss_kib_per_conn": round(peak_pss as f64 / connections, 2),
        "ctx_voluntary": null,
        "ctx_involuntary": null,
        "peak_threads": peak(|s| s.threads),
        "peak_processes": peak(|s| s.processes),
        "clean_exit": clean,
    });
    // Context switches come from the full samples inside the window, CPU from all of them.
    // Without two samples inside the window (sampling a server of many threads is slow on a
    // loaded machine) a figure is unknown, which is said as null rather than guessed from
    // samples outside it.
    if let Some((first, last)) = window(samples, from, until, |s| s.full) {
        server["ctx_voluntary"] = json!(last.ctx_voluntary.saturating_sub(first.ctx_voluntary));
        server["ctx_involuntary"] =
            json!(last.ctx_involuntary.saturating_sub(first.ctx_involuntary));
    }
    let Some((first, last)) = window(samples, from, until, |_| true) else {
        return server;
    };
    let seconds = last.at.saturating_duration_since(first.at).as_secs_f64();
    let user = last.user_ticks.saturating_sub(first.user_ticks) as f64 / hz;
    let sys = last.sys_ticks.saturating_sub(first.sys_ticks) as f64 / hz;
    // The exact total (see process_tree): what utilisation and CPU per request use.
    let total = last.runtime_ns.saturating_sub(first.runtime_ns) as f64 / 1e9;
    let rps = load["throughput_rps"].as_f64().unwrap_or(0.0);
    let requests_in_window = rps * seconds;
    server["cpu_user_s"] = json!(round(user, 3));
    server["cpu_sys_s"] = json!(round(sys, 3));
    server["cpu_total_s"] = json!(round(total, 3));
    server["cpu_utilization"] = json!(round(total / seconds, 3));
    server["cpu_us_per_request"] =
        json!((requests_in_window > 0.0).then(|| round(total * 1e6 / requests_in_window, 3)));
    server
}

/// The first and last of the samples `pick` accepts inside [from, until], if two are there.
fn window(
    samples: &[Sample],
    from: Instant,
    until: Instant,
    pick: impl Fn(&Sample) -> bool,
) -> Option<(&Sample, &Sample)> {
    let first = samples.iter().find(|s| pick(s) && s.at >= from)?;
    let last = samples
        .iter()
        .rev()
        .find(|s| pick(s) && s.at <= until && s.at > first.at)?;
    Some((first, last))
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The server of a cell: a built-in model, or an external server in a process group of its
/// own. Dropped on every way out of a cell, it leaves no process behind: a built-in model is
/// SIGKILLed; an external server is its own guard ([`external::Running`]'s drop stops it as
/// its stop does, unless that ran).
enum Server {
    BuiltIn(Child),
    External(external::Running),
}

impl Server {
    fn child(&mut self) -> &mut Child {
        match self {
            Server::BuiltIn(child) => child,
            Server::External(running) => &mut running.child,
        }
    }

    /// Stops it: a built-in model must exit 0 on SIGTERM in time; an external server is
    /// SIGKILLed after its grace period, which is said (`Some`) in the result line.
    fn stop(&mut self) -> Result<Option<String>, String> {
        match self {
            Server::BuiltIn(child) => stop(child).map(|()| None),
            Server::External(running) => running.stop().map(Some),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::BuiltIn(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
