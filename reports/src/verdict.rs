//! The verdict in words: per scenario, who wins, by how much, what ties, and why, in
//! sentences built from this run's tiers ([`crate::tiers::judge`], the same tiers every view
//! shows) and its result lines.
//!
//! A reason is stated only when the data shows what it explains: "select and poll fall with
//! idle connections" needs idle cells in which they trail the best model (and, to say
//! "fall", a smaller idle count at which they did better); "a context switch per request"
//! needs the blocking model's CPU per request to be in a worse tier than the best one's. A
//! model that limits itself by design (the `--max-conns` cap of `threads` and `fork`, the
//! workers of a pool, one client at a time for `iterative`, FD_SETSIZE for `select`) is
//! described as doing so, with the count the line recorded, never as failing. Every figure is
//! a median over trials, the figure the tiers rank; counts of refused or unserved
//! connections are the largest a trial recorded.
//!
//! The words come from the text tables ([`crate::text`]), so the verdict reads the same in
//! every language.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::run::{param, str_of, Run};
use crate::text::Lang;
use crate::tiers::{compact, ratio_number, Entry, Group, Tiers};

/// `servers`' default `--max-conns` (servers/src/registry.rs `DEFAULT_MAX_CONNS`; a test
/// reads that file to keep the two equal). A cell names another cap as `MODEL+max-conns=N`.
pub const DEFAULT_MAX_CONNS: u64 = 10_000;

/// select's descriptor ceiling: an `fd_set` holds descriptors below FD_SETSIZE.
const FD_SETSIZE: u64 = 1024;

/// Models whose every wait scans all open connections.
const SCANNING: [&str; 2] = ["select", "poll"];
/// Blocking models that put a thread or process behind each connection they serve.
const BLOCKING: [&str; 4] = ["threads", "prethreaded", "fork", "prefork"];

/// What the verdict says about one scenario.
pub struct ScenarioVerdict {
    pub scenario: String,
    /// The parameters of the group the lead sentence is about (the most demanding one).
    pub params: String,
    pub sentences: Vec<String>,
}

/// The verdict on every scenario of the run, in the order of `groups`.
pub fn verdicts(groups: &[Group], lang: Lang) -> Vec<ScenarioVerdict> {
    let mut scenarios: Vec<&str> = Vec::new();
    for g in groups {
        if !scenarios.contains(&g.scenario.as_str()) {
            scenarios.push(&g.scenario);
        }
    }
    scenarios
        .into_iter()
        .filter_map(|scenario| {
            let mine: Vec<&Group> = groups.iter().filter(|g| g.scenario == scenario).collect();
            let lead = *mine.iter().max_by_key(|g| load_of(g))?;
            let mut sentences = Vec::new();
            sentences.extend(lead_sentence(lead, lang));
            sentences.extend(across(lead, &mine, lang));
            sentences.extend(ties_elsewhere(lead, &mine, lang));
            sentences.extend(scan_reason(&mine, lang));
            sentences.extend(switch_reason(lead, lang));
            // One sentence per model and scenario, from its most telling cell (the largest
            // count): the same cap in every cell of a sweep is said once.
            let mut models: Vec<&String> = mine.iter().flat_map(|g| g.lines.keys()).collect();
            models.sort();
            models.dedup();
            for model in models {
                let lines: Vec<&Value> = mine
                    .iter()
                    .filter_map(|g| g.lines.get(model))
                    .flatten()
                    .copied()
                    .collect();
                sentences.extend(by_design(model, &lines, lang));
            }
            Some(ScenarioVerdict {
                scenario: scenario.to_string(),
                params: lead.params.clone(),
                sentences,
            })
        })
        .collect()
}

/// How demanding a group is: idle connections, then connections, then offered rate.
fn load_of(g: &Group) -> (u64, u64, u64) {
    let first = g.lines.values().flatten().next();
    let p = |k: &str| first.and_then(|l| param(l, k)).unwrap_or(0);
    (p("idle"), p("connections").max(p("active")), p("rate"))
}

fn value(e: &Entry, unit: &str) -> String {
    format!("{} {unit}", compact(e.median))
}

