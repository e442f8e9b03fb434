//! `loadgen`: drive an iomodels server (or any echo/HTTP server) and measure it honestly.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use loadgen::engine::{Plan, Scenario};
use loadgen::run::{self, Options};
use loadgen::stats::{self, LoadResult};
use loadgen::summary;
use loadgen::workload::Workload;

/// An event-driven load generator with coordinated-omission-corrected latency and byte-exact
/// verification of every reply.
///
/// Scenarios: echo (closed loop), rate (open loop at --rate), idle (--active echo while
/// --idle connections sit open), churn (connect, one echo, close), bulk (transfer PUT then
/// GET of --size bytes), http (keep-alive GET). `loadgen merge A.json B.json ...` merges runs.
/// rust_echo_bench's flags work too: -a, -c, -l, -t.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Cli {
    /// What each connection does.
    #[arg(value_enum, default_value = "echo")]
    scenario: Scenario,
    /// Server address.
    #[arg(short = 'a', long, visible_alias = "address")]
    addr: String,
    /// Connections (for `idle`: the active ones, unless --active is given).
    #[arg(short = 'c', long, visible_alias = "number", default_value_t = 50)]
    connections: usize,
    /// Message size in bytes (bulk: bytes per PUT and per GET) [default: 128, bulk 1048576].
    #[arg(short = 'l', long, visible_aliases = ["length", "lenght"])]
    size: Option<u64>,
    /// Measured duration: 10, 10s, 500ms, 2m.
    #[arg(short = 't', long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load applied before measuring, then discarded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop (`rate`): total requests per second over all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// `idle`: connections that echo.
    #[arg(long)]
    active: Option<usize>,
    /// `idle`: connections that stay open and silent.
    #[arg(long)]
    idle: Option<usize>,
    /// Measure exactly this many requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// A reply (or a connect) slower than this is an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// While replies are outstanding, poll this long without sleeping before blocking, so a
    /// reply is handled without loadgen's own wake-up delay; 0 blocks at once (and leaves the
    /// CPU to others when loadgen shares one with the server).
    #[arg(long, default_value = "50us", value_parser = parse_duration)]
    spin: Duration,
    /// Event-loop threads [default: the CPUs this process may run on].
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object (the result schema's `load` part) instead of the summary.
    #[arg(long)]
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "us" => value / 1_000_000.0,
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in '{text}' (use us, ms, s or m)")),
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("merge") {
        return merge(&args[2..]);
    }
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<ExitCode, String> {
    let addr: SocketAddr = cli
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address '{}': {e}", cli.addr))?
        .next()
        .ok_or_else(|| format!("address '{}' resolves to nothing", cli.addr))?;
    let size = cli.size.unwrap_or(if cli.scenario == Scenario::Bulk {
        1 << 20
    } else {
        128
    });
    let workload = match cli.scenario {
        Scenario::Http => Workload::Http {
            host: cli.addr.clone(),
        },
        Scenario::Bulk => Workload::Bulk { size },
        _ => {
            if size == 0 {
                return Err("--size must be at least 1".into());
            }
            Workload::Echo {
                size: size as usize,
            }
        }
    };
    let (active, idle) = match cli.scenario {
        Scenario::Idle => (
            cli.active.unwrap_or(cli.connections),
            cli.idle
                .ok_or("the idle scenario needs --idle M (and --active K)")?,
        ),
        _ if cli.active.is_some() || cli.idle.is_some() => {
            return Err("--active and --idle belong to the idle scenario".into())
        }
        _ => (cli.connections, 0),
    };
    if active == 0 {
        return Err("at least one active connection is needed".into());
    }
    let rate = match (cli.scenario, cli.rate) {
        (Scenario::Rate, Some(r)) if r > 0.0 && r.is_finite() => Some(r),
        (Scenario::Rate, _) => {
            return Err("the rate scenario needs --rate R (requests per second, > 0)".into())
        }
        (_, Some(_)) => return Err("--rate belongs to the rate scenario".into()),
        (_, None) => None,
    };
    if cli.requests == Some(0) {
        return Err("--requests must be at least 1".into());
    }
    run::probe(addr, cli.timeout).map_err(|e| e.to_string())?;
    let plan = Plan {
        scenario: cli.scenario,
        workload,
        addr,
        warmup: cli.warmup,
        duration: cli.duration,
        requests: cli.requests,
        timeout: cli.timeout,
        spin: cli.spin,
    };
    let options = Options {
        progress: run::want_progress(cli.json, cli.warmup + cli.duration),
        plan,
        active,
        idle,
        rate,
        threads: cli.threads.unwrap_or_else(run::available_cpus),
        size,
    };
    let result = run::run(&options).map_err(|e| e.to_string())?;
    print(&result, cli.json);
    Ok(ExitCode::SUCCESS)
}

fn print(result: &LoadResult, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(result).expect("result serialises")
        );
    } else {
        print!("{}", summary::render(result));
    }
}

fn merge(paths: &[String]) -> ExitCode {
    let json = paths.iter().any(|p| p == "--json");
    let paths: Vec<&String> = paths.iter().filter(|p| *p != "--json").collect();
    if paths.is_empty() {
        eprintln!("usage: loadgen merge A.json B.json ... [--json]");
        return ExitCode::from(2);
    }
    let results: Result<Vec<LoadResult>, String> = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{p}: not a loadgen --json result: {e}"))
        })
        .collect();
    match results.and_then(|r| stats::merge(&r).map_err(|e| e.to_string())) {
        Ok(merged) => {
            print(&merged, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen merge: {e}");
            ExitCode::FAILURE
        }
    }
}
