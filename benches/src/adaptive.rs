//! Adaptive trials and reruns: which cells get another trial after the suite's planned ones.
//!
//! With a precision target, rounds of one more trial run (interleaved over models, in the
//! suite's order) for every cell whose median's 95% interval is still wider than the target,
//! until each cell meets it or the budget (`max_trials`, `max_time`) is spent;
//! `precision.json` records per cell which. With `--rerun-noisy`, every cell flagged by
//! `reports::noise` runs again as a new trial that names the one it replaces (`rerun_of`),
//! after the planned rounds and before any adaptive one (whose own flagged trials are rerun
//! after it); views leave the replaced line out. A rerun that again ran with the CPUs apart
//! or stopped runs again, a trial at most [`RERUN_PASSES`] times; with `max_time`, reruns
//! stop at it, and adaptive rounds get only the time the reruns leave.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use reports::metrics::headline;
use reports::tiers::precision;

use crate::suite::{Cell, Suite};

/// Every line of one cell id, but those a rerun replaced.
fn by_cell(lines: &[Value]) -> BTreeMap<&str, Vec<&Value>> {
    let mut cells: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for line in reports::tiers::kept(lines) {
        if let Some(cell) = line["cell"].as_str() {
            cells.entry(cell).or_default().push(line);
        }
    }
    cells
}

/// The headline values (throughput, or p99 for the open loop) of a cell's ok lines.
fn values(lines: &[&Value]) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| l["status"] == "ok")
        .filter_map(|l| headline(l["scenario"].as_str()?).of(l).map(|v| v.0))
        .collect()
}

/// Where a cell stands against the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Met,
    /// Still short, with budget left.
    Short,
    MaxTrials,
    /// The model does not run here, so more trials would not help.
    Unsupported,
}

fn state(lines: Option<&Vec<&Value>>, target: f64, max_trials: usize) -> State {
    let Some(lines) = lines else {
        return State::Short;
    };
    if lines.iter().any(|l| l["status"] == "unsupported") {
        return State::Unsupported;
    }
    if precision(&values(lines)) <= target {
        State::Met
    } else if lines.len() >= max_trials {
        State::MaxTrials
    } else {
        State::Short
    }
}

/// The number the next round's trials take: one above every trial number of the run, so
/// that every cell of the round shares it (tiers pair models by round) and no rerun, which
/// takes its cell's next number, has it already.
pub fn next_trial(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter_map(|l| l["trial"].as_u64())
        .max()
        .unwrap_or(0) as usize
        + 1
}

/// The numbers adaptive rounds have taken: those of trials above the planned ones that no
/// rerun took.
fn round_numbers(planned: &[Cell], lines: &[Value]) -> BTreeSet<u64> {
    let last_planned = planned.iter().map(|c| c.trial).max().unwrap_or(0) as u64;
    lines
        .iter()
        .filter(|l| l["rerun_of"].is_null())
        .filter_map(|l| l["trial"].as_u64())
        .filter(|&t| t > last_planned)
        .collect()
}

/// The adaptive round under way: its number and its cells, which the runner keeps in the
/// run's `round.json` from before the round's first cell runs until its last one has. An
/// interruption leaves the file behind, and `--resume` finishes that round (and only that
/// one) under its number: which cells a round holds is decided when it starts, and cannot
/// be read back from the results, where a rerun after the round may leave a cell that had
/// met the target short of it again.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenRound {
    pub trial: usize,
    /// Cell ids, in run order.
    pub cells: Vec<String>,
}

impl OpenRound {
    const FILE: &'static str = "round.json";

    /// The round an earlier session left open in `dir`, if any (an unreadable file counts
    /// as none: the next round then takes a new number).
    pub fn read(dir: &Path) -> Option<OpenRound> {
        let text = std::fs::read_to_string(dir.join(Self::FILE)).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        let cells = value["cells"]
            .as_array()?
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(OpenRound {
            trial: usize::try_from(value["trial"].as_u64()?).ok()?,
            cells,
        })
    }

    /// Records `round` as under way in `dir`.
    pub fn open(dir: &Path, round: &[Cell]) -> Result<(), String> {
        let text = json!({
            "trial": round.first().map_or(0, |c| c.trial),
            "cells": round.iter().map(Cell::id).collect::<Vec<_>>(),
        });
        reports::run::replace_file(&dir.join(Self::FILE), format!("{text}\n").as_bytes())
    }

    /// The round in `dir` ran to its end (or there is none to finish).
    pub fn close(dir: &Path) -> Result<(), String> {
        match std::fs::remove_file(dir.join(Self::FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", dir.join(Self::FILE).display()))
            }
            _ => Ok(()),
        }
    }
}