/// Who leads the group, by how much, what ties, and who is last.
fn lead_sentence(g: &Group, lang: Lang) -> Vec<String> {
    let t = &g.headline;
    let cell = format!("{} {}", g.scenario, g.params);
    let Some(best) = t.entries.first() else {
        return vec![lang.say("verdict.none", &[("cell", &cell)])];
    };
    if t.entries.len() == 1 {
        return vec![lang.say(
            "verdict.only",
            &[
                ("cell", &cell),
                ("model", &best.model),
                ("value", &value(best, g.unit)),
            ],
        )];
    }
    let first: Vec<&Entry> = t.entries.iter().filter(|e| e.tier == 1).collect();
    let names: Vec<&str> = first.iter().map(|e| e.model.as_str()).collect();
    let range = |es: &[&Entry]| {
        let lo = es.iter().map(|e| e.median).fold(f64::INFINITY, f64::min);
        let hi = es
            .iter()
            .map(|e| e.median)
            .fold(f64::NEG_INFINITY, f64::max);
        format!("{}–{} {}", compact(lo), compact(hi), g.unit)
    };
    let mut out = Vec::new();
    if t.count() == 1 {
        let fewest = t.entries.iter().map(|e| e.values.len()).min().unwrap_or(0);
        let why = if fewest < crate::tiers::MIN_TRIALS {
            lang.say("verdict.why_few", &[("n", &crate::tiers::MIN_TRIALS)])
        } else {
            lang.get("verdict.why_close").to_string()
        };
        out.push(lang.say(
            "verdict.all_tie",
            &[
                ("cell", &cell),
                ("n", &t.entries.len()),
                ("models", &lang.list(&names)),
                ("range", &range(&first)),
                ("why", &why),
            ],
        ));
        return out;
    }
    let next = t.entries.iter().find(|e| e.tier == 2).expect("two tiers");
    // "By how much": the best over the next tier's best, the way round that reads as "x
    // times better" for either direction.
    let factor = if t.higher_is_better {
        best.median / next.median
    } else {
        next.median / best.median
    };
    let key = match (first.len(), t.higher_is_better) {
        (1, true) => "verdict.wins_higher",
        (1, false) => "verdict.wins_lower",
        (_, true) => "verdict.tie_first_higher",
        (_, false) => "verdict.tie_first_lower",
    };
    out.push(lang.say(
        key,
        &[
            ("cell", &cell),
            ("model", &best.model),
            ("models", &lang.list(&names)),
            ("value", &value(best, g.unit)),
            ("range", &range(&first)),
            ("trials", &best.values.len()),
            ("next", &next.model),
            ("next_value", &value(next, g.unit)),
            ("factor", &format!("{factor:.2}")),
        ],
    ));
    if t.count() > 2 {
        let last: Vec<&Entry> = t.entries.iter().filter(|e| e.tier == t.count()).collect();
        let worst = last.last().expect("a last tier has members");
        out.push(lang.say(
            "verdict.last",
            &[
                (
                    "models",
                    &lang.list(&last.iter().map(|e| e.model.as_str()).collect::<Vec<_>>()),
                ),
                ("value", &value(worst, g.unit)),
                ("ratio", &ratio_number(worst.ratio)),
                ("mark", &worst.paired_mark()),
            ],
        ));
    }
    out
}

/// Whether the lead group's winner holds its tier across the scenario's other parameters.
fn across(lead: &Group, groups: &[&Group], lang: Lang) -> Option<String> {
    if groups.len() < 2 || lead.headline.count() < 2 {
        return None;
    }
    let best = &lead.headline.entries.first()?.model;
    let judged: Vec<&Tiers> = groups
        .iter()
        .map(|g| &g.headline)
        .filter(|t| t.of(best).is_some())
        .collect();
    let first = judged
        .iter()
        .filter(|t| t.of(best).is_some_and(|e| e.tier == 1))
        .count();
    Some(lang.say(
        "verdict.across",
        &[
            ("model", best),
            ("k", &first),
            ("n", &judged.len()),
            ("scenario", &lead.scenario),
        ],
    ))
}

/// The scenario's other cells where several models tie for first (the lead cell's tie is in
/// its own sentence).
fn ties_elsewhere(lead: &Group, groups: &[&Group], lang: Lang) -> Vec<String> {
    groups
        .iter()
        .filter(|g| !std::ptr::eq(**g, lead) && g.headline.count() > 1)
        .filter_map(|g| {
            let first: Vec<&str> = g
                .headline
                .entries
                .iter()
                .filter(|e| e.tier == 1)
                .map(|e| e.model.as_str())
                .collect();
            (first.len() > 1).then(|| {
                lang.say(
                    "verdict.tie_elsewhere",
                    &[("params", &g.params), ("models", &lang.list(&first))],
                )
            })
        })
        .collect()
}

