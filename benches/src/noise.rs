//! What else the machine did during a cell: per-CPU time from /proc/stat on the server's and
//! the load's CPUs (steal, and busy time no process of the cell accounts for), loadgen's and
//! bench's own CPU, and the clock frequency when the kernel says it. The result line's
//! `noise` object holds the raw shares; `reports::noise` judges them, so thresholds can
//! change without running again.

use std::fs;
use std::time::Instant;

use serde_json::{json, Value};

use crate::process_tree::cpu_clock_ns;

/// One CPU's counters from /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
struct CpuTicks {
    /// user + nice + system: time tasks ran.
    tasks: u64,
    /// irq + softirq (loopback's receive path runs here).
    irq: u64,
    steal: u64,
    /// Everything, idle and iowait included.
    total: u64,
}

/// /proc/stat's counters for the CPUs of a cell, with loadgen's and bench's CPU clocks read
/// at the same moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    cpus: Vec<(usize, CpuTicks)>,
    loadgen_ns: Option<u64>,
    bench_ns: u64,
}

fn read_stat(cpus: &[usize]) -> Vec<(usize, CpuTicks)> {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let Some(Ok(cpu)) = fields.next().map(str::parse::<usize>) else {
            continue; // the "cpu" total line
        };
        if !cpus.contains(&cpu) {
            continue;
        }
        let f: Vec<u64> = fields.map(|x| x.parse().unwrap_or(0)).collect();
        if f.len() < 8 {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        out.push((
            cpu,
            CpuTicks {
                tasks: f[0] + f[1] + f[2],
                irq: f[5] + f[6],
                steal: f[7],
                total: f[..8].iter().sum(),
            },
        ));
    }
    out
}

fn own_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Sample {
    pub fn take(cpus: &[usize], loadgen: i32) -> Sample {
        Sample {
            at: Instant::now(),
            cpus: read_stat(cpus),
            loadgen_ns: cpu_clock_ns(loadgen),
            bench_ns: own_cpu_ns(),
        }
    }
}

/// The clock of `cpus` in MHz (mean), from cpufreq or /proc/cpuinfo; `None` if unknown.
fn frequency_mhz(cpus: &[usize]) -> Option<f64> {
    let mut mhz = Vec::new();
    for &cpu in cpus {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq");
        if let Some(khz) = fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            mhz.push(khz / 1000.0);
        }
    }
    if mhz.is_empty() {
        let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let mut current = None;
        for line in info.lines() {
            let value = || line.split(':').nth(1).map(str::trim);
            if line.starts_with("processor") {
                current = value().and_then(|v| v.parse::<usize>().ok());
            } else if line.starts_with("cpu MHz") && current.is_some_and(|c| cpus.contains(&c)) {
                if let Some(v) = value().and_then(|v| v.parse::<f64>().ok()) {
                    mhz.push(v);
                }
            }
        }
    }
    (!mhz.is_empty()).then(|| (mhz.iter().sum::<f64>() / mhz.len() as f64).round())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `noise` object over [from, until], given the server's CPU seconds in the same window
/// (`None` when unknown). Shares are of the CPUs' capacity over the window (0.25 = a quarter
/// of those CPUs). `null` when fewer than two samples fall inside the window.
pub fn summarise(
    samples: &[Sample],
    from: Instant,
    until: Instant,
    server_cpus: &[usize],
    load_cpus: &[usize],
    server_cpu_s: Option<f64>,
) -> Value {
    let Some(first) = samples.iter().find(|s| s.at >= from) else {
        return Value::Null;
    };
    let Some(last) = samples
        .iter()
        .rev()
        .find(|s| s.at <= until && s.at > first.at)
    else {
        return Value::Null;
    };
    let window = last.at.duration_since(first.at).as_secs_f64();
    let delta = |set: &[usize]| {
        let mut d = CpuTicks::default();
        for &(cpu, b) in &last.cpus {
            if !set.contains(&cpu) {
                continue;
            }
            if let Some((_, a)) = first.cpus.iter().find(|(c, _)| *c == cpu) {
                d.tasks += b.tasks.saturating_sub(a.tasks);
                d.irq += b.irq.saturating_sub(a.irq);
                d.steal += b.steal.saturating_sub(a.steal);
                d.total += b.total.saturating_sub(a.total);
            }
        }
        d
    };
    let hz = crate::process_tree::ticks_per_second() as f64;
    let loadgen_s = match (first.loadgen_ns, last.loadgen_ns) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let bench_s = last.bench_ns.saturating_sub(first.bench_ns) as f64 / 1e9;
    // The server's and the load's CPUs are apart unless the machine has one CPU.
    let shared = server_cpus.iter().any(|c| load_cpus.contains(c));
    let side = |set: &[usize], own_s: Option<f64>| {
        let d = delta(set);
        let capacity = (d.total as f64).max(1.0);
        let tasks_s = d.tasks as f64 / hz;
        let foreign = own_s.map(|own| ((tasks_s - own) / (window * set.len() as f64)).max(0.0));
        json!({
            "busy": round3((d.tasks + d.irq) as f64 / capacity),
            "irq": round3(d.irq as f64 / capacity),
            "steal": round3(d.steal as f64 / capacity),
            "foreign": foreign.map(round3),
        })
    };
    let (server_own, load_own) = if shared {
        let all = server_cpu_s.zip(loadgen_s).map(|(s, l)| s + l + bench_s);
        (all, all)
    } else {
        (server_cpu_s, loadgen_s.map(|l| l + bench_s))
    };
    json!({
        "window_s": round3(window),
        "server_cpus": side(server_cpus, server_own),
        "load_cpus": side(load_cpus, load_own),
        "loadgen_cpu": loadgen_s.map(|l| round3(l / (window * load_cpus.len() as f64))),
        "bench_cpu": round3(bench_s / (window * load_cpus.len() as f64)),
        "freq_mhz": frequency_mhz(server_cpus),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_busy_thread_of_ours_is_seen_on_its_cpu() {
        let me = std::process::id() as i32;
        let cpus: Vec<usize> = (0..std::thread::available_parallelism().unwrap().get()).collect();
        let start = Sample::take(&cpus, me);
        let from = start.at;
        // Spin until this thread has had 300 ms of CPU, however busy the machine is (other
        // tests run beside this one), within a bound on the wall clock.
        let thread_cpu_ns = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: writes into a valid timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
        };
        let (spun_from, wall) = (thread_cpu_ns(), Instant::now());
        while thread_cpu_ns() - spun_from < 300_000_000 && wall.elapsed() < Duration::from_secs(20)
        {
            std::hint::black_box(0u64);
        }
        let spun_s = (thread_cpu_ns() - spun_from) as f64 / 1e9;
        let end = Sample::take(&cpus, me);
        let until = end.at;
        let noise = summarise(&[start, end], from, until, &cpus[..1], &cpus, Some(0.0));
        // "loadgen" is this process here: at least the spinning thread's CPU seconds (other
        // tests' threads may add to it), and no more than its CPUs hold.
        let loadgen = noise["loadgen_cpu"].as_f64().unwrap();
        let window = noise["window_s"].as_f64().unwrap();
        assert!(
            loadgen * cpus.len() as f64 * window >= spun_s - 0.01 && loadgen <= 1.05,
            "{noise}, spun {spun_s} s"
        );
        assert!(noise["window_s"].as_f64().unwrap() >= 0.3);
        assert!(
            noise["load_cpus"]["busy"].as_f64().unwrap() > 0.0,
            "{noise}"
        );
    }
}
