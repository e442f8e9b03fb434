//! `report render`: one self-contained `report.html` (inline SVG, no script, no network).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::charts::{self, Axes, Bar, Series};
use crate::families;
use crate::metrics::Metric;
use crate::noise;
use crate::run::{param, str_of, Run};
use crate::series;
use crate::stats::{median, median_ci};
use crate::tiers::{self, Group, Tiers};

/// The models' descriptions: docs/MODELS.md is the one source of truth, embedded.
const MODELS_MD: &str = include_str!("../../docs/MODELS.md");

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn error_total(line: &Value) -> u64 {
    ["connect", "reset", "timeout", "mismatch", "protocol"]
        .iter()
        .map(|k| line["load"]["errors"][k].as_u64().unwrap_or(0))
        .sum()
}

pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 1000.0 {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
                out.push(' ');
            }
            out.push(c);
        }
        out
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn render(run: &Run, out: &Path) -> Result<(), String> {
    let models = run.models();
    let mut html = String::new();
    let id = run
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = write!(html, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>iomodels report {}</title><style>{}</style></head><body>", escape(&id), CSS);
    let _ = write!(html, "<h1>iomodels: how the server I/O models compare on this machine</h1><p class=\"sub\">Run <code>{}</code> · {} cells · {} models · {} · kernel {}</p>",
        escape(&id), run.lines.len(), models.len(), escape(run.env["cpu_model"].as_str().unwrap_or("unknown CPU")), escape(run.env["kernel"].as_str().unwrap_or("?")));
    html.push_str(INTRO);
    let groups = tiers::judge(&run.lines);
    summary_html(run, &groups, &mut html);
    html.push_str("<h2 id=\"charts\">Charts</h2><div class=\"grid\">");
    for svg in all_charts(run, &models)? {
        let _ = write!(html, "<figure>{svg}</figure>");
    }
    html.push_str("</div>");
    over_time_html(run, &models, &mut html)?;
    fairness_html(run, &models, &mut html)?;
    html.push_str("<h2 id=\"models\">The models: what each does, and what this run measured</h2>");
    let anatomy = std::fs::read_to_string(run.dir.join("anatomy.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    for model in &models {
        let _ = write!(
            html,
            "<section class=\"model\"><h3>{}</h3><p class=\"measured\">{}</p>{}{}</section>",
            escape(model),
            escape(&measured_sentences_in(run, &groups, model)),
            anatomy
                .as_ref()
                .map(|a| anatomy_html(a, model))
                .unwrap_or_default(),
            external_html(run, model).unwrap_or_else(|| model_doc_html(model))
        );
    }
    // The slowloris lesson: what a silent client costs each model (measured in MODELS.md).
    let _ = write!(
        html,
        "<h2 id=\"silent\">Silent clients: how a connection ends, and what an idle one costs</h2>{}",
        doc_section_html(|heading| heading.starts_with("## How a connection ends"))
    );
    failures_html(run, &mut html);
    env_html(run, &mut html);
    html.push_str("</body></html>\n");
    crate::run::replace_file(out, html.as_bytes())
}

/// The run's `precision.json` (adaptive trials), if it has one.
pub fn precision_of(run: &Run) -> Option<Value> {
    std::fs::read_to_string(run.dir.join("precision.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// Notes on one model in one group: failures, errors, starved connections, trials flagged
/// noisy (with the reason), a precision target missed.
pub fn notes(lines: &[&Value], precision: Option<&Value>) -> Vec<String> {
    let mut notes = Vec::new();
    let not_ok: Vec<String> = lines
        .iter()
        .filter(|l| l["status"] != "ok")
        .map(|l| str_of(l, "status"))
        .collect();
    if !not_ok.is_empty() {
        notes.push(not_ok.join(", "));
    }
    let errors: u64 = lines.iter().map(|l| error_total(l)).sum();
    if errors > 0 {
        notes.push(format!("{errors} errors"));
    }
    let starved = lines
        .iter()
        .filter_map(|l| l["load"]["starved_connections"].as_u64())
        .max()
        .unwrap_or(0);
    if starved > 0 {
        notes.push(format!("{starved} connections never served"));
    }
    // The trial that stalled most often (from the interval series of schema 2 lines).
    let stalls = lines
        .iter()
        .filter_map(|l| series::stalls(l))
        .max_by_key(|s| s.count)
        .and_then(|s| s.describe());
    let flagged: Vec<Vec<String>> = lines
        .iter()
        .map(|l| noise::flags(l))
        .filter(|f| !f.is_empty())
        .collect();
    if let Some(first) = flagged.first() {
        notes.push(format!(
            "⚠ {} of {} trials noisy: {}",
            flagged.len(),
            lines.len(),
            first.join("; ")
        ));
    }
    if let (Some(p), Some(cell)) = (precision, lines.first().and_then(|l| l["cell"].as_str())) {
        let c = &p["cells"][cell];
        if let Some(outcome) = c["outcome"]
            .as_str()
            .filter(|o| *o == "max_trials" || *o == "max_time")
        {
            notes.push(format!(
                "± {} after {} trials, short of the {:.0}% target ({})",
                c["precision"]
                    .as_f64()
                    .map(|x| format!("{:.0}%", x * 100.0))
                    .unwrap_or_else(|| "?".into()),
                c["trials"],
                p["target"].as_f64().unwrap_or(0.0) * 100.0,
                outcome.replace('_', " ")
            ));
        }
    }
    notes.extend(stalls);
    notes
}

fn better(t: &Tiers) -> &'static str {
    if t.higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    }
}

/// The summary: per scenario and parameters, the models in tiers on the headline metric and
/// on CPU per request, and the tiers in words.
fn summary_html(run: &Run, groups: &[Group], html: &mut String) {
    let precision = precision_of(run);
    let _ = write!(html, "<h2 id=\"summary\">Summary per scenario: tiers</h2><p>Models in <b>tiers</b>, not ranks: each table is ordered by the median over trials, and models the data cannot tell apart share a tier (shaded alike). {} Throughput (or p99 latency for the open loop) and server CPU per request each have their own tiers; CPU per request is usually the steadier of the two. <span class=\"warn\">⚠</span> marks trials flagged noisy: something other than the server's CPU may have set their figures (steal, other processes on the cell's CPUs, or loadgen saturated).</p>", escape(tiers::RULE));
    if let Some(p) = &precision {
        let cells = p["cells"].as_object();
        let met = cells.map_or(0, |c| c.values().filter(|v| v["outcome"] == "met").count());
        let _ = write!(html, "<p>Adaptive trials: target ±{:.0}% for each median, {} to {} trials; {met} of {} cells met it (the others are noted).</p>",
            p["target"].as_f64().unwrap_or(0.0) * 100.0, p["min_trials"], p["max_trials"], cells.map_or(0, |c| c.len()));
    }
    for g in groups {
        let unit = g.unit;
        let _ = write!(html, "<h3>{} <code>{}</code></h3><table><tr><th>tier</th><th>model</th><th>median {} ({})</th><th>95% CI</th><th>ratio to best</th><th>CV</th><th>trials</th><th>CPU tier</th><th>µs CPU/req ({})</th><th>CPU ratio</th><th>notes</th></tr>",
            escape(&g.scenario), escape(&g.params), escape(unit), better(&g.headline), better(&g.efficiency));
        let order = g.models();
        for model in order {
            let h = g.headline.of(model);
            let e = g.efficiency.of(model);
            let first = |t: &Tiers, x: &tiers::Entry| std::ptr::eq(x, &t.entries[0]);
            let class = h
                .map(|h| format!(" class=\"t{}\"", (h.tier - 1) % 2))
                .unwrap_or_default();
            let _ = write!(
                html,
                "<tr{class}><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                h.map(|h| h.tier.to_string()).unwrap_or_else(|| "-".into()),
                escape(model),
                h.map(tiers::median_pm).unwrap_or_else(|| "-".into()),
                h.map(|h| format!("{} – {}", fmt_num(h.ci.0), fmt_num(h.ci.1))).unwrap_or_default(),
                h.map(|x| tiers::ratio_pm(x, first(&g.headline, x))).unwrap_or_default(),
                h.map(|h| format!("{:.1}%", h.cv * 100.0)).unwrap_or_default(),
                g.lines[model].iter().filter(|l| l["status"] == "ok").count(),
                e.map(|e| e.tier.to_string()).unwrap_or_else(|| "-".into()),
                e.map(tiers::median_pm).unwrap_or_else(|| "-".into()),
                e.map(|x| tiers::ratio_pm(x, first(&g.efficiency, x))).unwrap_or_default(),
                escape(&notes(&g.lines[model], precision.as_ref()).join("; "))
            );
        }
        let _ = write!(
            html,
            "</table><p class=\"words\"><b>{}:</b> {}.",
            g.metric.name(),
            escape(&g.headline.words())
        );
        if g.efficiency.entries.len() > 1 {
            let _ = write!(
                html,
                " <b>CPU per request:</b> {}.",
                escape(&g.efficiency.words())
            );
        }
        html.push_str("</p>");
    }
}

fn series_by_model(
    run: &Run,
    models: &[String],
    scenario: &str,
    filter: impl Fn(&Value) -> bool,
    x: impl Fn(&Value) -> Option<f64>,
    y: Metric,
) -> (Vec<Series>, Vec<usize>) {
    let mut points: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for line in run
        .ok()
        .filter(|l| str_of(l, "scenario") == scenario && filter(l))
    {
        if let (Some(xv), Some((yv, _))) = (x(line), y.of(line)) {
            points
                .entry(str_of(line, "model"))
                .or_default()
                .entry(xv.to_bits())
                .or_default()
                .push(yv);
        }
    }
    let mut series = Vec::new();
    let mut styles = Vec::new();
    for model in models {
        if let Some(p) = points.get(model) {
            let mut pts: Vec<(f64, f64)> = p
                .iter()
                .map(|(x, ys)| (f64::from_bits(*x), median(ys)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(Series {
                name: model.clone(),
                points: pts,
            });
            styles.push(charts::style_index(models, model));
        }
    }
    (series, styles)
}

fn bar_chart(
    run: &Run,
    models: &[String],
    title: &str,
    unit: &str,
    lines: &[&Value],
    value: impl Fn(&Value) -> Option<f64>,
) -> Result<Option<String>, String> {
    let mut by_model: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in lines {
        if let Some(v) = value(line) {
            by_model.entry(str_of(line, "model")).or_default().push(v);
        }
    }
    if by_model.is_empty() {
        return Ok(None);
    }
    let _ = run;
    let mut bars: Vec<Bar> = by_model
        .into_iter()
        .map(|(name, v)| Bar {
            value: median(&v),
            ci: median_ci(&v),
            name,
        })
        .collect();
    bars.sort_by(|a, b| b.value.total_cmp(&a.value));
    let styles: Vec<usize> = bars
        .iter()
        .map(|b| charts::style_index(models, &b.name))
        .collect();
    charts::bars(title, unit, &bars, &styles).map(Some)
}

/// The cells a per-model bar chart is drawn from: the scenario's most common parameters.
fn representative<'a>(run: &'a Run, scenario: &str) -> Vec<&'a Value> {
    let mut counts: BTreeMap<String, (usize, &Value)> = BTreeMap::new();
    for line in run.ok().filter(|l| str_of(l, "scenario") == scenario) {
        counts
            .entry(line["params"].to_string())
            .or_insert((0, &line["params"]))
            .0 += 1;
    }
    let Some((_, params)) = counts.into_values().max_by_key(|(n, _)| *n) else {
        return Vec::new();
    };
    run.ok()
        .filter(|l| str_of(l, "scenario") == scenario && &l["params"] == params)
        .collect()
}

fn all_charts(run: &Run, models: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    // Throughput vs connections, one chart per message size.
    let mut sizes: Vec<u64> = run
        .ok()
        .filter(|l| str_of(l, "scenario") == "echo")
        .filter_map(|l| param(l, "size"))
        .collect();
    sizes.sort();
    sizes.dedup();
    for size in sizes {
        let (series, styles) = series_by_model(
            run,
            models,
            "echo",
            |l| param(l, "size") == Some(size),
            |l| param(l, "connections").map(|c| c as f64),
            Metric::Throughput,
        );
        if !series.is_empty() {
            let title = format!("Echo throughput vs connections, {size}-byte messages");
            out.push(charts::lines(
                &Axes {
                    title: &title,
                    x: "connections (log scale)",
                    y: "requests per second",
                    log_x: true,
                    log_y: false,
                },
                &series,
                &styles,
            )?);
        }
    }
    if let Some(svg) = spectrum(run, models)? {
        out.push(svg);
    }
    let (series, styles) = series_by_model(
        run,
        models,
        "rate",
        |_| true,
        |l| param(l, "rate").map(|r| r as f64),
        Metric::P99,
    );
    if !series.is_empty() {
        out.push(charts::lines(
            &Axes {
                title: "Latency vs offered load (open loop, corrected p99)",
                x: "offered load, requests per second",
                y: "p99 latency, µs (log scale)",
                log_x: false,
                log_y: true,
            },
            &series,
            &styles,
        )?);
    }
    let (series, styles) = series_by_model(
        run,
        models,
        "idle",
        |_| true,
        |l| param(l, "idle").map(|i| i as f64),
        Metric::Throughput,
    );
    if !series.is_empty() {
        out.push(charts::lines(
            &Axes {
                title: "Throughput of the active connections vs idle connections",
                x: "idle connections held open",
                y: "requests per second",
                log_x: false,
                log_y: false,
            },
            &series,
            &styles,
        )?);
    }
    let churn = representative(run, "churn");
    if let Some(svg) = bar_chart(
        run,
        models,
        "Connection churn: connect, one echo, close",
        "connections per second (median, 95% CI)",
        &churn,
        |l| l["load"]["connects_per_s"].as_f64(),
    )? {
        out.push(svg);
    }
    let bulk = representative(run, "bulk");
    for (field, way) in [
        ("upload_bps", "upload (PUT)"),
        ("download_bps", "download (GET)"),
    ] {
        if let Some(svg) = bar_chart(
            run,
            models,
            &format!("Bulk transfer, {way}"),
            "MB/s (median, 95% CI)",
            &bulk,
            |l| l["load"][field].as_f64().map(|b| b / 1e6),
        )? {
            out.push(svg);
        }
    }
    let echo = representative(run, "echo");
    let params = echo
        .first()
        .map(|l| {
            l["cell"]
                .as_str()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    if let Some(svg) = bar_chart(
        run,
        models,
        &format!("Server CPU per request (echo {params})"),
        "µs of server CPU per request (median, 95% CI)",
        &echo,
        |l| l["server"]["cpu_us_per_request"].as_f64(),
    )? {
        out.push(svg);
    }
    let mut pss_cells = representative(run, "idle");
    if pss_cells.is_empty() {
        pss_cells = echo.clone();
    }
    if let Some(svg) = bar_chart(
        run,
        models,
        "Server memory per connection (peak PSS / connections)",
        "KiB per connection (median, 95% CI)",
        &pss_cells,
        |l| l["server"]["pss_kib_per_conn"].as_f64(),
    )? {
        out.push(svg);
    }
    Ok(out)
}

/// The HdrHistogram-style percentile spectrum: latency at 50% .. 99.99%, trials merged.
fn spectrum(run: &Run, models: &[String]) -> Result<Option<String>, String> {
    let scenario = if run.ok().any(|l| str_of(l, "scenario") == "rate") {
        "rate"
    } else {
        "echo"
    };
    let cells = representative(run, scenario);
    let mut merged: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    for line in &cells {
        let Some(text) = line["load"]["histogram"].as_str() else {
            continue;
        };
        let h = decode(text)?;
        match merged.get_mut(&str_of(line, "model")) {
            Some(m) => m.add(&h).map_err(|e| format!("{e:?}"))?,
            None => {
                merged.insert(str_of(line, "model"), h);
            }
        }
    }
    let quantiles = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];
    let mut series = Vec::new();
    let mut styles = Vec::new();
    for model in models {
        if let Some(h) = merged.get(model).filter(|h| !h.is_empty()) {
            let points = quantiles
                .iter()
                .map(|&q| (1.0 / (1.0 - q), h.value_at_quantile(q).max(1) as f64))
                .collect();
            series.push(Series {
                name: model.clone(),
                points,
            });
            styles.push(charts::style_index(models, model));
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let params = cells.first().map(|l| str_of(l, "cell")).unwrap_or_default();
    let title = format!(
        "Latency spectrum, {}",
        params
            .split('/')
            .next_back()
            .map(|p| format!("{scenario} {p}"))
            .unwrap_or_default()
    );
    charts::lines(
        &Axes {
            title: &title,
            x: "percentile: 2 = p50, 10 = p90, 100 = p99, 1000 = p99.9 (log)",
            y: "latency, µs (log scale)",
            log_x: true,
            log_y: true,
        },
        &series,
        &styles,
    )
    .map(Some)
}

/// The cell the over-time charts show: the echo cell with the most connections (of those
/// with a series), then the one with the most trials.
fn over_time_cell(run: &Run) -> Option<(Value, String)> {
    let mut best: Option<(u64, usize, Value, String)> = None;
    for line in run
        .ok()
        .filter(|l| str_of(l, "scenario") == "echo" && series::intervals(l).is_some())
    {
        let connections = param(line, "connections").unwrap_or(0);
        let params = line["params"].clone();
        let trials = run
            .ok()
            .filter(|l| str_of(l, "scenario") == "echo" && l["params"] == params)
            .count();
        if best
            .as_ref()
            .is_none_or(|b| (connections, trials) > (b.0, b.1))
        {
            let name = str_of(line, "cell")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            best = Some((connections, trials, params, name));
        }
    }
    best.map(|b| (b.2, b.3))
}

/// Of a model's trials, the one with the median throughput (the lower middle of an even
/// count).
fn median_trial<'a>(lines: &[&'a Value]) -> Option<&'a Value> {
    let mut sorted: Vec<&Value> = lines.to_vec();
    sorted.sort_by(|a, b| {
        let rps = |l: &Value| l["load"]["throughput_rps"].as_f64().unwrap_or(0.0);
        rps(a).total_cmp(&rps(b))
    });
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// Throughput and p99 over time in one cell, one trial per model (its median), as small
/// multiples: a panel per family, every panel of a quantity on the same scale.
fn over_time_html(run: &Run, models: &[String], html: &mut String) -> Result<(), String> {
    let Some((params, name)) = over_time_cell(run) else {
        return Ok(());
    };
    let mut chosen: Vec<(&str, &Value)> = Vec::new();
    for model in models {
        let lines: Vec<&Value> = run
            .ok()
            .filter(|l| {
                str_of(l, "scenario") == "echo"
                    && l["params"] == params
                    && &str_of(l, "model") == model
                    && series::intervals(l).is_some()
            })
            .collect();
        if let Some(line) = median_trial(&lines) {
            chosen.push((model.as_str(), line));
        }
    }
    let points = |line: &Value, p99: bool| -> Vec<(f64, f64)> {
        series::intervals(line)
            .map(|(_, iv)| {
                iv.iter()
                    .filter_map(|i| Some((i.t, if p99 { i.p99? } else { i.rps })))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all = |p99: bool| -> Vec<f64> {
        chosen
            .iter()
            .flat_map(|(_, l)| points(l, p99).into_iter().map(|p| p.1))
            .collect()
    };
    let max_rps = all(false).into_iter().fold(0.0, f64::max);
    let p99s: Vec<f64> = all(true).into_iter().filter(|v| *v > 0.0).collect();
    let (lo, hi) = (
        p99s.iter().copied().fold(f64::INFINITY, f64::min),
        p99s.iter().copied().fold(0.0, f64::max),
    );
    let rps_range = (0.0, if max_rps > 0.0 { max_rps * 1.1 } else { 1.0 });
    let p99_range = if lo.is_finite() {
        (10f64.powf((lo / 1.5).log10().floor()), hi * 1.5)
    } else {
        (1.0, 10.0)
    };
    let _ = write!(html, "<h2 id=\"over-time\">Over time: echo <code>{}</code></h2><p>Requests per second and corrected p99 latency per {} ms interval of the measured window, one trial per model (the one with the median throughput), a panel per family; panels of one quantity share their scale. A dip shows a stall (a pause of the server, a reaping, a loop that stopped), a slope a warm-up.</p>",
        escape(&name),
        chosen.first().and_then(|(_, l)| series::intervals(l)).map_or(0.0, |(w, _)| w));
    let names: Vec<&str> = chosen.iter().map(|(m, _)| *m).collect();
    html.push_str("<div class=\"grid\">");
    for (family, members) in families::group(&names, &families::external_models(&run.lines)) {
        for p99 in [false, true] {
            let mut lines = Vec::new();
            let mut styles = Vec::new();
            for (model, line) in chosen.iter().filter(|(m, _)| members.contains(m)) {
                lines.push(Series {
                    name: model.to_string(),
                    points: points(line, p99),
                });
                styles.push(charts::style_index(models, model));
            }
            let title = if p99 {
                format!("{family}: p99 latency over time")
            } else {
                format!("{family}: throughput over time")
            };
            let svg = charts::lines_in(
                &Axes {
                    title: &title,
                    x: "seconds into the measured window",
                    y: if p99 {
                        "p99 latency, µs (log scale)"
                    } else {
                        "requests per second"
                    },
                    log_x: false,
                    log_y: p99,
                },
                &lines,
                &styles,
                Some(if p99 { p99_range } else { rps_range }),
            )?;
            let _ = write!(html, "<figure>{svg}</figure>");
        }
    }
    html.push_str("</div>");
    let stalled: Vec<String> = chosen
        .iter()
        .filter_map(|(m, l)| {
            let text = series::stalls(l)?.describe()?;
            Some(format!("<b>{}</b> {}", escape(m), escape(&text)))
        })
        .collect();
    if stalled.is_empty() {
        html.push_str(
            "<p>No model's throughput fell below half its median in any interval of this cell.</p>",
        );
    } else {
        let _ = write!(
            html,
            "<p>Throughput below half its median: {}.</p>",
            stalled.join("; ")
        );
    }
    Ok(())
}

/// Jain's fairness index per model for each scenario and parameters, with the connections a
/// model never served named on its bar (the blocking pools serve at most their workers).
fn fairness_html(run: &Run, models: &[String], html: &mut String) -> Result<(), String> {
    let mut groups: BTreeMap<(String, String), BTreeMap<String, Vec<&Value>>> = BTreeMap::new();
    for line in run.ok().filter(|l| series::served(l).is_some()) {
        let cell = str_of(line, "cell");
        let params = cell.rsplit('/').next().unwrap_or("").to_string();
        groups
            .entry((str_of(line, "scenario"), params))
            .or_default()
            .entry(str_of(line, "model"))
            .or_default()
            .push(line);
    }
    if groups.is_empty() {
        return Ok(());
    }
    html.push_str("<h2 id=\"fairness\">Fairness across connections</h2><p>Requests each connection completed in the measured window, summed up as Jain's index: 1 when every connection got as many, k/n when k of n got the same and the others none (the median over trials). A model that served only some of its connections says how many: a pool of N workers serves at most N at once.</p><div class=\"grid\">");
    for ((scenario, params), by_model) in &groups {
        let mut bars = Vec::new();
        let mut styles = Vec::new();
        for model in models {
            let Some(lines) = by_model.get(model) else {
                continue;
            };
            let jains: Vec<f64> = lines
                .iter()
                .map(|l| series::jain(l).unwrap_or(0.0))
                .collect();
            let (served, connections) = lines
                .iter()
                .filter_map(|l| series::served(l))
                .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
            let note = match served {
                0 => Some("none served".to_string()),
                s if s < connections => Some(format!("at most {s} of {connections} served")),
                _ => None,
            };
            bars.push(charts::FairBar {
                name: model.clone(),
                jain: median(&jains),
                note,
            });
            styles.push(charts::style_index(models, model));
        }
        let title = format!("Fairness: {scenario} {params}");
        let svg = charts::fairness(&title, &bars, &styles)?;
        let _ = write!(html, "<figure>{svg}</figure>");
    }
    html.push_str("</div>");
    Ok(())
}

pub fn decode(text: &str) -> Result<hdrhistogram::Histogram<u64>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram: {e}"))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram: {e:?}"))
}

/// One or two sentences about a model, generated from this run's data.
pub fn measured_sentences(run: &Run, model: &str) -> String {
    measured_sentences_in(run, &tiers::judge(&run.lines), model)
}

/// [`measured_sentences`] with the run's tiers already judged: the median over trials (not
/// the best trial) and the tier, for each echo cell.
pub fn measured_sentences_in(run: &Run, groups: &[Group], model: &str) -> String {
    let mine: Vec<&Value> = run
        .lines
        .iter()
        .filter(|l| str_of(l, "model") == model)
        .collect();
    let mut sentences = Vec::new();
    if let Some(line) = mine.iter().find(|l| l["status"] == "unsupported") {
        return format!(
            "Not run here: {}.",
            line["reason"].as_str().unwrap_or("unsupported")
        );
    }
    let mut echo_medians = Vec::new();
    for g in groups.iter().filter(|g| g.scenario == "echo") {
        if let Some(e) = g.headline.of(model) {
            echo_medians.push(e.median);
            sentences.push(format!(
                "Echo at {}: median {} {} over {} trials, tier {} of {}{}.",
                g.params,
                fmt_num(e.median),
                g.unit,
                e.values.len(),
                e.tier,
                g.headline.count(),
                if e.ratio < 1.0 {
                    format!(" ({:.2}x the best)", e.ratio)
                } else {
                    String::new()
                }
            ));
        }
    }
    let best = echo_medians.iter().copied().fold(f64::NAN, f64::max);
    let idle = groups
        .iter()
        .filter(|g| g.scenario == "idle")
        .filter_map(|g| Some((g, g.headline.of(model)?)))
        .max_by_key(|(g, _)| {
            g.lines
                .values()
                .flatten()
                .find_map(|l| param(l, "idle"))
                .unwrap_or(0)
        });
    if let (Some((g, e)), true) = (idle, best.is_finite() && best > 0.0) {
        sentences.push(format!(
            "With {} idle connections open its median kept {:.0}% of its best echo median.",
            g.lines
                .values()
                .flatten()
                .find_map(|l| param(l, "idle"))
                .unwrap_or(0),
            e.median / best * 100.0
        ));
    }
    let (resets, connects): (u64, u64) = mine
        .iter()
        .map(|l| {
            (
                l["load"]["errors"]["reset"].as_u64().unwrap_or(0),
                l["load"]["errors"]["connect"].as_u64().unwrap_or(0),
            )
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    if resets + connects > 0 {
        sentences.push(format!(
            "It closed or refused connections {} times across the run{}.",
            resets + connects,
            if model == "select" {
                " (descriptors past FD_SETSIZE are closed at accept)"
            } else {
                ""
            }
        ));
    }
    let starved = mine
        .iter()
        .filter_map(|l| l["load"]["starved_connections"].as_u64())
        .max()
        .unwrap_or(0);
    if starved > 0 {
        sentences.push(format!("Up to {starved} connections of a cell were never served: it serves fewer clients at once than connected."));
    }
    let failed = mine.iter().filter(|l| l["status"] == "failed").count();
    if failed > 0 {
        sentences.push(format!("{failed} cells failed (see below)."));
    }
    if sentences.is_empty() {
        "No ok cell in this run.".into()
    } else {
        sentences.join(" ")
    }
}

/// The model's measured system calls per request, from `bench anatomy`'s `anatomy.json` in
/// the run directory (empty when it has no entry for the model).
fn anatomy_html(anatomy: &Value, model: &str) -> String {
    let entry = &anatomy["models"][model];
    let Some(calls) = entry["syscalls_per_request"].as_object() else {
        return String::new();
    };
    let mut calls: Vec<(&String, f64)> = calls
        .iter()
        .filter_map(|(name, v)| Some((name, v.as_f64()?)))
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let list: Vec<String> = calls
        .iter()
        .map(|(name, n)| format!("<code>{}</code> {n:.2}", escape(name)))
        .collect();
    let workload = &anatomy["workload"];
    let switches = entry["context_switches_per_request"]
        .as_f64()
        .map(|c| format!("; {c:.2} context switches"))
        .unwrap_or_default();
    format!(
        "<p class=\"anatomy\">System calls per request, measured: {} (total {:.2}{switches}; <code>bench anatomy</code> with {}, echo {} B over {} connections).</p>",
        list.join(", "),
        entry["total_syscalls_per_request"].as_f64().unwrap_or(0.0),
        escape(anatomy["tool"].as_str().unwrap_or("?")),
        workload["size"],
        entry["connections"],
    )
}

/// What ran for an external server: its command and protocols, from its result lines.
fn external_html(run: &Run, model: &str) -> Option<String> {
    let line = run
        .lines
        .iter()
        .find(|l| str_of(l, "model") == model && l["external"].is_object())?;
    let words = |key: &str| -> Vec<String> {
        line["external"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(format!(
        "<p>An external server (family <em>external</em>), run by command: <code>{}</code>, speaking {}. bench started it pinned, sampled its whole process tree and stopped it with SIGTERM, as it does the built-in models.</p>",
        escape(&words("command").join(" ")),
        escape(&words("protocols").join(", "))
    ))
}

/// The section of docs/MODELS.md whose heading names `model`, as HTML.
pub fn model_doc_html(model: &str) -> String {
    let needle = format!("`{model}`");
    doc_section_html(|heading| heading.contains(&needle))
}

/// The first section of docs/MODELS.md whose heading line passes `heading`, as HTML: its
/// paragraphs, code blocks and tables, up to the next heading.
fn doc_section_html(heading: impl Fn(&str) -> bool) -> String {
    let mut lines = MODELS_MD
        .lines()
        .skip_while(|l| !(l.starts_with('#') && heading(l)));
    let Some(_) = lines.next() else {
        return String::new();
    };
    let mut html = String::new();
    let mut in_code = false;
    let mut paragraph = String::new();
    let mut table: Vec<&str> = Vec::new();
    let flush = |p: &mut String, table: &mut Vec<&str>, html: &mut String| {
        if !p.trim().is_empty() {
            let _ = write!(html, "<p>{}</p>", inline_code(&escape(p.trim())));
        }
        p.clear();
        if !table.is_empty() {
            html.push_str("<div class=\"scroll\"><table>");
            for (i, row) in table.iter().enumerate() {
                let cells = row.trim().trim_matches('|').split('|');
                if cells.clone().all(|c| {
                    c.trim()
                        .trim_matches(|ch| ch == '-' || ch == ':')
                        .is_empty()
                }) {
                    continue; // the |---|---:| line
                }
                let tag = if i == 0 { "th" } else { "td" };
                html.push_str("<tr>");
                for cell in cells {
                    let _ = write!(html, "<{tag}>{}</{tag}>", inline_code(&escape(cell.trim())));
                }
                html.push_str("</tr>");
            }
            html.push_str("</table></div>");
            table.clear();
        }
    };
    for line in lines {
        if line.starts_with('#') {
            break;
        }
        if line.starts_with("```") {
            flush(&mut paragraph, &mut table, &mut html);
            html.push_str(if in_code { "</pre>" } else { "<pre>" });
            in_code = !in_code;
        } else if in_code {
            let _ = writeln!(html, "{}", escape(line));
        } else if line.starts_with('|') {
            if table.is_empty() {
                flush(&mut paragraph, &mut table, &mut html); // a paragraph right above
            }
            table.push(line);
        } else if line.trim().is_empty() {
            flush(&mut paragraph, &mut table, &mut html);
        } else {
            paragraph.push_str(line);
            paragraph.push(' ');
        }
    }
    flush(&mut paragraph, &mut table, &mut html);
    html
}

/// Markdown's inline `code` and **bold**, on already escaped text.
fn inline_code(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            for (j, piece) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<b>{piece}</b>");
                } else {
                    out.push_str(piece);
                }
            }
        }
    }
    out
}

fn failures_html(run: &Run, html: &mut String) {
    let bad: Vec<&Value> = run.not_ok().collect();
    html.push_str("<h2 id=\"failures\">Failed and unsupported cells</h2>");
    if !run.damaged.is_empty() {
        let _ = write!(
            html,
            "<p class=\"warn\">{} damaged line{} of results.jsonl skipped (<code>bench run --resume</code> runs their cells again):</p><ul>",
            run.damaged.len(),
            if run.damaged.len() == 1 { "" } else { "s" }
        );
        for e in &run.damaged {
            let _ = write!(html, "<li>{}</li>", escape(&e.to_string()));
        }
        html.push_str("</ul>");
    }
    if bad.is_empty() {
        html.push_str("<p>None: every cell ran to the end and every server stopped cleanly.</p>");
        return;
    }
    html.push_str("<table><tr><th>cell</th><th>trial</th><th>status</th><th>reason</th></tr>");
    for line in bad {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&str_of(line, "cell")),
            line["trial"],
            escape(&str_of(line, "status")),
            escape(line["reason"].as_str().unwrap_or(""))
        );
    }
    html.push_str("</table>");
}

fn env_html(run: &Run, html: &mut String) {
    html.push_str("<h2 id=\"env\">Environment and raw data</h2><table>");
    if let Some(env) = run.env.as_object() {
        for (k, v) in env.iter().filter(|(k, _)| k.as_str() != "suite") {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let _ = write!(
                html,
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                escape(k),
                escape(&text)
            );
        }
    }
    html.push_str("</table><p>Raw data: <a href=\"results.jsonl\">results.jsonl</a> (one JSON line per cell, histograms included) and <a href=\"env.json\">env.json</a>.");
    let criterion = run.dir.join("../../target/criterion/report/index.html");
    if criterion.exists() {
        html.push_str(" Micro-benchmarks: <a href=\"../../target/criterion/report/index.html\">criterion report</a>.");
    }
    html.push_str("</p>");
}

const INTRO: &str = "<p class=\"intro\">Each <b>model</b> is one small server (blocking with a thread or process per connection, pools, busy polling, select, poll, epoll, signal-driven I/O, io_uring, and library references) speaking the same protocols. Each <b>cell</b> ran the server pinned to one CPU and the load generator pinned to another, several trials interleaved across models. Throughput counts verified replies only; latency is from HdrHistogram, corrected for coordinated omission in the open-loop scenario. Compare models within this run: two cores on a shared machine are noisy, so read the tiers (which differences the data supports) before the order.</p><p class=\"toc\"><a href=\"#summary\">Summary</a> · <a href=\"#charts\">Charts</a> · <a href=\"#models\">Models</a> · <a href=\"#silent\">Silent clients</a> · <a href=\"#failures\">Failures</a> · <a href=\"#env\">Environment</a></p>";

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1340px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}.sub{color:#555}table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:.92em}th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}.warn{color:#b35900;font-weight:bold}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(640px,1fr));gap:12px}figure{margin:0;border:1px solid #eee}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.85em}.model{border-left:3px solid #ddd;padding-left:1em;margin:1em 0}.measured{font-weight:500}.scroll{overflow-x:auto}tr.t1 td{background:#f2f6fb}.words{margin-top:-.6em}";