/// Whether `model` is select refusing descriptors past FD_SETSIZE in `g`: then its
/// throughput there is its ceiling's (said by [`by_design`]), not the scan's.
fn over_fd_setsize(g: &Group, model: &str) -> bool {
    base(model) == "select"
        && g.lines.get(model).is_some_and(|lines| {
            lines
                .iter()
                .any(|l| connections(l) >= FD_SETSIZE && errors(l, &["reset", "connect"]) > 0)
        })
}

/// select and poll trailing with idle connections open: every wait scans all of them.
fn scan_reason(groups: &[&Group], lang: Lang) -> Option<String> {
    let idle_of = |g: &Group| load_of(g).0;
    let most = groups
        .iter()
        .filter(|g| idle_of(g) > 0)
        .max_by_key(|g| idle_of(g))?;
    let best = most.headline.entries.first()?;
    if SCANNING.contains(&base(&best.model)) {
        return None;
    }
    let behind: Vec<&Entry> = most
        .headline
        .entries
        .iter()
        .filter(|e| SCANNING.contains(&base(&e.model)) && e.tier > 1)
        .filter(|e| !over_fd_setsize(most, &e.model))
        .collect();
    if behind.is_empty() {
        return None;
    }
    // "Fall with": each did better at the fewest idle connections the run has.
    let fewest = groups
        .iter()
        .filter(|g| idle_of(g) < idle_of(most))
        .min_by_key(|g| idle_of(g));
    let fell = fewest.filter(|f| {
        behind.iter().all(|e| {
            f.headline
                .of(&e.model)
                .is_some_and(|before| before.median > e.median)
        })
    });
    let values: Vec<String> = behind
        .iter()
        .map(|e| format!("{} {}", e.model, compact(e.median)))
        .collect();
    let names: Vec<&str> = behind.iter().map(|e| e.model.as_str()).collect();
    let args: [(&str, &dyn std::fmt::Display); 7] = [
        ("models", &lang.list(&names)),
        ("values", &lang.list(&values)),
        ("unit", &most.unit),
        ("idle", &idle_of(most)),
        ("best", &best.model),
        ("best_value", &compact(best.median)),
        ("fewest", &fell.map(|f| idle_of(f)).unwrap_or(0)),
    ];
    Some(match fell {
        Some(_) => lang.say("why.scan_falls", &args),
        None => lang.say("why.scan_behind", &args),
    })
}

/// Blocking models behind an event loop on CPU per request: each request wakes the thread or
/// process blocked on its socket.
fn switch_reason(g: &Group, lang: Lang) -> Option<String> {
    let e = &g.efficiency;
    let best = e.entries.first()?;
    let one_at_a_time = |m: &str| BLOCKING.contains(&base(m)) || base(m) == "iterative";
    if one_at_a_time(&best.model) || e.count() < 2 {
        return None;
    }
    let behind: Vec<&Entry> = e
        .entries
        .iter()
        .filter(|x| BLOCKING.contains(&base(&x.model)) && x.tier > 1)
        .filter(|x| g.headline.of(&x.model).is_some_and(|h| h.tier > 1))
        .collect();
    // The reason explains why they cost the most: only those in a tier below every model
    // that serves many sockets from one thread are named. Where such a model costs as much
    // (poll, select or spin in an open loop below capacity: a scan, or a spin, per request),
    // naming the blocking models would teach the wrong lesson.
    let worst_single = e
        .entries
        .iter()
        .filter(|x| !one_at_a_time(&x.model))
        .map(|x| x.tier)
        .max()
        .unwrap_or(1);
    let behind: Vec<&Entry> = behind
        .into_iter()
        .filter(|x| x.tier > worst_single)
        .collect();
    if behind.is_empty() {
        return None;
    }
    let names: Vec<&str> = behind.iter().map(|x| x.model.as_str()).collect();
    let values: Vec<String> = behind
        .iter()
        .map(|x| format!("{} {}", x.model, compact(x.median)))
        .collect();
    Some(lang.say(
        "why.switch",
        &[
            ("models", &lang.list(&names)),
            ("values", &lang.list(&values)),
            ("best", &best.model),
            ("best_value", &compact(best.median)),
        ],
    ))
}

/// The `--max-conns` cap a model ran with: `MODEL+max-conns=N`, else the server's default.
fn cap_of(model: &str) -> u64 {
    model
        .split('+')
        .skip(1)
        .find_map(|o| o.strip_prefix("max-conns=")?.parse().ok())
        .unwrap_or(DEFAULT_MAX_CONNS)
}

/// The base model of an alias (`threads#2`, `threads+max-conns=500`: `threads`).
fn base(model: &str) -> &str {
    model.split(['+', '#']).next().unwrap_or(model)
}

