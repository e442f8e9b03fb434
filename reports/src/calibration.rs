//! Does the tier rule say what it should? Two measurements over finished runs, both through
//! `tiers::judge` like every view:
//!
//! - **A/A and A/B calibration** (`report calibrate RUN --same A,A#2 --slowed A+extra-work=N`):
//!   in how many groups the same server under two names shares a tier (goal: at least 95%),
//!   and in how many a server slowed by a known amount is in a worse tier than the plain one
//!   (goal: at least 80% for a 10-20% slowdown). The A/B rate on the headline is also given
//!   over the groups where the plain server's CPUs set the pace (busy at least
//!   [`SERVER_IDLE`], the median over its trials): elsewhere the load generator (churn on
//!   loopback, where the handshake runs on the load's CPU) or the open loop's schedule (a
//!   fixed rate below capacity) does, and a slowdown of the server's CPU reaches its
//!   throughput or p99 little, though CPU per request shows it.
//! - **Stability** (`report stability RUN RUN RUN...`): per group, how many models land in
//!   the same tier in every run, and how many keep the same tier-mates, on the headline and
//!   on CPU per request, and the mean.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::noise::SERVER_IDLE;
use crate::run::Run;
use crate::stats::median;
use crate::tiers::{self, Tiers};

/// Counts over the groups where both models have a result.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub hits: usize,
    pub groups: usize,
}

impl Rate {
    pub fn share(self) -> f64 {
        if self.groups == 0 {
            f64::NAN
        } else {
            self.hits as f64 / self.groups as f64
        }
    }

    fn text(self) -> String {
        if self.groups == 0 {
            return "0/0 groups".into();
        }
        format!(
            "{}/{} groups ({:.0}%)",
            self.hits,
            self.groups,
            self.share() * 100.0
        )
    }
}

/// Which tiers of a group an axis means.
#[derive(Clone, Copy, Debug)]
pub enum Axis {
    Headline,
    Efficiency,
}

fn axis<'a>(g: &'a tiers::Group, axis: Axis) -> &'a Tiers {
    match axis {
        Axis::Headline => &g.headline,
        Axis::Efficiency => &g.efficiency,
    }
}

/// Whether `a` and `b` share a tier, when both have a result (A/A).
fn shares(t: &Tiers, a: &str, b: &str) -> Option<bool> {
    Some(t.of(a)?.tier == t.of(b)?.tier)
}

/// Whether `slowed` is in a worse tier than `plain`, when both have a result (A/B).
fn below(t: &Tiers, plain: &str, slowed: &str) -> Option<bool> {
    Some(t.of(slowed)?.tier > t.of(plain)?.tier)
}

/// The share of its CPUs' time the server of `model` kept busy in a group: the median over
/// its ok trials that recorded it.
fn server_busy(g: &tiers::Group, model: &str) -> Option<f64> {
    let busy: Vec<f64> = g
        .lines
        .get(model)?
        .iter()
        .filter(|l| l["status"] == "ok")
        .filter_map(|l| l["noise"]["server_cpus"]["busy"].as_f64())
        .collect();
    (!busy.is_empty()).then(|| median(&busy))
}

/// Whether `model`'s server set the pace of a group: its CPUs busy at least [`SERVER_IDLE`].
fn server_bound(g: &tiers::Group, model: &str) -> bool {
    server_busy(g, model).is_some_and(|b| b >= SERVER_IDLE)
}

/// In how many of `groups` (those where `hit` has an answer) `hit` holds on `which`.
fn rate<'a, 'b: 'a>(
    groups: impl IntoIterator<Item = &'a tiers::Group<'b>>,
    which: Axis,
    hit: impl Fn(&Tiers) -> Option<bool>,
) -> Rate {
    let mut rate = Rate::default();
    for hit in groups.into_iter().filter_map(|g| hit(axis(g, which))) {
        rate.groups += 1;
        rate.hits += usize::from(hit);
    }
    rate
}

/// A/A: groups where `a` and `b` share a tier.
pub fn same_tier(run: &Run, a: &str, b: &str, which: Axis) -> Rate {
    rate(&tiers::judge(&run.lines), which, |t| shares(t, a, b))
}

