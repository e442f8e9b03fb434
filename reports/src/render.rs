//! `report render`: one self-contained `report.html` (inline SVG, no script, no network).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::charts::{self, Axes, Row, Scale, Series, ValueAxis};
use crate::identity::Identities;
use crate::metrics::Metric;
use crate::noise;
use crate::run::{param, str_of, Run};
use crate::series;
use crate::stats::{median, median_ci};
use crate::text::Lang;
use crate::tiers::{self, Group, Tiers};
use crate::verdict;

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

/// `report.html` in English.
pub fn render(run: &Run, out: &Path) -> Result<(), String> {
    render_in(run, out, Lang::En)
}

/// `report.html` in `lang`: the same page, numbers and model names unchanged.
pub fn render_in(run: &Run, out: &Path, lang: Lang) -> Result<(), String> {
    let models = run.models();
    let mut html = String::new();
    let id = run
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title><style>{}</style></head><body>",
        lang.code(),
        escape(&lang.say("page.title", &[("run", &id)])),
        CSS
    );
    let _ = write!(
        html,
        "<h1>{}</h1><p class=\"sub\">{}</p>",
        lang.get("page.h1"),
        escape(&lang.say(
            "page.sub",
            &[
                ("run", &id),
                ("cells", &run.lines.len()),
                ("models", &models.len()),
                ("cpu", &run.env["cpu_model"].as_str().unwrap_or("?")),
                ("kernel", &run.env["kernel"].as_str().unwrap_or("?")),
            ]
        ))
    );
    html.push_str(lang.get("page.intro"));
    let groups = tiers::judge(&run.lines);
    verdict_html(&groups, lang, &mut html);
    summary_html(run, &groups, lang, &mut html);
    let _ = write!(
        html,
        "<h2 id=\"charts\">{}</h2><div class=\"grid\">",
        lang.get("h2.charts")
    );
    for figure in all_charts(run, &models, lang)? {
        html.push_str(&figure);
    }
    html.push_str("</div>");
    over_time_html(run, &models, lang, &mut html)?;
    fairness_html(run, &models, lang, &mut html)?;
    let _ = write!(html, "<h2 id=\"models\">{}</h2>", lang.get("h2.models"));
    let anatomy = std::fs::read_to_string(run.dir.join("anatomy.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    for model in &models {
        let _ = write!(
            html,
            "<section class=\"model\"><h3>{}</h3><p class=\"measured\">{}</p>{}{}</section>",
            escape(model),
            escape(&verdict::model_sentences(run, &groups, model, lang).join(" ")),
            anatomy
                .as_ref()
                .map(|a| anatomy_html(a, model, lang))
                .unwrap_or_default(),
            external_html(run, model, lang).unwrap_or_else(|| model_doc_html(model, lang))
        );
    }
    // The slowloris lesson: what a silent client costs each model (measured in MODELS.md).
    let silent = lang.get("doc.silent_heading");
    let _ = write!(
        html,
        "<h2 id=\"silent\">{}</h2>{}",
        lang.get("h2.silent"),
        doc_section_html(lang.models_md(), |heading| heading.starts_with(silent))
    );
    failures_html(run, lang, &mut html);
    env_html(run, lang, &mut html);
    html.push_str("</body></html>\n");
    crate::run::replace_file(out, html.as_bytes())
}

/// The verdict first: per scenario, who wins, by how much, what ties, and why.
fn verdict_html(groups: &[Group], lang: Lang, html: &mut String) {
    let verdicts = verdict::verdicts(groups, lang);
    if verdicts.is_empty() {
        return;
    }
    let _ = write!(
        html,
        "<h2 id=\"verdict\">{}</h2><p>{}</p><div class=\"verdict\">",
        lang.get("h2.verdict"),
        lang.get("verdict.intro")
    );
    // The answer on the first line, its reasons and caveats one a line below it.
    for v in verdicts {
        let (lead, rest) = v.sentences.split_first().expect("a verdict has its lead");
        let _ = write!(
            html,
            "<div><p><b>{}</b> <code>{}</code>{}{}</p>",
            escape(&v.scenario),
            escape(&v.params),
            lang.get("colon"),
            escape(lead)
        );
        if !rest.is_empty() {
            html.push_str("<ul>");
            for sentence in rest {
                let _ = write!(html, "<li>{}</li>", escape(sentence));
            }
            html.push_str("</ul>");
        }
        html.push_str("</div>");
    }
    html.push_str("</div>");
}