/// The trial of `lines` (ok ones) with the largest `count`, and that count.
fn largest<'a>(lines: &[&'a Value], count: impl Fn(&Value) -> u64) -> Option<(&'a Value, u64)> {
    lines
        .iter()
        .filter(|l| l["status"] == "ok")
        .map(|l| (*l, count(l)))
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n)
}

fn errors(line: &Value, kinds: &[&str]) -> u64 {
    kinds
        .iter()
        .map(|k| line["load"]["errors"][k].as_u64().unwrap_or(0))
        .sum()
}

fn connections(line: &Value) -> u64 {
    line["load"]["connections"].as_u64().unwrap_or(0)
}

/// A model limiting itself by design in one group's cells, with the count its worst trial
/// recorded; `None` when nothing of the kind shows.
pub fn by_design(model: &str, lines: &[&Value], lang: Lang) -> Option<String> {
    let starved = |l: &Value| l["load"]["starved_connections"].as_u64().unwrap_or(0);
    let cell = |l: &Value| format!("{} {}", str_of(l, "scenario"), crate::tiers::params_of(l));
    match base(model) {
        "threads" | "fork" => {
            let cap = cap_of(model);
            let refused = largest(lines, |l| {
                if connections(l) > cap {
                    errors(l, &["reset", "connect"])
                } else {
                    0
                }
            });
            if let Some((l, n)) = refused {
                return Some(lang.say(
                    "design.cap",
                    &[
                        ("model", &model),
                        ("cell", &cell(l)),
                        ("conns", &connections(l)),
                        ("n", &n),
                        ("cap", &cap),
                    ],
                ));
            }
            let (l, n) = largest(lines, starved).filter(|_| base(model) == "fork")?;
            Some(lang.say(
                "design.fork",
                &[
                    ("model", &model),
                    ("cell", &cell(l)),
                    ("n", &n),
                    ("conns", &connections(l)),
                    (
                        "procs",
                        &l["server"]["peak_processes"].as_u64().unwrap_or(0),
                    ),
                ],
            ))
        }
        "iterative" | "prethreaded" | "prefork" => {
            let (l, n) = largest(lines, starved)?;
            let key = if base(model) == "iterative" {
                "design.iterative"
            } else {
                "design.pool"
            };
            Some(lang.say(
                key,
                &[
                    ("model", &model),
                    ("cell", &cell(l)),
                    ("n", &n),
                    ("conns", &connections(l)),
                    ("served", &connections(l).saturating_sub(n)),
                ],
            ))
        }
        "select" => {
            let (l, n) = largest(lines, |l| {
                if connections(l) >= FD_SETSIZE {
                    errors(l, &["reset", "connect"])
                } else {
                    0
                }
            })?;
            Some(lang.say(
                "design.select",
                &[
                    ("model", &model),
                    ("cell", &cell(l)),
                    ("n", &n),
                    ("conns", &connections(l)),
                    ("limit", &FD_SETSIZE),
                ],
            ))
        }
        _ => None,
    }
}