/// The rest of a round an interrupted session left open: its number and its cells (of
/// `planned`, in run order) that have no line with that number yet. `None` when there is no
/// open round, when all its cells ran, or when none of them did (then nothing was cut in
/// two, and the next round takes [`next_trial`] as if this one had never started).
/// Finishing it keeps a group's models at the same count of trials in the same rounds, as an
/// uninterrupted run would have them, where a new number would give the cells that had run
/// the round one trial more than the rest of their group.
pub fn unfinished_round(
    open: Option<&OpenRound>,
    planned: &[Cell],
    lines: &[Value],
) -> Option<(usize, Vec<Cell>)> {
    let open = open?;
    let trial = open.trial as u64;
    let numbered: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["trial"].as_u64() == Some(trial) && l["rerun_of"].is_null())
        .filter_map(|l| l["cell"].as_str())
        .collect();
    if numbered.is_empty() {
        return None;
    }
    let rest: Vec<Cell> = open
        .cells
        .iter()
        .filter(|id| !numbered.contains(id.as_str()))
        .filter_map(|id| planned.iter().find(|c| c.trial == 1 && c.id() == *id))
        .map(|c| Cell {
            trial: open.trial,
            ..c.clone()
        })
        .collect();
    (!rest.is_empty()).then_some((open.trial, rest))
}

/// The cells of a round numbered `trial` ([`next_trial`]; one per distinct cell of `planned`, in run order) that are still short of the suite's target
/// after `lines` and have no line numbered `trial` yet.
pub fn next_round(suite: &Suite, planned: &[Cell], lines: &[Value], trial: usize) -> Vec<Cell> {
    let Some(target) = suite.precision else {
        return Vec::new();
    };
    let cells = by_cell(lines);
    let numbered: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["trial"].as_u64() == Some(trial as u64))
        .filter_map(|l| l["cell"].as_str())
        .collect();
    planned
        .iter()
        .filter(|c| c.trial == 1)
        .filter(|c| state(cells.get(c.id().as_str()), target, suite.most_trials()) == State::Short)
        .filter(|c| !numbered.contains(c.id().as_str()))
        .map(|c| Cell { trial, ..c.clone() })
        .collect()
}

/// `precision.json`: the target, the budget, and per cell its trials, the precision reached
/// and the outcome (`met`, `max_trials`, `max_time`, `unsupported`).
pub fn outcomes(suite: &Suite, planned: &[Cell], lines: &[Value], out_of_time: bool) -> Value {
    let target = suite.precision.unwrap_or(0.0);
    let cells = by_cell(lines);
    let mut per_cell = serde_json::Map::new();
    for cell in planned.iter().filter(|c| c.trial == 1) {
        let id = cell.id();
        let have = cells.get(id.as_str());
        let reached = have.map(|l| precision(&values(l))).unwrap_or(f64::INFINITY);
        let outcome = match state(have, target, suite.most_trials()) {
            State::Met => "met",
            State::MaxTrials => "max_trials",
            State::Unsupported => "unsupported",
            State::Short if out_of_time => "max_time",
            State::Short => "max_trials",
        };
        per_cell.insert(
            id,
            json!({
                "trials": have.map_or(0, |l| l.len()),
                "precision": reached.is_finite().then_some((reached * 1e4).round() / 1e4),
                "outcome": outcome,
            }),
        );
    }
    json!({
        "target": suite.precision,
        "min_trials": suite.trials,
        "max_trials": suite.most_trials(),
        "max_time_s": suite.max_time.map(|t| t.as_secs_f64()),
        "cells": per_cell,
    })
}

/// What a run has spent of `max_time` and what more cells would take. A cell costs its
/// warmup and measured time (its scenario's, which may be longer than the suite's) plus an
/// overhead per cell for starting, stopping and sampling it: what this session's cells took
/// beyond their own warmup and measured time, or the machine's last run's figure before one
/// has run. Cells an earlier session of the run recorded (before a `--resume`) count at their
/// own warmup and measured time plus that overhead; the time between sessions does not
/// count.
#[derive(Clone, Debug)]
pub struct Budget {
    warmup: Duration,
    /// The overhead per cell until a cell of this session has run.
    first_guess: Duration,
    /// Cells this session ran, and their warmup and measured time together.
    ran: (usize, Duration),
    /// Cells earlier sessions ran, and theirs.
    before: (usize, Duration),
}

impl Budget {
    pub fn new(warmup: Duration, first_guess: Duration) -> Self {
        Budget {
            warmup,
            first_guess,
            ran: (0, Duration::ZERO),
            before: (0, Duration::ZERO),
        }
    }

