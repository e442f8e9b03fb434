//! `bench ci BASE_REF`: what a pull request's benchmark job runs (DESIGN.md section 7).
//!
//! 1. Builds the base ref's `server` in a separate git worktree (`target/ci-bench/base`, with
//!    its own target directory); the candidate is the build `bench` sits next to.
//! 2. The gate: a callgrind pass ([`crate::gate`]) over both servers, compared model by
//!    model. Only this can fail the job: a model whose instructions per request grew by more
//!    than the threshold, or that the candidate can no longer serve.
//! 3. The advisory wall-clock comparison: the cells of a suite (`ci`: the quick suite's key
//!    cells) run base, candidate, base, candidate... one cell at a time, so both builds see
//!    the same machine weather, then `report compare` judges the difference. Reported, not
//!    failing, unless asked.
//! 4. One Markdown summary for a pull-request comment, on stdout and in `summary.md`.

use std::fmt::Write as _;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cell::{self, Setup};
use crate::gate::{self, ModelInfo, Workload};
use crate::runner::{self, Run};
use crate::{external, suite};

pub struct Options {
    /// The base commit; needed for the built-in models, and for an external server without a
    /// base command of its own.
    pub base_ref: Option<String>,
    /// Gate threshold, a fraction.
    pub threshold: f64,
    /// Wall-clock threshold for `report compare`, a fraction.
    pub wall_threshold: f64,
    pub wall_suite: Option<String>,
    pub trials: Option<usize>,
    pub models: Option<Vec<String>>,
    pub fail_on_wall: bool,
    pub workload: Workload,
    /// The candidate's `server` and `loadgen`.
    pub server: PathBuf,
    pub loadgen: PathBuf,
    /// Where everything goes (default `target/ci-bench`).
    pub dir: PathBuf,
    /// Extra arguments for the candidate's servers only (the gate's sensitivity check).
    pub candidate_args: Vec<String>,
    pub server_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    /// The candidate's external servers (`--server`), and the base's by the same names
    /// (`--base-server`). One without a base command runs at the base ref as it is written
    /// with `{dir}` moved into the base's worktree. With external servers, the built-in
    /// models are measured only when `models` names them.
    pub externals: Vec<external::Server>,
    pub base_externals: Vec<external::Server>,
}

/// The outcome: the summary, and whether the job should fail.
pub struct Outcome {
    pub summary: String,
    pub failed: bool,
}

fn git(args: &[&str], dir: &Path) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Checks out `commit` in `target/ci-bench/base`; returns the tree.
fn checkout_base(commit: &str, dir: &Path) -> Result<PathBuf, String> {
    let root = runner::workspace_root();
    let tree = dir.join("base");
    if tree.exists() {
        let _ = git(
            &["worktree", "remove", "--force", &tree.to_string_lossy()],
            &root,
        );
        let _ = fs::remove_dir_all(&tree);
    }
    let _ = git(&["worktree", "prune"], &root);
    git(
        &[
            "worktree",
            "add",
            "--force",
            "--detach",
            &tree.to_string_lossy(),
            commit,
        ],
        &root,
    )?;
    Ok(tree)
}

/// Checks out `commit` in `target/ci-bench/base` and builds its `server` there.
pub fn build_base(commit: &str, dir: &Path) -> Result<PathBuf, String> {
    let tree = checkout_base(commit, dir)?;
    let target = dir.join("base-target");
    eprintln!("building the base server ({commit}) in {}", tree.display());
    gate::build_server(&tree, &target, &[])
        .map_err(|e| format!("building the base ref {commit}: {e}"))
}

