//! Tiers, not ranks: which models of one scenario cell can be told apart, and by how much.
//!
//! Every view of a run (the terminal summary of `bench run`, `report.html`, `report export
//! --format markdown`, `report compare`) calls this module, so they all show the same tiers.
//!
//! The rule. Models are ordered by their median over trials, best first (direction-aware:
//! higher throughput, lower latency and CPU per request are better). The best model leads
//! tier 1. Each next model is compared with the leader of the current tier by the 95%
//! interval of its ratio to the leader. Where both ran in at least [`PAIRED_ROUNDS`] shared
//! rounds (trial k of every model runs in round k), the ratio is taken round by round: the
//! geometric mean of the per-round ratios, ± t x its standard error, the variance of the
//! per-round log ratios shrunk toward the group's typical one for a pair (the median over
//! the group's pairs that compare so, weighed as below). Otherwise it is the ratio of the
//! two medians with
//! a **moderated** interval: ln(ratio) ± t x its standard error, where each model's variance
//! (of the logarithms of its trials) is shrunk toward the group's typical one (the median
//! over the group's models, corrected for the median's shortfall), which weighs as much as a model's own three trials
//! ([`GROUP_WEIGHT`], 2 degrees of freedom); t is Student's at the degrees of freedom both
//! rest on. A model starts a new tier, which it leads, only
//! when that whole interval lies beyond the noise floor ([`NOISE_FLOOR`], 3%) on the worse
//! side, and both have at least [`MIN_TRIALS`] trials; otherwise it shares the leader's tier
//! ("tie": the data cannot tell them apart, not proof that they are equal).
//!
//! Why this and not a rank test: a cell is a whole server under load on a shared machine, so
//! trials are few (3 to 10) and expensive. With 3 trials each, a Mann-Whitney U test cannot
//! reach p < 0.05 whatever the data (its smallest two-sided p is 0.1), so it would call
//! everything a tie. Why moderated: three trials tell little about their own spread. Three
//! that happen to land within 1% of each other (or three reruns run back to back) claim a
//! precision the cell does not have, and a bootstrap of their median is their range, which
//! holds the true median only 3 times in 4. Every model of a group ran the same scenario on
//! the same machine in the same rounds, so the group's spread is the better guess, and each
//! model's own spread moves it (empirical Bayes, as limma's moderated t does for few
//! replicates of many genes). On this project's recorded runs it kept as many separations of
//! a slowed server as the bootstrap and made the tiers steadier from run to run (see
//! ARCHITECTURE.md, "Calibration"). Round by round, because the machine's speed changes in
//! phases that a round's cells share: the per-round ratio cancels it. Moderated there too,
//! for the same reason: the bootstrap of the median of four ratios is their range, which
//! holds the true ratio only 7 times in 8, and four that happen to sit close split models a
//! few percent apart in one run and not the next. Not below 4 rounds: a model that met its
//! precision target at 3 trials would be compared on 3 pairs, leaving out the other's extra
//! trials, and lose more than the round's speed gives back. The noise floor is
//! criterion's idea ("change within noise threshold"): differences smaller than the
//! run-to-run drift of a whole server are not verdicts even when the trials happen to be
//! tight. The leader rule (not "adjacent models differ") keeps a chain of small steps from
//! spreading one tier over a 30% range.
//!
//! Resampling is seeded, so a report renders the same twice; groups are judged in parallel
//! with rayon (a full run has hundreds of groups, each with dozens of intervals, some of
//! them bootstrapped).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rayon::prelude::*;
use serde_json::Value;

use crate::metrics::{headline, Metric};
use crate::stats::{
    change_ci, cv, log_ratio_variance, median, median_ci, moderated_change,
    moderated_paired_change, paired_change_ci, typical_variance, variance, Spread,
};
use crate::text::Lang;

/// Differences of medians smaller than this are never a separation.
pub const NOISE_FLOOR: f64 = 0.03;
/// Fewer trials than this on either side never claim a separation.
pub const MIN_TRIALS: usize = 3;
/// Two models compare round by round when they share at least this many rounds.
pub const PAIRED_ROUNDS: usize = 4;
/// Fewer pairs of models compared round by round than this give no group prior for a pair's
/// spread (the pair's own spread then stands alone, at its own degrees of freedom).
pub const PAIRS_FOR_PRIOR: usize = 3;
/// The round of a trial that ran outside the rounds (a rerun): never paired.
pub const NO_ROUND: u64 = u64::MAX;
/// How much the group's typical spread weighs in each model's, in degrees of freedom: as
/// much as a model's own three trials (the least count) give. The group's typical spread of
/// a per-round ratio weighs the same in each pair's.
pub const GROUP_WEIGHT: f64 = 2.0;

/// The rule, in words, for every view to print once.
pub const RULE: &str = "Tiers: models share a tier when the 95% interval of their ratio to the tier's best reaches within 3% of 1, or either has fewer than 3 trials (a tie means the data cannot tell them apart). The ratio is taken round by round where both ran in at least 4 of the same rounds (the geometric mean of the per-round ratios, its interval from their spread weighed with the group's typical one for a pair), else it is the ratio of the medians, its interval from each model's spread weighed with the group's typical spread (three trials say little about their own). The ratio printed is the model's median over the best's, ± half its interval (or beside the interval, where that is wide, lopsided or off the ratio); † marks a comparison taken round by round.";

