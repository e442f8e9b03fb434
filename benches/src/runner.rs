//! A run: its directory (`results.jsonl`, `env.json`, the suite it ran), the cells in order,
//! a progress bar, and `--resume`.
//!
//! Runs live in `results/<run id>/` under the workspace (or `--out DIR`), and
//! `results/latest` points at the newest. Each cell's line is appended and flushed as soon as
//! the cell ends, so an interrupted run loses at most the cell it was in, and `--resume`
//! finishes it without redoing a cell. One `bench run` at a time holds a directory (`lock`):
//! two would each store every cell, both as the same trial.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::adaptive;
use crate::cell::{self, Setup};
use crate::suite::{Cell, Suite};

pub struct Run {
    pub dir: PathBuf,
    pub suite: Suite,
    pub suite_path: PathBuf,
    pub cells: Vec<Cell>,
    pub setup: Setup,
}

/// The signal (SIGINT, SIGTERM) that interrupted the run, 0 while none has.
static INTERRUPT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_interrupt(signal: libc::c_int) {
    use std::sync::atomic::Ordering;
    if INTERRUPT.swap(signal, Ordering::SeqCst) != 0 {
        // The second one: stop now, the way the signal stops a process. Children get
        // SIGTERM from the kernel (PR_SET_PDEATHSIG).
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// From now on SIGINT and SIGTERM interrupt the run instead of killing bench: the cell under
/// way is stopped (its server and loadgen with it) and not recorded, every finished cell is
/// kept, and `bench run` says how to finish. A second signal kills at once.
pub fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that interrupted the run, if one did.
pub fn interrupted() -> Option<i32> {
    match INTERRUPT.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    workspace.canonicalize().unwrap_or(workspace)
}

/// The workspace's `results/` directory.
/// Where runs go when `--out` is not given: `results/` in the workspace, or the directory
/// named by `IOMODELS_RESULTS` (also where the measured start/stop overhead is kept).
pub fn results_root() -> PathBuf {
    match std::env::var_os("IOMODELS_RESULTS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("results"),
    }
}

/// A new run directory named after the time (UTC), with `latest` pointing at it.
pub fn new_run_dir(root: &Path) -> io::Result<(PathBuf, String)> {
    fs::create_dir_all(root)?;
    let id = run_id();
    let dir = root.join(&id);
    fs::create_dir_all(&dir)?;
    point_latest(root, &id)?;
    Ok((dir, id))
}

pub fn point_latest(root: &Path, id: &str) -> io::Result<()> {
    let latest = root.join("latest");
    let _ = fs::remove_file(&latest);
    std::os::unix::fs::symlink(id, &latest)
}

fn run_id() -> String {
    let (year, month, day, hour, minute, second) = reports::run::civil(now_unix_s());
    format!("{year:04}-{month:02}-{day:02}T{hour:02}-{minute:02}-{second:02}")
}

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

/// The lock file in a run directory: flock'ed by the `bench run` that writes there, and
/// holding its pid.
pub const LOCK_FILE: &str = "bench.lock";

/// A run directory held by this process until dropped (the lock goes with the descriptor,
/// so even a SIGKILLed run releases it; servers and loadgens do not inherit it, as Rust opens
/// files close-on-exec).
pub struct DirLock {
    file: File,
}

/// Takes `dir` for this run, or says which process has it.
pub fn lock(dir: &Path) -> Result<DirLock, String> {
    let path = dir.join(LOCK_FILE);
    let named = |e: io::Error| format!("{}: {e}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(named)?;
    // SAFETY: flock on a descriptor we own; LOCK_NB makes it return at once.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(format!("{}: flock: {e}", path.display()));
        }
        return Err(format!(
            "{} is in use by another bench run ({})",
            dir.display(),
            holder(&mut file).map_or("pid unknown".to_string(), |pid| format!("pid {pid}"))
        ));
    }
    file.set_len(0).map_err(named)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(named)?;
    Ok(DirLock { file })
}

/// The pid the holder wrote. It writes it just after taking the lock: wait a moment for it.
fn holder(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // No pid of a finished run left behind; the file stays (removing it would let a
        // waiting run lock a file that is no longer the directory's).
        let _ = self.file.set_len(0);
    }
}

/// Keys (`cell#trial`) of the cells a run directory already holds.
pub fn finished_cells(dir: &Path) -> io::Result<HashSet<String>> {
    let path = dir.join("results.jsonl");
    let Ok(file) = File::open(&path) else {
        return Ok(HashSet::new());
    };
    let mut done = HashSet::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        // A line cut short by an interruption does not parse: that cell runs again.
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if let (Some(cell), Some(trial)) = (v["cell"].as_str(), v["trial"].as_u64()) {
                done.insert(format!("{cell}#{trial}"));
            }
        }
    }
    Ok(done)
}

