//! Whether a CPU of the cell stopped while it was measured. One watcher thread per CPU,
//! pinned to it at real-time priority (SCHED_FIFO), sleeps for a millisecond at a time and
//! notes how late it woke. At that priority it runs the moment its timer fires, ahead of the
//! server and loadgen, so a late wake-up is time in which nothing of ours could run on that
//! CPU: on this project's VM, the host stopping the vCPU for 1-4 ms (steal reads 0, see
//! `pauses`), or a long stretch of the kernel with interrupts off. A request in flight then
//! waits it out, whatever the model: at 25k req/s over 50 connections, one 3 ms stop holds
//! every connection and sets an open loop's p99 of a quarter-second cell to a millisecond or
//! more, where the server answers in about 100 µs.
//!
//! The figures are a lower bound: a watcher sees only the part of a stop after its timer was
//! due, and a wake-up less than 1 ms late does not count. The watch costs a wake-up per
//! millisecond per CPU (a few µs each). Without real-time priority (no CAP_SYS_NICE, or
//! RLIMIT_RTPRIO 0) it is not run: a watcher that waits its turn behind a busy server would
//! measure the server. Cells run on other hosts (`hosts`) are not watched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::cell::pin_this_thread;

/// How long a watcher sleeps at a time.
const TICK: Duration = Duration::from_millis(1);
/// A wake-up at least this late counts as a stop. Not less: a model's own stretches of
/// kernel work that cannot be preempted (poll and select over 2000 descriptors, io_uring's
/// submissions) held a watcher 0.2-0.5 ms at a time, many times a cell, and are the model's,
/// not the machine's; the host's stops here last 1-4 ms.
pub const STOP: Duration = Duration::from_millis(1);

/// One CPU's stops: when each began and how long it lasted.
#[derive(Debug, Default)]
struct Stops {
    cpu: usize,
    stops: Vec<(Instant, Duration)>,
}

/// Watchers running on a cell's CPUs.
pub struct Watch {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Option<Stops>>>,
    /// The same moment on both clocks, to place loadgen's window (wall clock) on ours.
    anchor: (Instant, SystemTime),
}

/// What the watchers saw on one side's CPUs over a window: the longest stop, and the most
/// time stopped on one of its CPUs (stops of the whole machine are not counted once per
/// CPU), in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Side {
    pub longest_us: u64,
    pub total_us: u64,
}