    /// The warmup and measured time a result line stands for: none for an unsupported model
    /// (refused at once: not counted as a cell), zero for a cell that failed before loadgen
    /// measured (its whole time was overhead).
    fn window(&self, line: &Value) -> Option<Duration> {
        if line["status"] == "unsupported" {
            return None;
        }
        let measured = line["load"]["duration_s"]
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::ZERO, |s| self.warmup + Duration::from_secs_f64(s));
        Some(measured)
    }

    /// Counts a line an earlier session of this run recorded.
    pub fn ran_before(&mut self, line: &Value) {
        if let Some(w) = self.window(line) {
            self.before = (self.before.0 + 1, self.before.1 + w);
        }
    }

    /// Counts a line this session recorded.
    pub fn ran(&mut self, line: &Value) {
        if let Some(w) = self.window(line) {
            self.ran = (self.ran.0 + 1, self.ran.1 + w);
        }
    }

    /// This session's cells (not the unsupported ones) and their warmup and measured time.
    pub fn ran_so_far(&self) -> (usize, Duration) {
        self.ran
    }

    /// What a cell takes beyond its warmup and measured time, `elapsed` into this session.
    pub fn overhead(&self, elapsed: Duration) -> Duration {
        match self.ran {
            (0, _) => self.first_guess,
            (n, windows) => elapsed.saturating_sub(windows) / n as u32,
        }
    }

    /// The run's time so far, `elapsed` into this session.
    pub fn spent(&self, elapsed: Duration) -> Duration {
        elapsed + self.before.1 + self.overhead(elapsed) * self.before.0 as u32
    }

    /// What each of `cells` would take, in order.
    pub fn times<'a>(
        &self,
        elapsed: Duration,
        cells: impl IntoIterator<Item = &'a Cell>,
    ) -> Vec<Duration> {
        let overhead = self.overhead(elapsed);
        cells
            .into_iter()
            .map(|c| self.warmup + c.duration + overhead)
            .collect()
    }
}

/// How many of the cells that take `times`, one after another, fit in `room` (none from the
/// first whose length is unknown, zero).
pub fn cells_that_fit(room: Duration, times: impl IntoIterator<Item = Duration>) -> usize {
    let mut left = room;
    times
        .into_iter()
        .take_while(|t| {
            let fits = !t.is_zero() && *t <= left;
            left = left.saturating_sub(*t);
            fits
        })
        .count()
}

/// The part of a round that fits in `room` when the whole round does not: whole groups (a
/// scenario with its parameters: every model of it in the round), the least precise first
/// (by the median over the group's cells of their [`precision`] after `lines`),
/// each taken if it still fits. A group's models still run in the same round, so they
/// compare round by round; the time left goes where the medians are least known. `times`
/// gives each cell of `round` its length; the cells keep the round's order.
pub fn part_of_round(
    round: &[Cell],
    lines: &[Value],
    times: &[Duration],
    room: Duration,
) -> Vec<Cell> {
    let cells = by_cell(lines);
    let key = |c: &Cell| (c.scenario.clone(), c.params.clone());
    // Groups in the round's order: (key, its cells' indices).
    let mut groups: Vec<(_, Vec<usize>)> = Vec::new();
    for (i, cell) in round.iter().enumerate() {
        match groups.iter_mut().find(|(k, _)| *k == key(cell)) {
            Some((_, members)) => members.push(i),
            None => groups.push((key(cell), vec![i])),
        }
    }
    let imprecision = |members: &[usize]| {
        let mut p: Vec<f64> = members
            .iter()
            .map(|&i| {
                let have = cells.get(round[i].id().as_str());
                have.map_or(f64::INFINITY, |l| precision(&values(l)))
            })
            .collect();
        p.sort_by(f64::total_cmp);
        p[p.len() / 2]
    };
    let mut order: Vec<(f64, Vec<usize>)> = groups
        .into_iter()
        .map(|(_, members)| (imprecision(&members), members))
        .collect();
    // Stable: among equals, the round's order.
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut left = room;
    let mut keep = vec![false; round.len()];
    for (_, members) in order {
        let time: Duration = members.iter().map(|&i| times[i]).sum();
        if !time.is_zero() && time <= left {
            left -= time;
            for i in members {
                keep[i] = true;
            }
        }
    }
    round
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(c, _)| c.clone())
        .collect()
}

/// How many times a trial measured with the CPUs apart or stopped is run again, at most.
pub const RERUN_PASSES: usize = 4;

/// How many trials at the run's share the latest round's share of flagged trials is weighed
/// with in [`rerun_share`]: a round of the quick suite has 100 to 160 trials, a late round
/// of a few cells tells little.
pub const LATEST_ROUND_PRIOR: f64 = 20.0;