/// Runs every cell not yet in `results.jsonl`; returns every line the file then holds.
/// Errors name the file.
pub fn execute(run: &Run) -> Result<Vec<Value>, String> {
    execute_with(run, false)
}

/// [`execute`], then, with `rerun_noisy`, one more trial of each cell flagged noisy, then
/// the adaptive rounds of a suite with a precision target (see `adaptive`) and the reruns
/// of their own noisy trials.
pub fn execute_with(run: &Run, rerun_noisy: bool) -> Result<Vec<Value>, String> {
    let path = run.dir.join("results.jsonl");
    let named = |e: io::Error| format!("{}: {e}", path.display());
    let done = finished_cells(&run.dir).map_err(named)?;
    let todo: Vec<&Cell> = run
        .cells
        .iter()
        .filter(|c| !done.contains(&c.key()))
        .collect();
    if !done.is_empty() {
        eprintln!(
            "resuming: {} already done, {} to run",
            crate::count(done.len(), "cell"),
            todo.len()
        );
    }
    // A line cut short by an interruption would glue onto the next one: end it first.
    let mut results = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(named)?;
    if fs::read(&path).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n')) {
        results.write_all(b"\n").map_err(named)?;
    }
    let bar = progress(todo.len());
    let started = Instant::now();
    // The time budget (`max_time` counts from the run's start, not from a `--resume`: the
    // cells an earlier session recorded count too).
    let costs = RefCell::new(adaptive::Budget::new(
        run.setup.warmup,
        crate::suite::cell_overhead().0,
    ));
    for line in read_results(&run.dir).map_err(named)? {
        costs.borrow_mut().ran_before(&line);
    }
    let mut total = todo.len();
    // Cells run so far (read between calls of `run_cell`).
    let count = std::cell::Cell::new(0usize);
    let mut run_cell = |cell: &Cell, rerun_of: Option<u64>, total: usize| -> Result<(), String> {
        count.set(count.get() + 1);
        let label = format!("{} (trial {})", cell.id(), cell.trial);
        match &bar {
            Some(bar) => bar.set_message(label),
            None => eprintln!("[{}/{total}] {label}", count.get()),
        }
        let mut line = cell::run(cell, &run.setup);
        if interrupted().is_some() {
            return Ok(()); // stopped part way: not a result, `--resume` runs it again
        }
        if let Some(k) = rerun_of {
            line["rerun_of"] = json!(k);
        }
        costs.borrow_mut().ran(&line);
        if line["status"] != "ok" {
            let message = format!(
                "  {}: {} ({})",
                cell.id(),
                line["status"].as_str().unwrap_or("?"),
                line["reason"].as_str().unwrap_or("")
            );
            say(&bar, &message);
        }
        // One write per line: a reader (or an interruption) never sees half a line
        // appended in several pieces. A write that fails part way (a full disk) is undone,
        // so the file keeps whole lines only and `--resume` runs that cell again; this run
        // is the file's only writer (`lock`).
        let whole = results.metadata().map_err(named)?.len();
        if let Err(e) = results.write_all(format!("{line}\n").as_bytes()) {
            let _ = results.set_len(whole);
            return Err(named(e));
        }
        results.flush().map_err(named)?;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        Ok(())
    };
    for cell in &todo {
        if interrupted().is_some() {
            break;
        }
        run_cell(cell, None, total)?;
    }
    let spent = || costs.borrow().spent(started.elapsed());
    let mut out_of_time = false;
    // Reruns of noisy trials first, then adaptive rounds in the time they leave, then the
    // reruns those rounds need: a trial that measured the host's placement is worse than a
    // missing extra trial.
    let mut rounds_ran = false;
    for stage in 0..2 {
        if rerun_noisy && (stage == 0 || rounds_ran) {
            for _ in 0..adaptive::RERUN_PASSES {
                if interrupted().is_some() {
                    break;
                }
                let so_far = read_results(&run.dir).map_err(named)?;
                let mut reruns = adaptive::noisy_reruns(&run.cells, &so_far);
                // Within the suite's time budget, as its adaptive rounds are.
                if let Some(budget) = run.suite.max_time {
                    let room = budget.saturating_sub(spent());
                    let times = costs
                        .borrow()
                        .times(started.elapsed(), reruns.iter().map(|(c, _)| c));
                    let fit = adaptive::cells_that_fit(room, times);
                    if fit < reruns.len() {
                        let message = format!(
                            "{} flagged noisy; {} fit in the suite's {:.0?}",
                            crate::count(reruns.len(), "cell"),
                            fit,
                            budget
                        );
                        say(&bar, &message);
                        reruns.truncate(fit);
                    }
                }
                if reruns.is_empty() {
                    break;
                }
                let message = format!("rerunning {} noisy cells", reruns.len());
                say(&bar, &message);
                total += reruns.len();
                if let Some(bar) = &bar {
                    bar.inc_length(reruns.len() as u64);
                }
                for (cell, rerun_of) in &reruns {
                    if interrupted().is_some() {
                        break;
                    }
                    run_cell(cell, Some(*rerun_of), total)?;
                }
            }
        }
        if stage == 1 || run.suite.precision.is_none() || interrupted().is_some() {
            break;
        }
        // At most one round per trial past the planned ones; each cell stops at the target
        // or at `max_trials`. `owed`: the time kept for the reruns of the rounds run so far,
        // which all run after the last round.
        let mut owed = Duration::ZERO;
        for _ in run.suite.trials..run.suite.most_trials() {
            if interrupted().is_some() {
                break;
            }
            let so_far = read_results(&run.dir).map_err(named)?;
            // A round an interrupted session left part way is finished under its number.
            let open = adaptive::OpenRound::read(&run.dir);
            let unfinished = adaptive::unfinished_round(open.as_ref(), &run.cells, &so_far);
            let finishing = unfinished.is_some();
            let (trial, mut round) = unfinished.unwrap_or_else(|| {
                let trial = adaptive::next_trial(&so_far);
                (
                    trial,
                    adaptive::next_round(&run.suite, &run.cells, &so_far, trial),
                )
            });
            if round.is_empty() {
                adaptive::OpenRound::close(&run.dir)?;
                break;
            }
            // Time is kept for the reruns the round's own trials will likely need.
            let again = if rerun_noisy {
                1.0 + adaptive::rerun_share(&so_far)
            } else {
                1.0
            };
            let round_times = costs.borrow().times(started.elapsed(), &round);
            let round_time = round_times.iter().sum::<Duration>().mul_f64(again);
            if let Some(budget) = run.suite.max_time {
                if spent() + owed + round_time > budget {
                    // The last round: the groups of it that fit, each whole, so every model
                    // of a group gets the same chances and they compare round by round.
                    out_of_time = true;
                    let room = budget.saturating_sub(spent() + owed).div_f64(again);
                    let whole = round.len();
                    round = adaptive::part_of_round(&round, &so_far, &round_times, room);
                    if round.is_empty() {
                        break;
                    }
                    let message = format!(
                        "one more trial: {} of {whole} cells short of ±{}% fit in the suite's {budget:.0?} (the least precise scenarios first)",
                        round.len(),
                        run.suite.precision.map_or(0.0, crate::suite::percent),
                    );
                    say(&bar, &message);
                }
            }
            if finishing {
                let message = format!(
                    "finishing round {trial}, which an earlier session left part way: {}",
                    crate::count(round.len(), "cell")
                );
                say(&bar, &message);
            }
            rounds_ran = true;
            owed += costs
                .borrow()
                .times(started.elapsed(), &round)
                .iter()
                .sum::<Duration>()
                .mul_f64(again - 1.0);
            total += round.len();
            if let Some(bar) = &bar {
                bar.inc_length(round.len() as u64);
            }
            adaptive::OpenRound::open(&run.dir, &round)?;
            for cell in &round {
                if interrupted().is_some() {
                    break;
                }
                run_cell(cell, None, total)?;
            }
            if interrupted().is_some() {
                break; // the round stays open for `--resume` to finish
            }
            adaptive::OpenRound::close(&run.dir)?;
            if out_of_time {
                break;
            }
        }
    }
    // Where each cell stands once its reruns replaced its noisy trials.
    if run.suite.precision.is_some() {
        let so_far = read_results(&run.dir).map_err(named)?;
        let outcomes = adaptive::outcomes(&run.suite, &run.cells, &so_far, out_of_time);
        let precision = run.dir.join("precision.json");
        let text = serde_json::to_string_pretty(&outcomes).expect("outcomes serialise") + "\n";
        reports::run::replace_file(&precision, text.as_bytes())?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    eprintln!(
        "{} in {:.0?}",
        crate::count(count.get(), "cell"),
        started.elapsed()
    );
    let costs = costs.borrow();
    record_overhead(run, costs.ran_so_far().0, costs.overhead(started.elapsed()));
    read_results(&run.dir).map_err(named)
}

