//! `bench`: run a suite of models x scenarios x trials and keep every result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use benches::cell::Setup;
use benches::runner::{self, Run};
use benches::suite::{self, BUILT_IN};
use benches::summary;
use benches::{anatomy, ci, gate, hosts, plan};

/// Run iomodels benchmark suites: each cell starts a pinned server, drives it with a pinned
/// loadgen, samples the server's processes, and appends one JSON line to results.jsonl.
#[derive(Parser, Debug)]
#[command(name = "bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run a suite (default: quick). Exit 1 when a cell failed (unless --allow-failures),
    /// 2 when the run could not be made (a bad suite, a directory in use, a write error).
    Run {
        /// smoke, quick, full, c10k, or a path to a suite TOML file [default: quick].
        #[arg(long)]
        suite: Option<String>,
        /// Only these models (comma-separated).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Only these scenarios (comma-separated).
        #[arg(long, value_delimiter = ',')]
        scenarios: Option<Vec<String>>,
        /// Trials per cell, instead of the suite's.
        #[arg(long)]
        trials: Option<usize>,
        /// The run directory [default: results/<time>, with results/latest pointing at it].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Finish an interrupted run (--out, or results/latest): the cells of its plan
        /// (plan.json: suite, filters, trials, CPUs) not yet in results.jsonl.
        #[arg(long)]
        resume: bool,
        /// With --resume: finish the run even though `server` or `loadgen` was rebuilt since
        /// it started (its results then mix two builds).
        #[arg(long, requires = "resume")]
        allow_rebuilt: bool,
        /// CPUs the server is pinned to [default: 0].
        #[arg(long, value_delimiter = ',')]
        server_cpus: Option<Vec<usize>>,
        /// CPUs loadgen is pinned to [default: every other CPU].
        #[arg(long, value_delimiter = ',')]
        load_cpus: Option<Vec<usize>>,
        /// Directory holding the `server` and `loadgen` binaries [default: next to `bench`].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Exit 0 even when cells failed (they are listed either way).
        #[arg(long)]
        allow_failures: bool,
        /// Also measure a server of your own, by command (repeatable):
        /// 'NAME:PROTOCOL[,PROTOCOL]=COMMAND ARGS', with {port} (a free port bench picks),
        /// {addr}, {host}, {dir} (this directory) and {run} (the run directory) substituted,
        /// e.g. 'py:echo,transfer=python3 server.py --port {port}'. It is ready when its port
        /// accepts a connection; a suite's [[server]] table says more (docs/ARCHITECTURE.md).
        #[arg(long = "server", value_name = "SPEC")]
        servers: Vec<String>,
        #[command(flatten)]
        adaptive: AdaptiveArgs,
        /// Boxed: the largest variant by far.
        #[command(flatten)]
        hosts: Box<HostsArgs>,
    },
    /// The CI gate: each model's user-space instructions per request under callgrind
    /// (a fixed echo workload; needs valgrind). Writes a JSON pass and prints a table.
    Gate {
        /// Only these models (comma-separated).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Where to write the pass (JSON) [default: target/gate/gate.json].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the pass in bencher.dev's BMF here.
        #[arg(long)]
        bmf: Option<PathBuf>,
        /// Requests in the long run (the short run has 1/20 of them, at least 100).
        #[arg(long, default_value_t = 21_000)]
        requests: u64,
        /// Extra arguments for every server (e.g. `--server-arg=--threads=2`).
        #[arg(long, allow_hyphen_values = true)]
        server_arg: Vec<String>,
        /// A server of your own, measured like a model (repeatable): 'NAME:echo=COMMAND ARGS'
        /// as for `bench run --server`. With it, built-in models run only if --models names
        /// them.
        #[arg(long = "server", value_name = "SPEC")]
        servers: Vec<String>,
        /// Directory holding the `server` binary [default: next to `bench`].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Compare two gate passes: a Markdown table; exit 1 when a model's instructions per
    /// request grew by more than the threshold or it could no longer be measured.
    GateCompare {
        base: PathBuf,
        new: PathBuf,
        /// Percent growth that fails the gate.
        #[arg(long, default_value_t = 2.0)]
        threshold: f64,
    },
    /// What a pull request's benchmark job runs: build BASE_REF in a worktree, run the gate
    /// on both builds and the advisory wall-clock cells interleaved, print one Markdown
    /// summary. Exit 1 only when the gate finds a regression (see docs/CI.md).
    Ci {
        /// The base to compare against: a branch, tag or commit (e.g. origin/main, HEAD~1).
        /// Not needed when every --server has a --base-server and no built-in model runs.
        base_ref: Option<String>,
        /// Percent growth in instructions per request that fails the job.
        #[arg(long, default_value_t = 2.0)]
        threshold: f64,
        /// Percent change that `report compare` calls a wall-clock regression.
        #[arg(long, default_value_t = 5.0)]
        wall_threshold: f64,
        /// The suite whose cells run for the wall-clock comparison.
        #[arg(long, default_value = "ci")]
        wall_suite: String,
        /// Skip the wall-clock comparison (the gate only).
        #[arg(long)]
        no_wall: bool,
        /// Fail the job on a wall-clock regression too.
        #[arg(long)]
        fail_on_wall: bool,
        /// Trials per wall-clock cell, instead of the suite's.
        #[arg(long)]
        trials: Option<usize>,
        /// Only these models (comma-separated), in both parts.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Requests in the gate's long run.
        #[arg(long, default_value_t = 21_000)]
        requests: u64,
        /// Where everything goes [default: target/ci-bench].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Test aid: extra arguments for the candidate's servers only, e.g.
        /// `--candidate-arg=--extra-work=10` (a server built with the feature `extra-work`) to
        /// check that the gate catches a slowdown.
        #[arg(long, allow_hyphen_values = true, hide = true)]
        candidate_arg: Vec<String>,
        /// Directory holding the candidate's `server` and `loadgen` [default: next to `bench`].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// The candidate's own server (repeatable): 'NAME:echo=COMMAND ARGS'. Without a
        /// --base-server of its name, the same command runs at BASE_REF ({dir} in the base's
        /// worktree). With it, built-in models run only if --models names them.
        #[arg(long = "server", value_name = "SPEC")]
        servers: Vec<String>,
        /// The base's command for a --server of the same name (e.g. the base's binary).
        #[arg(long = "base-server", value_name = "SPEC")]
        base_servers: Vec<String>,
    },
    /// Each model's system calls and context switches per request: the server runs under
    /// perf (syscall tracepoints) or strace while loadgen sends a known number of echo
    /// requests; a short and a long run are differenced. Prints a table, writes JSON.
    Anatomy {
        /// Only these models (comma-separated).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Concurrent connections, one request in flight on each (models that serve one
        /// client at a time get one).
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Silent connections held open beside the active ones (the cost of a wait that
        /// scans every descriptor; models with a fixed number of workers are skipped).
        #[arg(long, default_value_t = 0)]
        idle: usize,
        /// Requests in the long run (the short run has a tenth).
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Echo message size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// perf or strace [default: perf when its syscall tracepoints work here].
        #[arg(long)]
        tool: Option<String>,
        /// Where to write the JSON [default: anatomy.json in results/latest, the run the
        /// report of which then shows it].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra arguments for every server (e.g. `--server-arg=--sqpoll`).
        #[arg(long, allow_hyphen_values = true)]
        server_arg: Vec<String>,
        /// CPUs the server is pinned to.
        #[arg(long, value_delimiter = ',', default_value = "0")]
        server_cpus: Vec<usize>,
        /// CPUs loadgen is pinned to [default: every other CPU].
        #[arg(long, value_delimiter = ',')]
        load_cpus: Option<Vec<usize>>,
        /// Directory holding the `server` and `loadgen` binaries [default: next to `bench`].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// List the suites (what each runs, roughly how long) and the models.
    List {
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
}

/// Adaptive trials and noise: override the suite's precision target and budget.
#[derive(clap::Args, Debug, Default)]
struct AdaptiveArgs {
    /// Trials continue until each cell's median is known within this (e.g. 5%); --trials is
    /// then the least count.
    #[arg(long)]
    precision: Option<String>,
    /// With a precision target: at most this many trials per cell.
    #[arg(long)]
    max_trials: Option<usize>,
    /// With a precision target: no round of extra trials starts that would end past this
    /// time from the run's start (e.g. 5m).
    #[arg(long)]
    max_time: Option<String>,
    /// Run each cell flagged noisy for a state of the machine that passes (steal, other
    /// processes, the CPUs apart or stopped; not loadgen saturated or late, which a rerun
    /// repeats) again, before any adaptive round; the new trial replaces the noisy one in every
    /// view (a rerun that again ran with the CPUs apart or stopped runs again, a trial up to 4
    /// times). A suite may ask for it (`rerun_noisy = true`); with `max_time`, reruns stop at
    /// it.
    #[arg(long)]
    rerun_noisy: bool,
}

/// Other machines: the server on one host, a loadgen on each load host, over ssh.
#[derive(clap::Args, Debug, Default)]
struct HostsArgs {
    /// Run each cell's server on this ssh host (`host`, `user@host`, an alias of your ssh
    /// config); needs --load-hosts. Overrides the suite's `server_host`.
    #[arg(long, requires = "load_hosts")]
    server_host: Option<String>,
    /// Run one loadgen on each of these ssh hosts (comma-separated); the cell's connections
    /// and rate are split over them and their results merged exactly.
    #[arg(long, value_delimiter = ',', requires = "server_host")]
    load_hosts: Option<Vec<String>>,
    /// The address loadgens reach the server at [default: the server host's name].
    #[arg(long)]
    server_addr: Option<String>,
    /// Where `server` and `loadgen` are on every host; relative to the remote home (`~/x`
    /// means `x`: every remote path is quoted, so a `~` would not expand; another user's
    /// `~user/x` is refused).
    #[arg(long, default_value = benches::hosts::DEFAULT_REMOTE_DIR)]
    remote_dir: String,
    /// Copy this machine's `server` and `loadgen` to --remote-dir on the hosts (over ssh)
    /// before checking that every host has the same build.
    #[arg(long)]
    push_binaries: bool,
    /// An ssh configuration file instead of ~/.ssh/config (ssh -F).
    #[arg(long)]
    ssh_config: Option<PathBuf>,
    /// Refuse hosts whose clocks disagree by more than this (e.g. 50ms).
    #[arg(long, default_value = "50ms")]
    max_clock_offset: String,
}

impl HostsArgs {
    /// The hosts of a run (the command line's, else the suite's), checked and with their
    /// clocks measured; `None` when the run is all here.
    fn prepare(
        &self,
        request: &plan::Request,
        suite: &suite::Suite,
        server: &Path,
        loadgen: &Path,
    ) -> Result<Option<std::sync::Arc<hosts::Prepared>>, String> {
        let server_host = request.server_host.clone().or(suite.server_host.clone());
        let load_hosts = request.load_hosts.clone().or(suite.load_hosts.clone());
        let (server_host, load) = match (server_host, load_hosts) {
            (None, None) => return Ok(None),
            (Some(s), Some(l)) => (s, l),
            _ => return Err("a server host needs load hosts, and load hosts a server host".into()),
        };
        if let Some(external) = suite.servers.first() {
            // A remote cell starts the built-in `server` on its host; a command of this
            // machine's user cannot be assumed to exist there.
            return Err(format!(
                "external servers ('{}') run on this machine only: not with --server-host or server_host",
                external.name
            ));
        }
        let max_offset = suite::parse_duration(&self.max_clock_offset)?;
        let hosts = hosts::Hosts {
            server: server_host,
            server_addr: request.server_addr.clone().or(suite.server_addr.clone()),
            load,
            remote_dir: hosts::home_relative(&self.remote_dir)?,
            ssh_config: self.ssh_config.clone(),
            push: self.push_binaries,
            max_offset,
        };
        eprintln!(
            "checking hosts: server on {}, loadgens on {}",
            hosts.server,
            hosts.load.join(", ")
        );
        let prepared = hosts::prepare(hosts, server, loadgen)?;
        let clocks: Vec<String> = prepared
            .clocks
            .iter()
            .map(|(h, c)| format!("{h} {:+.1} ms (±{:.1})", c.offset_s * 1e3, c.rtt_s * 5e2))
            .collect();
        eprintln!("clock offsets from this machine: {}", clocks.join(", "));
        Ok(Some(std::sync::Arc::new(prepared)))
    }
}

impl AdaptiveArgs {
    fn apply(&self, suite: &mut suite::Suite) -> Result<(), String> {
        if let Some(p) = &self.precision {
            let number = p.trim().trim_end_matches('%');
            let value: f64 = number
                .parse()
                .map_err(|_| format!("--precision {p}: write a percentage like 5%"))?;
            if !(value > 0.0 && value < 100.0) {
                return Err(format!("--precision {p}: between 0% and 100%"));
            }
            suite.precision = Some(value / 100.0);
        }
        if let Some(m) = self.max_trials {
            suite.max_trials = Some(m);
        }
        if let Some(t) = &self.max_time {
            suite.max_time = Some(suite::parse_duration(t)?);
        }
        if suite.precision.is_some() {
            suite.max_trials = Some(suite.most_trials());
        }
        suite.check()
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Commands::List { bin_dir } => list(bin_dir),
        Commands::Anatomy {
            models,
            connections,
            idle,
            requests,
            size,
            tool,
            out,
            server_arg,
            server_cpus,
            load_cpus,
            bin_dir,
        } => anatomy_cmd(
            models,
            (connections, idle),
            requests,
            size,
            tool,
            out,
            server_arg,
            server_cpus,
            load_cpus,
            bin_dir,
        ),
        Commands::Gate {
            models,
            out,
            bmf,
            requests,
            server_arg,
            servers,
            bin_dir,
        } => gate(models, out, bmf, requests, server_arg, servers, bin_dir),
        Commands::GateCompare {
            base,
            new,
            threshold,
        } => return gate_compare(&base, &new, threshold),
        Commands::Ci {
            base_ref,
            threshold,
            wall_threshold,
            wall_suite,
            no_wall,
            fail_on_wall,
            trials,
            models,
            requests,
            out,
            candidate_arg,
            bin_dir,
            servers,
            base_servers,
        } => {
            let options = (|| {
                let (server, loadgen) = binaries(bin_dir)?;
                let externals = external_servers(&servers)?;
                let base_externals = external_servers(&base_servers)?;
                let cpus = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1);
                Ok::<_, String>(ci::Options {
                    base_ref,
                    threshold: threshold / 100.0,
                    wall_threshold: wall_threshold / 100.0,
                    wall_suite: (!no_wall).then_some(wall_suite),
                    trials,
                    models,
                    fail_on_wall,
                    workload: workload(requests)?,
                    server,
                    loadgen,
                    dir: out.unwrap_or_else(|| runner::workspace_root().join("target/ci-bench")),
                    candidate_args: candidate_arg,
                    server_cpus: vec![0],
                    load_cpus: if cpus > 1 {
                        (1..cpus).collect()
                    } else {
                        vec![0]
                    },
                    externals,
                    base_externals,
                })
            })();
            return match options.and_then(|o| ci::run(&o)) {
                Ok(outcome) => {
                    println!("{}", outcome.summary);
                    if outcome.failed {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("bench ci: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Commands::Run {
            suite,
            models,
            scenarios,
            trials,
            out,
            resume,
            allow_rebuilt,
            server_cpus,
            load_cpus,
            bin_dir,
            allow_failures,
            servers,
            adaptive,
            hosts,
        } => {
            let given = Given {
                suite,
                models,
                scenarios,
                trials,
                server_cpus,
                load_cpus,
                servers,
                adaptive,
                hosts,
            };
            let result = run(given, out, resume, allow_rebuilt, bin_dir);
            if let (Some(signal), Ok(_)) = (runner::interrupted(), &result) {
                return ExitCode::from(128 + signal as u8); // 130 for SIGINT, 143 for SIGTERM
            }
            return match result {
                Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
                Ok(failed) => {
                    eprintln!("bench: {}", failures(&failed));
                    if allow_failures {
                        eprintln!("bench: --allow-failures: exit 0");
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(message) => {
                    eprintln!("bench: {message}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn binaries(bin_dir: Option<PathBuf>) -> Result<(PathBuf, PathBuf), String> {
    let dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("bench has no directory")?
            .to_path_buf(),
    };
    let (server, loadgen) = (dir.join("server"), dir.join("loadgen"));
    for bin in [&server, &loadgen] {
        if !bin.is_file() {
            return Err(format!(
                "{} not found: build everything first (`cargo build --release --workspace`) or pass --bin-dir",
                bin.display()
            ));
        }
    }
    Ok((server, loadgen))
}

/// The CPUs loadgen gets when none are named: every CPU the server does not have.
fn other_cpus(server_cpus: &[usize]) -> Vec<usize> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let others: Vec<usize> = (0..cpus).filter(|c| !server_cpus.contains(c)).collect();
    if others.is_empty() {
        server_cpus.to_vec()
    } else {
        others
    }
}

/// The models named by `--models` (each must exist), or all of them.
fn select_models(
    all: Vec<gate::ModelInfo>,
    only: Option<Vec<String>>,
) -> Result<Vec<gate::ModelInfo>, String> {
    let Some(only) = only else {
        return Ok(all);
    };
    let names: Vec<String> = all.iter().map(|m| m.name.clone()).collect();
    if let Some(bad) = only.iter().find(|n| !names.contains(n)) {
        return Err(format!(
            "unknown model '{bad}' (valid: {})",
            names.join(", ")
        ));
    }
    Ok(all.into_iter().filter(|m| only.contains(&m.name)).collect())
}

#[allow(clippy::too_many_arguments)]
fn anatomy_cmd(
    models: Option<Vec<String>>,
    (connections, idle): (usize, usize),
    requests: u64,
    size: usize,
    tool: Option<String>,
    out: Option<PathBuf>,
    server_args: Vec<String>,
    server_cpus: Vec<usize>,
    load_cpus: Option<Vec<usize>>,
    bin_dir: Option<PathBuf>,
) -> Result<(), String> {
    let (server, loadgen) = binaries(bin_dir)?;
    if connections == 0 || size == 0 || requests < 10 {
        return Err("--connections and --size must be at least 1, --requests at least 10".into());
    }
    let tool = match tool {
        Some(name) => anatomy::Tool::parse(&name)?,
        None => anatomy::Tool::detect()?,
    };
    let models = select_models(gate::models(&server)?, models)?;
    let root = runner::workspace_root();
    let out = out.unwrap_or_else(|| {
        let latest = root.join("results/latest");
        if latest.is_dir() {
            latest.join("anatomy.json")
        } else {
            root.join("results/anatomy.json")
        }
    });
    let options = anatomy::Options {
        server,
        loadgen,
        tool,
        connections,
        idle,
        size,
        requests,
        load_cpus: load_cpus.unwrap_or_else(|| other_cpus(&server_cpus)),
        server_cpus,
        work: root.join("target/anatomy"),
        server_args,
    };
    eprintln!(
        "counting system calls with {} for {} models ({} then {} echo requests over {} connections)",
        tool.name(),
        models.len(),
        requests / 10,
        requests,
        connections
    );
    let pass = anatomy::pass(&options, &models, |line| eprintln!("  {line}"))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&pass).expect("JSON serialises");
    std::fs::write(&out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    println!("{}", anatomy::markdown(&pass));
    eprintln!("written: {}", out.display());
    let failed = pass["models"]
        .as_object()
        .is_some_and(|m| m.values().any(|e| e["status"] == "failed"));
    if failed {
        return Err("some models could not be measured (see the table)".into());
    }
    Ok(())
}

fn list(bin_dir: Option<PathBuf>) -> Result<(), String> {
    let (server, _) = binaries(bin_dir)?;
    let models = gate::models(&server)?;
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    println!("Suites ({}):", suite::suites_dir().display());
    for name in BUILT_IN {
        let s = suite::load(&suite::locate(name)?)?;
        let cells = s.cells(&names, None, None)?;
        let mut scenarios: Vec<&str> = Vec::new();
        for g in &s.scenarios {
            if !scenarios.contains(&g.scenario.as_str()) {
                scenarios.push(&g.scenario);
            }
        }
        println!(
            "  {name:<6} {}; {}\n         {}",
            s.plan(&cells),
            scenarios.join(", "),
            s.description
        );
    }
    let (overhead, measured) = suite::cell_overhead();
    println!(
        "Times are warmup + measured time + {:.2} s a cell to start and stop it ({}).",
        overhead.as_secs_f64(),
        if measured {
            format!(
                "as this machine's last run measured, in {}",
                suite::overhead_file().display()
            )
        } else {
            "until a run on this machine measures it".to_string()
        }
    );
    println!("\nModels:");
    for m in models {
        println!(
            "  {:<16} {:<14} {}",
            m.name,
            if m.supported { "" } else { "(unsupported)" },
            m.summary
        );
    }
    Ok(())
}

/// `2 cells failed:` and one line per cell: which, which trial, why.
fn failures(failed: &[serde_json::Value]) -> String {
    let mut text = format!(
        "{} {} failed:",
        failed.len(),
        if failed.len() == 1 { "cell" } else { "cells" }
    );
    for line in failed {
        text.push_str(&format!(
            "\n  {} trial {}: {}",
            line["cell"].as_str().unwrap_or("?"),
            line["trial"],
            line["reason"].as_str().unwrap_or("no reason recorded")
        ));
    }
    text
}

/// Runs a suite; returns the lines of the run's failed cells.
/// What the command line says about the cells of a run (`--resume` takes them from the
/// run's plan instead).
struct Given {
    suite: Option<String>,
    models: Option<Vec<String>>,
    scenarios: Option<Vec<String>>,
    trials: Option<usize>,
    server_cpus: Option<Vec<usize>>,
    load_cpus: Option<Vec<usize>>,
    /// `--server` specs.
    servers: Vec<String>,
    adaptive: AdaptiveArgs,
    hosts: Box<HostsArgs>,
}

impl Given {
    /// The options given that differ from `plan`, by name: what `--resume` must not be
    /// told (the same value again is fine).
    fn differing(&self, plan: &plan::Request) -> Vec<&'static str> {
        let a = &self.adaptive;
        fn differs<T: PartialEq>(given: &Option<T>, planned: &T) -> bool {
            given.as_ref().is_some_and(|g| g != planned)
        }
        fn differs_opt<T: PartialEq>(given: &Option<T>, planned: &Option<T>) -> bool {
            given.is_some() && given != planned
        }
        [
            ("--suite", differs(&self.suite, &plan.suite)),
            ("--models", differs_opt(&self.models, &plan.models)),
            ("--scenarios", differs_opt(&self.scenarios, &plan.scenarios)),
            ("--trials", differs_opt(&self.trials, &plan.trials)),
            (
                "--server-cpus",
                differs(&self.server_cpus, &plan.server_cpus),
            ),
            ("--load-cpus", differs(&self.load_cpus, &plan.load_cpus)),
            ("--precision", differs_opt(&a.precision, &plan.precision)),
            ("--max-trials", differs_opt(&a.max_trials, &plan.max_trials)),
            ("--max-time", differs_opt(&a.max_time, &plan.max_time)),
            ("--rerun-noisy", a.rerun_noisy && !plan.rerun_noisy),
            (
                "--server-host",
                differs_opt(&self.hosts.server_host, &plan.server_host),
            ),
            (
                "--load-hosts",
                differs_opt(&self.hosts.load_hosts, &plan.load_hosts),
            ),
            (
                "--server-addr",
                differs_opt(&self.hosts.server_addr, &plan.server_addr),
            ),
            (
                "--server",
                !self.servers.is_empty() && self.servers != plan.servers,
            ),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }

    /// The request this command line makes, defaults filled in.
    fn request(&self) -> plan::Request {
        let server_cpus = self.server_cpus.clone().unwrap_or_else(|| vec![0]);
        let load_cpus = self
            .load_cpus
            .clone()
            .unwrap_or_else(|| other_cpus(&server_cpus));
        plan::Request {
            suite: self.suite.clone().unwrap_or_else(|| "quick".into()),
            models: self.models.clone(),
            scenarios: self.scenarios.clone(),
            trials: self.trials,
            precision: self.adaptive.precision.clone(),
            max_trials: self.adaptive.max_trials,
            max_time: self.adaptive.max_time.clone(),
            rerun_noisy: self.adaptive.rerun_noisy,
            server_cpus,
            load_cpus,
            server_host: self.hosts.server_host.clone(),
            load_hosts: self.hosts.load_hosts.clone(),
            server_addr: self.hosts.server_addr.clone(),
            servers: self.servers.clone(),
            servers_dir: (!self.servers.is_empty())
                .then(|| std::env::current_dir().ok())
                .flatten(),
        }
    }
}

fn run(
    given: Given,
    out: Option<PathBuf>,
    resume: bool,
    allow_rebuilt: bool,
    bin_dir: Option<PathBuf>,
) -> Result<Vec<serde_json::Value>, String> {
    let (server, loadgen) = binaries(bin_dir)?;
    let builds = (plan::Binary::of(&server)?, plan::Binary::of(&loadgen)?);
    // A fresh run reads its suite before making a directory, so a bad suite leaves none.
    let fresh = if resume {
        None
    } else {
        let request = given.request();
        let path = suite::locate(&request.suite)?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        with_servers(suite::parse(&text, &path)?, &request)?;
        Some((request, path, text))
    };
    // Unreachable or mismatched hosts are refused before a directory is made, too.
    let fresh_hosts = match &fresh {
        Some((request, path, text)) => {
            let suite = with_servers(suite::parse(text, path)?, request)?;
            Some(given.hosts.prepare(request, &suite, &server, &loadgen)?)
        }
        None => None,
    };
    let root = runner::results_root();
    let (dir, run_id) = match (out, resume) {
        (Some(dir), _) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (dir, id)
        }
        (None, true) => {
            let latest = root.join("latest");
            let dir = std::fs::canonicalize(&latest)
                .map_err(|_| format!("--resume: no {} to resume", latest.display()))?;
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (dir, id)
        }
        (None, false) => {
            runner::new_run_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?
        }
    };
    // Held until the report is written. Taken before looking at the results, so a second
    // run into this directory, with --resume or not, is refused as long as this one lives.
    let _lock = runner::lock(&dir)?;
    if !resume && dir.join("results.jsonl").exists() {
        return Err(format!(
            "{} already holds results: pass --resume to finish it, or another --out",
            dir.display()
        ));
    }
    let (request, suite_path, suite_text) = match (fresh, plan::Plan::read(&dir)?) {
        (Some(fresh), _) => fresh,
        (None, Some(plan)) => {
            let named = given.differing(&plan.request);
            if !named.is_empty() {
                return Err(format!(
                    "--resume finishes {} as it was planned (suite {}, {}: {}): drop {}",
                    dir.display(),
                    plan.request.suite,
                    benches::count(plan.cells, "cell"),
                    dir.join(plan::FILE).display(),
                    named.join(", ")
                ));
            }
            if let Some(why) = plan.rebuilt(&builds.0, &builds.1) {
                if !allow_rebuilt {
                    return Err(format!(
                        "{why}: the run's results would mix two builds; rebuild what it started with, or pass --resume --allow-rebuilt"
                    ));
                }
                eprintln!("warning: {why}; finishing anyway (--allow-rebuilt)");
            }
            (plan.request, plan.suite_path, plan.suite_text)
        }
        (None, None) => {
            eprintln!(
                "warning: {} has no {} (a run from before plans): resuming with this command line's suite and filters",
                dir.display(),
                plan::FILE
            );
            let request = given.request();
            let path = suite::locate(&request.suite)?;
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            (request, path, text)
        }
    };
    let mut suite = with_servers(suite::parse(&suite_text, &suite_path)?, &request)?;
    if let Some(t) = request.trials {
        suite.trials = t.max(1);
        if suite.max_trials.is_some_and(|m| m < suite.trials) {
            suite.max_trials = Some(suite.trials);
        }
    }
    let adaptive = AdaptiveArgs {
        precision: request.precision.clone(),
        max_trials: request.max_trials,
        max_time: request.max_time.clone(),
        rerun_noisy: request.rerun_noisy,
    };
    adaptive.apply(&mut suite)?;
    let available: Vec<String> = gate::models(&server)?.into_iter().map(|m| m.name).collect();
    // Servers of the command line run even where --models names others.
    let only_models = request.models.clone().map(|mut models| {
        for s in &request.servers {
            let name = s.split_once(':').map_or(s.as_str(), |(n, _)| n.trim());
            if !models.iter().any(|m| m == name) {
                models.push(name.to_string());
            }
        }
        models
    });
    let cells = suite.cells(
        &available,
        only_models.as_deref(),
        request.scenarios.as_deref(),
    )?;
    if cells.is_empty() {
        return Err("no cells to run (check --models and --scenarios)".into());
    }
    let hosts = match fresh_hosts {
        Some(hosts) => hosts,
        None => given.hosts.prepare(&request, &suite, &server, &loadgen)?,
    };
    let (server_cpus, load_cpus) = (request.server_cpus.clone(), request.load_cpus.clone());
    if suite.raise_nofile {
        let needed = cells.iter().map(|c| c.connections()).max().unwrap_or(0) + 1024;
        let limit = runner::raise_nofile(needed)?;
        eprintln!("RLIMIT_NOFILE raised to {limit} for this run and its servers and loadgens");
    }
    if !dir.join(plan::FILE).exists() {
        plan::Plan {
            schema: 1,
            request: request.clone(),
            suite_path: suite_path.clone(),
            suite_text,
            server: builds.0,
            loadgen: builds.1,
            cells: cells.len(),
        }
        .write(&dir)?;
    }
    let suite_name = request.suite.clone();
    eprintln!(
        "suite {suite_name}: {}; server on CPUs {server_cpus:?}, loadgen on {load_cpus:?}\nresults: {}",
        suite.plan(&cells),
        dir.display()
    );
    let run = Run {
        setup: Setup {
            server,
            loadgen,
            server_cpus,
            load_cpus,
            warmup: suite.warmup,
            timeout: suite.timeout,
            run_id,
            hosts,
            externals: suite.servers.clone(),
            run_dir: dir.clone(),
        },
        dir,
        suite,
        suite_path,
        cells,
    };
    runner::write_env(&run)?;
    runner::catch_interrupts();
    if !run.setup.externals.is_empty() {
        benches::external::adopt_orphans();
    }
    let rerun_noisy = adaptive.rerun_noisy || run.suite.rerun_noisy;
    let lines = runner::execute_with(&run, rerun_noisy)?;
    let precision: Option<serde_json::Value> =
        std::fs::read_to_string(run.dir.join("precision.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    println!("{}", summary::render(&lines, precision.as_ref()));
    if runner::interrupted().is_some() {
        // Lines past the plan are extra rounds and reruns: counted apart, not "17 of 12".
        let done = runner::finished_cells(&run.dir).map_err(|e| e.to_string())?;
        let planned = run.cells.iter().filter(|c| done.contains(&c.key())).count();
        let extra = match lines.len() - planned {
            0 => String::new(),
            n => format!(" (and {})", benches::count(n, "extra trial")),
        };
        eprintln!(
            "interrupted: {planned} of {} saved{extra} in {}; `bench run --resume --out {}` finishes it",
            benches::count(run.cells.len(), "cell"),
            run.dir.display(),
            run.dir.display()
        );
    }
    println!("results: {}", run.dir.join("results.jsonl").display());
    let report = run.dir.join("report.html");
    let data = reports::run::Run::load(&run.dir)?;
    for warning in data.warnings() {
        eprintln!("{warning}");
    }
    reports::render::render(&data, &report)?;
    println!("report:  {}", report.display());
    Ok(lines
        .into_iter()
        .filter(|l| l["status"] == "failed")
        .collect())
}

/// The suite with the servers of `--server` added (their `{dir}`: where they were given), all
/// checked as a suite's own are.
fn with_servers(mut suite: suite::Suite, request: &plan::Request) -> Result<suite::Suite, String> {
    let dir = match &request.servers_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|e| e.to_string())?,
    };
    for spec in &request.servers {
        suite
            .servers
            .push(benches::external::Server::from_arg(spec, &dir)?);
    }
    suite.check_servers()?;
    for server in &suite.servers {
        server.check_programs()?;
    }
    Ok(suite)
}

fn workload(requests: u64) -> Result<gate::Workload, String> {
    let short = (requests / 20).max(100);
    if requests <= short {
        return Err(format!("--requests must be above {short}"));
    }
    Ok(gate::Workload {
        short,
        long: requests,
        ..gate::Workload::default()
    })
}

/// The models to measure: all the server lists, or the ones asked for (each must exist).
fn gate_models(server: &Path, only: Option<Vec<String>>) -> Result<Vec<gate::ModelInfo>, String> {
    let all = gate::models(server)?;
    match only {
        None => Ok(all),
        Some(names) => names
            .iter()
            .map(|n| {
                all.iter().find(|m| &m.name == n).cloned().ok_or_else(|| {
                    let valid: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
                    format!("unknown model '{n}' (valid: {})", valid.join(", "))
                })
            })
            .collect(),
    }
}

/// The servers of `--server` specs given here (their `{dir}`: the working directory), each
/// refused with its reason, and its program checked.
fn external_servers(specs: &[String]) -> Result<Vec<benches::external::Server>, String> {
    let dir = std::env::current_dir().map_err(|e| e.to_string())?;
    specs
        .iter()
        .map(|spec| {
            let server = benches::external::Server::from_arg(spec, &dir)?;
            if !server.speaks("echo") {
                return Err(format!(
                    "--server '{spec}': the gate's workload is echo; declare it (NAME:echo=...)"
                ));
            }
            server.check_programs()?;
            Ok(server)
        })
        .collect()
}

fn gate(
    only_models: Option<Vec<String>>,
    out: Option<PathBuf>,
    bmf: Option<PathBuf>,
    requests: u64,
    server_args: Vec<String>,
    servers: Vec<String>,
    bin_dir: Option<PathBuf>,
) -> Result<(), String> {
    let (server, _) = binaries(bin_dir)?;
    let workload = workload(requests)?;
    let externals = external_servers(&servers)?;
    let models = if externals.is_empty() || only_models.is_some() {
        gate_models(&server, only_models)?
    } else {
        Vec::new()
    };
    let out = out.unwrap_or_else(|| runner::workspace_root().join("target/gate/gate.json"));
    let work = out.with_extension("work");
    eprintln!(
        "gate: {} under callgrind, {} and {} echo requests each",
        benches::count(models.len() + externals.len(), "server"),
        workload.short,
        workload.long
    );
    let started = std::time::Instant::now();
    let pass = gate::pass(
        &server,
        &models,
        &externals,
        &workload,
        &server_args,
        &work,
        |m| eprintln!("  {m}"),
    )?;
    eprintln!("gate: {:.0?}", started.elapsed());
    ci::write_json(&out, &pass)?;
    if let Some(bmf) = bmf {
        ci::write_json(&bmf, &gate::bmf(&pass))?;
    }
    println!("{}", gate::table(&pass));
    println!("gate pass: {}", out.display());
    let failed = pass["models"]
        .as_object()
        .map(|m| m.values().filter(|v| v["status"] == "failed").count())
        .unwrap_or(0);
    if failed > 0 {
        return Err(format!(
            "{failed} model(s) could not be measured (see above)"
        ));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn gate_compare(base: &Path, new: &Path, threshold: f64) -> ExitCode {
    let result = (|| {
        let (base, new) = (read_json(base)?, read_json(new)?);
        for pass in [&base, &new] {
            if pass["kind"] != "iomodels-gate" {
                return Err("not a gate pass (written by `bench gate`)".to_string());
            }
        }
        let rows = gate::compare(&base, &new, threshold / 100.0);
        print!(
            "{}",
            gate::markdown(&rows, threshold / 100.0, &new["workload"])
        );
        Ok(rows.iter().any(|r| r.verdict.fails()))
    })();
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(2)
        }
    }
}