/// What this run measured of one model: per scenario, its median and tier in each set of
/// parameters; how it kept with idle connections; what it limits by design; its failures.
pub fn model_sentences(run: &Run, groups: &[Group], model: &str, lang: Lang) -> Vec<String> {
    let mine: Vec<&Value> = run
        .lines
        .iter()
        .filter(|l| str_of(l, "model") == model)
        .collect();
    if let Some(line) = mine.iter().find(|l| l["status"] == "unsupported") {
        let reason = line["reason"].as_str().unwrap_or("unsupported");
        return vec![lang.say("model.unsupported", &[("reason", &reason)])];
    }
    let mut sentences = Vec::new();
    let mut by_scenario: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for g in groups {
        let Some(e) = g.headline.of(model) else {
            continue;
        };
        let best = g
            .headline
            .entries
            .first()
            .is_some_and(|b| std::ptr::eq(b, e));
        let ratio = if !best {
            lang.say(
                "model.ratio",
                &[
                    ("ratio", &ratio_number(e.ratio)),
                    ("mark", &e.paired_mark()),
                ],
            )
        } else {
            String::new()
        };
        if !order.contains(&g.scenario.as_str()) {
            order.push(&g.scenario);
        }
        by_scenario.entry(&g.scenario).or_default().push(lang.say(
            "model.cell",
            &[
                ("params", &g.params),
                ("value", &value(e, g.unit)),
                ("trials", &e.values.len()),
                ("tier", &e.tier),
                ("tiers", &g.headline.count()),
                ("ratio", &ratio),
            ],
        ));
    }
    for scenario in order {
        sentences.push(lang.say(
            "model.scenario",
            &[
                ("scenario", &scenario),
                (
                    "cells",
                    &by_scenario[scenario].join(lang.get("model.cell_sep")),
                ),
            ],
        ));
    }
    // With idle connections: the most idle cell's median against the same model's best
    // median in echo (both medians, never a single trial).
    let echo_best = groups
        .iter()
        .filter(|g| g.scenario == "echo")
        .filter_map(|g| g.headline.of(model).map(|e| e.median))
        .fold(f64::NAN, f64::max);
    let idle = groups
        .iter()
        .filter(|g| g.scenario == "idle")
        .filter_map(|g| Some((load_of(g).0, g.headline.of(model)?)))
        .max_by_key(|(idle, _)| *idle);
    if let (Some((idle, e)), true) = (idle, echo_best > 0.0) {
        sentences.push(lang.say(
            "model.idle",
            &[
                ("idle", &idle),
                ("pct", &format!("{:.0}", e.median / echo_best * 100.0)),
            ],
        ));
    }
    let mut designed = false;
    for g in groups {
        if let Some(text) = g.lines.get(model).and_then(|l| by_design(model, l, lang)) {
            sentences.push(text);
            designed = true;
        }
    }
    let refused: u64 = mine.iter().map(|l| errors(l, &["reset", "connect"])).sum();
    if refused > 0 && !designed {
        sentences.push(lang.say("model.refused", &[("n", &refused)]));
    }
    let failed = mine.iter().filter(|l| l["status"] == "failed").count();
    if failed > 0 {
        sentences.push(lang.say("model.failed", &[("n", &failed)]));
    }
    if sentences.is_empty() {
        sentences.push(lang.get("model.nothing").to_string());
    }
    sentences
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap the verdict assumes is the one the servers apply.
    #[test]
    fn the_default_cap_is_the_servers() {
        let registry = include_str!("../../servers/src/registry.rs");
        let line = registry
            .lines()
            .find(|l| l.starts_with("pub const DEFAULT_MAX_CONNS"))
            .expect("servers' DEFAULT_MAX_CONNS");
        let value: u64 = line
            .split('=')
            .nth(1)
            .unwrap()
            .trim()
            .trim_end_matches(';')
            .replace('_', "")
            .parse()
            .unwrap();
        assert_eq!(value, DEFAULT_MAX_CONNS);
        assert_eq!(cap_of("threads+max-conns=500"), 500);
        assert_eq!(cap_of("threads#2"), DEFAULT_MAX_CONNS);
        assert_eq!(base("fork+max-conns=5"), "fork");
    }

    /// The context-switch reason names the blocking models only where they cost more CPU
    /// per request than every model serving many sockets from one thread: with spin
    /// spinning below capacity and costing the most, naming them would teach the wrong
    /// lesson.
    #[test]
    fn the_context_switch_reason_names_only_models_below_every_event_loop() {
        let lines = |models: &[(&str, f64, f64)]| -> Vec<Value> {
            let mut out = Vec::new();
            for (model, rps, cpu) in models {
                for (trial, f) in [(1u64, 1.0), (2, 1.01), (3, 0.99)] {
                    out.push(serde_json::json!({"scenario": "echo", "model": model,
                        "cell": format!("echo/{model}/c=100"), "trial": trial, "status": "ok",
                        "params": {"connections": 100},
                        "load": {"throughput_rps": rps * f},
                        "server": {"cpu_us_per_request": cpu * f}}));
                }
            }
            out
        };
        let mut models = vec![
            ("epoll-et", 170e3, 5.5),
            ("poll", 168e3, 5.6),
            ("threads", 120e3, 8.0),
            ("fork", 90e3, 11.0),
        ];
        let run = lines(&models);
        let groups = crate::tiers::judge(&run);
        let said = switch_reason(&groups[0], Lang::En).expect("a reason");
        assert!(
            said.starts_with("Server CPU per request is higher for threads and fork because"),
            "{said}"
        );
        // spin costs the most: no reason for fork's or threads' cost.
        models.push(("spin", 150e3, 13.0));
        let run = lines(&models);
        let groups = crate::tiers::judge(&run);
        assert_eq!(switch_reason(&groups[0], Lang::En), None);
        // spin between them: fork, below it, is named; threads, above it, is not.
        *models.last_mut().unwrap() = ("spin", 150e3, 9.5);
        let run = lines(&models);
        let groups = crate::tiers::judge(&run);
        let said = switch_reason(&groups[0], Lang::En).expect("a reason");
        assert!(
            said.starts_with("Server CPU per request is higher for fork because"),
            "{said}"
        );
    }
}
