//! `report compare BASE NEW`: per cell and metric, the change of the median with its 95%
//! bootstrap interval, and a verdict. A regression is a change worse than the threshold whose
//! interval excludes zero; only regressions make the command exit 1.

use std::fmt::Write as _;

use crate::metrics::Metric;
use crate::render::{escape, fmt_num};
use crate::run::Run;
use crate::stats::{change_ci, median};
use crate::tiers;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    NoChange,
    WithinNoise,
    /// Outside noise, but smaller than the threshold.
    Minor,
    Improvement,
    Regression,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::NoChange => "no change",
            Verdict::WithinNoise => "within noise",
            Verdict::Minor => "changed, below threshold",
            Verdict::Improvement => "improvement",
            Verdict::Regression => "REGRESSION",
        }
    }
}

pub struct Row {
    pub cell: String,
    pub metric: Metric,
    pub unit: &'static str,
    pub base: f64,
    pub new: f64,
    pub change: f64,
    pub ci: (f64, f64),
    pub verdict: Verdict,
}

pub fn compare(base: &Run, new: &Run, threshold: f64, metrics: &[Metric]) -> Vec<Row> {
    let (base_cells, new_cells) = (base.cells(), new.cells());
    let mut rows = Vec::new();
    for (cell, base_lines) in &base_cells {
        let Some(new_lines) = new_cells.get(cell) else {
            continue;
        };
        for &metric in metrics {
            let values = |lines: &Vec<&serde_json::Value>| -> (Vec<f64>, &'static str) {
                let v: Vec<(f64, &'static str)> =
                    lines.iter().filter_map(|l| metric.of(l)).collect();
                (
                    v.iter().map(|x| x.0).collect(),
                    v.first().map(|x| x.1).unwrap_or(""),
                )
            };
            let ((b, unit), (n, _)) = (values(base_lines), values(new_lines));
            if b.is_empty() || n.is_empty() {
                continue;
            }
            let (change, lo, hi) = change_ci(&b, &n);
            // Orient so that "worse" is negative whatever the metric's direction.
            let sign = if metric.higher_is_better() { 1.0 } else { -1.0 };
            let (worse_lo, worse_hi) = ((lo * sign).min(hi * sign), (lo * sign).max(hi * sign));
            let verdict = if change == 0.0 {
                Verdict::NoChange
            } else if worse_lo <= 0.0 && worse_hi >= 0.0 {
                Verdict::WithinNoise
            } else if change * sign <= -threshold {
                Verdict::Regression
            } else if change * sign >= threshold {
                Verdict::Improvement
            } else {
                Verdict::Minor
            };
            rows.push(Row {
                cell: cell.clone(),
                metric,
                unit,
                base: median(&b),
                new: median(&n),
                change,
                ci: (lo, hi),
                verdict,
            });
        }
    }
    rows
}

pub fn markdown(rows: &[Row], threshold: f64) -> String {
    let mut s = String::new();
    let regressions = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regression)
        .count();
    let _ = writeln!(
        s,
        "### iomodels: {} regression{} (threshold {:.1}%, 95% bootstrap CI)\n",
        regressions,
        if regressions == 1 { "" } else { "s" },
        threshold * 100.0
    );
    let _ = writeln!(s, "| cell | metric | base | new | change | 95% CI | verdict |\n|---|---|---:|---:|---:|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} {} | {} {} | {:+.1}% | [{:+.1}%, {:+.1}%] | {} |",
            r.cell,
            r.metric.name(),
            fmt_num(r.base),
            r.unit,
            fmt_num(r.new),
            r.unit,
            r.change * 100.0,
            r.ci.0 * 100.0,
            r.ci.1 * 100.0,
            r.verdict.text()
        );
    }
    s
}

pub fn html(rows: &[Row], threshold: f64, changes: &[TierChange]) -> String {
    let mut s = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>iomodels compare</title><style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px}.REGRESSION{background:#fdd;font-weight:bold}.improvement{background:#dfd}</style></head><body>");
    let _ = write!(s, "<h1>iomodels compare</h1><p>Threshold {:.1}%; a regression is worse than the threshold with a 95% interval that excludes zero.</p><table><tr><th>cell</th><th>metric</th><th>base</th><th>new</th><th>change</th><th>95% CI</th><th>verdict</th></tr>", threshold * 100.0);
    for r in rows {
        let class = r
            .verdict
            .text()
            .split(',')
            .next()
            .unwrap_or("")
            .replace(' ', "-");
        let _ = write!(s, "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{} {}</td><td>{} {}</td><td>{:+.1}%</td><td>[{:+.1}%, {:+.1}%]</td><td>{}</td></tr>", escape(&r.cell), r.metric.name(), fmt_num(r.base), r.unit, fmt_num(r.new), r.unit, r.change * 100.0, r.ci.0 * 100.0, r.ci.1 * 100.0, r.verdict.text());
    }
    s.push_str("</table>");
    s.push_str(&tiers_html(changes));
    s.push_str("</body></html>\n");
    s
}

/// Tiers of both runs, per scenario and parameters (the same tiers the report shows): each
/// run's tiers in words, and the models whose tier changed.
pub struct TierChange {
    pub group: String,
    pub axis: &'static str,
    pub base: String,
    pub new: String,
    pub moved: Vec<String>,
}

pub fn tier_changes(base: &Run, new: &Run) -> Vec<TierChange> {
    let base_groups = tiers::judge(&base.lines);
    let mut out = Vec::new();
    for g in tiers::judge(&new.lines) {
        let Some(b) = base_groups
            .iter()
            .find(|b| b.scenario == g.scenario && b.params == g.params)
        else {
            continue;
        };
        let axes: [(&'static str, &tiers::Tiers, &tiers::Tiers); 2] = [
            (g.metric.name(), &b.headline, &g.headline),
            ("cpu_per_request", &b.efficiency, &g.efficiency),
        ];
        for (axis, bt, nt) in axes {
            if nt.entries.is_empty() && bt.entries.is_empty() {
                continue;
            }
            let moved = nt
                .entries
                .iter()
                .filter_map(|e| {
                    let before = bt.of(&e.model)?;
                    (before.tier != e.tier).then(|| {
                        format!(
                            "{}: tier {} of {} -> {} of {}",
                            e.model,
                            before.tier,
                            bt.count(),
                            e.tier,
                            nt.count()
                        )
                    })
                })
                .collect();
            out.push(TierChange {
                group: format!("{} {}", g.scenario, g.params),
                axis,
                base: bt.words(),
                new: nt.words(),
                moved,
            });
        }
    }
    out
}

pub fn tiers_markdown(changes: &[TierChange]) -> String {
    let mut s = format!("\n### Tiers, base and new\n\n{}\n\n| cell | axis | base | new | moved |\n|---|---|---|---|---|\n", tiers::RULE);
    for c in changes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            c.group,
            c.axis,
            c.base,
            c.new,
            if c.moved.is_empty() {
                "none".to_string()
            } else {
                c.moved.join("; ")
            }
        );
    }
    s
}

pub fn tiers_html(changes: &[TierChange]) -> String {
    let mut s = format!("<h2>Tiers, base and new</h2><p>{}</p><table><tr><th>cell</th><th>axis</th><th>base</th><th>new</th><th>moved</th></tr>", escape(tiers::RULE));
    for c in changes {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.group),
            c.axis,
            escape(&c.base),
            escape(&c.new),
            escape(&if c.moved.is_empty() {
                "none".to_string()
            } else {
                c.moved.join("; ")
            })
        );
    }
    s.push_str("</table>");
    s
}
