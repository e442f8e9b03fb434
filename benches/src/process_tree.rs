//! Samples a server's process tree from /proc: CPU (with reaped children), PSS, context
//! switches, threads and processes.
//!
//! CPU comes two ways. `runtime_ns` is the scheduler's exact runtime (`/proc/PID/task/TID/
//! schedstat`) summed over every task, plus the parent's cutime/cstime for children already
//! reaped (exact at reaping): it is what utilisation and CPU per request use. The user/system
//! split comes from `/proc/PID/stat`, whose tick-based counters can lag badly for many
//! processes that each run in tiny bursts (500 `fork` children serving 29k requests/s showed
//! no tick at all in a second, while schedstat counted 0.76 s), so they are indicative only.
//!
//! Limits, stated: runtime and context switches are summed over the tasks alive at the sample,
//! so those of threads that ended between samples are lost (a lower bound for `threads` under
//! churn); a process's reaped children come back through its cutime/cstime.

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

pub fn sample(root: i32) -> Sample {
    let mut s = Sample {
        at: Instant::now(),
        user_ticks: 0,
        sys_ticks: 0,
        runtime_ns: 0,
        pss_kib: 0,
        ctx_voluntary: 0,
        ctx_involuntary: 0,
        threads: 0,
        processes: 0,
    };
    for pid in tree(root) {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited since the tree was read
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // Skipping the state, index k holds stat(5) field k + 4: utime (14) is index 10.
        if fields.len() < 18 {
            continue;
        }
        s.user_ticks += fields[10] + fields[12];
        s.sys_ticks += fields[11] + fields[13];
        s.runtime_ns += (fields[12] + fields[13]) * 1_000_000_000 / ticks_per_second();
        s.threads += fields[16];
        s.processes += 1;
        s.pss_kib += kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(schedstat) = fs::read_to_string(task.path().join("schedstat")) {
                    s.runtime_ns += schedstat
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                let status = task.path().join("status");
                let status = status.to_string_lossy();
                s.ctx_voluntary += kib_field(&status, "voluntary_ctxt_switches:");
                s.ctx_involuntary += kib_field(&status, "nonvoluntary_ctxt_switches:");
            }
        }
    }
    s
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
        let s = sample(std::process::id() as i32);
        assert_eq!(s.processes, 1);
        assert!(s.threads >= 1 && s.pss_kib > 0, "{s:?}");
        assert!(s.ctx_voluntary + s.ctx_involuntary > 0);
        assert!(s.runtime_ns > 0, "schedstat runtime");
    }
}
