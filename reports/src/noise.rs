//! Whether a cell measured the server: the judgement of a result line's `noise` object
//! (written by `bench`, see docs/ARCHITECTURE.md). A cell is flagged, with its reasons, when
//! something other than the server's CPU may have set its figures: the hypervisor took time
//! (steal), other processes ran on the cell's CPUs, or loadgen was the bottleneck.
//!
//! The terminal summary, the report and `bench run --rerun-noisy` all ask this module.

use serde_json::Value;

use crate::text::Lang;

/// Steal above this share of the cell's CPUs flags it.
pub const STEAL: f64 = 0.05;
/// CPU time of other processes above this share of the server's or the load's CPUs.
pub const FOREIGN: f64 = 0.10;
/// loadgen at or above this share of its CPUs ...
pub const LOADGEN_SATURATED: f64 = 0.95;
/// ... while the server's CPUs were busy less than this: the server was waiting for load.
pub const SERVER_IDLE: f64 = 0.80;

/// A cell's cross-CPU round trip (`cpu_link_ns`, before or after it) more than this times
/// the run's best ...
pub const FAR_RATIO: f64 = 2.0;
/// ... and at least this much longer (ns): the host had the CPUs apart, and a loopback cell
/// then costs about 1.35x the CPU per request on both sides (see `benches::link`).
pub const FAR_MIN_NS: f64 = 50.0;

/// A cell's CPUs stopped (`noise.stalls`, see `benches::stalls`) for at least this share of
/// its measured window in all: an open loop's p99 is the worst 1% of its requests, and a
/// stop holds every request in flight ...
pub const STALLED_OPEN: f64 = 0.01;
/// ... a closed loop's throughput loses about the share stopped: past the tiers' noise floor.
pub const STALLED: f64 = 0.03;

/// An open-loop p99 at least this long (µs) ...
pub const LATE_FLOOR_US: f64 = 200.0;
/// ... of which loadgen's own lateness at p99 is at least this share.
pub const LATE_SHARE: f64 = 0.5;

/// Why a cell may not have measured its server, in `lang` (the terminal says them in
/// English); empty when it is clean or unknown (no `noise` object: runs from before it
/// existed, failed cells).
pub fn flags(line: &Value, lang: Lang) -> Vec<String> {
    let noise = &line["noise"];
    let mut reasons = Vec::new();
    if !noise.is_object() {
        return reasons;
    }
    let pct = |share: f64| format!("{:.0}", share * 100.0);
    for (side, name) in [("server_cpus", "server"), ("load_cpus", "load")] {
        let (steal, foreign) = shared(noise, side);
        if steal > STEAL {
            reasons.push(lang.say(&format!("noise.steal_{name}"), &[("pct", &pct(steal))]));
        }
        if foreign > FOREIGN {
            reasons.push(lang.say(&format!("noise.foreign_{name}"), &[("pct", &pct(foreign))]));
        }
    }
    if let Some((far, best)) = apart(noise) {
        reasons.push(lang.say(
            "noise.far",
            &[
                ("ns", &format!("{far:.0}")),
                ("best", &format!("{best:.0}")),
            ],
        ));
    }
    if let Some((side, total, longest, window)) = stalled(line) {
        let ms = |us: f64| format!("{:.1}", us / 1000.0);
        reasons.push(lang.say(
            &format!("noise.stalled_{side}"),
            &[
                ("total", &ms(total)),
                ("longest", &ms(longest)),
                ("window", &format!("{:.0}", window * 1000.0)),
            ],
        ));
    }
    let loadgen = noise["loadgen_cpu"].as_f64().unwrap_or(0.0);
    let server_busy = noise["server_cpus"]["busy"].as_f64().unwrap_or(1.0);
    // loadgen spins while replies are outstanding, so its CPU reads full whenever it is
    // busy: it was the bottleneck only if the server's CPUs had time to spare. The open loop
    // paces itself (its CPU always reads full), so there it counts only if it fell behind.
    let open_loop = line["scenario"] == "rate";
    let loadgen_limited = if open_loop {
        line["load"]["behind_schedule"].as_bool() == Some(true)
    } else {
        loadgen >= LOADGEN_SATURATED
    };
    // The open loop's tail measures the server only if loadgen sent on time: a p99 that is
    // mostly loadgen's own lateness (a connection was free, loadgen had not sent yet) is the
    // load generator's, or its CPU's.
    let late = line["load"]["pacing"]["late_us"]["p99"]
        .as_f64()
        .unwrap_or(0.0);
    let p99 = line["load"]["latency_us"]["p99"].as_f64().unwrap_or(0.0);
    if open_loop && p99 >= LATE_FLOOR_US && late >= LATE_SHARE * p99 {
        reasons.push(lang.say(
            "noise.late",
            &[
                ("late", &format!("{late:.0}")),
                ("p99", &format!("{p99:.0}")),
            ],
        ));
    }
    if loadgen_limited && server_busy < SERVER_IDLE {
        reasons.push(lang.say(
            "noise.saturated",
            &[("loadgen", &pct(loadgen)), ("busy", &pct(server_busy))],
        ));
    }
    reasons
}