impl Watch {
    /// Starts a watcher on each of `cpus` (each CPU once); `None` when one cannot be pinned
    /// or get real-time priority (then none runs).
    pub fn start(cpus: &[usize]) -> Option<Watch> {
        let mut cpus = cpus.to_vec();
        cpus.sort_unstable();
        cpus.dedup();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = mpsc::channel::<bool>();
        let threads: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                let (stop, ready_tx) = (stop.clone(), ready_tx.clone());
                thread::spawn(move || {
                    let ok = pin_this_thread(&[cpu]).is_ok() && realtime();
                    let _ = ready_tx.send(ok);
                    if !ok {
                        return None;
                    }
                    let mut seen = Stops {
                        cpu,
                        ..Stops::default()
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let before = Instant::now();
                        thread::sleep(TICK);
                        let late = before.elapsed().saturating_sub(TICK);
                        if late >= STOP {
                            seen.stops.push((before + TICK, late));
                        }
                    }
                    Some(seen)
                })
            })
            .collect();
        drop(ready_tx); // a watcher that dies before it reports ends the wait
        let watch = Watch {
            stop,
            threads,
            anchor: (Instant::now(), SystemTime::now()),
        };
        let all_ready = (0..cpus.len()).all(|_| ready.recv() == Ok(true));
        (all_ready && !cpus.is_empty()).then_some(watch)
    }

    /// Stops the watchers; per side (`server_cpus`, the rest), the stops that began inside
    /// loadgen's measured window, `start_unix_s` for `duration_s` (the result's own: loadgen
    /// starts measuring after its start-up and warmup, not when bench spawned it).
    pub fn finish(
        mut self,
        start_unix_s: f64,
        duration_s: f64,
        server_cpus: &[usize],
    ) -> (Side, Side) {
        self.stop.store(true, Ordering::Relaxed);
        let (instant, wall) = self.anchor;
        let wall_s = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let from = instant + Duration::from_secs_f64((start_unix_s - wall_s).max(0.0));
        let until = from + Duration::from_secs_f64(duration_s.max(0.0));
        let (mut server, mut load) = (Side::default(), Side::default());
        for seen in std::mem::take(&mut self.threads)
            .into_iter()
            .filter_map(|t| t.join().ok().flatten())
        {
            let side = if server_cpus.contains(&seen.cpu) {
                &mut server
            } else {
                &mut load
            };
            let mut total = 0;
            for (at, late) in seen.stops {
                if at >= from && at < until {
                    let us = late.as_micros() as u64;
                    side.longest_us = side.longest_us.max(us);
                    total += us;
                }
            }
            side.total_us = side.total_us.max(total);
        }
        (server, load)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether a thread of this process may take real-time priority (tried on a thread of its
/// own, which then ends).
pub fn realtime_allowed() -> bool {
    thread::spawn(realtime).join().unwrap_or(false)
}

/// SCHED_FIFO at the lowest real-time priority for the calling thread.
fn realtime() -> bool {
    fifo(1)
}

/// SCHED_FIFO at `priority` for the calling thread.
fn fifo(priority: i32) -> bool {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// The `noise.stalls` object: each side's longest stop and their sum, in µs.
pub fn to_json(server: Side, load: Side) -> Value {
    json!({
        "server": {"longest_us": server.longest_us, "total_us": server.total_us},
        "load": {"longest_us": load.longest_us, "total_us": load.total_us},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    /// A thread of ours at a higher real-time priority holds `cpu` for `us`: its watcher
    /// cannot run, as when the host stops the vCPU.
    fn hog(cpu: usize, us: u64) {
        thread::spawn(move || {
            pin_this_thread(&[cpu]).unwrap();
            assert!(fifo(2), "above the watcher's priority");
            let began = Instant::now();
            while began.elapsed() < Duration::from_micros(us) {
                std::hint::spin_loop();
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_watched_cpu_that_is_taken_away_is_seen_inside_the_window_only() {
        if !realtime_allowed() {
            eprintln!("skipped: no real-time priority here");
            return;
        }
        let cpu = 0;
        // Listed twice (server and load on one CPU): one watcher, counted on the server side.
        let watch = Watch::start(&[cpu, cpu]).expect("real-time priority was allowed");
        assert_eq!(watch.threads.len(), 1);
        let from = unix_now();
        thread::sleep(Duration::from_millis(20));
        hog(cpu, 5000);
        thread::sleep(Duration::from_millis(20));
        let (server, load) = watch.finish(from, unix_now() - from, &[cpu]);
        assert_eq!(load, Side::default());
        assert!(
            server.longest_us >= 3000 && server.total_us >= server.longest_us,
            "{server:?}"
        );
        // A stop before the window does not count.
        let watch = Watch::start(&[cpu]).unwrap();
        thread::sleep(Duration::from_millis(10));
        hog(cpu, 5000);
        thread::sleep(Duration::from_millis(10));
        let from = unix_now();
        thread::sleep(Duration::from_millis(20));
        let (server, _) = watch.finish(from, 0.02, &[cpu]);
        assert_eq!(server, Side::default());
        // Nor does a hold shorter than a stop.
        let watch = Watch::start(&[cpu]).unwrap();
        let from = unix_now();
        hog(cpu, 500);
        thread::sleep(Duration::from_millis(5));
        let (server, _) = watch.finish(from, unix_now() - from, &[cpu]);
        assert_eq!(server, Side::default());
    }
}
