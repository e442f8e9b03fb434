//! `benches` runs suites of models x scenarios x trials: each cell starts a pinned `server`,
//! drives it with a pinned `loadgen`, samples the server's process tree from /proc, and appends
//! one JSON line to the run's `results.jsonl` as soon as the cell ends.
//!
//! `suite` reads suite files and expands them into cells (trials interleaved across models);
//! `cell` runs one cell; `external` starts, watches and stops a server given by
//! command (`[[server]]`, `--server`); `process_tree` samples /proc; `runner` owns the run directory
//! (results, env.json, resume, progress); `summary` prints the ranking at the end; `pauses` checks, before a run, how long the machine
//! stops a busy CPU, `link` how far apart the host has put the server's and the load's CPU, and
//! `stalls` whether a cell's CPUs stopped while it was measured. `gate`
//! counts instructions per request under callgrind, and `ci` compares a base ref with the
//! current build (the gate, plus wall-clock cells run interleaved) for pull requests. `hosts`
//! runs a cell's server and loadgens on other machines over ssh and merges their results.

pub mod adaptive;
pub mod anatomy;
pub mod cell;
pub mod ci;
pub mod external;
pub mod gate;
pub mod hosts;
pub mod link;
pub mod noise;
pub mod pauses;
pub mod plan;
pub mod process_tree;
pub mod runner;
pub mod stalls;
pub mod suite;
pub mod summary;

/// `1 cell`, `2 cells`: a count and its noun, plural unless it is one.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