/// The longer of a cell's two round trips and the run's best, when the first says the host
/// had the CPUs apart (see [`FAR_RATIO`]).
fn apart(noise: &Value) -> Option<(f64, f64)> {
    let link = &noise["cpu_link_ns"];
    let best = link["best"].as_f64()?;
    let far = ["before", "after"]
        .iter()
        .filter_map(|k| link[*k].as_f64())
        .fold(f64::NAN, f64::max);
    is_far(far, best).then_some((far, best))
}

/// Whether a round trip of `ns` means the CPUs were apart, for a run whose best is `best`.
pub fn is_far(ns: f64, best: f64) -> bool {
    ns > FAR_RATIO * best && ns >= best + FAR_MIN_NS
}

/// The side whose CPUs stopped longest in all, that total and the longest stop (µs), and
/// the measured window (s), when the total is past [`STALLED_OPEN`] of the window (open
/// loop) or [`STALLED`] (closed loops).
fn stalled(line: &Value) -> Option<(&'static str, f64, f64, f64)> {
    let stalls = &line["noise"]["stalls"];
    let window = line["load"]["duration_s"].as_f64().filter(|w| *w > 0.0)?;
    let (side, total, longest) = [("server", "server"), ("load", "load")]
        .iter()
        .filter_map(|(key, side)| {
            let s = &stalls[*key];
            Some((*side, s["total_us"].as_f64()?, s["longest_us"].as_f64()?))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let limit = if line["scenario"] == "rate" {
        STALLED_OPEN
    } else {
        STALLED
    };
    (total >= limit * window * 1e6).then_some((side, total, longest, window))
}

/// Whether the host had the cell's CPUs apart.
pub fn cpus_apart(line: &Value) -> bool {
    apart(&line["noise"]).is_some()
}

/// Whether the cell was flagged for a state of the machine that passes (its CPUs apart, or
/// stopped), unlike some other reasons (a latency-bound model reads "loadgen saturated"
/// every time): a rerun of such a cell is worth another rerun.
pub fn passing(line: &Value) -> bool {
    cpus_apart(line) || stalled(line).is_some()
}

/// Whether a rerun may measure the cell without what flagged it: steal, other processes on
/// its CPUs, the CPUs apart or stopped are states of the machine that pass. Loadgen
/// saturated while the server's CPUs idled, or an open loop's sends late, belong to the model
/// at that load on this machine and come back in every rerun (`iterative`, serving one client
/// at a time, reads "loadgen saturated" in every trial), so they are flagged, not rerun.
pub fn worth_rerun(line: &Value) -> bool {
    let machine_shared = ["server_cpus", "load_cpus"].iter().any(|side| {
        let (steal, foreign) = shared(&line["noise"], side);
        steal > STEAL || foreign > FOREIGN
    });
    machine_shared || passing(line)
}

/// What one side's CPUs (`server_cpus`, `load_cpus`) gave to others during the cell: the
/// host's steal and other processes' share, 0 where unknown.
fn shared(noise: &Value, side: &str) -> (f64, f64) {
    let share = |key: &str| noise[side][key].as_f64().unwrap_or(0.0);
    (share("steal"), share("foreign"))
}

/// Sets every line's `noise.cpu_link_ns.best` to the whole run's near figure: the 10th
/// percentile of all its cells' probes (one lucky probe cannot move it; a run mostly apart
/// judges against its own placement). A line records the lowest probe seen up to its cell,
/// so cells run before the host first put the CPUs together would be judged against a far
/// placement; every reader of a run's lines (views, reruns) settles them first, so each cell
/// is judged against the same figure.
pub fn settle_link_best(lines: &mut [Value]) {
    let mut probes: Vec<u64> = lines
        .iter()
        .flat_map(|l| ["before", "after"].map(|k| l["noise"]["cpu_link_ns"][k].as_u64()))
        .flatten()
        .collect();
    probes.sort_unstable();
    let Some(&best) = probes.get(probes.len() / 10) else {
        return;
    };
    for line in lines {
        if line["noise"]["cpu_link_ns"].is_object() {
            line["noise"]["cpu_link_ns"]["best"] = best.into();
        }
    }
}

/// How the host's placement of the CPUs went over a run (lines settled by
/// [`settle_link_best`]): the run's best round trip, the trials measured with the CPUs apart,
/// the trials probed, and how many of the apart ones a rerun replaced. `None` when no line
/// has a probe.
pub fn apart_counts(lines: &[Value]) -> Option<(u64, usize, usize, usize)> {
    let all: Vec<&Value> = lines.iter().collect();
    let replaced = crate::tiers::superseded(&all);
    let probed: Vec<(&Value, bool)> = lines
        .iter()
        .zip(replaced)
        .filter(|(l, _)| l["status"] == "ok" && l["noise"]["cpu_link_ns"].is_object())
        .collect();
    let best = probed
        .iter()
        .filter_map(|(l, _)| l["noise"]["cpu_link_ns"]["best"].as_u64())
        .min()?;
    let apart: Vec<bool> = probed
        .iter()
        .filter(|(l, _)| cpus_apart(l))
        .map(|(_, replaced)| *replaced)
        .collect();
    let rerun = apart.iter().filter(|r| **r).count();
    Some((best, apart.len(), probed.len(), rerun))
}

pub fn is_noisy(line: &Value) -> bool {
    !flags(line, Lang::En).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(scenario: &str, noise: Value) -> Value {
        json!({"scenario": scenario, "status": "ok", "load": {"behind_schedule": false}, "noise": noise})
    }

    #[test]
    fn clean_cells_and_old_lines_are_not_flagged() {
        let clean = json!({"server_cpus": {"busy": 1.0, "steal": 0.0, "foreign": 0.01},
                           "load_cpus": {"busy": 1.0, "steal": 0.0, "foreign": 0.02},
                           "loadgen_cpu": 0.99});
        assert!(flags(&line("echo", clean), Lang::En).is_empty());
        assert!(flags(&json!({"scenario": "echo", "status": "ok"}), Lang::En).is_empty());
    }

    #[test]
    fn each_reason_is_named() {
        let noisy = json!({"server_cpus": {"busy": 0.5, "steal": 0.08, "foreign": 0.3},
                           "load_cpus": {"busy": 1.0, "steal": 0.0, "foreign": 0.0},
                           "loadgen_cpu": 0.99});
        let reasons = flags(&line("echo", noisy.clone()), Lang::En);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("steal 8%"));
        assert!(reasons[1].contains("other processes used 30% of the server CPUs"));
        assert!(reasons[2].contains("loadgen saturated"));
        // The open loop: a busy loadgen is its pacing, unless it fell behind.
        let mut open = line("rate", noisy);
        assert_eq!(flags(&open, Lang::En).len(), 2);
        open["load"]["behind_schedule"] = json!(true);
        assert_eq!(flags(&open, Lang::En).len(), 3);
    }

    #[test]
    fn each_reason_is_said_in_each_language() {
        let noisy = json!({"server_cpus": {"busy": 0.5, "steal": 0.08, "foreign": 0.3},
                           "load_cpus": {"busy": 1.0, "steal": 0.06, "foreign": 0.2},
                           "loadgen_cpu": 0.99});
        let mut open = line("rate", noisy);
        open["load"]["behind_schedule"] = json!(true);
        open["load"]["latency_us"] = json!({"p99": 900});
        open["load"]["pacing"] = json!({"late_us": {"p99": 600}});
        // The terminal's words, as they were before the page had a language.
        assert_eq!(
            flags(&open, Lang::En),
            [
                "steal 8% on the server CPUs",
                "other processes used 30% of the server CPUs",
                "steal 6% on the load CPUs",
                "other processes used 20% of the load CPUs",
                "loadgen sent late: its own lateness at p99 was 600 µs of a 900 µs p99",
                "loadgen saturated (99% of its CPUs) while the server's CPUs were 50% busy",
            ]
        );
        assert_eq!(
            flags(&open, Lang::Zh),
            [
                "服务器所在 CPU 的 steal 占 8%",
                "其他进程占用了服务器所在 CPU 的 30%",
                "loadgen 所在 CPU 的 steal 占 6%",
                "其他进程占用了 loadgen 所在 CPU 的 20%",
                "loadgen 发送滞后：在 900 µs 的 p99 延迟中，它自身的滞后（p99）占了 600 µs",
                "loadgen 饱和（占用了其 CPU 的 99%），而服务器所在 CPU 只有 50% 的时间在忙",
            ]
        );
    }

    #[test]
    fn a_cell_whose_cpus_stopped_is_flagged_by_the_share_its_headline_feels() {
        let stalls = |server: u64, load: u64| {
            json!({"server_cpus": {"busy": 1.0}, "load_cpus": {"busy": 1.0},
                   "stalls": {"server": {"longest_us": server, "total_us": server},
                              "load": {"longest_us": load / 2, "total_us": load}}})
        };
        let with = |scenario: &str, noise: Value| {
            let mut l = line(scenario, noise);
            l["load"]["duration_s"] = json!(0.25);
            l
        };
        // 3.1 ms of 250: past 1% for the open loop's p99 ...
        let open = with("rate", stalls(3100, 0));
        assert_eq!(
            flags(&open, Lang::En),
            ["the server's CPU stopped for 3.1 ms of the 250 ms measured (longest 3.1 ms)"]
        );
        assert_eq!(
            flags(&open, Lang::Zh),
            ["服务器所在 CPU 在 250 ms 的测量中停顿了 3.1 ms（最长 3.1 ms）"]
        );
        assert!(passing(&open) && !cpus_apart(&open));
        // ... not the 3% a closed loop's throughput would lose.
        assert!(flags(&with("echo", stalls(3100, 0)), Lang::En).is_empty());
        let echo = with("echo", stalls(0, 8000));
        assert_eq!(
            flags(&echo, Lang::En),
            ["the load's CPU stopped for 8.0 ms of the 250 ms measured (longest 4.0 ms)"]
        );
        // Under 1%, or no watch (no real-time priority; lines from before it): no flag.
        assert!(flags(&with("rate", stalls(2400, 2400)), Lang::En).is_empty());
        let unwatched = with("rate", json!({"server_cpus": {"busy": 1.0}}));
        assert!(flags(&unwatched, Lang::En).is_empty() && !passing(&unwatched));
    }

    #[test]
    fn a_cell_run_while_the_cpus_were_apart_is_flagged() {
        let noise = |before: u64, after: u64, best: u64| {
            json!({"server_cpus": {"busy": 1.0}, "load_cpus": {"busy": 1.0},
                   "cpu_link_ns": {"before": before, "after": after, "best": best}})
        };
        assert!(flags(&line("echo", noise(110, 120, 100)), Lang::En).is_empty());
        // Apart at either end of the cell.
        for (before, after) in [(370, 110), (110, 370)] {
            let reasons = flags(&line("echo", noise(before, after, 100)), Lang::En);
            assert_eq!(
                reasons,
                ["CPUs apart (a cache line's round trip took 370 ns, 100 at best)"]
            );
        }
        // Twice as long but only by a few ns (CPUs close together anyway): not flagged.
        assert!(flags(&line("echo", noise(45, 40, 20)), Lang::En).is_empty());
        // Less than twice the best: a near placement's spread (75-93 ns here), not apart.
        assert!(flags(&line("echo", noise(190, 110, 100)), Lang::En).is_empty());
        // One probe missing (a busy CPU), or none: judged on what there is.
        let mut one = noise(0, 0, 100);
        one["cpu_link_ns"]["before"] = json!(null);
        one["cpu_link_ns"]["after"] = json!(400);
        assert_eq!(flags(&line("echo", one.clone()), Lang::En).len(), 1);
        one["cpu_link_ns"] = json!(null);
        assert!(flags(&line("echo", one), Lang::En).is_empty());
        assert!(flags(&line("echo", noise(370, 110, 100)), Lang::Zh)[0].contains("370 ns"));
    }

    #[test]
    fn every_cell_is_judged_against_the_runs_best() {
        let probe = |before: u64, after: u64, best: u64| {
            line(
                "echo",
                json!({"cpu_link_ns": {"before": before, "after": after, "best": best}}),
            )
        };
        // The run began with the CPUs apart: its first cell saw no better than 340 ns.
        let mut lines = vec![
            probe(340, 335, 335),
            probe(80, 76, 76),
            line("echo", Value::Null),
        ];
        assert!(!is_noisy(&lines[0]));
        settle_link_best(&mut lines);
        assert_eq!(lines[0]["noise"]["cpu_link_ns"]["best"], 76);
        assert!(is_noisy(&lines[0]) && !is_noisy(&lines[1]) && !is_noisy(&lines[2]));
    }

    #[test]
    fn a_run_counts_its_trials_with_the_cpus_apart() {
        let probe = |cell: &str, trial: u64, before: u64| {
            let mut l = line(
                "echo",
                json!({"cpu_link_ns": {"before": before, "after": 80, "best": 75}}),
            );
            l["cell"] = json!(cell);
            l["trial"] = json!(trial);
            l
        };
        let mut rerun = probe("a", 4, 78);
        rerun["rerun_of"] = json!(2);
        let lines = vec![
            probe("a", 1, 80),
            probe("a", 2, 340),
            probe("b", 1, 350),
            rerun,
            line("echo", Value::Null),
        ];
        // 2 of 4 probed trials apart, one of them replaced by a rerun.
        assert_eq!(apart_counts(&lines), Some((75, 2, 4, 1)));
        assert_eq!(apart_counts(&lines[4..]), None);
    }

    #[test]
    fn an_open_loop_tail_of_loadgen_lateness_is_flagged() {
        let clean = json!({"server_cpus": {"busy": 0.4}, "load_cpus": {"busy": 1.0}});
        let mut open = line("rate", clean);
        let pacing = |late: u64| json!({"late_us": {"p99": late}, "wait_us": {"p99": 0}});
        open["load"]["latency_us"] = json!({"p99": 900});
        open["load"]["pacing"] = pacing(40);
        assert!(flags(&open, Lang::En).is_empty(), "the server's tail");
        open["load"]["pacing"] = pacing(600);
        let reasons = flags(&open, Lang::En);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("loadgen sent late"), "{reasons:?}");
        // A short tail is not worth a flag, whoever made it.
        open["load"]["latency_us"] = json!({"p99": 120});
        open["load"]["pacing"] = pacing(100);
        assert!(flags(&open, Lang::En).is_empty());
    }
}