/// A/B: groups where `slowed` is in a worse tier than `plain`.
pub fn separated(run: &Run, plain: &str, slowed: &str, which: Axis) -> Rate {
    rate(&tiers::judge(&run.lines), which, |t| {
        below(t, plain, slowed)
    })
}

/// The rates on both axes, then a line per group; the run is judged once.
pub fn calibrate_text(run: &Run, same: (&str, &str), slowed: Option<(&str, &str)>) -> String {
    let groups = tiers::judge(&run.lines);
    let mut s = String::new();
    for (name, which) in [
        ("headline", Axis::Headline),
        ("CPU per request", Axis::Efficiency),
    ] {
        let _ = writeln!(
            s,
            "A/A {name}: {} and {} share a tier in {}",
            same.0,
            same.1,
            rate(&groups, which, |t| shares(t, same.0, same.1)).text()
        );
        if let Some((plain, slow)) = slowed {
            let _ = writeln!(
                s,
                "A/B {name}: {slow} is in a worse tier than {plain} in {}",
                rate(&groups, which, |t| below(t, plain, slow)).text()
            );
            if let Axis::Headline = which {
                let bound = groups.iter().filter(|g| server_bound(g, plain));
                let _ = writeln!(
                    s,
                    "  where {plain}'s CPUs set the pace (busy {:.0}% or more): {}",
                    SERVER_IDLE * 100.0,
                    rate(bound, which, |t| below(t, plain, slow)).text()
                );
            }
        }
    }
    s + &per_group(&groups, same, slowed)
}

/// A line per group: where the alias shared the tier and where the slowed server fell below,
/// with the slowed server's median over the plain one's on each axis (how far the slowdown
/// moved that metric in this run: an open loop's p99 far below capacity barely moves).
fn per_group(groups: &[tiers::Group], same: (&str, &str), slowed: Option<(&str, &str)>) -> String {
    let width = groups
        .iter()
        .map(|g| g.scenario.len() + 1 + g.params.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let legend = match slowed {
        Some(_) => "A/A: one tier; A/B: the slowed server a tier below, its median over the plain one's:\nfor throughput below 1x is slower, for p99 and CPU per request above 1x is worse;\nbusy: the plain server's CPUs' busy share, the median over its trials",
        None => "A/A: the two names in one tier",
    };
    let mut s = format!(
        "\nPer group ({legend}):\n  {:<width$}  {:<8}  {:<8}",
        "group", "A/A head", "A/A CPU"
    );
    if slowed.is_some() {
        let _ = write!(s, "  {:<15}  {:<15}  busy", "A/B headline", "A/B CPU");
    }
    s.truncate(s.trim_end().len());
    s.push('\n');
    let yes = |b: bool| if b { "yes" } else { "no" };
    for g in groups {
        let group = format!("{} {}", g.scenario, g.params);
        let mut line = format!("  {group:<width$}");
        for which in [Axis::Headline, Axis::Efficiency] {
            let cell = shares(axis(g, which), same.0, same.1).map_or("-", yes);
            let _ = write!(line, "  {cell:<8}");
        }
        if let Some((plain, slow)) = slowed {
            for which in [Axis::Headline, Axis::Efficiency] {
                let t = axis(g, which);
                let cell = match (below(t, plain, slow), t.of(plain), t.of(slow)) {
                    (Some(hit), Some(x), Some(y)) => {
                        format!("{} ({:.2}x)", yes(hit), y.median / x.median)
                    }
                    _ => "-".to_string(),
                };
                let _ = write!(line, "  {cell:<15}");
            }
            let busy = server_busy(g, plain).map_or("-".into(), |b| format!("{:.0}%", b * 100.0));
            let _ = write!(line, "  {busy}");
        }
        s += line.trim_end();
        s.push('\n');
    }
    s
}

/// How one group's tiers held across runs: of the models that ran in every run
/// (`models`), how many were in the same tier every time (`same_tier`, the issue's
/// measure), and how many had the same tier-mates every time (`same_mates`: the same set of
/// other models beside them, whatever the tier's number), which tells a boundary that moved
/// from a renumbering below one extra split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub group: String,
    pub same_tier: usize,
    pub same_mates: usize,
    pub models: usize,
}