/// One model in one group: its trials and where it stands.
#[derive(Clone, Debug)]
pub struct Entry {
    pub model: String,
    pub values: Vec<f64>,
    /// The round (trial number) each value ran in, when known: models compared in the same
    /// rounds are compared round by round.
    pub rounds: Option<Vec<u64>>,
    pub median: f64,
    /// 95% bootstrap interval of the median.
    pub ci: (f64, f64),
    /// Half the median's interval relative to the median (0.04 = ± 4%); infinite below two
    /// trials.
    pub precision: f64,
    pub cv: f64,
    /// 1 is the best tier.
    pub tier: usize,
    /// Its median over the best model's (so it follows the order of the medians), and the
    /// 95% interval of its ratio to the best taken as in the tier rule (round by round when
    /// `paired`, about the geometric mean of the per-round ratios).
    pub ratio: f64,
    pub ratio_ci: (f64, f64),
    /// The comparison with the best, and so the ratio's interval, was taken round by round
    /// (printed with a †).
    pub paired: bool,
    /// Its spread moderated toward the group's, for the unpaired comparison; `None` when a
    /// value is not positive (then the two medians are compared by bootstrap).
    pub spread: Option<Spread>,
}

impl Entry {
    /// The ratio's "± x" (half its interval).
    pub fn ratio_pm(&self) -> f64 {
        (self.ratio_ci.1 - self.ratio_ci.0) / 2.0
    }

    /// "†" when the comparison with the best was taken round by round (a sentence puts it
    /// after the ratio).
    pub fn paired_mark(&self) -> &'static str {
        if self.paired {
            "†"
        } else {
            ""
        }
    }
}

/// The models of one group in tiers, best first.
#[derive(Clone, Debug)]
pub struct Tiers {
    pub higher_is_better: bool,
    pub entries: Vec<Entry>,
}

/// Half the 95% interval of the median relative to the median: what adaptive trials drive
/// below the suite's precision target. Infinite below two values.
pub fn precision(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return f64::INFINITY;
    }
    let m = median(values);
    let (lo, hi) = median_ci(values);
    if m == 0.0 {
        return if hi == lo { 0.0 } else { f64::INFINITY };
    }
    (m - lo).max(hi - m) / m.abs()
}

/// The change from `base` to `new` with its 95% interval: round by round when both ran in at
/// least [`PAIRED_ROUNDS`] shared rounds, the spread of the per-round ratios moderated toward
/// the group's typical one for a pair, `pair_prior` ([`moderated_paired_change`]; by
/// bootstrap over rounds, [`paired_change_ci`], when a value is not positive), else of their medians with
/// spreads moderated toward the group's ([`moderated_change`]; by bootstrap, [`change_ci`],
/// when a value is not positive).
fn change(base: &Entry, new: &Entry, pair_prior: Option<f64>) -> (f64, f64, f64) {
    if let Some(pairs) = shared_rounds(base, new) {
        let (prior, weight) = pair_prior.map_or((0.0, 0.0), |v| (v, GROUP_WEIGHT));
        return moderated_paired_change(&pairs, prior, weight)
            .unwrap_or_else(|| paired_change_ci(&pairs));
    }
    match (&base.spread, &new.spread) {
        (Some(b), Some(n)) => moderated_change(b, n),
        _ => change_ci(&base.values, &new.values),
    }
}

/// A group's typical spread: over its models with two or more values, all positive, the
/// [`typical_variance`] of their values' logarithms (the median, corrected for its
/// shortfall); 0 when no model has two values.
fn group_variance(models: &[Input]) -> f64 {
    let (variances, dfs): (Vec<f64>, Vec<f64>) = models
        .iter()
        .map(|(_, values, _)| values)
        .filter(|v| v.len() >= 2 && v.iter().all(|x| *x > 0.0))
        .map(|v| {
            let logs: Vec<f64> = v.iter().map(|x| x.ln()).collect();
            (variance(&logs), (v.len() - 1) as f64)
        })
        .unzip();
    typical_variance(&variances, &dfs)
}

/// A group's typical spread of a per-round ratio: the median, over the pairs of its models
/// that compare round by round, of the variance of their per-round log ratios, made
/// typical as in [`group_variance`]. `None` below [`PAIRS_FOR_PRIOR`] such
/// pairs: a pair's own variance is no prior for itself.
fn group_pair_variance(entries: &[Entry]) -> Option<f64> {
    let (variances, dfs): (Vec<f64>, Vec<f64>) = entries
        .iter()
        .enumerate()
        .flat_map(|(i, a)| entries[i + 1..].iter().map(move |b| (a, b)))
        .filter_map(|(a, b)| log_ratio_variance(&shared_rounds(a, b)?))
        .unzip();
    (variances.len() >= PAIRS_FOR_PRIOR).then(|| typical_variance(&variances, &dfs))
}

/// The (base, new) values of the rounds both ran in, when there are at least
/// [`PAIRED_ROUNDS`] of them. Never when either side has a round twice; rounds without a
/// number ([`NO_ROUND`]) and zero bases are left out.
fn shared_rounds(base: &Entry, new: &Entry) -> Option<Vec<(f64, f64)>> {
    let (Some(br), Some(nr)) = (&base.rounds, &new.rounds) else {
        return None;
    };
    let by_round = |rounds: &[u64], values: &[f64]| -> Option<BTreeMap<u64, f64>> {
        let mut map = BTreeMap::new();
        for (&r, &v) in rounds.iter().zip(values) {
            if r != NO_ROUND && map.insert(r, v).is_some() {
                return None; // a round twice: not a blocked design
            }
        }
        Some(map)
    };
    let (b, n) = (by_round(br, &base.values)?, by_round(nr, &new.values)?);
    let pairs: Vec<(f64, f64)> = b
        .iter()
        .filter_map(|(r, &bv)| Some((bv, *n.get(r)?)))
        .filter(|(bv, _)| *bv != 0.0)
        .collect();
    (pairs.len() >= PAIRED_ROUNDS).then_some(pairs)
}

