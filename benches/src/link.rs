//! How far apart the server's and the load's CPUs are right now: the time a cache line takes
//! to go from one to the other and back, measured just before a cell's server starts and
//! just after it stops (`noise.cpu_link_ns` of the result line).
//!
//! Why: on a virtual machine the host places the vCPUs on physical cores and moves them. On
//! this project's VM (2 vCPUs on an AMD EPYC host) the two vCPUs sometimes share a cache and
//! sometimes not: a round trip then takes about 330 ns instead of 80, for seconds at a time,
//! and every request of a loopback benchmark, whose bytes cross from the load's CPU to the
//! server's and back, costs about 1.35x the CPU on both sides (echo at 100 connections: 125k
//! req/s instead of 172k). Steal time, the clock and a CPU-bound loop see nothing; this probe
//! sees it at once (docs/ARCHITECTURE.md, "Noise", has the measurements). A cell measured in
//! such a phase measures where the host put the CPUs, not the model, and `reports::noise`
//! flags it when a probe of its own read far above the run's best.
//!
//! The probe: two threads, pinned one to each CPU, pass a counter back and forth through
//! one cache line; the median over batches of round trips, in ns. It takes well under a
//! millisecond and never runs during a cell (the server's CPU is then the server's).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cell::pin_this_thread;

/// Batches of round trips timed; the probe's figure is their median.
const BATCHES: usize = 48;
const PER_BATCH: u64 = 32;
/// A probe gives up (no figure) past this: a CPU it needs is busy with something else.
const GIVE_UP: Duration = Duration::from_millis(50);

/// The lowest round trip seen in this process (the run's best: the CPUs' nearest placement).
static BEST: AtomicU64 = AtomicU64::new(u64::MAX);

/// The counter on a cache line of its own.
#[repr(align(128))]
struct Line(AtomicU64);

/// One round trip between `a` and `b`, in ns (median over batches), or `None` when the two
/// are one CPU, a thread cannot be pinned, or a CPU stayed busy for [`GIVE_UP`].
pub fn round_trip_ns(a: usize, b: usize) -> Option<u64> {
    if a == b {
        return None;
    }
    let line = Arc::new(Line(AtomicU64::new(0)));
    let ready = Arc::new(AtomicUsize::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + GIVE_UP;
    let total = BATCHES as u64 * PER_BATCH;
    // Spins until `done` or the deadline; false when it gave up (and tells the other side).
    let spin = {
        let abort = abort.clone();
        move |done: &dyn Fn() -> bool| -> bool {
            let mut n = 0u32;
            // No `spin_loop()` hint: PAUSE takes tens of ns on some CPUs and would be most
            // of what is measured (it read 320 ns where the C probe read 110).
            while !done() {
                n = n.wrapping_add(1);
                if n.is_multiple_of(1024)
                    && (abort.load(Ordering::Relaxed) || Instant::now() > deadline)
                {
                    abort.store(true, Ordering::Relaxed);
                    return false;
                }
            }
            true
        }
    };
    let answer = {
        let (line, ready, abort, spin) = (line.clone(), ready.clone(), abort.clone(), spin.clone());
        thread::spawn(move || {
            if pin_this_thread(&[b]).is_err() {
                abort.store(true, Ordering::Relaxed);
                return;
            }
            ready.fetch_add(1, Ordering::AcqRel);
            for i in 0..total {
                if !spin(&|| line.0.load(Ordering::Acquire) == 2 * i + 1) {
                    return;
                }
                line.0.store(2 * i + 2, Ordering::Release);
            }
        })
    };
    let ask = thread::spawn(move || -> Option<u64> {
        if pin_this_thread(&[a]).is_err() {
            abort.store(true, Ordering::Relaxed);
            return None;
        }
        if !spin(&|| ready.load(Ordering::Acquire) == 1) {
            return None;
        }
        let mut batches = Vec::with_capacity(BATCHES);
        for batch in 0..BATCHES as u64 {
            let began = Instant::now();
            for k in 0..PER_BATCH {
                let i = batch * PER_BATCH + k;
                line.0.store(2 * i + 1, Ordering::Release);
                if !spin(&|| line.0.load(Ordering::Acquire) == 2 * i + 2) {
                    return None;
                }
            }
            batches.push(began.elapsed().as_nanos() as u64 / PER_BATCH);
        }
        batches.sort_unstable();
        Some(batches[batches.len() / 2])
    });
    let ns = ask.join().ok().flatten();
    let _ = answer.join();
    ns
}

/// [`round_trip_ns`] between the first CPU of each side, remembered in the run's best.
pub fn probe(server_cpus: &[usize], load_cpus: &[usize]) -> Option<u64> {
    let ns = round_trip_ns(*server_cpus.first()?, *load_cpus.first()?)?;
    BEST.fetch_min(ns, Ordering::Relaxed);
    Some(ns)
}

/// The lowest round trip this process has seen so far.
pub fn best() -> Option<u64> {
    let best = BEST.load(Ordering::Relaxed);
    (best != u64::MAX).then_some(best)
}

/// The machine check's sentence for its probes (English: the terminal's).
pub fn describe(probes: &[u64]) -> Option<String> {
    let (lo, hi) = (*probes.iter().min()?, *probes.iter().max()?);
    Some(if reports::noise::is_far(hi as f64, lo as f64) {
        format!(
            "machine check: a cache line went between the server's and the load's CPU and back \
             in {lo} to {hi} ns: the host moves the CPUs apart and back, and cells measured \
             while they are apart are flagged"
        )
    } else {
        format!(
            "machine check: a cache line goes between the server's and the load's CPU and back \
             in {lo} ns"
        )
    })
}

/// `noise.cpu_link_ns`: the probes before and after the cell and the run's best so far;
/// `null` when neither probe gave a figure.
pub fn to_json(before: Option<u64>, after: Option<u64>) -> Value {
    if before.is_none() && after.is_none() {
        return Value::Null;
    }
    json!({"before": before, "after": after, "best": best()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cpus_give_a_round_trip_and_one_cpu_none() {
        assert_eq!(round_trip_ns(0, 0), None);
        if thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return;
        }
        // A figure, not a speed: a round trip between two CPUs takes some time and far less
        // than the probe's whole allowance, unless a CPU was busy (then no figure at all).
        if let Some(ns) = probe(&[0], &[1]) {
            assert!(ns > 0 && ns < GIVE_UP.as_nanos() as u64, "{ns}");
            assert!(best().unwrap() <= ns);
            let json = to_json(Some(ns), None);
            assert_eq!(json["before"], ns);
            assert!(json["after"].is_null());
        }
        assert!(to_json(None, None).is_null());
    }

    #[test]
    fn a_cpu_that_does_not_exist_gives_no_figure() {
        assert_eq!(round_trip_ns(0, 100_000), None);
    }
}