/// The run's `precision.json` (adaptive trials), if it has one.
pub fn precision_of(run: &Run) -> Option<Value> {
    std::fs::read_to_string(run.dir.join("precision.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// A precision reached, as a percentage: one decimal below 10%, so that a cell short of a
/// 5% target never reads "± 5%" (5.3% would).
fn precision_pct(share: f64) -> String {
    let pct = share * 100.0;
    if pct < 10.0 {
        format!("{pct:.1}%")
    } else {
        format!("{pct:.0}%")
    }
}

/// Notes on one model in one group, in `lang` (the terminal summary's are English):
/// failures, errors, starved connections, trials flagged noisy (with the reason), a precision
/// target missed, stalls.
pub fn notes(lines: &[&Value], precision: Option<&Value>, lang: Lang) -> Vec<String> {
    let mut notes = Vec::new();
    // A status is a word of the result lines (failed, unsupported), quoted as it is.
    let not_ok: Vec<String> = lines
        .iter()
        .filter(|l| l["status"] != "ok")
        .map(|l| str_of(l, "status"))
        .collect();
    if !not_ok.is_empty() {
        notes.push(not_ok.join(lang.get("list.sep")));
    }
    let errors: u64 = lines.iter().map(|l| error_total(l)).sum();
    if errors > 0 {
        let key = if errors == 1 {
            "notes.error"
        } else {
            "notes.errors"
        };
        notes.push(lang.say(key, &[("n", &errors)]));
    }
    let starved = lines
        .iter()
        .filter_map(|l| l["load"]["starved_connections"].as_u64())
        .max()
        .unwrap_or(0);
    if starved > 0 {
        let key = if starved == 1 {
            "notes.starved_one"
        } else {
            "notes.starved"
        };
        notes.push(lang.say(key, &[("n", &starved)]));
    }
    // The trial that stalled most often (from the interval series of schema 2 lines).
    let stalls = lines
        .iter()
        .filter_map(|l| series::stalls(l))
        .max_by_key(|s| s.count)
        .and_then(|s| s.describe(lang));
    let flagged: Vec<Vec<String>> = lines
        .iter()
        .map(|l| noise::flags(l, lang))
        .filter(|f| !f.is_empty())
        .collect();
    if let Some(first) = flagged.first() {
        notes.push(lang.say(
            "notes.noisy",
            &[
                ("noisy", &flagged.len()),
                ("trials", &lines.len()),
                ("reasons", &first.join(lang.get("notes.sep"))),
            ],
        ));
    }
    if let (Some(p), Some(cell)) = (precision, lines.first().and_then(|l| l["cell"].as_str())) {
        let c = &p["cells"][cell];
        if let Some(outcome) = c["outcome"]
            .as_str()
            .filter(|o| *o == "max_trials" || *o == "max_time")
        {
            notes.push(
                lang.say(
                    "notes.short",
                    &[
                        (
                            "precision",
                            &c["precision"]
                                .as_f64()
                                .map(precision_pct)
                                .unwrap_or_else(|| "?".into()),
                        ),
                        ("trials", &c["trials"]),
                        (
                            "target",
                            &format!("{:.0}", p["target"].as_f64().unwrap_or(0.0) * 100.0),
                        ),
                        ("outcome", &lang.get(&format!("notes.{outcome}"))),
                    ],
                ),
            );
        }
    }
    notes.extend(stalls);
    notes
}

fn better(t: &Tiers, lang: Lang) -> &'static str {
    lang.get(if t.higher_is_better {
        "summary.higher"
    } else {
        "summary.lower"
    })
}

/// The summary: per scenario and parameters, the models in tiers on the headline metric and
/// on CPU per request, and the tiers in words.
fn summary_html(run: &Run, groups: &[Group], lang: Lang, html: &mut String) {
    let precision = precision_of(run);
    let _ = write!(
        html,
        "<h2 id=\"summary\">{}</h2><p>{}</p>",
        lang.get("h2.summary"),
        lang.say(
            "summary.intro",
            &[("rule", &escape(lang.get("tiers.rule")))]
        )
    );
    if let Some(said) = pauses_sentence(&run.env["pauses"], lang) {
        let _ = write!(html, "<p>{said}</p>");
    }
    if let Some((best, apart, probed, rerun)) = crate::noise::apart_counts(&run.lines) {
        if apart > 0 {
            let _ = write!(
                html,
                "<p>{}</p>",
                lang.say(
                    if rerun > 0 {
                        "summary.apart"
                    } else {
                        "summary.apart_kept"
                    },
                    &[
                        ("best", &best),
                        ("apart", &apart),
                        ("probed", &probed),
                        ("rerun", &rerun),
                    ]
                )
            );
        }
    }
    if let Some(p) = &precision {
        let cells = p["cells"].as_object();
        let met = cells.map_or(0, |c| c.values().filter(|v| v["outcome"] == "met").count());
        let _ = write!(
            html,
            "<p>{}</p>",
            lang.say(
                "summary.adaptive",
                &[
                    (
                        "target",
                        &format!("{:.0}", p["target"].as_f64().unwrap_or(0.0) * 100.0)
                    ),
                    ("min", &p["min_trials"]),
                    ("max", &p["max_trials"]),
                    ("met", &met),
                    ("cells", &cells.map_or(0, |c| c.len())),
                ]
            )
        );
    }
    for g in groups {
        let unit = g.unit;
        let _ = write!(
            html,
            "<h3>{} <code>{}</code></h3><table><tr>{}</tr>",
            escape(&g.scenario),
            escape(&g.params),
            lang.say(
                "summary.header",
                &[
                    ("unit", &escape(unit)),
                    ("better", &better(&g.headline, lang)),
                    ("cpu_better", &better(&g.efficiency, lang)),
                ]
            )
        );
        let order = g.models();
        let ids = Identities::new(&run.models());
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
                ids.swatch(model) + &escape(model),
                h.map(tiers::median_pm).unwrap_or_else(|| "-".into()),
                h.map(|h| format!("{} – {}", fmt_num(h.ci.0), fmt_num(h.ci.1))).unwrap_or_default(),
                h.map(|x| tiers::ratio_pm(x, first(&g.headline, x))).unwrap_or_default(),
                h.map(|h| format!("{:.1}%", h.cv * 100.0)).unwrap_or_default(),
                g.lines[model].iter().filter(|l| l["status"] == "ok").count(),
                e.map(|e| e.tier.to_string()).unwrap_or_else(|| "-".into()),
                e.map(tiers::median_pm).unwrap_or_else(|| "-".into()),
                e.map(|x| tiers::ratio_pm(x, first(&g.efficiency, x))).unwrap_or_default(),
                escape(&notes(&g.lines[model], precision.as_ref(), lang).join(lang.get("notes.sep")))
            );
        }
        let metric = match g.metric {
            Metric::P99 => lang.get("summary.latency_p99"),
            _ => lang.get("summary.throughput"),
        };
        let _ = write!(
            html,
            "</table><p class=\"words\">{} {}{}",
            lang.say("summary.label", &[("name", &metric)]),
            escape(&g.headline.words_in(lang)),
            lang.get("stop")
        );
        if g.efficiency.entries.len() > 1 {
            let _ = write!(
                html,
                " {} {}{}",
                lang.say("summary.label", &[("name", &lang.get("summary.cpu"))]),
                escape(&g.efficiency.words_in(lang)),
                lang.get("stop")
            );
        }
        html.push_str("</p>");
    }
}

