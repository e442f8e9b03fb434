//! The terminal summary at the end of a run: per scenario and parameter set, the models in
//! tiers (`reports::tiers`, the same tiers the report, the Markdown export and `report
//! compare` show) on the headline metric and on server CPU per request, each with its
//! interval and ratio to the best, a plain-words line per axis, and the cells flagged noisy.

use std::fmt::Write as _;

use serde_json::Value;

use reports::noise;
use reports::text::Lang;
use reports::tiers::{self, median_pm, ratio_pm, Entry, Group, Tiers};

/// The summary of `lines`; `precision` is the run's `precision.json` when it has one.
pub fn render(lines: &[Value], precision: Option<&Value>) -> String {
    let groups = tiers::judge(lines);
    let mut out = String::new();
    let mut noisy_total = 0;
    for g in &groups {
        noisy_total += group(&mut out, g, precision);
    }
    let _ = writeln!(out, "\n{}", tiers::RULE);
    if noisy_total > 0 {
        let _ = writeln!(
            out,
            "{noisy_total} trial(s) flagged noisy (marked ⚠): the server's CPU may not have set their figures; `bench run --rerun-noisy` runs again those flagged for steal, other processes or the CPUs apart or stopped (loadgen saturated or late comes back in a rerun)."
        );
    }
    if let Some((best, apart, probed, rerun)) = noise::apart_counts(lines) {
        if apart > 0 {
            let _ = writeln!(
                out,
                "The host had the server's and the load's CPU apart (a cache line's round trip over twice the run's best, {best} ns) during {apart} of {probed} trials; {}.",
                if rerun > 0 {
                    format!("a rerun replaced {rerun} of them")
                } else {
                    "`bench run --rerun-noisy` runs them again".to_string()
                }
            );
        }
    }
    out
}

fn cell_text(e: Option<&Entry>, t: &Tiers) -> (String, String, String) {
    match e {
        Some(e) => (
            e.tier.to_string(),
            median_pm(e),
            ratio_pm(e, std::ptr::eq(e, &t.entries[0])),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    }
}

/// Prints one group; returns how many of its trials were flagged noisy.
fn group(out: &mut String, g: &Group, precision: Option<&Value>) -> usize {
    let better = |t: &Tiers| {
        if t.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        }
    };
    let _ = writeln!(
        out,
        "\n{} {}: {} {} ({}); server CPU per request ({})",
        g.scenario,
        g.params,
        g.metric.name(),
        g.unit,
        better(&g.headline),
        better(&g.efficiency)
    );
    let w = g.lines.keys().map(|m| m.len()).max().unwrap_or(0).max(16);
    let rows: Vec<_> = g
        .models()
        .into_iter()
        .map(|model| {
            let headline = cell_text(g.headline.of(model), &g.headline);
            let efficiency = cell_text(g.efficiency.of(model), &g.efficiency);
            (model, headline, efficiency)
        })
        .collect();
    // A column as wide as its widest text, at least `least`: a ratio beside its interval
    // ("0.80x [0.74, 0.91]†") is wider than one with a ±, and so is a median beside its
    // interval ("256 [92.0, 2260]").
    type Row<'a> = (&'a str, (String, String, String), (String, String, String));
    let width = |text: &dyn Fn(&Row) -> usize, least: usize| {
        rows.iter().map(text).max().unwrap_or(0).max(least)
    };
    let rw = width(
        &|(_, h, e)| h.2.chars().count().max(e.2.chars().count()),
        14,
    );
    let mw = width(&|(_, h, _)| h.1.chars().count(), 15);
    let ew = width(&|(_, _, e)| e.1.chars().count(), 13);
    let _ = writeln!(
        out,
        "  {:<4} {:<w$} {:>mw$} {:>rw$}   {:<4} {:>ew$} {:>rw$}  notes",
        "tier", "model", "median", "ratio", "tier", "CPU us/req", "ratio"
    );
    let mut noisy_count = 0;
    for (model, (tier, median, ratio), (etier, emedian, eratio)) in rows {
        let lines = &g.lines[model];
        let notes = reports::render::notes(lines, precision, Lang::En);
        noisy_count += lines.iter().filter(|l| noise::is_noisy(l)).count();
        let _ = writeln!(
            out,
            "  {tier:<4} {model:<w$} {median:>mw$} {ratio:>rw$}   {etier:<4} {emedian:>ew$} {eratio:>rw$}  {}",
            notes.join("; ")
        );
    }
    let _ = writeln!(out, "  {}: {}", g.metric.name(), g.headline.words());
    if g.efficiency.entries.len() > 1 {
        let _ = writeln!(out, "  CPU per request: {}", g.efficiency.words());
    }
    noisy_count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tiers_ratios_words_and_failures() {
        let line = |model: &str, trial: u64, rps: f64, cpu: f64, status: &str| {
            json!({"scenario": "echo", "cell": format!("echo/{model}/c=50"), "model": model, "status": status,
                   "trial": trial,
                   "load": {"throughput_rps": rps, "errors": {"connect": 0, "reset": 1, "timeout": 0, "mismatch": 0, "protocol": 0}},
                   "server": {"cpu_us_per_request": cpu}})
        };
        let mut lines = vec![
            line("poll", 1, 98.0, 10.0, "ok"),
            line("poll", 2, 100.0, 10.1, "ok"),
            line("poll", 3, 96.0, 9.9, "ok"),
            line("epoll-et", 1, 160.0, 6.0, "ok"),
            line("epoll-et", 2, 165.0, 6.1, "ok"),
            line("epoll-et", 3, 158.0, 6.0, "ok"),
            line("uring", 1, 0.0, 0.0, "unsupported"),
        ];
        lines[1]["noise"] = json!({"server_cpus": {"steal": 0.3}, "load_cpus": {}});
        let text = render(&lines, None);
        let epoll = text.find("epoll-et ").unwrap();
        let poll = text.find("poll ").unwrap();
        assert!(epoll < poll, "{text}");
        assert!(text.contains("160 ± "), "median with its interval: {text}");
        assert!(text.contains("0.61 ± "), "ratio with its interval: {text}");
        assert!(
            text.contains("throughput: epoll-et first; poll last (0.61x)"),
            "{text}"
        );
        assert!(
            text.contains("CPU per request: epoll-et first; poll last (1.67x)"),
            "{text}"
        );
        assert!(text.contains("unsupported"), "{text}");
        assert!(text.contains("⚠ 1 of 3 trials noisy: steal 30%"), "{text}");
        assert!(text.contains("Tiers: models share a tier"), "{text}");
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
            json!({"schema": 2, "scenario": "echo", "cell": format!("echo/{model}/c=50"), "model": model,
                   "trial": 1, "status": "ok",
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
            json!({"schema": 1, "scenario": "echo", "cell": "echo/poll/c=50", "model": "poll",
                   "trial": 1, "status": "ok", "load": {"throughput_rps": 900.0}}),
        ];
        let text = render(&lines, None);
        let row = |m: &str| text.lines().find(|l| l.contains(m)).unwrap().to_string();
        assert!(
            row("fork").ends_with("stalled 2 times, longest 300 ms"),
            "{text}"
        );
        assert!(!row("epoll-et").contains("stalled"), "{text}");
        assert!(!row("poll ").contains("stalled"), "{text}");
    }
}