/// Whether `worse` (ordered after `leader`) can be told apart from it.
fn separated(
    leader: &Entry,
    worse: &Entry,
    higher_is_better: bool,
    pair_prior: Option<f64>,
) -> bool {
    if leader.values.len() < MIN_TRIALS || worse.values.len() < MIN_TRIALS || leader.median == 0.0 {
        return false;
    }
    let (_, lo, hi) = change(leader, worse, pair_prior);
    if higher_is_better {
        1.0 + hi < 1.0 - NOISE_FLOOR
    } else {
        1.0 + lo > 1.0 + NOISE_FLOOR
    }
}

/// Puts models (name, trial values) into tiers, each model's trials taken as independent
/// of the others'. Models without a finite value are left out.
pub fn tiers(models: Vec<(String, Vec<f64>)>, higher_is_better: bool) -> Tiers {
    tiers_of(
        models.into_iter().map(|(m, v)| (m, v, None)).collect(),
        higher_is_better,
    )
}

/// [`tiers`] for trials that ran in rounds, interleaved across models (a run's trial
/// numbers): (name, [(round, value)]). Two models compare round by round where they share
/// enough rounds.
pub fn tiers_in_rounds(models: Vec<(String, Vec<(u64, f64)>)>, higher_is_better: bool) -> Tiers {
    tiers_of(
        models
            .into_iter()
            .map(|(m, t)| {
                let (rounds, values) = t.into_iter().unzip();
                (m, values, Some(rounds))
            })
            .collect(),
        higher_is_better,
    )
}

type Input = (String, Vec<f64>, Option<Vec<u64>>);

fn tiers_of(models: Vec<Input>, higher_is_better: bool) -> Tiers {
    let models: Vec<Input> = models
        .into_iter()
        .map(|(model, values, rounds)| {
            let keep: Vec<bool> = values.iter().map(|v| v.is_finite()).collect();
            let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
            let rounds = rounds.map(|r| {
                r.into_iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(r, _)| r)
                    .collect()
            });
            (model, values, rounds)
        })
        .filter(|(_, values, _)| !values.is_empty())
        .collect();
    let group = group_variance(&models);
    let mut entries: Vec<Entry> = models
        .into_iter()
        .map(|(model, values, rounds)| Entry {
            spread: Spread::moderated(&values, group, GROUP_WEIGHT),
            median: median(&values),
            ci: median_ci(&values),
            precision: precision(&values),
            cv: cv(&values),
            tier: 1,
            ratio: 1.0,
            ratio_ci: (1.0, 1.0),
            paired: false,
            model,
            values,
            rounds,
        })
        .collect();
    entries.sort_by(|a, b| {
        let order = if higher_is_better {
            b.median.total_cmp(&a.median)
        } else {
            a.median.total_cmp(&b.median)
        };
        order.then(a.model.cmp(&b.model))
    });
    let pair_prior = group_pair_variance(&entries);
    if let Some(best) = entries.first().cloned() {
        let mut leader = 0;
        let mut tier = 1;
        for i in 0..entries.len() {
            if i > 0 && separated(&entries[leader], &entries[i], higher_is_better, pair_prior) {
                tier += 1;
                leader = i;
            }
            let (_, lo, hi) = change(&best, &entries[i], pair_prior);
            let paired = i > 0 && shared_rounds(&best, &entries[i]).is_some();
            let e = &mut entries[i];
            e.paired = paired;
            e.tier = tier;
            if best.median != 0.0 {
                // The ratio of the medians, as the table's order and its median column
                // read, whichever way its interval was taken.
                e.ratio = e.median / best.median;
                e.ratio_ci = (1.0 + lo, 1.0 + hi);
            } else {
                e.ratio = f64::NAN;
                e.ratio_ci = (f64::NAN, f64::NAN);
            }
        }
    }
    Tiers {
        higher_is_better,
        entries,
    }
}

impl Tiers {
    pub fn count(&self) -> usize {
        self.entries.last().map(|e| e.tier).unwrap_or(0)
    }

    pub fn of(&self, model: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.model == model)
    }

    /// The tiers in plain words: "epoll-lt, epoll-et, poll tie for first; uring 0.73x;
    /// fork last (0.20x)".
    pub fn words(&self) -> String {
        self.words_in(Lang::En)
    }

    /// [`Tiers::words`] in `lang` (the phrases come from its text table).
    pub fn words_in(&self, lang: Lang) -> String {
        let n = self.entries.len();
        if n == 0 {
            return lang.get("tier.none").to_string();
        }
        if n == 1 {
            return lang.say("tier.only", &[("model", &self.entries[0].model)]);
        }
        let tiers = self.count();
        let sep = lang.get("list.sep");
        if tiers == 1 {
            let fewest = self
                .entries
                .iter()
                .map(|e| e.values.len())
                .min()
                .unwrap_or(0);
            let why = if fewest < MIN_TRIALS {
                lang.say("tier.few", &[("n", &MIN_TRIALS)])
            } else {
                lang.get("tier.close").to_string()
            };
            return lang.say(
                "tier.all",
                &[
                    ("n", &n),
                    ("why", &why),
                    ("models", &self.names(1).join(sep)),
                ],
            );
        }
        let mut parts = Vec::new();
        for t in 1..=tiers {
            let names = self.names(t);
            let members: Vec<&Entry> = self.entries.iter().filter(|e| e.tier == t).collect();
            let (lo, hi) = members
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |a, e| {
                    (a.0.min(e.ratio), a.1.max(e.ratio))
                });
            // One value when both ends print alike (1.136 and 1.144 are both "1.14").
            let (lo, hi) = (ratio_number(lo), ratio_number(hi));
            let paired = if members.iter().any(|e| e.paired) {
                "†"
            } else {
                ""
            };
            let ratio = if lo == hi {
                format!("{lo}x{paired}")
            } else {
                format!("{lo}-{hi}x{paired}")
            };
            let key = match (t, names.len()) {
                (1, 1) => "tier.first",
                (1, _) => "tier.tie_first",
                (t, 1) if t == tiers => "tier.last",
                (t, _) if t == tiers => "tier.tie_last",
                (_, 1) => "tier.one",
                _ => "tier.tie_at",
            };
            parts.push(lang.say(key, &[("models", &names.join(sep)), ("ratio", &ratio)]));
        }
        parts.join(lang.get("tier.sep"))
    }

    fn names(&self, tier: usize) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.tier == tier)
            .map(|e| e.model.as_str())
            .collect()
    }
}