/// Records what each cell of this run cost beyond its warmup and measured time, for every
/// later estimate of a suite's length on this machine (`suite::cell_overhead`). Runs of a
/// few cells, or interrupted ones, say little and are not kept.
fn record_overhead(run: &Run, cells: usize, per_cell: Duration) {
    // Cells on other hosts pay ssh's start-up and the synchronised start, not this machine's.
    if cells < 4 || interrupted().is_some() || run.setup.hosts.is_some() {
        return;
    }
    let per_cell = per_cell.as_secs_f64();
    let text = json!({"per_cell_s": (per_cell * 1000.0).round() / 1000.0, "cells": cells});
    let path = crate::suite::overhead_file();
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = reports::run::replace_file(&path, format!("{text}\n").as_bytes());
}

pub fn read_results(dir: &Path) -> io::Result<Vec<Value>> {
    let file = File::open(dir.join("results.jsonl"))?;
    let mut lines: Vec<Value> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    reports::noise::settle_link_best(&mut lines);
    Ok(lines)
}

/// A line for the user: above the progress bar when there is one, else on stderr.
fn say(bar: &Option<ProgressBar>, message: &str) {
    match bar {
        Some(bar) => bar.println(message),
        None => eprintln!("{message}"),
    }
}

fn progress(total: usize) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cells, ETA {eta}  {msg}")
            .expect("valid template"),
    );
    Some(bar)
}

