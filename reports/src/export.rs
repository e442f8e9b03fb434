//! `report export`: CSV (one row per cell and trial), Markdown (the ranking tables) and BMF,
//! the JSON that bencher.dev reads, with lower and upper values from the 95% interval.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::metrics::{headline, Metric};
use crate::render::{fmt_num, rankings};
use crate::run::{str_of, Run};
use crate::stats::{median, median_ci};

pub const CSV_COLUMNS: [&str; 16] = [
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
];

pub fn csv(run: &Run) -> String {
    let mut s = CSV_COLUMNS.join(",") + "\n";
    for line in &run.lines {
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
        ];
        s.push_str(&fields.join(","));
        s.push('\n');
    }
    s
}

pub fn markdown(run: &Run) -> String {
    let mut s = String::new();
    for ((scenario, params), (metric, ranked)) in rankings(run, headline) {
        let _ = writeln!(
            s,
            "\n### {scenario} {params} ({}, {})\n",
            metric.name(),
            if metric.higher_is_better() {
                "higher is better"
            } else {
                "lower is better"
            }
        );
        let _ = writeln!(
            s,
            "| rank | model | median | 95% CI | CV | trials |\n|---:|---|---:|---|---:|---:|"
        );
        for (i, r) in ranked.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} – {} | {:.1}% | {} |",
                i + 1,
                r.model,
                fmt_num(r.median),
                fmt_num(r.ci.0),
                fmt_num(r.ci.1),
                r.cv * 100.0,
                r.values.len()
            );
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
