//! A whole run: split connections, rate and quota over threads, start them together, merge
//! what they measured into one `LoadResult`.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{self, Finished, Plan, Scenario, Share};
use crate::series::{self, LiveInterval, Merged, Series};
use crate::stats::{encode, Cpu, Fairness, LoadResult, Pacing, Percentiles, Stats};
use crate::workload::Workload;

/// How long after spawning its threads every thread starts, at one instant. A thread takes
/// well under a millisecond to spawn (connections open after the start, in the warmup); this
/// was 20 ms, about half of what a quick suite's cell costs beyond its measured time.
const START_DELAY: Duration = Duration::from_millis(3);

pub struct Options {
    pub plan: Plan,
    pub active: usize,
    pub idle: usize,
    pub rate: Option<f64>,
    pub threads: usize,
    pub size: u64,
    /// The live view on stderr: progress, and each interval's req/s and p99 as it ends.
    pub progress: bool,
}

/// A run's result and its series with every histogram (for `--hlog`).
pub struct Measured {
    pub result: LoadResult,
    pub series: Merged,
}

/// The CPUs this process may run on (its affinity mask).
pub fn available_cpus() -> usize {
    // SAFETY: sched_getaffinity writes into `set`, a valid cpu_set_t of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            return (libc::CPU_COUNT(&set) as usize).max(1);
        }
    }
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// The first of `addrs` (a name's addresses, in the resolver's order) that accepts a
/// connection; fails fast, with the reasons, when none does.
pub fn probe(addrs: &[SocketAddr], timeout: Duration) -> io::Result<SocketAddr> {
    let mut reasons = Vec::new();
    let mut kind = io::ErrorKind::NotFound;
    for &addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(addr),
            Err(e) => {
                kind = e.kind();
                reasons.push(format!("cannot connect to {addr}: {e}"));
            }
        }
    }
    Err(io::Error::new(kind, reasons.join("; ")))
}

pub fn run(options: &Options) -> io::Result<Measured> {
    let threads = options
        .threads
        .clamp(1, (options.active + options.idle).max(1));
    let shares: Vec<Share> = (0..threads)
        .map(|t| {
            let part = |n: usize| n / threads + usize::from(t < n % threads);
            let active = part(options.active);
            let fraction = active as f64 / options.active.max(1) as f64;
            Share {
                active,
                idle: part(options.idle),
                rate: options.rate.map(|r| r * fraction),
                quota: options.plan.requests.map(|q| {
                    let q = q as usize;
                    (q / threads + usize::from(t < q % threads)) as u64
                }),
                first_id: (t * 1_000_000) as u32,
            }
        })
        .collect();
    let done = AtomicU64::new(0);
    let cpu_before = Cpu::of_self();
    let wall_start = SystemTime::now();
    let start = Instant::now() + START_DELAY;
    let plan = &options.plan;
    let (live_tx, live_rx) = mpsc::channel();
    let mut live = Live::new(live_rx, shares.len());
    let finished: Vec<Finished> = thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let done = &done;
                let live = options.progress.then(|| live_tx.clone());
                scope.spawn(move || engine::run(plan, share, start, done, live))
            })
            .collect();
        // With a progress bar, look at the threads every 50 ms to move it; without one (a
        // pipe, as under `bench`), wait for them directly: polling cost 25 ms per run on
        // average after the last thread had ended.
        if let Some(bar) = options.progress.then(|| progress_bar(plan)) {
            while handles.iter().any(|h| !h.is_finished()) {
                match plan.requests {
                    Some(_) => bar.set_position(done.load(Ordering::Relaxed)),
                    None => bar.set_position(start.elapsed().as_millis() as u64),
                }
                if let Some(text) = live.latest() {
                    bar.set_message(text);
                }
                thread::sleep(Duration::from_millis(50));
            }
            bar.finish_and_clear();
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("engine thread panicked"))
            .collect::<io::Result<Vec<_>>>()
    })?;
    let cpu_after = Cpu::of_self();
    let mut stats = Stats::new();
    let measured_from = finished[0].measured_from;
    let ended = finished
        .iter()
        .map(|f| f.ended)
        .max()
        .unwrap_or(measured_from);
    for f in &finished {
        stats.merge(&f.stats);
    }
    let per_connection: Vec<u64> = finished
        .iter()
        .flat_map(|f| f.per_connection.iter().copied())
        .collect();
    let merged = series::merge_threads(finished.into_iter().map(|f| f.series).collect());
    let duration_s = match plan.requests {
        Some(_) => ended.saturating_duration_since(measured_from).as_secs_f64(),
        None => plan.duration.as_secs_f64(),
    }
    .max(1e-9);
    let start_unix_s = wall_start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        + START_DELAY.as_secs_f64()
        + plan.warmup.as_secs_f64();
    let throughput_rps = stats.requests as f64 / duration_s;
    let result = LoadResult {
        scenario: scenario_name(plan.scenario).to_string(),
        addr: plan.addr.to_string(),
        connections: options.active + options.idle,
        size: options.size,
        threads,
        requests: stats.requests,
        duration_s,
        throughput_rps,
        throughput_bps: stats.bytes_read as f64 / duration_s,
        latency_us: Percentiles::of(&stats.latency),
        uncorrected_latency_us: Percentiles::of(&stats.uncorrected),
        target_rps: options.rate,
        behind_schedule: options
            .rate
            .is_some_and(|r| stats.unsent > 0 || stats.missed > 0 || throughput_rps < 0.99 * r),
        missed: stats.missed,
        unsent: stats.unsent,
        errors: stats.errors,
        connects: stats.connects,
        server_closes: stats.server_closes,
        connects_per_s: stats.connects as f64 / duration_s,
        upload_bps: stats.up_bytes as f64 / duration_s,
        download_bps: stats.down_bytes as f64 / duration_s,
        idle_open: stats.idle_open,
        idle_total: stats.idle_total,
        starved_connections: stats.starved,
        unconnected_connections: stats.unconnected,
        warmup_s: plan.warmup.as_secs_f64(),
        start_unix_s,
        end_unix_s: start_unix_s + duration_s,
        loadgen: Cpu {
            cpu_user_s: cpu_after.cpu_user_s - cpu_before.cpu_user_s,
            cpu_sys_s: cpu_after.cpu_sys_s - cpu_before.cpu_sys_s,
        },
        histogram: encode(&stats.latency),
        uncorrected_histogram: encode(&stats.uncorrected),
        series: Some(Series::of(&merged)),
        fairness: Some(Fairness::of(&per_connection)),
        pacing: matches!(plan.scenario, Scenario::Rate)
            .then(|| Pacing::of(&stats.wait, &stats.late)),
        http: match &plan.workload {
            Workload::Http(spec) => Some(spec.settings.clone()),
            _ => None,
        },
    };
    Ok(Measured {
        result,
        series: merged,
    })
}