/// `env.json`: what the numbers depend on. Written whole or not at all (a resumed run keeps
/// the file it finds); errors name it.
pub fn write_env(run: &Run) -> Result<(), String> {
    let path = run.dir.join("env.json");
    if path.exists() {
        return Ok(()); // a resumed run keeps the environment it started with
    }
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    let governor = read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
        .trim()
        .to_string();
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    // The machine check: only where the cells run (remote hosts are not checked).
    let pauses = run.setup.hosts.is_none().then(|| {
        let mut cpus = run.setup.server_cpus.clone();
        cpus.extend(&run.setup.load_cpus);
        cpus.sort_unstable();
        cpus.dedup();
        let window = crate::pauses::WINDOW;
        let seen = crate::pauses::measure(&cpus, window);
        let pauses = crate::pauses::to_json(window, &seen);
        if let Some(said) = crate::pauses::describe(&pauses) {
            eprintln!("{said}");
        }
        let unchecked: Vec<String> = cpus
            .iter()
            .filter(|c| !seen.iter().any(|p| p.cpu == **c))
            .map(|c| c.to_string())
            .collect();
        if !unchecked.is_empty() {
            eprintln!(
                "machine check: CPU {} could not be pinned (not this process's to use?), so it was not checked",
                unchecked.join(", ")
            );
        }
        pauses
    });
    // Where the host has the server's and the load's CPUs (see `link`): a few probes now,
    // the first of the run's best, which every cell's own probes are judged against.
    let link = run.setup.hosts.is_none().then(|| {
        let probes: Vec<u64> = (0..5)
            .filter_map(|_| crate::link::probe(&run.setup.server_cpus, &run.setup.load_cpus))
            .collect();
        if let Some(said) = crate::link::describe(&probes) {
            eprintln!("{said}");
        }
        json!({"probes": probes})
    });
    let env = json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu_model": cpu_model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "governor": if governor.is_empty() { "unknown (no cpufreq)".to_string() } else { governor },
        "memory_kib": mem_kib,
        "rustc": output("rustc", &["--version"]),
        "git_commit": output("git", &["rev-parse", "HEAD"]),
        "git_dirty": output("git", &["status", "--porcelain"]).map(|s| !s.is_empty()),
        "nofile": {"soft": nofile.rlim_cur, "hard": nofile.rlim_max},
        "pinning": {"server_cpus": run.setup.server_cpus, "load_cpus": run.setup.load_cpus},
        "pauses": pauses,
        "cpu_link_ns": link,
        // The machine above is bench's; the cells ran on these (each line has their clocks).
        "hosts": run.setup.hosts.as_ref().map(|h| json!({
            "server": h.hosts.server,
            "load": h.hosts.load,
            "remote_dir": h.hosts.remote_dir,
        })),
        "suite_file": run.suite_path,
        "suite": fs::read_to_string(&run.suite_path).unwrap_or_default(),
        "server": run.setup.server,
        "loadgen": run.setup.loadgen,
        "started": run.setup.run_id,
        // The run id is a time only when bench named the directory (not with --out).
        "started_unix_s": now_unix_s(),
    });
    let text = serde_json::to_string_pretty(&env).map_err(|e| e.to_string())? + "\n";
    reports::run::replace_file(&path, text.as_bytes())
}

/// Raises RLIMIT_NOFILE to its hard limit (children inherit it); says what to do when even
/// that is too low for `needed` descriptors.
pub fn raise_nofile(needed: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    if limit.rlim_max < needed {
        return Err(format!(
            "this suite needs about {needed} open descriptors per process, but RLIMIT_NOFILE's hard limit is {}. \
             Raise it, e.g. `ulimit -Hn {needed}` as root before running, or `* hard nofile {needed}` in \
             /etc/security/limits.conf, then run again.",
            limit.rlim_max
        ));
    }
    Ok(limit.rlim_cur)
}
