//! How long the machine stops a busy CPU. Before a run, one thread pinned to each of the run's
//! CPUs reads the monotonic clock in a tight loop, all at the same time (as server and load do
//! during a cell), and keeps every gap between two reads: a gap far longer than a read is time
//! the thread did not run, an interrupt handled on its CPU or, on a virtual machine, the host
//! running something else on that CPU. Steal time shows the second only where the hypervisor
//! reports it (this project's VM reports none, yet pauses a busy vCPU for up to 4 ms when both
//! are busy and never when one is): the clock shows it everywhere.
//!
//! Why it matters: a request in flight during such a pause waits it out, whatever the model,
//! so an open loop's p99.9 (and p99 when pauses are frequent) measures the machine. `env.json`
//! keeps the figures (`pauses`), the terminal and the report say what they mean. It never runs
//! during a cell: the spinning threads take the CPUs the cell is measured on.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cell::pin_this_thread;

/// How long the check spins before a run.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Gaps at least this long count as a pause in `over_100us`.
const SHORT_NS: u64 = 100_000;
/// ... and in `over_1ms`.
const LONG_NS: u64 = 1_000_000;

/// One CPU's pauses over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuPauses {
    pub cpu: usize,
    pub over_100us: u64,
    pub over_1ms: u64,
    /// The longest gap, in µs.
    pub longest_us: u64,
    /// Time in gaps of at least 100 µs, in µs.
    pub paused_us: u64,
}

/// Spins a pinned thread on every CPU of `cpus` for `window`, all at once.
pub fn measure(cpus: &[usize], window: Duration) -> Vec<CpuPauses> {
    let start = Instant::now() + Duration::from_millis(5);
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            thread::spawn(move || {
                if pin_this_thread(&[cpu]).is_err() {
                    return None; // unpinned, it would only disturb the others
                }
                let mut p = CpuPauses {
                    cpu,
                    ..CpuPauses::default()
                };
                while Instant::now() < start {
                    std::hint::spin_loop();
                }
                let end = start + window;
                let mut last = Instant::now();
                while last < end {
                    let now = Instant::now();
                    let gap = now.duration_since(last).as_nanos() as u64;
                    if gap >= SHORT_NS {
                        p.over_100us += 1;
                        p.paused_us += gap / 1000;
                        if gap >= LONG_NS {
                            p.over_1ms += 1;
                        }
                        p.longest_us = p.longest_us.max(gap / 1000);
                    }
                    last = now;
                }
                Some(p)
            })
        })
        .collect();
    threads
        .into_iter()
        .filter_map(|t| t.join().ok().flatten())
        .collect()
}

/// `env.json`'s `pauses` object.
pub fn to_json(window: Duration, cpus: &[CpuPauses]) -> Value {
    json!({
        "window_s": window.as_secs_f64(),
        "cpus": cpus.iter().map(|p| json!({
            "cpu": p.cpu,
            "over_100us": p.over_100us,
            "over_1ms": p.over_1ms,
            "longest_us": p.longest_us,
            "paused_us": p.paused_us,
        })).collect::<Vec<_>>(),
    })
}

/// What a run's `pauses` object means, in a sentence (English: the terminal's).
pub fn describe(pauses: &Value) -> Option<String> {
    let cpus = pauses["cpus"].as_array()?;
    let window = pauses["window_s"].as_f64()?;
    let over = |key: &str| cpus.iter().filter_map(|c| c[key].as_u64()).sum::<u64>();
    let longest = cpus.iter().filter_map(|c| c["longest_us"].as_u64()).max()?;
    Some(if over("over_1ms") == 0 {
        format!(
            "machine check: with the run's {} CPUs busy for {window:.0} s, no CPU stopped for 1 ms \
             or more (longest {longest} µs)",
            cpus.len()
        )
    } else {
        format!(
            "machine check: with the run's {} CPUs busy for {window:.0} s, a CPU stopped for 1 ms \
             or more {} (longest {:.1} ms): a request in flight waits such a pause out, so \
             latency tails (p99.9, and p99 when pauses are frequent) include them whatever the \
             model",
            cpus.len(),
            match over("over_1ms") {
                1 => "once".to_string(),
                n => format!("{n} times"),
            },
            longest as f64 / 1000.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cpu_reports_and_the_counts_add_up() {
        let cpus: Vec<usize> =
            (0..thread::available_parallelism().map_or(1, |n| n.get())).collect();
        // The bookkeeping: every CPU reports, long gaps are a subset of gaps, and the time in
        // gaps fits in the window (plus the one gap that may straddle its end).
        let window = Duration::from_millis(200);
        let seen = measure(&cpus, window);
        assert_eq!(seen.len(), cpus.len(), "{seen:?}");
        for p in &seen {
            assert!(p.over_1ms <= p.over_100us, "{p:?}");
            assert!(p.paused_us <= 200_000 + p.longest_us, "{p:?}");
        }
        let json = to_json(window, &seen);
        assert_eq!(json["cpus"].as_array().unwrap().len(), cpus.len());
        assert!(describe(&json).unwrap().starts_with("machine check"));
    }

    #[test]
    fn a_descheduled_probe_reports_the_pause() {
        // Two probes' worth of spinning on one CPU: the scheduler must take the CPU from each
        // in turn (a time slice is milliseconds), and each sees that as a pause of 1 ms or
        // more. A relation that holds by construction, not a timing.
        let seen = measure(&[0, 0], Duration::from_millis(300));
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter().any(|p| p.over_1ms > 0 && p.longest_us >= 1000),
            "{seen:?}"
        );
    }

    #[test]
    fn the_sentence_names_the_pauses() {
        let quiet = json!({"window_s": 1.0, "cpus": [
            {"cpu": 0, "over_100us": 3, "over_1ms": 0, "longest_us": 210, "paused_us": 400}]});
        assert!(describe(&quiet)
            .unwrap()
            .contains("no CPU stopped for 1 ms"));
        let paused = json!({"window_s": 1.0, "cpus": [
            {"cpu": 0, "over_100us": 9, "over_1ms": 2, "longest_us": 4100, "paused_us": 7000},
            {"cpu": 1, "over_100us": 1, "over_1ms": 1, "longest_us": 1500, "paused_us": 1500}]});
        let said = describe(&paused).unwrap();
        assert!(
            said.contains("3 times") && said.contains("4.1 ms"),
            "{said}"
        );
        assert_eq!(describe(&json!(null)), None);
    }
}