/// Everything a view shows for one (scenario, parameters) group.
pub struct Group<'a> {
    pub scenario: String,
    pub params: String,
    /// Every line of the group (ok or not), by model in the order first seen.
    pub lines: BTreeMap<String, Vec<&'a Value>>,
    /// The scenario's headline metric (throughput, or p99 for the open loop) and its tiers.
    pub metric: Metric,
    pub unit: &'static str,
    pub headline: Tiers,
    /// The steadier second axis: server CPU per request, tiers of its own.
    pub efficiency: Tiers,
}

impl Group<'_> {
    /// The models in the order every view lists them: by headline tier and median, then
    /// those with no headline value (failed, unsupported).
    pub fn models(&self) -> Vec<&str> {
        let mut order: Vec<&str> = self
            .headline
            .entries
            .iter()
            .map(|e| e.model.as_str())
            .collect();
        for model in self.lines.keys() {
            if !order.contains(&model.as_str()) {
                order.push(model);
            }
        }
        order
    }
}

/// A group's parameters as the cell id writes them (`c=50,size=128`).
pub fn params_of(line: &Value) -> String {
    line["cell"]
        .as_str()
        .and_then(|c| c.rsplit('/').next())
        .unwrap_or("")
        .to_string()
}

/// Lines that a rerun replaced (`--rerun-noisy`): the same cell with a line whose
/// `rerun_of` names their trial.
pub fn superseded(lines: &[&Value]) -> Vec<bool> {
    let reruns: std::collections::HashSet<(&str, u64)> = lines
        .iter()
        .filter_map(|l| Some((l["cell"].as_str()?, l["rerun_of"].as_u64()?)))
        .collect();
    lines
        .iter()
        .map(|l| {
            let cell = l["cell"].as_str().unwrap_or("");
            l["trial"]
                .as_u64()
                .is_some_and(|t| reruns.contains(&(cell, t)))
        })
        .collect()
}

/// The lines no rerun replaced ([`superseded`]), in order: what every view counts.
pub fn kept<'a>(lines: impl IntoIterator<Item = &'a Value>) -> Vec<&'a Value> {
    let all: Vec<&Value> = lines.into_iter().collect();
    let replaced = superseded(&all);
    all.into_iter()
        .zip(replaced)
        .filter_map(|(line, r)| (!r).then_some(line))
        .collect()
}