/// Per group (scenario and parameters) that every run has, on one axis.
pub fn stability(runs: &[Run], on: Axis) -> Vec<Held> {
    let mut tiers_of: BTreeMap<String, Vec<BTreeMap<String, usize>>> = BTreeMap::new();
    for run in runs {
        for g in tiers::judge(&run.lines) {
            let map = axis(&g, on)
                .entries
                .iter()
                .map(|e| (e.model.clone(), e.tier))
                .collect();
            tiers_of
                .entry(format!("{} {}", g.scenario, g.params))
                .or_default()
                .push(map);
        }
    }
    tiers_of
        .into_iter()
        .filter(|(_, maps)| maps.len() == runs.len())
        .map(|(group, maps)| {
            let everywhere: Vec<&String> = maps[0]
                .keys()
                .filter(|m| maps.iter().all(|t| t.contains_key(*m)))
                .collect();
            let mates = |t: &BTreeMap<String, usize>, m: &str| -> Vec<&String> {
                everywhere
                    .iter()
                    .copied()
                    .filter(|o| o.as_str() != m && t[*o] == t[m])
                    .collect()
            };
            let same_tier = everywhere
                .iter()
                .filter(|m| maps.iter().all(|t| t[**m] == maps[0][**m]))
                .count();
            let same_mates = everywhere
                .iter()
                .filter(|m| maps.iter().all(|t| mates(t, m) == mates(&maps[0], m)))
                .count();
            Held {
                group,
                same_tier,
                same_mates,
                models: everywhere.len(),
            }
        })
        .collect()
}

