//! The terminal summary at the end of a run: per scenario and parameter set, models ranked
//! by their median over trials, with the spread of the trials.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// The figure a scenario is ranked by, its unit, and whether higher is better. The open loop
/// is ranked by corrected p99 latency: its throughput is the target rate for every model
/// that keeps up.
pub fn headline(scenario: &str, load: &Value) -> Option<(f64, &'static str, bool)> {
    let f = |k: &str| load[k].as_f64();
    match scenario {
        "churn" => f("connects_per_s").map(|v| (v, "conn/s", true)),
        "bulk" => Some(((f("upload_bps")? + f("download_bps")?) / 1e6, "MB/s", true)),
        "rate" => load["latency_us"]["p99"]
            .as_f64()
            .map(|v| (v, "p99 us", false)),
        _ => f("throughput_rps").map(|v| (v, "req/s", true)),
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// What one model did in one (scenario, parameters) group, over its trials.
#[derive(Default)]
struct Trials {
    values: Vec<f64>,
    errors: u64,
    starved: u64,
    /// The trial's stalls with the most dips (from the interval series).
    stalls: Option<reports::series::Stalls>,
    /// Statuses of the trials that did not run ok (failed, unsupported).
    not_ok: Vec<String>,
}

impl Trials {
    fn median(&self) -> f64 {
        median(&mut self.values.clone())
    }
}

pub fn render(lines: &[Value]) -> String {
    let mut groups: BTreeMap<(String, String), BTreeMap<String, Trials>> = BTreeMap::new();
    let mut units: BTreeMap<String, (&'static str, bool)> = BTreeMap::new();
    for line in lines {
        let scenario = line["scenario"].as_str().unwrap_or("?").to_string();
        let params = line["cell"]
            .as_str()
            .and_then(|c| c.rsplit('/').next())
            .unwrap_or("")
            .to_string();
        let model = line["model"].as_str().unwrap_or("?").to_string();
        let trials = groups
            .entry((scenario.clone(), params))
            .or_default()
            .entry(model)
            .or_default();
        if line["status"] == "ok" {
            if let Some((value, unit, higher_better)) = headline(&scenario, &line["load"]) {
                trials.values.push(value);
                units.insert(scenario, (unit, higher_better));
            }
            trials.starved = trials
                .starved
                .max(line["load"]["starved_connections"].as_u64().unwrap_or(0));
            if let Some(s) = reports::series::stalls(line) {
                if trials.stalls.is_none_or(|t| s.count > t.count) {
                    trials.stalls = Some(s);
                }
            }
            let errors = &line["load"]["errors"];
            trials.errors += ["connect", "reset", "timeout", "mismatch", "protocol"]
                .iter()
                .map(|k| errors[k].as_u64().unwrap_or(0))
                .sum::<u64>();
        } else {
            trials
                .not_ok
                .push(line["status"].as_str().unwrap_or("?").to_string());
        }
    }
    let mut out = String::new();
    for ((scenario, params), models) in &groups {
        let (unit, higher_better) = units.get(scenario).copied().unwrap_or(("", true));
        let _ = writeln!(out, "\n{scenario} {params}");
        let _ = writeln!(
            out,
            "  {:<4} {:<16} {:>14} {:>18} {:>8}  notes",
            "rank",
            "model",
            format!("median {unit}"),
            "spread (min-max)",
            "errors"
        );
        let mut ranked: Vec<(&String, &Trials)> = models.iter().collect();
        ranked.sort_by(|a, b| {
            let (ma, mb) = (a.1.median(), b.1.median());
            let order = if higher_better {
                mb.partial_cmp(&ma)
            } else {
                ma.partial_cmp(&mb)
            };
            order
                .unwrap_or_else(|| ma.is_nan().cmp(&mb.is_nan()))
                .then(a.0.cmp(b.0))
        });
        for (rank, (model, trials)) in ranked.into_iter().enumerate() {
            let mut notes = trials.not_ok.join(", ");
            if trials.starved > 0 {
                notes.push_str(&format!("{} connections never served", trials.starved));
            }
            if let Some(stalled) = trials.stalls.and_then(|s| s.describe()) {
                if !notes.is_empty() {
                    notes.push_str("; ");
                }
                notes.push_str(&stalled);
            }
            let med = trials.median();
            if med.is_nan() {
                let _ = writeln!(
                    out,
                    "  {:<4} {model:<16} {:>14} {:>18} {:>8}  {notes}",
                    "-", "-", "-", "-"
                );
                continue;
            }
            let lo = trials.values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = trials
                .values
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let spread = format!("{} - {}", compact(lo), compact(hi));
            let _ = writeln!(
                out,
                "  {:<4} {model:<16} {:>14} {spread:>18} {:>8}  {notes}",
                rank + 1,
                compact(med),
                trials.errors
            );
        }
    }
    out
}

/// 143301 -> "143.3k"; 2136.3 -> "2136.3".
fn compact(x: f64) -> String {
    if x >= 100_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if x >= 10_000.0 {
        format!("{:.2}k", x / 1000.0)
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranks_by_median_and_shows_failures() {
        let line = |model: &str, rps: f64, status: &str| {
            json!({"scenario": "echo", "cell": format!("echo/{model}/c=50"), "model": model, "status": status,
                   "load": {"throughput_rps": rps, "errors": {"connect": 0, "reset": 1, "timeout": 0, "mismatch": 0, "protocol": 0}}})
        };
        let lines = vec![
            line("poll", 100.0, "ok"),
            line("poll", 300.0, "ok"),
            line("poll", 200.0, "ok"),
            line("epoll-et", 500.0, "ok"),
            line("uring", 0.0, "unsupported"),
        ];
        let text = render(&lines);
        let epoll = text.find("epoll-et").unwrap();
        let poll = text.find("poll ").unwrap();
        assert!(epoll < poll, "{text}");
        assert!(
            text.contains("200.0") && text.contains("100.0 - 300.0"),
            "{text}"
        );
        assert!(text.contains("unsupported"), "{text}");
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn a_cell_whose_throughput_dipped_is_flagged() {
        let series = |requests: &[u64]| {
            let intervals: Vec<Value> = requests
                .iter()
                .enumerate()
                .map(|(i, r)| json!({"t": i as f64 * 0.1, "requests": r, "errors": 0, "p50": 1, "p99": 2, "max": 3}))
                .collect();
            json!({"interval_ms": 100.0, "intervals": intervals})
        };
        let line = |model: &str, requests: &[u64]| {
            json!({"scenario": "echo", "cell": format!("echo/{model}/c=50"), "model": model, "status": "ok",
                   "load": {"throughput_rps": 1000.0, "duration_s": 1.0, "series": series(requests),
                            "errors": {"connect": 0, "reset": 0, "timeout": 0, "mismatch": 0, "protocol": 0}}})
        };
        let lines = vec![
            line("fork", &[100, 100, 0, 0, 0, 100, 100, 10, 100, 100]),
            line(
                "epoll-et",
                &[100, 90, 110, 100, 100, 100, 100, 100, 100, 100],
            ),
            // Schema 1: no series, no flag.
            json!({"scenario": "echo", "cell": "echo/poll/c=50", "model": "poll", "status": "ok",
                   "load": {"throughput_rps": 900.0}}),
        ];
        let text = render(&lines);
        let row = |m: &str| text.lines().find(|l| l.contains(m)).unwrap().to_string();
        assert!(
            row("fork").ends_with("stalled 2 times, longest 300 ms"),
            "{text}"
        );
        assert!(!row("epoll-et").contains("stalled"), "{text}");
        assert!(!row("poll ").contains("stalled"), "{text}");
    }
}
