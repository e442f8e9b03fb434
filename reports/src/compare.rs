//! `report compare BASE NEW`: per cell and metric, the change of the median with its 95%
//! bootstrap interval, and a verdict. A regression is a change worse than the threshold whose
//! interval excludes zero; only regressions make the command exit 1. Rows come regressions
//! first, then the worst change first. `compare.html` also names both runs (time, commit,
//! uncommitted changes), lists where their environments differ, and draws every change with
//! its interval as a forest plot.

use std::fmt::Write as _;

use serde_json::Value;

use crate::forest;
use crate::metrics::Metric;
use crate::render::{escape, fmt_num};
use crate::run::Run;
use crate::stats::{change_ci, median};
use crate::text::Lang;
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
    fn key(self) -> &'static str {
        match self {
            Verdict::NoChange => "compare.v.none",
            Verdict::WithinNoise => "compare.v.noise",
            Verdict::Minor => "compare.v.minor",
            Verdict::Improvement => "compare.v.better",
            Verdict::Regression => "compare.v.regression",
        }
    }

    pub fn text(self) -> &'static str {
        self.text_in(Lang::En)
    }

    pub fn text_in(self, lang: Lang) -> &'static str {
        lang.get(self.key())
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

impl Row {
    /// The change oriented so that positive is better (more throughput, lower latency).
    pub fn gain(&self) -> f64 {
        if self.metric.higher_is_better() {
            self.change
        } else {
            -self.change
        }
    }

