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
//! The watch costs a wake-up per millisecond per CPU (a few µs each). Without real-time
//! priority (no CAP_SYS_NICE) it is not run: a watcher that waits its turn behind a busy
//! server would measure the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cell::pin_this_thread;

/// How long a watcher sleeps at a time.
const TICK: Duration = Duration::from_millis(1);
/// A wake-up at least this late counts as a stop.
pub const STOP: Duration = Duration::from_micros(200);

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
}

/// What the watchers saw on one side's CPUs over a window: the longest stop and the sum of
/// all stops, in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Side {
    pub longest_us: u64,
    pub total_us: u64,
}

impl Watch {
    /// Starts a watcher on each of `cpus`; `None` when one cannot be pinned or get
    /// real-time priority (then none runs).
    pub fn start(cpus: &[usize]) -> Option<Watch> {
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
        let watch = Watch { stop, threads };
        let all_ready = (0..cpus.len()).all(|_| ready.recv() == Ok(true));
        (all_ready && !cpus.is_empty()).then_some(watch)
    }

    /// Stops the watchers; per side (`server_cpus`, the rest), the stops that began inside
    /// `from..until`.
    pub fn finish(mut self, from: Instant, until: Instant, server_cpus: &[usize]) -> (Side, Side) {
        self.stop.store(true, Ordering::Relaxed);
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
            for (at, late) in seen.stops {
                if at >= from && at < until {
                    let us = late.as_micros() as u64;
                    side.longest_us = side.longest_us.max(us);
                    side.total_us += us;
                }
            }
        }
        (server, load)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// SCHED_FIFO at the lowest real-time priority for the calling thread.
fn realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
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

    #[test]
    fn a_watched_cpu_that_is_taken_away_is_seen() {
        let cpu = 0;
        let Some(watch) = Watch::start(&[cpu]) else {
            eprintln!("skipped: no real-time priority here");
            return;
        };
        let from = Instant::now();
        // A thread of ours at a higher real-time priority holds the CPU for 5 ms: the
        // watcher cannot run, as when the host stops the vCPU.
        let hog = thread::spawn(move || {
            let _ = pin_this_thread(&[cpu]);
            let param = libc::sched_param { sched_priority: 2 };
            // SAFETY: as in `realtime`.
            let raised = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 };
            thread::sleep(Duration::from_millis(20));
            let began = Instant::now();
            while began.elapsed() < Duration::from_millis(5) {
                std::hint::spin_loop();
            }
            raised
        });
        let raised = hog.join().unwrap();
        thread::sleep(Duration::from_millis(20));
        let (server, load) = watch.finish(from, Instant::now(), &[cpu]);
        assert_eq!(load, Side::default());
        assert!(raised, "the watcher had real-time priority, so may the hog");
        assert!(
            server.longest_us >= 4000 && server.total_us >= server.longest_us,
            "{server:?}"
        );
        // Outside the window nothing counts.
        let watch = Watch::start(&[cpu]).unwrap();
        thread::sleep(Duration::from_millis(5));
        let (server, _) = watch.finish(Instant::now(), Instant::now(), &[cpu]);
        assert_eq!(server, Side::default());
    }
}