/// Groups every line by (scenario, parameters) and judges each group on its headline metric
/// and on CPU per request, in parallel. Lines a rerun replaced are left out.
pub fn judge<'a>(lines: impl IntoIterator<Item = &'a Value>) -> Vec<Group<'a>> {
    type ByModel<'a> = BTreeMap<String, Vec<&'a Value>>;
    let mut groups: BTreeMap<(String, String), ByModel> = BTreeMap::new();
    for line in kept(lines) {
        groups
            .entry((
                line["scenario"].as_str().unwrap_or("?").to_string(),
                params_of(line),
            ))
            .or_default()
            .entry(line["model"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(line);
    }
    let groups: Vec<((String, String), ByModel)> = groups.into_iter().collect();
    groups
        .into_par_iter()
        .map(|((scenario, params), lines)| {
            let metric = headline(&scenario);
            let values = |m: Metric| -> Vec<(String, Vec<(u64, f64)>)> {
                lines
                    .iter()
                    .map(|(model, ls)| {
                        let v = ls
                            .iter()
                            .filter(|l| l["status"] == "ok")
                            .filter_map(|l| {
                                // A rerun ran outside the rounds: no round of its own.
                                let round = match l["rerun_of"].is_null() {
                                    true => l["trial"].as_u64()?,
                                    false => NO_ROUND,
                                };
                                Some((round, m.of(l)?.0))
                            })
                            .collect();
                        (model.clone(), v)
                    })
                    .collect()
            };
            let unit = lines
                .values()
                .flatten()
                .filter(|l| l["status"] == "ok")
                .find_map(|l| metric.of(l).map(|v| v.1))
                .unwrap_or("");
            Group {
                headline: tiers_in_rounds(values(metric), metric.higher_is_better()),
                efficiency: tiers_in_rounds(
                    values(Metric::CpuPerRequest),
                    Metric::CpuPerRequest.higher_is_better(),
                ),
                scenario,
                params,
                lines,
                metric,
                unit,
            }
        })
        .collect()
}

/// The widest interval of a median still printed as "± x%": past it, the interval itself.
pub const MEDIAN_PM_MOST: f64 = 0.5;

/// "161.2k ± 4%": a median and its interval's half width in percent; past
/// [`MEDIAN_PM_MOST`], "256 [92.0, 2260]": the median and its interval.
pub fn median_pm(e: &Entry) -> String {
    if e.precision > MEDIAN_PM_MOST && e.precision.is_finite() {
        // "92.0 ± 257%" would read as reaching below zero: the interval itself.
        format!(
            "{} [{}, {}]",
            compact(e.median),
            compact(e.ci.0),
            compact(e.ci.1)
        )
    } else if e.precision.is_finite() {
        format!("{} ± {:.0}%", compact(e.median), e.precision * 100.0)
    } else {
        format!("{} (1 trial)", compact(e.median))
    }
}

/// "0.73 ± 0.06x" (hyperfine's form), "1.00" for the best, or the ratio beside its interval
/// ("0.84x [0.31, 3.03]") when the interval is too wide or lopsided for a ±, or the ratio of
/// the medians is off its middle (an interval taken round by round is about the geometric
/// mean of the per-round ratios); a † after a ratio whose interval was taken round by round.
pub fn ratio_pm(e: &Entry, best: bool) -> String {
    let text = ratio_text(e, best);
    if e.paired && !best && !e.ratio.is_nan() {
        text + "†"
    } else {
        text
    }
}

/// A ratio as every view prints it: two decimals, or two significant digits below 0.1, so a
/// model at a two-hundredth of the best reads "0.0047", not "0.00".
pub fn ratio_number(x: f64) -> String {
    format!("{x:.*}", significant_decimals(x))
}

/// The decimals that print `x` with two of them from 0.1 up, and with two significant digits
/// below (0.0047): [`ratio_number`]'s (an interval's ends and ± take its ratio's), and a
/// chart axis's small ticks.
pub fn significant_decimals(x: f64) -> usize {
    if !x.is_finite() || x == 0.0 || x.abs() >= 0.1 {
        2
    } else {
        (1.0 - x.abs().log10().floor()).min(6.0) as usize
    }
}

fn ratio_text(e: &Entry, best: bool) -> String {
    let (lo, hi) = e.ratio_ci;
    let d = significant_decimals(e.ratio);
    // A ± reads as the interval only where the ratio sits near its middle: a ratio of
    // medians with an interval taken round by round may not.
    let centred = (e.ratio - (lo + hi) / 2.0).abs() <= 0.25 * e.ratio_pm();
    if best {
        "1.00".into()
    } else if e.ratio.is_nan() {
        "-".into()
    } else if e.ratio_pm() == 0.0 {
        format!("{:.d$}x", e.ratio)
    } else if centred && e.ratio_pm() <= 0.2 * e.ratio {
        format!("{:.d$} ± {:.d$}x", e.ratio, e.ratio_pm())
    } else {
        format!("{:.d$}x [{lo:.d$}, {hi:.d$}]", e.ratio)
    }
}

/// 143301 -> "143.3k"; 2136.3 -> "2136"; 6.04 -> "6.04".
pub fn compact(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 100_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if x.abs() >= 10_000.0 {
        format!("{:.2}k", x / 1000.0)
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A Markdown table of one axis's tiers (the export and `report compare` use it).
pub fn markdown_table(t: &Tiers, unit: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| tier | model | median {unit} | 95% CI | ratio to best | CV | trials |\n|---:|---|---:|---|---:|---:|---:|"
    );
    for (i, e) in t.entries.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} – {} | {} | {:.1}% | {} |",
            e.tier,
            e.model,
            median_pm(e),
            compact(e.ci.0),
            compact(e.ci.1),
            ratio_pm(e, i == 0),
            e.cv * 100.0,
            e.values.len()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic "noise": n values around `center`, spread ±`spread` (relative), in a
    /// scrambled order.
    fn trials(center: f64, spread: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::stats::Rng::new(seed);
        (0..n)
            .map(|_| {
                let u = rng.below(10_001) as f64 / 10_000.0; // 0..=1
                center * (1.0 + spread * (2.0 * u - 1.0))
            })
            .collect()
    }

    fn tier_of(t: &Tiers, model: &str) -> usize {
        t.of(model).unwrap().tier
    }

    #[test]
    fn identical_distributions_tie() {
        // The same distribution under two names, many seeds: never separated.
        for seed in 1..200 {
            let a = trials(100_000.0, 0.05, 5, seed);
            let b = trials(100_000.0, 0.05, 5, seed * 7919 + 13);
            let t = tiers(vec![("a".into(), a), ("b".into(), b)], true);
            assert_eq!(t.count(), 1, "seed {seed}: {t:?}");
        }
    }

    #[test]
    fn twenty_percent_with_five_percent_noise_separates() {
        for seed in 1..100 {
            let fast = trials(100_000.0, 0.05, 3, seed);
            let slow = trials(80_000.0, 0.05, 3, seed + 1000);
            let t = tiers(vec![("slow".into(), slow), ("fast".into(), fast)], true);
            assert_eq!(t.entries[0].model, "fast");
            assert_eq!((tier_of(&t, "fast"), tier_of(&t, "slow")), (1, 2), "{t:?}");
            let slow = t.of("slow").unwrap();
            assert!(slow.ratio < 0.9 && slow.ratio > 0.7, "{slow:?}");
            assert!(slow.ratio_ci.0 <= slow.ratio && slow.ratio <= slow.ratio_ci.1);
        }
    }

    #[test]
    fn three_tight_trials_do_not_outweigh_the_groups_spread() {
        // Ten models whose trials spread by ±8%, and two whose three trials happen to sit
        // still, 5% apart: alone their ranges fail to overlap by more than the floor, but
        // the group says a trial moves by far more than their own spread shows.
        let mut models: Vec<(String, Vec<f64>)> = (0..10)
            .map(|i| (format!("m{i}"), trials(50_000.0, 0.08, 3, i + 1)))
            .collect();
        models.push(("a".into(), vec![100_000.0, 100_100.0, 99_900.0]));
        models.push(("b".into(), vec![95_000.0, 95_100.0, 94_900.0]));
        let t = tiers(models.clone(), true);
        assert_eq!((tier_of(&t, "a"), tier_of(&t, "b")), (1, 1), "{t:?}");
        // Where the group is as quiet as they are, the same 5% is a separation.
        for (i, (_, values)) in models.iter_mut().take(10).enumerate() {
            *values = trials(50_000.0, 0.002, 3, i as u64 + 1);
        }
        let t = tiers(models, true);
        assert_eq!((tier_of(&t, "a"), tier_of(&t, "b")), (1, 2), "{t:?}");
        // The bootstrap of the medians alone would have split them in the noisy group too.
        let (_, _, hi) = change_ci(
            &[100_000.0, 100_100.0, 99_900.0],
            &[95_000.0, 95_100.0, 94_900.0],
        );
        assert!(hi < -NOISE_FLOOR);
    }

    #[test]
    fn a_single_trial_never_separates() {
        let t = tiers(
            vec![("a".into(), vec![100.0]), ("b".into(), vec![10.0])],
            true,
        );
        assert_eq!(t.count(), 1);
        assert!(t.words().contains("fewer than 3 trials"), "{}", t.words());
        // Nor does one trial against many.
        let t = tiers(
            vec![
                ("a".into(), vec![100.0, 101.0, 99.0]),
                ("b".into(), vec![10.0]),
            ],
            true,
        );
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn direction_aware() {
        // Latency and CPU per request: lower is better.
        let low = vec![6.0, 6.1, 5.9, 6.05];
        let high = vec![9.0, 9.2, 8.9, 9.1];
        let t = tiers(
            vec![("high".into(), high.clone()), ("low".into(), low.clone())],
            false,
        );
        assert_eq!(t.entries[0].model, "low");
        assert_eq!(tier_of(&t, "high"), 2);
        assert!(t.of("high").unwrap().ratio > 1.4);
        let t = tiers(vec![("high".into(), high), ("low".into(), low)], true);
        assert_eq!(t.entries[0].model, "high");
        assert_eq!(tier_of(&t, "low"), 2);
    }

    #[test]
    fn within_the_noise_floor_is_a_tie_even_with_tight_trials() {
        let a = vec![100.0, 100.1, 99.9];
        let b = vec![98.0, 98.1, 97.9]; // 2% lower, trials 0.1% apart
        let t = tiers(vec![("a".into(), a), ("b".into(), b)], true);
        assert_eq!(t.count(), 1, "{t:?}");
    }

    #[test]
    fn rounds_at_two_speeds_cancel_when_compared_round_by_round() {
        // The machine ran at 180k or 130k a round; "slow" is 15% below "fast" in every
        // round. Taken apart, the trials of both span both speeds and overlap: a tie. Taken
        // round by round, every ratio is 0.85: separated, at 0.85x.
        let speeds = [180_000.0, 130_000.0, 180_000.0, 130_000.0, 180_000.0];
        let fast: Vec<(u64, f64)> = speeds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, *s))
            .collect();
        let slow: Vec<(u64, f64)> = fast.iter().map(|(r, v)| (*r, v * 0.85)).collect();
        let plain = |t: &[(u64, f64)]| t.iter().map(|x| x.1).collect::<Vec<f64>>();
        let apart = tiers(
            vec![("fast".into(), plain(&fast)), ("slow".into(), plain(&slow))],
            true,
        );
        assert_eq!(apart.count(), 1, "{apart:?}");
        let paired = tiers_in_rounds(
            vec![("fast".into(), fast.clone()), ("slow".into(), slow)],
            true,
        );
        assert_eq!(tier_of(&paired, "slow"), 2, "{paired:?}");
        let e = paired.of("slow").unwrap();
        assert!(
            (e.ratio - 0.85).abs() < 1e-9 && e.ratio_pm() < 1e-9,
            "{e:?}"
        );
        assert_eq!(
            ratio_pm(e, false),
            "0.85x†",
            "marked as taken round by round"
        );
        assert!(!ratio_pm(apart.of("slow").unwrap(), false).contains('†'));
        // A round twice, or rounds outside the rounds (reruns): not paired, so a tie here.
        let mut twice = fast.clone();
        twice[1].0 = 1;
        let slow_again: Vec<(u64, f64)> = fast.iter().map(|(r, v)| (*r, v * 0.85)).collect();
        let t = tiers_in_rounds(
            vec![("fast".into(), twice), ("slow".into(), slow_again.clone())],
            true,
        );
        assert_eq!(t.count(), 1, "{t:?}");
        let reruns: Vec<(u64, f64)> = slow_again.iter().map(|(_, v)| (NO_ROUND, *v)).collect();
        let t = tiers_in_rounds(
            vec![("fast".into(), fast.clone()), ("slow".into(), reruns)],
            true,
        );
        assert_eq!(t.count(), 1, "{t:?}");
        // The same server under two names, through the same speed changes: one tier.
        let twin: Vec<(u64, f64)> = fast.iter().map(|(r, v)| (*r, v * 1.01)).collect();
        let same = tiers_in_rounds(vec![("a".into(), fast.clone()), ("b".into(), twin)], true);
        assert_eq!(same.count(), 1, "{same:?}");
        // Fewer than 4 shared rounds (none here): medians, as without rounds.
        let elsewhere: Vec<(u64, f64)> = fast.iter().map(|(r, v)| (r + 10, v * 0.85)).collect();
        let unshared = tiers_in_rounds(
            vec![("fast".into(), fast), ("slow".into(), elsewhere)],
            true,
        );
        assert_eq!(unshared.count(), 1, "{unshared:?}");
    }

    #[test]
    fn four_still_rounds_do_not_outweigh_the_pairs_spread() {
        // Ten models whose trials move by ±8% round to round on top of the machine's speed,
        // and two whose four rounds keep them exactly 5% apart. The bootstrap of the median of
        // four ratios, all 0.95, would claim 0.95 to 0.95; the group's pairs say a per-round
        // ratio moves by far more.
        let speeds = [180_000.0, 130_000.0, 170_000.0, 140_000.0];
        let rounds = |scale: f64, spread: f64, seed: u64| -> Vec<(u64, f64)> {
            let noise = trials(1.0, spread, speeds.len(), seed);
            (0..speeds.len())
                .map(|r| (r as u64 + 1, speeds[r] * scale * noise[r]))
                .collect()
        };
        let mut models: Vec<(String, Vec<(u64, f64)>)> = (0..10)
            .map(|i| (format!("m{i}"), rounds(0.5, 0.08, 2 * i + 1)))
            .collect();
        models.push(("a".into(), rounds(1.0, 0.0, 99)));
        models.push(("b".into(), rounds(0.95, 0.0, 99)));
        let t = tiers_in_rounds(models.clone(), true);
        assert_eq!((tier_of(&t, "a"), tier_of(&t, "b")), (1, 1), "{t:?}");
        let b = t.of("b").unwrap();
        assert!(b.paired && (b.ratio - 0.95).abs() < 1e-9, "{b:?}");
        assert!(
            paired_change_ci(&[(1.0, 0.95); 4]).2 < -NOISE_FLOOR,
            "the bootstrap alone splits them"
        );
        // Where the group's pairs are as still, the same 5% is a separation.
        for (i, (_, values)) in models.iter_mut().take(10).enumerate() {
            *values = rounds(0.5, 0.002, 2 * i as u64 + 1);
        }
        let t = tiers_in_rounds(models, true);
        assert_eq!((tier_of(&t, "a"), tier_of(&t, "b")), (1, 2), "{t:?}");
    }

    /// A model ordered below the best by its median never reads better than the best: its
    /// ratio is the ratio of the medians, whichever way the interval was taken. Here b was
    /// ahead in two rounds of five by half, and a little behind in the other three.
    #[test]
    fn a_model_below_the_best_never_reads_better_than_it() {
        let rounds = |v: &[f64]| {
            v.iter()
                .enumerate()
                .map(|(k, x)| (k as u64 + 1, *x))
                .collect()
        };
        let t = tiers_in_rounds(
            vec![
                ("a".into(), rounds(&[100.0, 200.0, 200.0, 100.0, 200.0])),
                ("b".into(), rounds(&[150.0, 199.0, 199.0, 150.0, 199.0])),
            ],
            true,
        );
        let b = t.of("b").unwrap();
        assert!(b.paired, "{b:?}");
        assert!((b.ratio - 0.995).abs() < 1e-9, "{b:?}");
        assert!(b.ratio_ci.1 > 1.1, "round by round, b was ahead: {b:?}");
        let text = ratio_pm(b, false);
        assert!(text.starts_with("0.99x ["), "a wide interval: {text}");
        assert!(t.words().contains("tie"), "{}", t.words());
    }

    /// A median whose interval reaches further than ±50% is printed beside its interval:
    /// "256 ± 782%" would read as reaching below zero.
    #[test]
    fn a_median_known_only_loosely_is_printed_beside_its_interval() {
        let t = tiers(
            vec![
                ("a".into(), vec![100.0, 102.0, 98.0]),
                ("b".into(), vec![92.0, 256.0, 2260.0]),
            ],
            false,
        );
        assert_eq!(median_pm(t.of("a").unwrap()), "100 ± 2%");
        assert_eq!(median_pm(t.of("b").unwrap()), "256 [92.0, 2260]");
    }

    /// A model far below the best keeps two significant digits, not "0.00".
    #[test]
    fn ratios_far_below_the_best_keep_two_significant_digits() {
        assert_eq!(ratio_number(0.73), "0.73");
        assert_eq!(ratio_number(0.0047), "0.0047");
        assert_eq!(ratio_number(0.05), "0.050");
        assert_eq!(ratio_number(1953.77), "1953.77");
        let t = tiers(
            vec![
                ("epoll-et".into(), vec![169.0e3, 170.0e3, 171.0e3]),
                ("select".into(), vec![790.0, 796.0, 800.0]),
            ],
            true,
        );
        assert_eq!(t.words(), "epoll-et first; select last (0.0047x)");
        let select = t.of("select").unwrap();
        assert!(
            ratio_pm(select, false).starts_with("0.0047 ± 0.000"),
            "{}",
            ratio_pm(select, false)
        );
    }

    /// A ± stands for an interval only where the ratio sits near its middle: a narrow
    /// interval off the ratio (a ratio of medians beside an interval about the geometric mean
    /// of per-round ratios) is printed as the interval, a centred one of the same width as a ±.
    #[test]
    fn a_narrow_interval_off_the_ratio_is_printed_as_the_interval() {
        let mut e = tiers(
            vec![("a".into(), vec![1.0]), ("b".into(), vec![0.95])],
            true,
        )
        .of("b")
        .unwrap()
        .clone();
        e.paired = true;
        e.ratio = 0.95;
        e.ratio_ci = (0.97, 1.03);
        assert_eq!(ratio_pm(&e, false), "0.95x [0.97, 1.03]†");
        e.ratio_ci = (0.92, 0.98);
        assert_eq!(ratio_pm(&e, false), "0.95 ± 0.03x†");
        e.paired = false;
        assert_eq!(ratio_pm(&e, false), "0.95 ± 0.03x");
    }

    #[test]
    fn tiers_follow_the_leader_and_words_say_it() {
        let t = tiers(
            vec![
                ("epoll-lt".into(), vec![160.0, 162.0, 158.0]),
                ("epoll-et".into(), vec![161.0, 163.0, 159.0]),
                ("poll".into(), vec![157.0, 160.0, 159.0]),
                ("uring".into(), vec![118.0, 117.0, 119.0]),
                ("fork".into(), vec![30.0, 31.0, 29.0]),
            ],
            true,
        );
        assert_eq!(t.count(), 3, "{t:?}");
        let words = t.words();
        assert!(
            words.starts_with("epoll-et, epoll-lt, poll tie for first; uring 0.73x; fork last"),
            "{words}"
        );
        // A chain of small steps does not make one tier of a wide range.
        let chain: Vec<(String, Vec<f64>)> = (0..8)
            .map(|i| {
                let c = 100.0 * 0.96f64.powi(i);
                (format!("m{i}"), vec![c * 0.99, c, c * 1.01])
            })
            .collect();
        let t = tiers(chain, true);
        let first = t.entries.iter().filter(|e| e.tier == 1).count();
        assert!(first < 8 && t.count() > 1, "{t:?}");
        for e in &t.entries {
            let leader = t.entries.iter().find(|l| l.tier == e.tier).unwrap();
            assert!(e.median / leader.median > 0.9, "within a tier: {t:?}");
        }
    }

    #[test]
    fn deterministic_and_missing_values_left_out() {
        let input = || {
            vec![
                ("a".to_string(), vec![1.0, 2.0, 3.0, 4.0]),
                ("b".to_string(), vec![2.0, 3.0, 5.0, 4.5]),
                ("c".to_string(), vec![f64::NAN]),
            ]
        };
        let (x, y) = (tiers(input(), true), tiers(input(), true));
        assert_eq!(x.entries.len(), 2);
        for (p, q) in x.entries.iter().zip(&y.entries) {
            assert_eq!((p.ratio_ci, p.ci, p.tier), (q.ratio_ci, q.ci, q.tier));
        }
    }

    #[test]
    fn a_tier_whose_ratios_print_alike_names_one_ratio() {
        let entry = |model: &str, tier: usize, ratio: f64| Entry {
            model: model.into(),
            values: vec![1.0; 3],
            rounds: None,
            median: 1.0,
            ci: (1.0, 1.0),
            precision: 0.0,
            cv: 0.0,
            tier,
            ratio,
            ratio_ci: (ratio, ratio),
            paired: false,
            spread: None,
        };
        let t = Tiers {
            higher_is_better: false,
            entries: vec![
                entry("a", 1, 1.0),
                entry("b", 2, 1.136),
                entry("c", 2, 1.144),
                entry("d", 3, 2.0),
            ],
        };
        assert_eq!(t.words(), "a first; b, c tie at 1.14x; d last (2.00x)");
    }

    #[test]
    fn precision_narrows_with_trials() {
        assert!(precision(&[1.0]).is_infinite());
        // The same spread (90..110), three trials against fifteen.
        let few = precision(&[90.0, 100.0, 110.0]);
        let many: Vec<f64> = (0..15).map(|i| 90.0 + 20.0 * i as f64 / 14.0).collect();
        let many = precision(&many);
        assert!((few - 0.1).abs() < 1e-9, "{few}");
        assert!(many < few, "{many} < {few}");
        assert!(precision(&[100.0, 100.0, 100.0]) == 0.0);
    }

    #[test]
    fn judge_groups_by_scenario_and_params_and_drops_superseded_lines() {
        use serde_json::json;
        let line = |model: &str, trial: u64, rps: f64, cpu: f64| {
            json!({"scenario": "echo", "cell": format!("echo/{model}/c=50"), "model": model,
                   "trial": trial, "status": "ok",
                   "load": {"throughput_rps": rps}, "server": {"cpu_us_per_request": cpu}})
        };
        let mut lines = vec![
            line("a", 1, 100.0, 6.0),
            line("a", 2, 101.0, 6.1),
            line("a", 3, 99.0, 6.0),
            line("b", 1, 10.0, 60.0),
            line("b", 2, 70.0, 9.0),
            line("b", 3, 69.0, 9.1),
        ];
        let mut rerun = line("b", 4, 71.0, 9.0);
        rerun["rerun_of"] = json!(1);
        lines.push(rerun);
        // A rerun that was itself rerun (the CPUs apart both times): only the last counts.
        let mut again = line("b", 5, 10.0, 60.0);
        again["rerun_of"] = json!(4);
        lines.push(again);
        let mut last = line("b", 6, 71.0, 9.0);
        last["rerun_of"] = json!(5);
        lines.push(last);
        let all: Vec<&Value> = lines.iter().collect();
        assert_eq!(
            superseded(&all),
            [false, false, false, true, false, false, true, true, false]
        );
        let groups = judge(&lines);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!((g.scenario.as_str(), g.params.as_str()), ("echo", "c=50"));
        let b = g.headline.of("b").unwrap();
        assert_eq!(b.values.len(), 3, "the noisy trial 1 was replaced");
        assert_eq!(b.tier, 2);
        assert_eq!(g.efficiency.entries[0].model, "a");
        assert_eq!(g.efficiency.of("b").unwrap().tier, 2);
    }
}