    /// [`Row::gain`]'s interval.
    pub fn gain_ci(&self) -> (f64, f64) {
        if self.metric.higher_is_better() {
            self.ci
        } else {
            (-self.ci.1, -self.ci.0)
        }
    }
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
    rows.sort_by(|a, b| {
        let regression = |r: &Row| r.verdict != Verdict::Regression;
        regression(a)
            .cmp(&regression(b))
            .then(a.gain().total_cmp(&b.gain()))
    });
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

/// `compare.html`: both runs named, their environments' differences, the forest plot, the
/// table and the tiers, in `lang`.
pub fn html(
    runs: (&Run, &Run),
    rows: &[Row],
    threshold: f64,
    changes: &[TierChange],
    lang: Lang,
) -> Result<String, String> {
    let mut s = format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title><style>{}</style></head><body>",
        lang.code(),
        lang.get("compare.title"),
        CSS
    );
    let name = |r: &Run| {
        r.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| r.dir.display().to_string())
    };
    let _ = write!(
        s,
        "<h1>{}</h1>",
        escape(&lang.say(
            "compare.h1",
            &[("base", &name(runs.0)), ("new", &name(runs.1))]
        ))
    );
    let _ = write!(
        s,
        "<h2>{}</h2><table><tr>{}</tr>",
        lang.get("compare.runs_h2"),
        lang.get("compare.runs_header")
    );
    for (role, run) in [("compare.base", runs.0), ("compare.new", runs.1)] {
        let commit = run.env["git_commit"]
            .as_str()
            .map(|c| c.chars().take(12).collect::<String>())
            .unwrap_or_else(|| lang.get("compare.unknown").to_string());
        let dirty = match run.env["git_dirty"].as_bool() {
            Some(true) => lang.get("compare.dirty_yes"),
            Some(false) => lang.get("compare.dirty_no"),
            None => lang.get("compare.unknown"),
        };
        let _ = write!(
            s,
            "<tr><th>{}</th><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td></tr>",
            lang.get(role),
            escape(&run.dir.display().to_string()),
            escape(&started(&run.env, lang)),
            escape(&commit),
            dirty,
            run.lines.len()
        );
    }
    s.push_str("</table>");
    let diffs = env_differences(&runs.0.env, &runs.1.env, lang);
    let _ = write!(s, "<h2>{}</h2>", lang.get("compare.env_h2"));
    if diffs.is_empty() {
        let _ = write!(s, "<p>{}</p>", lang.get("compare.env_none"));
    } else {
        let _ = write!(s, "<table><tr>{}</tr>", lang.get("compare.env_header"));
        for (key, base, new) in &diffs {
            let _ = write!(
                s,
                "<tr><th>{}</th><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(key),
                escape(base),
                escape(new)
            );
        }
        s.push_str("</table>");
    }
    let regressions = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regression)
        .count();
    let _ = write!(
        s,
        "<h2>{}</h2><p>{}</p>",
        lang.get("compare.forest_h2"),
        lang.say(
            "compare.forest_intro",
            &[
                ("threshold", &format!("{:.1}", threshold * 100.0)),
                ("regressions", &regressions),
                ("rows", &rows.len()),
            ]
        )
    );
    let plotted: Vec<forest::Row> = rows
        .iter()
        .map(|r| {
            let (lo, hi) = r.gain_ci();
            forest::Row {
                label: format!("{} {}", r.cell, r.metric.name()),
                change: r.gain() * 100.0,
                ci: (lo * 100.0, hi * 100.0),
                kind: match r.verdict {
                    Verdict::Regression => forest::Kind::Regression,
                    Verdict::Improvement => forest::Kind::Improvement,
                    _ => forest::Kind::Neutral,
                },
            }
        })
        .collect();
    let svg = forest::forest(lang.get("compare.forest_axis"), &plotted, threshold * 100.0)?;
    let _ = write!(s, "<figure class=\"forest\">{svg}</figure>");
    let _ = write!(
        s,
        "<h2>{}</h2><table><tr>{}</tr>",
        lang.get("compare.table_h2"),
        lang.get("compare.table_header")
    );
    for r in rows {
        let class = r
            .verdict
            .text()
            .split(',')
            .next()
            .unwrap_or("")
            .replace(' ', "-");
        let _ = write!(s, "<tr class=\"{class}\"><td>{}</td><td>{}</td><td class=\"n\">{} {}</td><td class=\"n\">{} {}</td><td class=\"n\">{:+.1}%</td><td class=\"n\">[{:+.1}%, {:+.1}%]</td><td>{}</td></tr>", escape(&r.cell), r.metric.name(), fmt_num(r.base), r.unit, fmt_num(r.new), r.unit, r.change * 100.0, r.ci.0 * 100.0, r.ci.1 * 100.0, r.verdict.text_in(lang));
    }
    s.push_str("</table>");
    s.push_str(&tiers_html(changes, lang));
    s.push_str("</body></html>\n");
    Ok(s)
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1340px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}:lang(zh) body{font-family:system-ui,\"Noto Sans CJK SC\",\"Source Han Sans SC\",\"PingFang SC\",\"Hiragino Sans GB\",\"Microsoft YaHei\",\"WenQuanYi Micro Hei\",sans-serif}h2{border-bottom:1px solid #ccc;margin-top:1.6em}table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f3f3f3}td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}.REGRESSION{background:#fdd;font-weight:bold}.improvement{background:#dfd}figure{margin:0;max-width:100%;overflow-x:auto}figure svg{max-width:100%;height:auto}";

/// When a run started: `started_unix_s` (UTC), else the run id bench named its directory
/// after (a time, unless the directory was given with `--out`).
fn started(env: &Value, lang: Lang) -> String {
    if let Some(secs) = env["started_unix_s"].as_i64() {
        let (y, mo, d, h, mi, se) = crate::run::civil(secs);
        return format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{se:02} UTC");
    }
    env["started"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| lang.get("compare.unknown").to_string())
}

/// The settings of `env.json` whose values differ between the runs (key, base, new): kernel,
/// CPU, governor, pinning, limits, toolchain, binaries. What names the run itself (its time,
/// commit and dirty flag, shown above) is left out; the suite's text is only said to differ.
pub fn env_differences(base: &Value, new: &Value, lang: Lang) -> Vec<(String, String, String)> {
    const NAMING: [&str; 4] = ["started", "started_unix_s", "git_commit", "git_dirty"];
    let mut keys: Vec<&String> = Vec::new();
    for env in [base, new] {
        for key in env.as_object().into_iter().flat_map(|o| o.keys()) {
            if !keys.contains(&key) && !NAMING.contains(&key.as_str()) {
                keys.push(key);
            }
        }
    }
    let text = |v: &Value| match v {
        Value::Null => lang.get("compare.unknown").to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    keys.into_iter()
        .filter(|k| base[k.as_str()] != new[k.as_str()])
        .map(|k| {
            let (b, n) = (&base[k.as_str()], &new[k.as_str()]);
            if k == "suite" {
                let differs = lang.get("compare.suite_differs").to_string();
                (k.clone(), differs.clone(), differs)
            } else {
                (k.clone(), text(b), text(n))
            }
        })
        .collect()
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

pub fn tier_changes(base: &Run, new: &Run, lang: Lang) -> Vec<TierChange> {
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
                        lang.say(
                            "compare.moved",
                            &[
                                ("model", &e.model),
                                ("from", &before.tier),
                                ("of_from", &bt.count()),
                                ("to", &e.tier),
                                ("of_to", &nt.count()),
                            ],
                        )
                    })
                })
                .collect();
            out.push(TierChange {
                group: format!("{} {}", g.scenario, g.params),
                axis,
                base: bt.words_in(lang),
                new: nt.words_in(lang),
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

pub fn tiers_html(changes: &[TierChange], lang: Lang) -> String {
    let mut s = format!(
        "<h2>{}</h2><p>{}</p><table><tr>{}</tr>",
        lang.get("compare.tiers_h2"),
        escape(lang.get("tiers.rule")),
        lang.get("compare.tiers_header")
    );
    for c in changes {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.group),
            c.axis,
            escape(&c.base),
            escape(&c.new),
            escape(&if c.moved.is_empty() {
                lang.get("compare.none").to_string()
            } else {
                c.moved.join(lang.get("tier.sep"))
            })
        );
    }
    s.push_str("</table>");
    s
}