/// The live view's feed: the threads' sealed intervals, added up once every thread has sealed
/// one (or once a later one is complete, if a thread lags).
struct Live {
    rx: Receiver<LiveInterval>,
    threads: usize,
    pending: BTreeMap<Duration, (usize, LiveInterval)>,
}

impl Live {
    fn new(rx: Receiver<LiveInterval>, threads: usize) -> Live {
        Live {
            rx,
            threads,
            pending: BTreeMap::new(),
        }
    }

    /// The newest interval every thread has sealed, as a line: `1.2s  48 213 req/s  p99 312 µs`.
    fn latest(&mut self) -> Option<String> {
        while let Ok(iv) = self.rx.try_recv() {
            match self.pending.get_mut(&iv.end) {
                Some((n, sum)) => {
                    *n += 1;
                    sum.requests += iv.requests;
                    sum.errors += iv.errors;
                    let _ = sum.latency.add(&iv.latency);
                }
                None => {
                    self.pending.insert(iv.end, (1, iv));
                }
            }
        }
        let (&end, _) = self
            .pending
            .iter()
            .rev()
            .find(|(_, (n, _))| *n >= self.threads)?;
        let (_, iv) = self.pending.remove(&end)?;
        self.pending.retain(|&k, _| k > end);
        let p99 = if iv.latency.is_empty() {
            "-".to_string()
        } else {
            format!("{} µs", iv.latency.value_at_quantile(0.99))
        };
        let mut text = format!(
            "{:.1}s: {:.0} req/s, p99 {p99}",
            end.as_secs_f64(),
            iv.requests as f64 / iv.width.as_secs_f64()
        );
        if iv.errors > 0 {
            text.push_str(&format!(", {} errors", iv.errors));
        }
        Some(text)
    }
}

pub fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Echo => "echo",
        Scenario::Rate => "rate",
        Scenario::Idle => "idle",
        Scenario::Churn => "churn",
        Scenario::Bulk => "bulk",
        Scenario::Http => "http",
    }
}

fn progress_bar(plan: &Plan) -> ProgressBar {
    let (len, template) = match plan.requests {
        Some(n) => (
            n,
            "{bar:30} {pos}/{len} requests, {elapsed} elapsed, ETA {eta}  {msg}",
        ),
        None => (
            (plan.warmup + plan.duration + START_DELAY).as_millis() as u64,
            "{bar:30} {elapsed} of {prefix}  {msg}",
        ),
    };
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    bar.set_prefix(format!("{:.0?}", plan.warmup + plan.duration));
    bar
}

/// The live view (on stderr) only for a person watching: stderr a terminal, and not `--json`.
pub fn want_progress(json: bool) -> bool {
    !json && io::stderr().is_terminal()
}