/// Both axes side by side, a line per group, and the mean over groups: models in the same
/// tier every time, and (after the slash) with the same tier-mates every time.
pub fn stability_text(runs: &[Run]) -> String {
    let headline = stability(runs, Axis::Headline);
    let efficiency = stability(runs, Axis::Efficiency);
    let width = headline
        .iter()
        .map(|h| h.group.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut s = format!(
        "Models in the same tier in all {} runs, per scenario (after the slash: with the same tier-mates every time):\n  {:<width$}  {:>13}  {:>15}\n",
        runs.len(),
        "",
        "headline",
        "CPU per request",
    );
    let mut sums = [0; 4];
    for h in &headline {
        let cpu = efficiency.iter().find(|c| c.group == h.group);
        for (sum, add) in sums.iter_mut().zip([
            h.same_tier,
            h.same_mates,
            cpu.map_or(0, |c| c.same_tier),
            cpu.map_or(0, |c| c.same_mates),
        ]) {
            *sum += add;
        }
        let cpu = cpu.map_or_else(String::new, |c| {
            format!("{} / {} of {}", c.same_tier, c.same_mates, c.models)
        });
        let _ = writeln!(
            s,
            "  {:<width$}  {:>13}  {cpu:>15}",
            h.group,
            format!("{} / {} of {}", h.same_tier, h.same_mates, h.models)
        );
    }
    if !headline.is_empty() {
        let n = headline.len() as f64;
        let mean = |a: usize, b: usize| format!("{:.1} / {:.1}", a as f64 / n, b as f64 / n);
        let _ = writeln!(
            s,
            "  {:<width$}  {:>13}  {:>15}",
            "mean",
            mean(sums[0], sums[1]),
            mean(sums[2], sums[3])
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn run(lines: Vec<Value>) -> Run {
        Run {
            dir: std::path::PathBuf::new(),
            env: Value::Null,
            lines,
            damaged: Vec::new(),
        }
    }

    fn line(model: &str, params: &str, trial: u64, rps: f64) -> Value {
        json!({"scenario": "echo", "cell": format!("echo/{model}/{params}"), "model": model,
               "trial": trial, "status": "ok", "load": {"throughput_rps": rps},
               "server": {"cpu_us_per_request": 1e6 / rps}})
    }

    fn calibration_run(slow_factor: f64) -> Run {
        let mut lines = Vec::new();
        for params in ["c=50", "c=500"] {
            for (trial, wobble) in [(1, 1.0), (2, 1.02), (3, 0.98)] {
                lines.push(line("a", params, trial, 100.0 * wobble));
                lines.push(line("a#2", params, trial, 100.0 / wobble));
                lines.push(line("a+slow", params, trial, 100.0 * wobble * slow_factor));
            }
        }
        run(lines)
    }

    #[test]
    fn rates_over_groups() {
        let r = calibration_run(0.5);
        let aa = same_tier(&r, "a", "a#2", Axis::Headline);
        assert_eq!(aa, Rate { hits: 2, groups: 2 });
        let ab = separated(&r, "a", "a+slow", Axis::Efficiency);
        assert_eq!(ab, Rate { hits: 2, groups: 2 });
        let r = calibration_run(0.99);
        assert_eq!(separated(&r, "a", "a+slow", Axis::Headline).hits, 0);
        let text = calibrate_text(&r, ("a", "a#2"), Some(("a", "a+slow")));
        assert!(text.contains("share a tier in 2/2 groups (100%)"), "{text}");
        // A line per group: the alias in one tier, the slowed server 1% off and not below.
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("  echo"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        for row in rows {
            assert_eq!(
                row[2..],
                ["yes", "yes", "no", "(0.99x)", "no", "(1.01x)", "-"],
                "{text}"
            );
        }
        // Without --slowed, nothing about A/B: no rate, no column, no legend.
        let aa_only = calibrate_text(&r, ("a", "a#2"), None);
        assert!(!aa_only.contains("A/B"), "{aa_only}");
        assert!(!aa_only.contains("slowed"), "{aa_only}");
    }

    /// The A/B rate on the headline over the groups where the plain server's CPUs set the
    /// pace: here c=50, where they were 95% busy, and not c=500 (60%: something else did).
    #[test]
    fn the_headline_rate_where_the_server_set_the_pace() {
        let mut r = calibration_run(0.5);
        for l in &mut r.lines {
            let busy = if l["cell"].as_str().unwrap().ends_with("c=50") {
                0.95
            } else {
                0.6
            };
            l["noise"] = json!({"server_cpus": {"busy": busy}});
        }
        let text = calibrate_text(&r, ("a", "a#2"), Some(("a", "a+slow")));
        assert!(
            text.contains("A/B headline: a+slow is in a worse tier than a in 2/2 groups (100%)\n  where a's CPUs set the pace (busy 80% or more): 1/1 groups (100%)"),
            "{text}"
        );
        let busy: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  echo"))
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(busy, ["95%", "60%"], "{text}");
        // No run recorded the server's busy share: no group to count.
        let text = calibrate_text(&calibration_run(0.5), ("a", "a#2"), Some(("a", "a+slow")));
        assert!(
            text.contains("set the pace (busy 80% or more): 0/0 groups\n"),
            "{text}"
        );
    }

    #[test]
    fn stability_counts_models_in_the_same_tier_every_time() {
        let runs = || [calibration_run(0.5), calibration_run(0.99)];
        let s = stability(&runs(), Axis::Headline);
        assert_eq!(s.len(), 2);
        // a and a#2 stay in tier 1; a+slow moves from tier 2 to tier 1, so every model's
        // tier-mates changed (a+slow joined a and a#2).
        assert!(
            s.iter()
                .all(|h| (h.same_tier, h.same_mates, h.models) == (2, 0, 3)),
            "{s:?}"
        );
        let text = stability_text(&runs());
        let mean: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
        assert_eq!(
            mean,
            ["mean", "2.0", "/", "0.0", "2.0", "/", "0.0"],
            "{text}"
        );
        // The same run twice: every model keeps its tier and its tier-mates.
        let same = stability(
            &[calibration_run(0.5), calibration_run(0.5)],
            Axis::Headline,
        );
        assert!(
            same.iter().all(|h| (h.same_tier, h.same_mates) == (3, 3)),
            "{same:?}"
        );
    }
}