/// What an adaptive round's trials will likely cost again in reruns, as a share of their own
/// time (so a round of length t must leave t x this for them). The run's
/// reruns of its planned trials have run by then (reruns come first), so the run says how
/// often a trial is flagged for a reason a rerun may escape (a share `q` of its trials, reruns
/// aside, [`reports::noise::worth_rerun`]) and how often a rerun is
/// flagged again (a share `p` of its reruns ran with the CPUs apart or stopped; before any
/// rerun, the share of its trials that did): a round's trial costs q (1 + p + p² + p³) more
/// over the [`RERUN_PASSES`] passes. Reruns of one moment of the machine are flagged again
/// far more often than trials are (s16-1: 79 of 156, where a quarter of the trials were
/// flagged), so `p` is read off the reruns. `q` is the larger of the whole run's share and
/// the latest round's (the trials of the highest number no rerun took), that one shrunk
/// toward the run's as if [`LATEST_ROUND_PRIOR`] more trials had been flagged at the run's
/// share, so that a late round of a few cells does not read as the machine's state: a
/// machine that got noisier late in a run flags the next round's trials as its latest did
/// (s17-2's extra round was flagged at twice the planned trials' share).
pub fn rerun_share(lines: &[Value]) -> f64 {
    let ok = || lines.iter().filter(|l| l["status"] == "ok");
    let trials: Vec<&Value> = ok().filter(|l| l["rerun_of"].is_null()).collect();
    let reruns: Vec<&Value> = ok().filter(|l| !l["rerun_of"].is_null()).collect();
    let share = |of: &[&Value], flagged: fn(&Value) -> bool| {
        (!of.is_empty()).then(|| of.iter().filter(|l| flagged(l)).count() as f64 / of.len() as f64)
    };
    let latest_number = trials.iter().filter_map(|l| l["trial"].as_u64()).max();
    let latest: Vec<&Value> = trials
        .iter()
        .copied()
        .filter(|l| latest_number.is_some() && l["trial"].as_u64() == latest_number)
        .collect();
    let run = share(&trials, reports::noise::worth_rerun).unwrap_or(0.0);
    let flagged = latest
        .iter()
        .filter(|l| reports::noise::worth_rerun(l))
        .count() as f64;
    let latest = (flagged + LATEST_ROUND_PRIOR * run) / (latest.len() as f64 + LATEST_ROUND_PRIOR);
    let q = run.max(latest);
    let p = share(&reruns, reports::noise::passing)
        .or_else(|| share(&trials, reports::noise::passing))
        .unwrap_or(0.0);
    let passes: f64 = (0..RERUN_PASSES as i32).map(|k| p.powi(k)).sum();
    q * passes
}

