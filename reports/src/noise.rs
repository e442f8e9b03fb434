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
        let steal = noise[side]["steal"].as_f64().unwrap_or(0.0);
        if steal > STEAL {
            reasons.push(lang.say(&format!("noise.steal_{name}"), &[("pct", &pct(steal))]));
        }
        let foreign = noise[side]["foreign"].as_f64().unwrap_or(0.0);
        if foreign > FOREIGN {
            reasons.push(lang.say(&format!("noise.foreign_{name}"), &[("pct", &pct(foreign))]));
        }
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
