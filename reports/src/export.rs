//! `report export`: CSV (one row per cell and trial), Markdown (the ranking tables) and BMF,
//! the JSON that bencher.dev reads, with lower and upper values from the 95% interval.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::metrics::Metric;
use crate::run::{str_of, Run};
use crate::stats::{median, median_ci};
use crate::tiers;

/// Every line of the run, one row each: `rerun_of` names the trial a rerun replaced, and
/// `replaced` is true on a line a rerun replaced (every view leaves those out).
pub const CSV_COLUMNS: [&str; 18] = [
    "run",
    "cell",
    "trial",
    "model",
    "protocol",
    "scenario",
    "status",
    "throughput_rps",
    "p50_us",
    "p99_us",
    "p999_us",
    "errors",
    "cpu_us_per_request",
    "peak_pss_kib",
    "pss_kib_per_conn",
    "reason",
    "rerun_of",
    "replaced",
];

pub fn csv(run: &Run) -> String {
    let mut s = CSV_COLUMNS.join(",") + "\n";
    let all: Vec<&Value> = run.lines.iter().collect();
    let replaced = tiers::superseded(&all);
    for (line, replaced) in run.lines.iter().zip(replaced) {
        let num = |v: &Value| v.as_f64().map(|x| x.to_string()).unwrap_or_default();
        let quote = |t: String| {
            if t.contains([',', '"', '\n']) {
                format!("\"{}\"", t.replace('"', "\"\""))
            } else {
                t
            }
        };
        let fields = [
            quote(str_of(line, "run")),
            quote(str_of(line, "cell")),
            line["trial"].to_string(),
            quote(str_of(line, "model")),
            quote(str_of(line, "protocol")),
            quote(str_of(line, "scenario")),
            quote(str_of(line, "status")),
            num(&line["load"]["throughput_rps"]),
            num(&line["load"]["latency_us"]["p50"]),
            num(&line["load"]["latency_us"]["p99"]),
            num(&line["load"]["latency_us"]["p999"]),
            if line["status"] == "ok" {
                crate::render::error_total(line).to_string()
            } else {
                String::new()
            },
            num(&line["server"]["cpu_us_per_request"]),
            num(&line["server"]["peak_pss_kib"]),
            num(&line["server"]["pss_kib_per_conn"]),
            quote(line["reason"].as_str().unwrap_or("").to_string()),
            num(&line["rerun_of"]),
            replaced.to_string(),
        ];
        s.push_str(&fields.join(","));
        s.push('\n');
    }
    s
}

/// The tier tables of `report.html` as Markdown: per scenario and parameters, the headline
/// metric's tiers and CPU per request's, each with the tiers in words.
pub fn markdown(run: &Run) -> String {
    let mut s = format!("{}\n", tiers::RULE);
    for g in tiers::judge(&run.lines) {
        let _ = writeln!(
            s,
            "\n### {} {}\n\n**{}** ({}, {}): {}.\n",
            g.scenario,
            g.params,
            g.metric.name(),
            g.unit,
            if g.metric.higher_is_better() {
                "higher is better"
            } else {
                "lower is better"
            },
            g.headline.words()
        );
        s.push_str(&tiers::markdown_table(&g.headline, g.unit));
        if !g.efficiency.entries.is_empty() {
            let _ = writeln!(
                s,
                "\n**server CPU per request** (us CPU/req, lower is better): {}.\n",
                g.efficiency.words()
            );
            s.push_str(&tiers::markdown_table(&g.efficiency, "us CPU/req"));
        }
    }
    s
}

/// BMF: `{ "<benchmark>": { "<measure>": {"value", "lower_value", "upper_value"} } }`, one
/// benchmark per cell, medians over trials.
pub fn bmf(run: &Run) -> Value {
    let mut out = Map::new();
    for (cell, lines) in run.cells() {
        let mut measures = Map::new();
        for metric in Metric::ALL {
            let values: Vec<f64> = lines
                .iter()
                .filter_map(|l| metric.of(l).map(|v| v.0))
                .collect();
            if values.is_empty() {
                continue;
            }
            let (lo, hi) = median_ci(&values);
            measures.insert(
                metric.name().to_string(),
                json!({"value": median(&values), "lower_value": lo, "upper_value": hi}),
            );
        }
        out.insert(cell, Value::Object(measures));
    }
    Value::Object(out)
}