/// Runs the whole comparison.
pub fn run(opts: &Options) -> Result<Outcome, String> {
    let started = Instant::now();
    let root = runner::workspace_root();
    fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let built_in = opts.models.is_some() || opts.externals.is_empty();
    let unpaired: Vec<&str> = opts
        .externals
        .iter()
        .filter(|s| !opts.base_externals.iter().any(|b| b.name == s.name))
        .map(|s| s.name.as_str())
        .collect();
    if let Some(b) = opts
        .base_externals
        .iter()
        .find(|b| !opts.externals.iter().any(|s| s.name == b.name))
    {
        return Err(format!(
            "--base-server {}: no --server of that name to compare it with",
            b.name
        ));
    }
    let base_commit = match &opts.base_ref {
        Some(base_ref) => Some(git(
            &["rev-parse", "--verify", &format!("{base_ref}^{{commit}}")],
            &root,
        )?),
        None if built_in => {
            return Err("a BASE_REF is needed to compare the built-in models (or give only --server and --base-server)".into())
        }
        None if !unpaired.is_empty() => {
            return Err(format!(
                "--server {}: give a --base-server of the same name, or a BASE_REF to run it at",
                unpaired.join(", ")
            ))
        }
        None => None,
    };
    let head = git(&["rev-parse", "HEAD"], &root)?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"], &root)?.is_empty();
    let (base_tree, base_server) = match &base_commit {
        Some(commit) if built_in => {
            let server = build_base(commit, &opts.dir)?;
            (Some(opts.dir.join("base")), Some(server))
        }
        Some(commit) => (Some(checkout_base(commit, &opts.dir)?), None),
        None => (None, None),
    };
    let base_externals = opts
        .externals
        .iter()
        .map(
            |s| match opts.base_externals.iter().find(|b| b.name == s.name) {
                Some(b) => b.clone(),
                None => at_base(s, &root, base_tree.as_deref().expect("a base tree")),
            },
        )
        .collect::<Vec<_>>();
    let base_server = base_server.unwrap_or_else(|| opts.server.clone());

    // The gate.
    let (base_models, new_models) = if built_in {
        (gate::models(&base_server)?, gate::models(&opts.server)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let pick = |all: &[ModelInfo]| -> Vec<ModelInfo> {
        all.iter()
            .filter(|m| {
                opts.models
                    .as_ref()
                    .is_none_or(|only| only.contains(&m.name))
            })
            .cloned()
            .collect()
    };
    let gate_started = Instant::now();
    eprintln!("gate: base");
    let base_pass = gate::pass(
        &base_server,
        &pick(&base_models),
        &base_externals,
        &opts.workload,
        &[],
        &opts.dir.join("gate/base.work"),
        |m| eprintln!("  {m}"),
    )?;
    eprintln!(
        "gate: candidate{}",
        if opts.candidate_args.is_empty() {
            String::new()
        } else {
            format!(" (servers get {})", opts.candidate_args.join(" "))
        }
    );
    let new_pass = gate::pass(
        &opts.server,
        &pick(&new_models),
        &opts.externals,
        &opts.workload,
        &opts.candidate_args,
        &opts.dir.join("gate/new.work"),
        |m| eprintln!("  {m}"),
    )?;
    let gate_time = gate_started.elapsed();
    write_json(&opts.dir.join("gate/base.json"), &base_pass)?;
    write_json(&opts.dir.join("gate/new.json"), &new_pass)?;
    write_json(&opts.dir.join("gate/new.bmf.json"), &gate::bmf(&new_pass))?;
    let rows = gate::compare(&base_pass, &new_pass, opts.threshold);
    let gate_failed = rows.iter().any(|r| r.verdict.fails());

    // The advisory wall-clock comparison.
    let wall = match &opts.wall_suite {
        None => None,
        Some(name) => Some(wall_clock(opts, name, &base_server, &base_externals)?),
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        "## iomodels benchmarks: {} (base) vs {} (candidate)\n",
        base_commit
            .as_deref()
            .map_or("`--base-server`".to_string(), |c| format!("`{}`", short(c))),
        // Without a base ref the servers compared are the commands given, not this tree.
        match (&base_commit, dirty) {
            (None, _) => "`--server`".to_string(),
            (Some(_), true) => format!("`{}` with local changes", short(&head)),
            (Some(_), false) => format!("`{}`", short(&head)),
        }
    );
    s.push_str(&gate::markdown(
        &rows,
        opts.threshold,
        &new_pass["workload"],
    ));
    let _ = writeln!(
        s,
        "\n<sub>{}; {:.0?} for both passes. Deterministic: the same build gives the same count to well under 1%.</sub>\n",
        new_pass["valgrind"].as_str().unwrap_or("valgrind"),
        gate_time
    );
    let mut wall_failed = false;
    if let Some((markdown, regressions, dirs)) = &wall {
        let _ = writeln!(
            s,
            "### Wall clock (advisory{}): {}\n",
            if opts.fail_on_wall {
                ", fails the job on a regression"
            } else {
                ", never fails the job"
            },
            if *regressions == 0 {
                "no regression".to_string()
            } else {
                format!("{regressions} regression(s) flagged")
            }
        );
        s.push_str(
            "Base and candidate ran cell by cell, interleaved, on this machine; a regression is worse than the threshold with a 95% bootstrap interval that excludes zero. Shared runners are noisy: read these as hints and confirm with `bench run --suite full` on a quiet machine.\n\n",
        );
        s.push_str(&fold_wall_table(markdown));
        let _ = writeln!(
            s,
            "\nRuns: `{}` and `{}`.",
            dirs.0.display(),
            dirs.1.display()
        );
        wall_failed = opts.fail_on_wall && *regressions > 0;
    }
    let _ = writeln!(
        s,
        "\n<sub>`bench ci {}` in {:.0?}. Results under `{}`.</sub>",
        opts.base_ref.as_deref().unwrap_or(""),
        Duration::from_secs(started.elapsed().as_secs()),
        opts.dir.display()
    );
    fs::write(opts.dir.join("summary.md"), &s)
        .map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    Ok(Outcome {
        summary: s,
        failed: gate_failed || wall_failed,
    })
}

/// `report compare`'s Markdown, for a pull-request comment: its heading dropped (ours
/// replaces it), the rows that moved beyond noise shown, and the whole table folded away
/// (two rows per model make it long).
fn fold_wall_table(markdown: &str) -> String {
    let lines: Vec<&str> = markdown
        .lines()
        .skip_while(|l| l.starts_with("###") || l.is_empty())
        .collect();
    let (table, rest): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.starts_with('|'));
    let mut s = String::new();
    let (header, rows) = table.split_at(table.len().min(2));
    let flagged: Vec<&&str> = rows
        .iter()
        .filter(|l| l.contains("| REGRESSION |") || l.contains("| improvement |"))
        .collect();
    if !flagged.is_empty() {
        for l in header.iter().chain(flagged) {
            let _ = writeln!(s, "{l}");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "<details><summary>All {} comparisons</summary>\n",
        rows.len()
    );
    for l in &table {
        let _ = writeln!(s, "{l}");
    }
    s.push_str("\n</details>\n");
    for l in rest.iter().filter(|l| !l.is_empty()) {
        let _ = writeln!(s, "\n{l}");
    }
    s
}

/// An external server as the base ref has it: `{dir}` moved from this workspace into the
/// base's worktree (a directory outside the workspace stays where it is).
fn at_base(server: &external::Server, root: &Path, tree: &Path) -> external::Server {
    let dir = match server.dir.strip_prefix(root) {
        Ok(inside) => tree.join(inside),
        Err(_) => server.dir.clone(),
    };
    external::Server {
        dir,
        ..server.clone()
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// Runs the wall-clock suite's cells for both builds, interleaved; returns the comparison in
/// Markdown, its number of regressions, and the two run directories.
fn wall_clock(
    opts: &Options,
    suite_name: &str,
    base_server: &Path,
    base_externals: &[external::Server],
) -> Result<(String, usize, (PathBuf, PathBuf)), String> {
    let suite_path = suite::locate(suite_name)?;
    let mut suite = suite::load(&suite_path)?;
    if let Some(t) = opts.trials {
        suite.trials = t.max(1);
    }
    suite.servers = opts.externals.clone();
    suite.check_servers()?;
    let available: Vec<String> = gate::models(&opts.server)?
        .into_iter()
        .map(|m| m.name)
        .collect();
    // With external servers, the built-in models run only when named.
    let only: Option<Vec<String>> = match &opts.models {
        Some(models) => Some(
            models
                .iter()
                .cloned()
                .chain(opts.externals.iter().map(|s| s.name.clone()))
                .collect(),
        ),
        None if !opts.externals.is_empty() => {
            Some(opts.externals.iter().map(|s| s.name.clone()).collect())
        }
        None => None,
    };
    let cells = suite.cells(&available, only.as_deref(), None)?;
    let dirs = (opts.dir.join("wall/base"), opts.dir.join("wall/new"));
    let mut runs = Vec::new();
    for (dir, server, id, externals) in [
        (&dirs.0, base_server, "base", base_externals),
        (&dirs.1, &*opts.server, "candidate", &opts.externals[..]),
    ] {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let run = Run {
            dir: dir.clone(),
            suite: suite.clone(),
            suite_path: suite_path.clone(),
            cells: Vec::new(),
            setup: Setup {
                server: server.to_path_buf(),
                loadgen: opts.loadgen.clone(),
                server_cpus: opts.server_cpus.clone(),
                load_cpus: opts.load_cpus.clone(),
                warmup: suite.warmup,
                timeout: suite.timeout,
                run_id: id.to_string(),
                hosts: None,
                externals: externals.to_vec(),
                run_dir: dir.clone(),
            },
        };
        runner::write_env(&run)?;
        runs.push(run);
    }
    eprintln!(
        "wall clock: {} cells x 2 builds, interleaved, about {:.0?}",
        cells.len(),
        suite.time_of(&cells) * 2
    );
    let terminal = std::io::stderr().is_terminal();
    for (i, c) in cells.iter().enumerate() {
        if terminal {
            eprint!("\r  [{}/{}] {:<60}", i + 1, cells.len(), c.id());
        }
        for run in &runs {
            let line = cell::run(c, &run.setup);
            append_line(&run.dir, &line)?;
        }
    }
    if terminal {
        eprintln!();
    }
    let base = reports::run::Run::load(&dirs.0)?;
    let new = reports::run::Run::load(&dirs.1)?;
    let metrics = [
        reports::metrics::Metric::Throughput,
        reports::metrics::Metric::P99,
    ];
    let rows = reports::compare::compare(&base, &new, opts.wall_threshold, &metrics);
    let regressions = rows
        .iter()
        .filter(|r| r.verdict == reports::compare::Verdict::Regression)
        .count();
    reports::run::replace_file(
        &dirs.1.join("compare.html"),
        reports::compare::html(
            (&base, &new),
            &rows,
            opts.wall_threshold,
            &reports::compare::tier_changes(&base, &new, reports::text::Lang::En),
            reports::text::Lang::En,
        )?
        .as_bytes(),
    )?;
    for (dir, run) in [(&dirs.0, &base), (&dirs.1, &new)] {
        reports::render::render(run, &dir.join("report.html"))?;
    }
    Ok((
        reports::compare::markdown(&rows, opts.wall_threshold),
        regressions,
        dirs,
    ))
}

fn append_line(dir: &Path, line: &Value) -> Result<(), String> {
    let path = dir.join("results.jsonl");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())? + "\n";
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::fold_wall_table;

    const COMPARE: &str = "### iomodels: 1 regression (threshold 5.0%, 95% bootstrap CI)\n\n\
| cell | metric | base | new | change | 95% CI | verdict |\n|---|---|---:|---:|---:|---|---|\n\
| echo/a | throughput | 100 req/s | 80 req/s | -20.0% | [-25.0%, -15.0%] | REGRESSION |\n\
| echo/b | throughput | 100 req/s | 101 req/s | +1.0% | [-3.0%, +4.0%] | within noise |\n\
| echo/c | throughput | 100 req/s | 130 req/s | +30.0% | [+20.0%, +40.0%] | improvement |\n";

    #[test]
    fn flagged_rows_stay_visible_and_the_table_folds() {
        let s = fold_wall_table(COMPARE);
        assert!(!s.contains("###"), "{s}");
        let (shown, folded) = s.split_once("<details>").unwrap();
        assert!(
            shown.contains("| echo/a |") && shown.contains("| echo/c |"),
            "{s}"
        );
        assert!(!shown.contains("| echo/b |"), "{s}");
        assert!(shown.starts_with("| cell | metric"), "{s}");
        assert!(folded.contains("All 3 comparisons"), "{s}");
        for cell in ["echo/a", "echo/b", "echo/c"] {
            assert!(folded.contains(&format!("| {cell} |")), "{s}");
        }
        assert!(folded.trim_end().ends_with("</details>"), "{s}");
    }

    #[test]
    fn nothing_flagged_shows_only_the_folded_table() {
        let quiet = COMPARE
            .lines()
            .filter(|l| !l.contains("REGRESSION |") && !l.contains("improvement |"))
            .collect::<Vec<_>>()
            .join("\n");
        let s = fold_wall_table(&quiet);
        assert!(s.starts_with("<details><summary>All 1 comparisons"), "{s}");
    }
}
