//! Samples a server's process tree from /proc: CPU (with reaped children), PSS, context
//! switches, threads and processes.
//!
//! CPU comes two ways. `runtime_ns` is exact: each process's CPU-time clock
//! (`clock_getcpuclockid`), the scheduler's runtime of all its threads, those that have
//! ended included, plus the parent's cutime/cstime for children already reaped (exact at
//! reaping). Utilisation and CPU per request use it. The user/system split comes from
//! `/proc/PID/stat`, whose tick-based counters can lag badly for many processes that each run
//! in tiny bursts (500 `fork` children serving 29k requests/s showed no tick at all in a
//! second, while the scheduler counted 0.76 s), so they are indicative only.
//!
//! A sample reads the CPU figures of every process, close together and stamped with `at`. A
//! full sample also reads what is slow for a process with many threads: PSS, and context
//! switches task by task (for 500 threads on a loaded machine, 40 ms to over half a second),
//! so the runner takes those on a thread of their own.
//!
//! Limit, stated: context switches are summed over the tasks alive at the sample, so those of
//! threads that ended between samples are lost (a lower bound for `threads` under churn).

use std::fs;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    /// Clock ticks: utime + cutime, stime + cstime, over every process of the tree.
    pub user_ticks: u64,
    pub sys_ticks: u64,
    /// Scheduler runtime of every live task, plus reaped children's CPU, in nanoseconds.
    pub runtime_ns: u64,
    pub pss_kib: u64,
    pub ctx_voluntary: u64,
    pub ctx_involuntary: u64,
    pub threads: u64,
    pub processes: u64,
    /// PSS and context switches were read (otherwise they are 0).
    pub full: bool,
}

pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// The root and every process below it.
pub fn tree(root: i32) -> Vec<i32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        if let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", all[i])) {
            for task in tasks.flatten() {
                if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                    all.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<i32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    all
}

/// Samples the tree; with `full`, PSS and context switches too.
pub fn sample(root: i32, full: bool) -> Sample {
    let pids = tree(root);
    let mut s = Sample::empty(Instant::now(), full);
    let mut alive = Vec::with_capacity(pids.len());
    for pid in pids {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited since the tree was read
        };
        let Some(stat) = Stat::parse(&stat) else {
            continue;
        };
        s.add(&stat);
        s.runtime_ns += stat.reaped_ticks() * 1_000_000_000 / ticks_per_second();
        s.runtime_ns += cpu_clock_ns(pid).unwrap_or(0);
        alive.push(pid);
    }
    if !full {
        return s;
    }
    for pid in alive {
        s.pss_kib += kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let status = task.path().join("status");
                let status = status.to_string_lossy();
                s.ctx_voluntary += kib_field(&status, "voluntary_ctxt_switches:");
                s.ctx_involuntary += kib_field(&status, "nonvoluntary_ctxt_switches:");
            }
        }
    }
    s
}

impl Sample {
    /// A sample with nothing counted yet.
    pub fn empty(at: Instant, full: bool) -> Sample {
        Sample {
            at,
            user_ticks: 0,
            sys_ticks: 0,
            runtime_ns: 0,
            pss_kib: 0,
            ctx_voluntary: 0,
            ctx_involuntary: 0,
            threads: 0,
            processes: 0,
            full,
        }
    }

    /// Counts one process's ticks, threads and itself (not its runtime: how that is known
    /// differs between a local and a remote sample).
    pub fn add(&mut self, stat: &Stat) {
        self.user_ticks += stat.utime + stat.cutime;
        self.sys_ticks += stat.stime + stat.cstime;
        self.threads += stat.threads;
        self.processes += 1;
    }
}

/// The fields of one `/proc/PID/stat` line a sample uses, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    pub threads: u64,
}

impl Stat {
    /// `None` for a line cut short (the process exited while it was read).
    pub fn parse(line: &str) -> Option<Stat> {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let (_, rest) = line.rsplit_once(')')?;
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // Skipping the state, index k holds stat(5) field k + 4: utime (14) is index 10.
        if fields.len() < 18 {
            return None;
        }
        Some(Stat {
            utime: fields[10],
            stime: fields[11],
            cutime: fields[12],
            cstime: fields[13],
            threads: fields[16],
        })
    }

    /// CPU of children already reaped.
    pub fn reaped_ticks(&self) -> u64 {
        self.cutime + self.cstime
    }
}

/// A process's CPU time so far, all its threads (ended ones too), in nanoseconds; `None` if
/// it has exited.
pub(crate) fn cpu_clock_ns(pid: i32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write through the valid pointers given.
    unsafe {
        if libc::clock_getcpuclockid(pid, &mut clock) != 0
            || libc::clock_gettime(clock, &mut now) != 0
        {
            return None;
        }
    }
    Some(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// The number after `name` on its line of a /proc file (0 if absent).
fn kib_field(path: &str, name: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with(name))?;
            line[name.len()..].split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id() as i32, true);
        assert_eq!(s.processes, 1);
        assert!(s.threads >= 1 && s.pss_kib > 0, "{s:?}");
        assert!(s.ctx_voluntary + s.ctx_involuntary > 0);
        assert!(s.runtime_ns > 0, "CPU clock runtime");
    }

    #[test]
    fn an_ended_thread_still_counts() {
        let me = std::process::id() as i32;
        let before = sample(me, false).runtime_ns;
        std::thread::spawn(|| {
            // Until this thread has used 200 ms of CPU, however busy the machine is.
            let mut used = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while used.tv_sec == 0 && used.tv_nsec < 200_000_000 {
                // SAFETY: writes the current thread's CPU time into `used`.
                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut used) };
            }
        })
        .join()
        .unwrap();
        let after = sample(me, false).runtime_ns;
        assert!(
            after - before >= 200_000_000,
            "a thread's 200 ms of CPU is gone with it: {} ms counted",
            (after - before) / 1_000_000
        );
    }
}