/// One more trial for each flagged trial of `lines` that no rerun replaced yet: (cell, trial
/// it replaces). A planned trial is rerun when flagged for a state of the machine that
/// passes ([`reports::noise::worth_rerun`]: steal, other processes, the CPUs apart or
/// stopped; loadgen saturated or late come back in every rerun); a rerun only when it
/// too ran with the CPUs apart or stopped (those pass; other reasons mostly repeat), and a
/// trial at most [`RERUN_PASSES`] times over the run (its reruns before the adaptive rounds
/// and after them).
///
/// A rerun takes its cell's next trial number that no adaptive round has taken.
///
/// In the order of the rounds: every cell's first rerun (cells as planned), then every
/// cell's second, and so on, so that a cell's reruns are spread over the pass as its
/// planned trials were over the run. Run back to back, three reruns of one cell would share
/// one moment of the machine and read as a spread far tighter than the cell's.
pub fn noisy_reruns(planned: &[Cell], lines: &[Value]) -> Vec<(Cell, u64)> {
    let cells = by_cell(lines);
    // Which trial each rerun replaced, over every line (replaced ones too), to count how
    // many times a planned trial has been run again.
    let replaces: BTreeMap<(&str, u64), u64> = lines
        .iter()
        .filter_map(|l| {
            Some((
                (l["cell"].as_str()?, l["trial"].as_u64()?),
                l["rerun_of"].as_u64()?,
            ))
        })
        .collect();
    let depth = |cell: &str, mut trial: u64| {
        let mut n = 0;
        while let Some(&k) = replaces.get(&(cell, trial)) {
            n += 1;
            trial = k;
            if n > RERUN_PASSES {
                break;
            }
        }
        n
    };
    // A rerun never takes a round's number: a round left unfinished by an interruption is
    // finished under its number, by cells that must not have it already.
    let rounds = round_numbers(planned, lines);
    let mut per_cell: Vec<Vec<(Cell, u64)>> = Vec::new();
    for cell in planned.iter().filter(|c| c.trial == 1) {
        let id = cell.id();
        let Some(lines) = cells.get(id.as_str()) else {
            continue;
        };
        let mut trial = lines
            .iter()
            .filter_map(|l| l["trial"].as_u64())
            .max()
            .unwrap_or(0)
            + 1;
        let next_free = |trial: &mut u64| {
            while rounds.contains(trial) {
                *trial += 1;
            }
        };
        next_free(&mut trial);
        let mut reruns = Vec::new();
        for line in lines.iter().filter(|l| l["status"] == "ok") {
            let Some(k) = line["trial"].as_u64() else {
                continue;
            };
            let replaced = lines.iter().any(|l| l["rerun_of"].as_u64() == Some(k));
            let again = if line["rerun_of"].is_null() {
                reports::noise::worth_rerun(line)
            } else {
                reports::noise::passing(line)
            };
            if !replaced && again && depth(&id, k) < RERUN_PASSES {
                reruns.push((
                    Cell {
                        trial: trial as usize,
                        ..cell.clone()
                    },
                    k,
                ));
                trial += 1;
                next_free(&mut trial);
            }
        }
        per_cell.push(reruns);
    }
    let passes = per_cell.iter().map(Vec::len).max().unwrap_or(0);
    (0..passes)
        .flat_map(|k| per_cell.iter().filter_map(move |r| r.get(k).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(extra: &str) -> Suite {
        toml::from_str(&format!(
            "description = \"t\"\ntrials = 3\nwarmup = \"0s\"\nduration = \"1s\"\nmodels = [\"a\", \"b\"]\n{extra}\n[[scenario]]\nscenario = \"echo\"\nconnections = [50]\n"
        ))
        .unwrap()
    }

    fn line(model: &str, trial: usize, rps: f64) -> Value {
        json!({"cell": format!("echo/{model}/c=50"), "trial": trial, "model": model,
               "scenario": "echo", "status": "ok", "load": {"throughput_rps": rps}})
    }

    #[test]
    fn rounds_continue_only_for_cells_short_of_the_target() {
        let s = suite("precision = \"5%\"\nmax_trials = 4");
        let planned = s.cells(&["a".into(), "b".into()], None, None).unwrap();
        // a is tight (±1%), b spread (±20%).
        let mut lines = vec![
            line("a", 1, 100.0),
            line("b", 1, 80.0),
            line("a", 2, 101.0),
            line("b", 2, 100.0),
            line("a", 3, 99.0),
            line("b", 3, 120.0),
        ];
        let round = next_round(&s, &planned, &lines, 4);
        assert_eq!(round.len(), 1);
        assert_eq!((round[0].model.as_str(), round[0].trial), ("b", 4));
        lines.push(line("b", 4, 121.0));
        assert!(next_round(&s, &planned, &lines, 5).is_empty(), "max_trials");
        let out = outcomes(&s, &planned, &lines, false);
        assert_eq!(out["cells"]["echo/a/c=50"]["outcome"], "met");
        assert_eq!(out["cells"]["echo/b/c=50"]["outcome"], "max_trials");
        assert_eq!(out["cells"]["echo/b/c=50"]["trials"], 4);
        // Without a target, nothing more runs.
        assert!(next_round(&suite(""), &planned, &lines[..4], 4).is_empty());
        // A trial a rerun replaced does not count, nor is its rerun's number reused.
        let mut lines = lines[..6].to_vec();
        let mut rerun = line("a", 4, 130.0); // a is short of the target now
        rerun["rerun_of"] = json!(3);
        lines.push(rerun);
        let cells = by_cell(&lines);
        assert_eq!(cells["echo/a/c=50"].len(), 3, "trial 3 was replaced");
        // The next round takes a number no line has: 5, as the rerun took 4.
        assert_eq!(next_trial(&lines), 5);
        let round = next_round(&s, &planned, &lines, 5);
        assert_eq!(round.len(), 2, "both short");
        assert!(round.iter().all(|c| c.trial == 5));
    }

    /// An interruption inside an adaptive round: `--resume` finishes that round under its
    /// number, for the cells it held that had not run it, and no rerun takes the number
    /// first. Which cells a round holds comes from `round.json`, not from the results.
    #[test]
    fn a_round_left_part_way_is_finished_under_its_number() {
        let s = suite("precision = \"5%\"\nmax_trials = 6");
        let planned = s.cells(&["a".into(), "b".into()], None, None).unwrap();
        // Both spread by ±20%; a rerun of each one's first trial took 4.
        let mut lines = Vec::new();
        for (k, rps) in [(1, 80.0), (2, 100.0), (3, 120.0)] {
            lines.push(line("a", k, rps));
            lines.push(line("b", k, rps));
        }
        for model in ["a", "b"] {
            let mut rerun = line(model, 4, 82.0);
            rerun["rerun_of"] = json!(1);
            lines.push(rerun);
        }
        assert!(
            unfinished_round(None, &planned, &lines).is_none(),
            "no round yet"
        );
        assert_eq!(next_trial(&lines), 5);
        // Round 5 starts with both cells; `round.json` says so, in a run's directory.
        let round = next_round(&s, &planned, &lines, 5);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(OpenRound::read(dir.path()), None);
        OpenRound::open(dir.path(), &round).unwrap();
        let open = OpenRound::read(dir.path()).unwrap();
        assert_eq!(open.trial, 5);
        assert_eq!(open.cells, ["echo/a/c=50", "echo/b/c=50"]);
        // Interrupted before any cell ran: nothing to finish, the round starts anew.
        assert!(unfinished_round(Some(&open), &planned, &lines).is_none());
        // Round 5 ran a, then the session was interrupted.
        lines.push(line("a", 5, 110.0));
        let (trial, rest) = unfinished_round(Some(&open), &planned, &lines).unwrap();
        let ran: Vec<(&str, usize)> = rest.iter().map(|c| (c.model.as_str(), c.trial)).collect();
        assert_eq!(
            (trial, ran),
            (5, vec![("b", 5)]),
            "only the cell that had not run it"
        );
        // The resumed session reruns b's flagged trial 2 first: as 6, not as the round's 5.
        lines[3]["noise"] = json!({"server_cpus": {"steal": 0.2}, "load_cpus": {}});
        let reruns = noisy_reruns(&planned, &lines);
        assert_eq!(reruns.len(), 1);
        assert_eq!(
            (reruns[0].0.model.as_str(), reruns[0].0.trial, reruns[0].1),
            ("b", 6, 2)
        );
        let mut rerun = line("b", 6, 101.0);
        rerun["rerun_of"] = json!(2);
        lines.push(rerun);
        assert!(unfinished_round(Some(&open), &planned, &lines).is_some());
        // Once b has run it, the round is whole, and the next one takes a new number.
        lines.push(line("b", 5, 90.0));
        assert!(unfinished_round(Some(&open), &planned, &lines).is_none());
        assert_eq!(next_trial(&lines), 7);
        OpenRound::close(dir.path()).unwrap();
        assert_eq!(OpenRound::read(dir.path()), None);
        // Closing twice is no error.
        OpenRound::close(dir.path()).unwrap();
        // A round that held only a (b had met the target) is not finished by b, even when a
        // rerun after the round left b short again: the results alone would suggest so.
        let open = OpenRound {
            trial: 5,
            cells: vec!["echo/a/c=50".into()],
        };
        let mut met = lines[..8].to_vec();
        met.push(line("a", 5, 110.0));
        assert_eq!(
            state(by_cell(&met).get("echo/b/c=50"), 0.05, 6),
            State::Short
        );
        assert!(unfinished_round(Some(&open), &planned, &met).is_none());
        // A damaged file counts as no open round.
        std::fs::write(
            dir.path().join("round.json"),
            "{\"trial\": 5, \"cells\": [1]}",
        )
        .unwrap();
        assert_eq!(OpenRound::read(dir.path()), None);
    }

    #[test]
    fn a_round_that_does_not_fit_runs_its_least_precise_groups_whole() {
        let s: Suite = toml::from_str(
            "description = \"t\"\ntrials = 3\nwarmup = \"0s\"\nduration = \"1s\"\nmodels = [\"a\", \"b\"]\nprecision = \"1%\"\n[[scenario]]\nscenario = \"echo\"\nconnections = [10, 50, 100]\n",
        )
        .unwrap();
        let planned = s.cells(&["a".into(), "b".into()], None, None).unwrap();
        let at = |c: u64, model: &str, trial: usize, rps: f64| {
            json!({"cell": format!("echo/{model}/c={c}"), "trial": trial, "model": model,
                   "scenario": "echo", "status": "ok", "load": {"throughput_rps": rps}})
        };
        // Spread at c=10: ±2%; c=50: ±20%; c=100: ±10% (a and b alike).
        let mut lines = Vec::new();
        for (c, spread) in [(10, 2.0), (50, 20.0), (100, 10.0)] {
            for m in ["a", "b"] {
                for (t, v) in [(1, 100.0 - spread), (2, 100.0), (3, 100.0 + spread)] {
                    lines.push(at(c, m, t, v));
                }
            }
        }
        let round = next_round(&s, &planned, &lines, 4);
        assert_eq!(round.len(), 6, "every cell is short of 1%");
        let second = Duration::from_secs(1);
        let times = vec![second; round.len()];
        let ids = |cells: &[Cell]| cells.iter().map(Cell::id).collect::<Vec<_>>();
        // Room for two groups of two: the least precise two, whole, in the round's order.
        let part = part_of_round(&round, &lines, &times, second * 4);
        assert_eq!(
            ids(&part),
            ["echo/a/c=50", "echo/b/c=50", "echo/a/c=100", "echo/b/c=100"]
        );
        assert!(part.iter().all(|c| c.trial == 4));
        // Never half a group: three seconds hold one group, not one and a half.
        assert_eq!(
            ids(&part_of_round(&round, &lines, &times, second * 3)),
            ["echo/a/c=50", "echo/b/c=50"]
        );
        // A group that does not fit leaves room for a later, smaller one.
        let mut times = times;
        times[2] = second * 4; // echo/a/c=50 takes longer: its group 5 s
        assert_eq!(
            ids(&part_of_round(&round, &lines, &times, second * 4)),
            ["echo/a/c=10", "echo/b/c=10", "echo/a/c=100", "echo/b/c=100"]
        );
        assert!(part_of_round(&round, &lines, &times, second).is_empty());
    }

    #[test]
    fn a_round_keeps_time_for_its_own_reruns() {
        let clean = json!({"status": "ok", "scenario": "echo"});
        // Stopped for 10% of its window: flagged, and a rerun of it runs again.
        let stopped = json!({"status": "ok", "scenario": "echo", "load": {"duration_s": 1.0},
            "noise": {"window_s": 1.0,
            "stalls": {"server": {"longest_us": 100000, "total_us": 100000},
                       "load": {"longest_us": 0, "total_us": 0}}}});
        assert!(reports::noise::passing(&stopped) && !reports::noise::passing(&clean));
        let rerun = |mut l: Value| {
            l["rerun_of"] = json!(1);
            l
        };
        // No trial yet, or none flagged: nothing to keep.
        assert_eq!(rerun_share(&[]), 0.0);
        assert_eq!(rerun_share(&[clean.clone(), clean.clone()]), 0.0);
        // Half the trials flagged, no rerun yet (so reruns are taken to be flagged again as
        // often): 1/2 x (1 + 1/2 + 1/4 + 1/8).
        let half = [clean.clone(), stopped.clone()];
        assert_eq!(rerun_share(&half), 15.0 / 16.0);
        // A quarter of the trials flagged, every rerun flagged again: a quarter, every pass.
        let mut lines = vec![stopped.clone(), clean.clone(), clean.clone(), clean.clone()];
        lines.push(rerun(stopped.clone()));
        assert_eq!(rerun_share(&lines), RERUN_PASSES as f64 / 4.0);
        // ... none flagged again: the first pass only.
        *lines.last_mut().unwrap() = rerun(clean.clone());
        assert_eq!(rerun_share(&lines), 0.25);
        // The machine got noisier: the latest round's share counts when it is the larger,
        // weighed with LATEST_ROUND_PRIOR trials at the run's share. Round 1: 4 of 40
        // flagged; round 2: 10 of 20; a clean rerun, so the first pass only.
        // Two rounds (flagged, of), then a clean rerun.
        let two_rounds = |first: (usize, usize), second: (usize, usize)| -> Vec<Value> {
            let mut lines = Vec::new();
            for (trial, (flagged, of)) in [(1, first), (2, second)] {
                for k in 0..of {
                    let mut l = if k < flagged {
                        stopped.clone()
                    } else {
                        clean.clone()
                    };
                    l["trial"] = json!(trial);
                    lines.push(l);
                }
            }
            let mut last = rerun(clean.clone());
            last["trial"] = json!(3);
            lines.push(last);
            lines
        };
        let run = 14.0 / 60.0;
        let latest = (10.0 + LATEST_ROUND_PRIOR * run) / (20.0 + LATEST_ROUND_PRIOR);
        assert!(latest > run + 0.1);
        let share = rerun_share(&two_rounds((4, 40), (10, 20)));
        assert!((share - latest).abs() < 1e-12, "round 2's, not the run's");
        // A late round of two trials, one flagged, says little: near the run's share.
        let run = 5.0 / 42.0;
        let latest = (1.0 + LATEST_ROUND_PRIOR * run) / (2.0 + LATEST_ROUND_PRIOR);
        let share = rerun_share(&two_rounds((4, 40), (1, 2)));
        assert!(
            (share - latest).abs() < 1e-12 && share < 0.2,
            "not the round's half"
        );
        // A quieter latest round leaves the run's share.
        let lines = two_rounds((10, 40), (0, 20));
        assert!((rerun_share(&lines) - 10.0 / 60.0).abs() < 1e-12);
    }

    #[test]
    fn the_budget_counts_each_cell_at_its_own_window() {
        let ms = Duration::from_millis;
        let ok = |s: f64| json!({"status": "ok", "load": {"duration_s": s}});
        let mut b = Budget::new(ms(100), ms(400));
        // Before any cell: the machine's last figure.
        assert_eq!(b.overhead(ms(0)), ms(400));
        // A quarter-second cell and a one-second cell took 1.5 s: 0.1 s each beyond their
        // warmup and measured time (0.35 + 1.1 s).
        b.ran(&ok(0.25));
        b.ran(&ok(1.0));
        // Refused at once: no cell's time, not counted.
        b.ran(&json!({"status": "unsupported"}));
        assert_eq!(b.ran_so_far(), (2, ms(1450)));
        assert_eq!(b.overhead(ms(1650)), ms(100));
        // A cell that failed before loadgen measured: all its time was overhead.
        b.ran(&json!({"status": "failed", "load": {"duration_s": null}}));
        assert_eq!(b.overhead(ms(1660)), ms(70));
        let cell = |d: u64| Cell {
            model: "m".into(),
            protocol: "echo".into(),
            scenario: "echo".into(),
            params: BTreeMap::new(),
            trial: 1,
            duration: ms(d),
        };
        assert_eq!(
            b.times(ms(1660), &[cell(250), cell(1000)]),
            vec![ms(420), ms(1170)]
        );
        // A resumed run: an earlier session's one-second cell counts at its own 1.1 s and
        // this session's overhead.
        b.ran_before(&ok(1.0));
        assert_eq!(b.spent(ms(1660)), ms(1660 + 1100 + 70));
    }

    #[test]
    fn reruns_fit_in_the_time_left() {
        let ms = Duration::from_millis;
        assert_eq!(cells_that_fit(ms(1400), [ms(700); 3]), 2);
        assert_eq!(cells_that_fit(ms(3000), [ms(700); 6]), 4);
        assert_eq!(cells_that_fit(ms(600), [ms(700); 2]), 0);
        assert_eq!(cells_that_fit(ms(3000), [ms(0); 2]), 0);
        // Cells of two lengths: the first that does not fit ends the count.
        assert_eq!(
            cells_that_fit(ms(3000), [ms(400), ms(1200), ms(1500), ms(400)]),
            2
        );
    }

    #[test]
    fn noisy_cells_are_rerun_and_those_apart_again() {
        let s = suite("");
        let planned = s.cells(&["a".into(), "b".into()], None, None).unwrap();
        let mut noisy = line("a", 2, 50.0);
        noisy["noise"] = json!({"server_cpus": {"steal": 0.2}, "load_cpus": {}});
        // b's trial read loadgen saturated while its server idled: the model's at that
        // load, which a rerun repeats, so flagged and not rerun.
        let mut saturated = line("b", 1, 90.0);
        saturated["noise"] =
            json!({"server_cpus": {"busy": 0.35}, "load_cpus": {}, "loadgen_cpu": 0.98});
        assert!(reports::noise::is_noisy(&saturated) && !reports::noise::worth_rerun(&saturated));
        let mut lines = vec![line("a", 1, 100.0), noisy, saturated];
        let reruns = noisy_reruns(&planned, &lines);
        assert_eq!(reruns.len(), 1);
        assert_eq!(
            (reruns[0].0.model.as_str(), reruns[0].0.trial, reruns[0].1),
            ("a", 3, 2)
        );
        let mut rerun = line("a", 3, 99.0);
        rerun["rerun_of"] = json!(2);
        lines.push(rerun.clone());
        assert!(noisy_reruns(&planned, &lines).is_empty());
        // A rerun flagged for the same steal is not run again ...
        rerun["noise"] = json!({"server_cpus": {"steal": 0.2}, "load_cpus": {}});
        *lines.last_mut().unwrap() = rerun.clone();
        assert!(noisy_reruns(&planned, &lines).is_empty());
        // ... one that ran with the CPUs apart is, replacing the rerun.
        rerun["noise"] = json!({"cpu_link_ns": {"before": 330, "after": 80, "best": 75}});
        *lines.last_mut().unwrap() = rerun;
        let again = noisy_reruns(&planned, &lines);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].0.trial, again[0].1), (4, 3));
        // A trial runs again at most RERUN_PASSES times, however often it lands apart.
        let apart = json!({"cpu_link_ns": {"before": 330, "after": 80, "best": 75}});
        // Trial 3 was the first rerun (of 2); 4, 5, ... the next ones.
        for k in 3..1 + RERUN_PASSES as u64 {
            let mut r = line("a", k as usize + 1, 99.0);
            r["rerun_of"] = json!(k);
            r["noise"] = apart.clone();
            lines.push(r);
            assert_eq!(
                noisy_reruns(&planned, &lines).len(),
                1,
                "after rerun {}",
                k - 1
            );
        }
        let mut last = line("a", 2 + RERUN_PASSES, 99.0);
        last["rerun_of"] = json!(1 + RERUN_PASSES as u64);
        last["noise"] = apart;
        lines.push(last);
        assert!(
            noisy_reruns(&planned, &lines).is_empty(),
            "{RERUN_PASSES} reruns"
        );
    }

    #[test]
    fn a_cells_reruns_are_spread_over_the_pass() {
        let s = suite("");
        let planned = s.cells(&["a".into(), "b".into()], None, None).unwrap();
        let steal = json!({"server_cpus": {"steal": 0.2}, "load_cpus": {}});
        let mut lines = Vec::new();
        for trial in 1..=3 {
            for model in ["a", "b"] {
                let mut l = line(model, trial, 100.0);
                l["noise"] = steal.clone();
                lines.push(l);
            }
        }
        let order: Vec<(String, usize, u64)> = noisy_reruns(&planned, &lines)
            .into_iter()
            .map(|(c, k)| (c.model, c.trial, k))
            .collect();
        let expect = [
            ("a", 4, 1),
            ("b", 4, 1),
            ("a", 5, 2),
            ("b", 5, 2),
            ("a", 6, 3),
            ("b", 6, 3),
        ];
        let expect: Vec<(String, usize, u64)> = expect
            .iter()
            .map(|(m, t, k)| (m.to_string(), *t, *k))
            .collect();
        assert_eq!(order, expect);
    }
}