/// A series per model of `scenario`'s ok lines that pass `filter`: the median of `y` at each
/// `x`.
fn series_by_model(
    run: &Run,
    models: &[String],
    scenario: &str,
    filter: impl Fn(&Value) -> bool,
    x: impl Fn(&Value) -> Option<f64>,
    y: Metric,
) -> Vec<Series> {
    let ids = Identities::new(models);
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
    for model in models {
        if let Some(p) = points.get(model) {
            let mut pts: Vec<(f64, f64)> = p
                .iter()
                .map(|(x, ys)| (f64::from_bits(*x), median(ys)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(Series {
                name: model.clone(),
                identity: ids.of(model),
                points: pts,
            });
        }
    }
    series
}

/// One bar per model (the median over trials, its 95% interval as a whisker), longest first.
fn bar_chart(
    models: &[String],
    title: &str,
    axis: &ValueAxis,
    lines: &[&Value],
    value: impl Fn(&Value) -> Option<f64>,
) -> Result<Option<String>, String> {
    let ids = Identities::new(models);
    let mut by_model: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in lines {
        if let Some(v) = value(line) {
            by_model.entry(str_of(line, "model")).or_default().push(v);
        }
    }
    if by_model.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<Row> = by_model
        .into_iter()
        .map(|(name, v)| Row {
            value: median(&v),
            ci: Some(median_ci(&v)),
            identity: ids.of(&name),
            note: None,
            name,
        })
        .collect();
    rows.sort_by(|a, b| b.value.total_cmp(&a.value));
    let svg = charts::bars(title, axis, &rows)?;
    Ok(Some(format!("<figure class=\"bars\">{svg}</figure>")))
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

/// Whether values span more than a decade (their largest over their smallest positive), so
/// that a linear axis would leave all but the largest as slivers.
fn spans_decades(values: impl Iterator<Item = f64>) -> bool {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    hi / lo > 10.0
}

/// The fewest x values a curve needs to show a trend: with fewer, the chart is left out and a
/// sentence says which suites draw it (a line through one or two points shows no growth or
/// collapse, whatever the text around it promises).
pub const CURVE_POINTS: usize = 3;

/// The distinct x values of `points`, in order.
fn distinct_x<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> Vec<f64> {
    let mut xs: Vec<f64> = points.map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs
}

/// A chart of curves: the small multiples of `series` when some series has
/// [`CURVE_POINTS`] x values, else a sentence saying what the run measured (`axis`, a text
/// key naming the x values) and which suites draw it; nothing without series.
fn curve_chart(
    lang: Lang,
    title: &str,
    axes: &Axes,
    axis: &str,
    series: Vec<Series>,
) -> Result<Option<String>, String> {
    if series.is_empty() {
        return Ok(None);
    }
    if series
        .iter()
        .any(|s| distinct_x(s.points.iter()).len() >= CURVE_POINTS)
    {
        return charts::multiples(title, axes, &charts::panels(series), None).map(Some);
    }
    // Connection counts and rates are whole numbers: no decimals.
    let values: Vec<String> = distinct_x(series.iter().flat_map(|s| s.points.iter()))
        .iter()
        .map(|x| match x.abs() >= 1000.0 {
            true => fmt_num(*x),
            false => format!("{x:.0}"),
        })
        .collect();
    let sentence = lang.say(
        "chart.left_out",
        &[
            ("title", &escape(title)),
            ("axis", &lang.get(axis)),
            ("values", &values.join(", ")),
            ("min", &CURVE_POINTS),
        ],
    );
    Ok(Some(format!("<p class=\"left-out\">{sentence}</p>")))
}

fn all_charts(run: &Run, models: &[String], lang: Lang) -> Result<Vec<String>, String> {
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
        let series = series_by_model(
            run,
            models,
            "echo",
            |l| param(l, "size") == Some(size),
            |l| param(l, "connections").map(|c| c as f64),
            Metric::Throughput,
        );
        let axes = Axes {
            x: lang.get("chart.echo.x"),
            y: lang.get("chart.rps"),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
        };
        let title = lang.say("chart.echo.title", &[("size", &size)]);
        out.extend(curve_chart(
            lang,
            &title,
            &axes,
            "chart.axis.connections",
            series,
        )?);
    }
    if let Some(html) = spectrum(run, models, lang)? {
        out.push(html);
    }
    let series = series_by_model(
        run,
        models,
        "rate",
        |_| true,
        |l| param(l, "rate").map(|r| r as f64),
        Metric::P99,
    );
    let axes = Axes {
        x: lang.get("chart.rate.x"),
        y: lang.get("chart.rate.y"),
        x_scale: Scale::Linear,
        y_scale: Scale::Log,
    };
    let title = lang.get("chart.rate.title");
    out.extend(curve_chart(lang, title, &axes, "chart.axis.rates", series)?);
    let series = series_by_model(
        run,
        models,
        "idle",
        |_| true,
        |l| param(l, "idle").map(|i| i as f64),
        Metric::Throughput,
    );
    let axes = Axes {
        x: lang.get("chart.idle.x"),
        y: lang.get("chart.rps"),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
    };
    let title = lang.get("chart.idle.title");
    out.extend(curve_chart(lang, title, &axes, "chart.axis.idle", series)?);
    let linear = |desc| ValueAxis {
        desc,
        log: false,
        range: None,
    };
    let churn = representative(run, "churn");
    if let Some(svg) = bar_chart(
        models,
        lang.get("chart.churn.title"),
        &linear(lang.get("chart.churn.x")),
        &churn,
        |l| l["load"]["connects_per_s"].as_f64(),
    )? {
        out.push(svg);
    }
    let bulk = representative(run, "bulk");
    for (field, way) in [
        ("upload_bps", lang.get("chart.bulk.up")),
        ("download_bps", lang.get("chart.bulk.down")),
    ] {
        if let Some(svg) = bar_chart(
            models,
            &lang.say("chart.bulk.title", &[("way", &way)]),
            &linear(lang.get("chart.bulk.x")),
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
        models,
        &lang.say("chart.cpu.title", &[("params", &params)]),
        &linear(lang.get("chart.cpu.x")),
        &echo,
        |l| l["server"]["cpu_us_per_request"].as_f64(),
    )? {
        out.push(svg);
    }
    if let Some((lo, hi, mut rows)) = marginal_memory(run, models) {
        // A pool's idle clients wait in the listen queue and select refuses those past
        // FD_SETSIZE: their memory does not grow, which a bar of zero length would hide.
        for row in rows.iter_mut().filter(|r| r.value <= 0.0) {
            row.note = Some(lang.get("chart.pss_marginal.flat").to_string());
            row.ci = None;
        }
        let axis = pss_axis(lang, rows.iter().map(|r| r.value));
        let title = lang.say("chart.pss_marginal.title", &[("lo", &lo), ("hi", &hi)]);
        let svg = charts::bars(&title, &axis, &rows)?;
        out.push(format!("<figure class=\"bars\">{svg}</figure>"));
        return Ok(out);
    }
    let mut pss_cells = representative(run, "idle");
    if pss_cells.is_empty() {
        pss_cells = echo.clone();
    }
    let pss = |l: &Value| l["server"]["pss_kib_per_conn"].as_f64();
    if let Some(svg) = bar_chart(
        models,
        lang.get("chart.pss.title"),
        &pss_axis(lang, pss_cells.iter().filter_map(|l| pss(l))),
        &pss_cells,
        pss,
    )? {
        out.push(svg);
    }
    Ok(out)
}

/// The axis of a memory-per-connection chart: a process per connection costs a hundred
/// times an event loop's bytes, so on a linear axis every event loop would be a sliver; log
/// when the values span more than a decade.
fn pss_axis(lang: Lang, values: impl Iterator<Item = f64>) -> ValueAxis<'static> {
    let log = spans_decades(values);
    ValueAxis {
        desc: if log {
            lang.get("chart.pss.x_log")
        } else {
            lang.get("chart.pss.x")
        },
        log,
        range: None,
    }
}

/// What one more connection costs each model in memory: its peak PSS with the most idle
/// connections the run has minus with the fewest, over the connections between, per trial
/// (paired by trial number), the median and its 95% interval. Peak PSS over the connections
/// of one cell would spread a model's fixed memory (a buffer ring, a pool's workers) over a
/// few hundred connections and rank that instead. `None` without idle cells at two counts.
fn marginal_memory(run: &Run, models: &[String]) -> Option<(u64, u64, Vec<Row>)> {
    let idle: Vec<&Value> = run
        .ok()
        .filter(|l| str_of(l, "scenario") == "idle")
        .collect();
    let counts: Vec<u64> = idle.iter().filter_map(|l| param(l, "idle")).collect();
    let (lo, hi) = (*counts.iter().min()?, *counts.iter().max()?);
    if lo == hi {
        return None;
    }
    let ids = Identities::new(models);
    let mut rows = Vec::new();
    for model in models {
        let at = |count: u64| -> BTreeMap<u64, f64> {
            idle.iter()
                .filter(|l| str_of(l, "model") == *model && param(l, "idle") == Some(count))
                .filter_map(|l| Some((l["trial"].as_u64()?, l["server"]["peak_pss_kib"].as_f64()?)))
                .collect()
        };
        let (few, many) = (at(lo), at(hi));
        let slopes: Vec<f64> = many
            .iter()
            .filter_map(|(trial, m)| Some((m - few.get(trial)?) / (hi - lo) as f64))
            .collect();
        if slopes.is_empty() {
            continue;
        }
        rows.push(Row {
            name: model.clone(),
            identity: ids.of(model),
            value: median(&slopes),
            ci: (slopes.len() > 1).then(|| median_ci(&slopes)),
            note: None,
        });
    }
    rows.sort_by(|a, b| b.value.total_cmp(&a.value));
    (!rows.is_empty()).then_some((lo, hi, rows))
}

/// The HdrHistogram-style percentile spectrum: latency at 50% .. 99.99%, trials merged.
fn spectrum(run: &Run, models: &[String], lang: Lang) -> Result<Option<String>, String> {
    let scenario = if run.ok().any(|l| str_of(l, "scenario") == "rate") {
        "rate"
    } else {
        "echo"
    };
    let ids = Identities::new(models);
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
    for model in models {
        if let Some(h) = merged.get(model).filter(|h| !h.is_empty()) {
            let points = quantiles
                .iter()
                .map(|&q| (1.0 / (1.0 - q), h.value_at_quantile(q).max(1) as f64))
                .collect();
            series.push(Series {
                name: model.clone(),
                identity: ids.of(model),
                points,
            });
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let params = cells.first().map(|l| str_of(l, "cell")).unwrap_or_default();
    let cell = params
        .split('/')
        .next_back()
        .map(|p| format!("{scenario} {p}"))
        .unwrap_or_default();
    let title = lang.say("chart.spectrum.title", &[("cell", &cell)]);
    charts::multiples(
        &title,
        &Axes {
            x: lang.get("chart.spectrum.x"),
            y: lang.get("chart.spectrum.y"),
            x_scale: Scale::Percentile,
            y_scale: Scale::Log,
        },
        &charts::panels(series),
        None,
    )
    .map(Some)
}

/// The cell the over-time charts show: the echo cell with the most connections (of those
/// with a series), then the one with the most trials.
fn over_time_cell(run: &Run) -> Option<(Value, String)> {
    let mut best: Option<(u64, usize, Value, String)> = None;
    // Read once: `Run::ok` sorts out the replaced trials on every call.
    let echo: Vec<&Value> = run
        .ok()
        .filter(|l| str_of(l, "scenario") == "echo")
        .collect();
    for &line in echo.iter().filter(|l| series::intervals(l).is_some()) {
        let connections = param(line, "connections").unwrap_or(0);
        let params = line["params"].clone();
        let trials = echo.iter().filter(|l| l["params"] == params).count();
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

/// The fewest intervals a trial needs for "Over time" to be drawn: with fewer, a sentence
/// says so and which suites draw it.
pub const OVER_TIME_POINTS: usize = 3;

/// Throughput and p99 over time in one cell, one trial per model (its median), as small
/// multiples: a panel per family, every panel of a quantity on the same scale.
fn over_time_html(
    run: &Run,
    models: &[String],
    lang: Lang,
    html: &mut String,
) -> Result<(), String> {
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
    let ms = chosen
        .first()
        .and_then(|(_, l)| series::intervals(l))
        .map_or(0.0, |(w, _)| w);
    // Two intervals (the quick suite's quarter-second cells) show neither a stall
    // nor a warm-up, and "no model fell below half its median" would say nothing.
    let most = chosen
        .iter()
        .map(|(_, l)| points(l, false).len())
        .max()
        .unwrap_or(0);
    if most < OVER_TIME_POINTS {
        html.push_str(&lang.say(
            "over.short",
            &[
                ("cell", &escape(&name)),
                ("n", &most),
                ("ms", &ms),
                ("min", &OVER_TIME_POINTS),
            ],
        ));
        return Ok(());
    }
    html.push_str(&lang.say("over.intro", &[("cell", &escape(&name)), ("ms", &ms)]));
    let ids = Identities::new(models);
    for p99 in [false, true] {
        let series = chosen
            .iter()
            .map(|(model, line)| Series {
                name: model.to_string(),
                identity: ids.of(model),
                points: points(line, p99),
            })
            .collect();
        let figure = charts::multiples(
            lang.get(if p99 {
                "over.p99.title"
            } else {
                "over.rps.title"
            }),
            &Axes {
                x: lang.get("over.x"),
                y: lang.get(if p99 { "chart.rate.y" } else { "chart.rps" }),
                x_scale: Scale::Linear,
                y_scale: if p99 { Scale::Log } else { Scale::Linear },
            },
            &charts::panels(series),
            Some(if p99 { p99_range } else { rps_range }),
        )?;
        html.push_str(&figure);
    }
    let stalled: Vec<String> = chosen
        .iter()
        .filter_map(|(m, l)| {
            let text = series::stalls(l)?.describe(lang)?;
            Some(format!("<b>{}</b> {}", escape(m), escape(&text)))
        })
        .collect();
    if stalled.is_empty() {
        html.push_str(lang.get("over.none"));
    } else {
        html.push_str(&lang.say(
            "over.stalls",
            &[("list", &stalled.join(lang.get("notes.sep")))],
        ));
    }
    Ok(())
}

/// Jain's fairness index per model for each scenario and parameters, with the connections a
/// model never served named on its bar (the blocking pools serve at most their workers).
fn fairness_html(
    run: &Run,
    models: &[String],
    lang: Lang,
    html: &mut String,
) -> Result<(), String> {
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
    html.push_str(lang.get("fair.intro"));
    let ids = Identities::new(models);
    html.push_str("<div class=\"grid\">");
    for ((scenario, params), by_model) in &groups {
        let mut rows = Vec::new();
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
                0 => Some(lang.get("fair.none").to_string()),
                s if s < connections => {
                    Some(lang.say("fair.some", &[("served", &s), ("conns", &connections)]))
                }
                _ => None,
            };
            let jain = median(&jains).clamp(0.0, 1.0);
            rows.push(Row {
                name: model.clone(),
                identity: ids.of(model),
                value: jain,
                ci: None,
                note: Some(match note {
                    Some(note) => format!("{jain:.2}  {note}"),
                    None => format!("{jain:.2}"),
                }),
            });
        }
        let svg = charts::bars(
            &lang.say("fair.title", &[("cell", &format!("{scenario} {params}"))]),
            &ValueAxis {
                desc: lang.get("fair.x"),
                log: false,
                range: Some((0.0, 1.0)),
            },
            &rows,
        )?;
        let _ = write!(html, "<figure class=\"bars\">{svg}</figure>");
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

/// The model's measured system calls per request, from `bench anatomy`'s `anatomy.json` in
/// the run directory (empty when it has no entry for the model).
fn anatomy_html(anatomy: &Value, model: &str, lang: Lang) -> String {
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
        .map(|c| lang.say("anatomy.switches", &[("n", &format!("{c:.2}"))]))
        .unwrap_or_default();
    format!(
        "<p class=\"anatomy\">{}</p>",
        lang.say(
            "anatomy.line",
            &[
                ("calls", &list.join(", ")),
                (
                    "total",
                    &format!(
                        "{:.2}",
                        entry["total_syscalls_per_request"].as_f64().unwrap_or(0.0)
                    )
                ),
                ("switches", &switches),
                ("tool", &escape(anatomy["tool"].as_str().unwrap_or("?"))),
                ("size", &workload["size"]),
                ("connections", &entry["connections"]),
            ]
        )
    )
}

/// What ran for an external server: its command and protocols, from its result lines.
fn external_html(run: &Run, model: &str, lang: Lang) -> Option<String> {
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
    Some(lang.say(
        "model.external",
        &[
            ("command", &escape(&words("command").join(" "))),
            ("protocols", &escape(&words("protocols").join(", "))),
        ],
    ))
}

/// The section of docs/MODELS.md (or its translation) whose heading names `model`, as HTML.
pub fn model_doc_html(model: &str, lang: Lang) -> String {
    let needle = format!("`{model}`");
    doc_section_html(lang.models_md(), |heading| heading.contains(&needle))
}

/// The first section of `md` whose heading line passes `heading`, as HTML: its paragraphs,
/// code blocks and tables, up to the next heading.
fn doc_section_html(md: &str, heading: impl Fn(&str) -> bool) -> String {
    let mut lines = md
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
            // Lines of a paragraph join with a space, except where Chinese text meets a line
            // break: it has no spaces between words.
            let cjk = |c: Option<char>| c.is_some_and(|c| c >= '\u{2E80}');
            if !paragraph.is_empty() && !cjk(paragraph.chars().last()) && !cjk(line.chars().next())
            {
                paragraph.push(' ');
            }
            paragraph.push_str(line.trim());
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

fn failures_html(run: &Run, lang: Lang, html: &mut String) {
    let bad: Vec<&Value> = run.not_ok().collect();
    let _ = write!(html, "<h2 id=\"failures\">{}</h2>", lang.get("h2.failures"));
    if !run.damaged.is_empty() {
        let _ = write!(
            html,
            "<p class=\"warn\">{}</p><ul>",
            lang.say(
                if run.damaged.len() == 1 {
                    "failures.damaged_one"
                } else {
                    "failures.damaged"
                },
                &[("n", &run.damaged.len())]
            )
        );
        for e in &run.damaged {
            let _ = write!(html, "<li>{}</li>", escape(&e.to_string()));
        }
        html.push_str("</ul>");
    }
    if bad.is_empty() {
        let _ = write!(html, "<p>{}</p>", lang.get("failures.none"));
        return;
    }
    let _ = write!(html, "<table><tr>{}</tr>", lang.get("failures.header"));
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

/// The machine check of `env.json` (`pauses`, written by bench before the run) in words.
fn pauses_sentence(pauses: &Value, lang: Lang) -> Option<String> {
    let cpus = pauses["cpus"].as_array()?;
    let sum = |key: &str| cpus.iter().filter_map(|c| c[key].as_u64()).sum::<u64>();
    let longest = cpus.iter().filter_map(|c| c["longest_us"].as_u64()).max()?;
    let window = format!("{}", pauses["window_s"].as_f64()?);
    Some(match sum("over_1ms") {
        0 => lang.say(
            "summary.pauses_none",
            &[
                ("cpus", &cpus.len()),
                ("window", &window),
                ("longest", &longest),
            ],
        ),
        count => lang.say(
            "summary.pauses",
            &[
                ("cpus", &cpus.len()),
                ("window", &window),
                (
                    "times",
                    &match count {
                        1 => lang.get("times.one").to_string(),
                        n => lang.say("times.many", &[("n", &n)]),
                    },
                ),
                ("longest", &format!("{:.1}", longest as f64 / 1000.0)),
            ],
        ),
    })
}

fn env_html(run: &Run, lang: Lang, html: &mut String) {
    let _ = write!(html, "<h2 id=\"env\">{}</h2><table>", lang.get("h2.env"));
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
    let _ = write!(html, "</table><p>{}", lang.get("env.raw"));
    let criterion = run.dir.join("../../target/criterion/report/index.html");
    if criterion.exists() {
        html.push_str(lang.get("env.criterion"));
    }
    html.push_str("</p>");
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1340px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45;overflow-wrap:break-word}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}.sub{color:#555}table{border-collapse:collapse;margin:.5em 0 1.2em;display:block;max-width:100%;overflow-x:auto}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:.92em}th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td:has(.swatch){white-space:nowrap}.swatch{display:inline-block;vertical-align:middle;margin-right:5px}td:last-child{min-width:14em}.warn{color:#b35900;font-weight:bold}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,560px),1fr));gap:12px}figure{margin:0;border:1px solid #eee;min-width:0}figure.multiples{grid-column:1/-1;border:0}figcaption{font-weight:600;margin:.3em 0}.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,560px),1fr));gap:8px}.panels svg{border:1px solid #eee}svg{display:block;max-width:100%;height:auto;box-sizing:border-box}figure>svg,.panels svg{width:100%}code{overflow-wrap:anywhere}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.85em}.model{border-left:3px solid #ddd;padding-left:1em;margin:1em 0}.measured{font-weight:500}.scroll{overflow-x:auto}tr.t1 td{background:#f2f6fb}.words{margin-top:-.6em}.left-out{grid-column:1/-1;color:#555;margin:.2em 0}@media (max-width:600px){body{margin:1em auto;padding:0 .5em}h1{font-size:1.3em}}@media print{body{max-width:none;margin:0;font-size:10pt}.toc{display:none}a{color:inherit;text-decoration:none}h2{break-after:avoid}figure,tr,.model{break-inside:avoid}.grid,.panels{display:block}.panels svg,figure>svg{width:auto;max-width:100%;display:inline-block}table{display:table;overflow:visible}td,th{font-size:8pt}pre{white-space:pre-wrap}}:lang(zh) body{font-family:system-ui,\"Noto Sans CJK SC\",\"Source Han Sans SC\",\"PingFang SC\",\"Hiragino Sans GB\",\"Microsoft YaHei\",\"WenQuanYi Micro Hei\",sans-serif}.verdict>div{margin:.6em 0;padding:.3em .8em;border-left:4px solid #2a6fb0;background:#f5f8fc}.verdict p{margin:.3em 0}.verdict ul{margin:.2em 0 .4em;padding-left:1.4em}";

#[cfg(test)]
mod tests {
    use super::*;

    /// A chart's point is its table's median: the trials a rerun replaced are left out of
    /// both (in s22-1 they were drawn, and tokio's echo point sat at 133.5k beside a table's
    /// 171.1k).
    #[test]
    fn charts_leave_out_the_trials_a_rerun_replaced_as_the_tables_do() {
        let line = |trial: u64, rps: f64, rerun_of: Option<u64>| {
            serde_json::json!({"scenario": "echo", "cell": "echo/tokio/c=100", "model": "tokio",
                "trial": trial, "status": "ok", "rerun_of": rerun_of,
                "params": {"connections": 100}, "load": {"throughput_rps": rps}})
        };
        let run = Run {
            dir: std::path::PathBuf::new(),
            env: Value::Null,
            lines: vec![
                line(1, 170.0, None),
                line(2, 60.0, None), // the CPUs apart: replaced by trial 4
                line(3, 172.0, None),
                line(4, 171.0, Some(2)),
            ],
            damaged: Vec::new(),
        };
        assert_eq!(run.ok().count(), 3);
        let series = series_by_model(
            &run,
            &["tokio".to_string()],
            "echo",
            |_| true,
            |l| l["params"]["connections"].as_f64(),
            Metric::Throughput,
        );
        let group = &tiers::judge(&run.lines)[0];
        let table = group.headline.of("tokio").unwrap().median;
        assert_eq!(series[0].points, [(100.0, 171.0)]);
        assert_eq!(table, 171.0);
    }

    /// Memory per connection is what one more idle connection costs: a model's fixed
    /// memory (here uring-multishot's 4 MiB ring) does not count, and a pool whose idle
    /// clients wait in the listen queue grows by nothing.
    #[test]
    fn memory_per_connection_is_the_growth_from_the_fewest_idle_connections_to_the_most() {
        let line = |model: &str, idle: u64, trial: u64, pss: f64| {
            serde_json::json!({"scenario": "idle", "model": model, "trial": trial,
                "cell": format!("idle/{model}/idle={idle}"), "status": "ok",
                "params": {"active": 10, "idle": idle}, "server": {"peak_pss_kib": pss}})
        };
        let mut lines = Vec::new();
        for trial in 1..=3 {
            let t = trial as f64;
            lines.push(line("epoll-et", 200, trial, 1000.0 + t));
            lines.push(line("epoll-et", 2000, trial, 1000.0 + t + 1800.0 * 0.2));
            lines.push(line("uring-multishot", 200, trial, 5000.0));
            lines.push(line("uring-multishot", 2000, trial, 5000.0 + 1800.0 * 0.3));
            lines.push(line("prefork", 200, trial, 9000.0));
            lines.push(line("prefork", 2000, trial, 9000.0));
        }
        let run = Run {
            dir: std::path::PathBuf::new(),
            env: Value::Null,
            lines,
            damaged: Vec::new(),
        };
        let models: Vec<String> = ["epoll-et", "uring-multishot", "prefork"]
            .map(String::from)
            .to_vec();
        let (lo, hi, rows) = marginal_memory(&run, &models).unwrap();
        assert_eq!((lo, hi), (200, 2000));
        let of: Vec<(&str, f64)> = rows
            .iter()
            .map(|r| (r.name.as_str(), (r.value * 1000.0).round() / 1000.0))
            .collect();
        assert_eq!(
            of,
            [
                ("uring-multishot", 0.3),
                ("epoll-et", 0.2),
                ("prefork", 0.0)
            ]
        );
        let html = all_charts(&run, &models, Lang::En).unwrap().join("");
        assert!(html.contains("Memory per connection: PSS from 200 to 2000 idle"));
        assert!(html.contains("none measured"), "prefork's bar says so");
        // One idle count: no growth to measure, so no such chart.
        let one: Vec<Value> = run
            .lines
            .iter()
            .filter(|l| l["params"]["idle"] == 200)
            .cloned()
            .collect();
        let run = Run { lines: one, ..run };
        assert!(marginal_memory(&run, &models).is_none());
    }

    #[test]
    fn a_precision_short_of_its_target_never_rounds_onto_it() {
        assert_eq!(precision_pct(0.053), "5.3%");
        assert_eq!(precision_pct(0.0996), "10.0%");
        assert_eq!(precision_pct(0.17), "17%");
    }
}
