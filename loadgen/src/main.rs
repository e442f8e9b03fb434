//! `loadgen`: drive an iomodels server (or any echo/HTTP server) and measure it honestly.

use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use loadgen::engine::{Plan, Scenario};
use loadgen::http;
use loadgen::limits::{self, human_bytes};
use loadgen::run::{self, Options};
use loadgen::series::{self, MAX_INTERVALS};
use loadgen::start_at;
use loadgen::stats::{self, LoadResult};
use loadgen::summary;
use loadgen::verdict::{self, Thresholds};
use loadgen::workload::Workload;

/// The highest `--rate`: one request a nanosecond, the schedule's resolution (one loadgen
/// thread sends well under a million a second).
const MAX_RATE: f64 = 1e9;
/// The most event-loop threads (`--threads`).
const MAX_THREADS: usize = 1024;
/// The transfer protocol's largest PUT or GET (DESIGN.md section 2).
const MAX_TRANSFER: u64 = 1 << 40;
/// Descriptors loadgen needs besides its connections: stdio, the probe, slack; one epoll
/// descriptor per thread comes on top.
const OWN_DESCRIPTORS: u64 = 16;

/// An event-driven load generator with coordinated-omission-corrected latency and byte-exact
/// verification of every reply.
///
/// Scenarios: echo (closed loop), rate (open loop at --rate), idle (--active echo while
/// --idle connections sit open), churn (connect, one echo, close), bulk (transfer PUT then
/// GET of --size bytes), http (keep-alive HTTP/1.1 requests to any server: `loadgen http
/// http://127.0.0.1:8080/path`, or `-a` and the HTTP options below). `loadgen merge A.json
/// B.json ...` merges runs, series included; `loadgen merge A.hlog B.hlog ...` merges interval
/// logs (to stdout). rust_echo_bench's flags work too: -a, -c, -l, -t.
///
/// Exit status: 0 when the run measured what it was asked to; 1 when it failed (no request
/// completed, errors above --max-error-rate or mismatches above --max-mismatch-rate, the
/// server unreachable); 2 for a usage error, including arguments this machine cannot run
/// (descriptors, local ports, memory).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Cli {
    /// What each connection does.
    #[arg(value_enum, default_value = "echo")]
    scenario: Scenario,
    /// `http`: the URL to request, as wrk takes it: http://HOST[:PORT][/PATH] gives the
    /// address, the path and the Host header (plain HTTP only).
    #[arg(value_name = "URL")]
    url: Option<String>,
    /// Server address, HOST:PORT: 127.0.0.1:7000, localhost:7000, [::1]:7000 (or ::1:7000).
    #[arg(
        short = 'a',
        long,
        visible_alias = "address",
        required_unless_present = "url",
        conflicts_with = "url"
    )]
    addr: Option<String>,
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
    /// Open loop (`rate`): total requests per second over all connections (at most 1e9). A
    /// scheduled request that finds no free connection waits at most --timeout, then counts
    /// as missed.
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
    /// Exit 1 when connect, reset, timeout and protocol errors and open-loop requests never
    /// sent (missed, unsent) together exceed this share of the measured requests (0 to 1, or
    /// a percentage: 1%).
    #[arg(long, default_value = "0.01", value_parser = parse_share)]
    max_error_rate: f64,
    /// Exit 1 when mismatched replies exceed this share of the measured requests (default 0:
    /// any mismatch fails the run).
    #[arg(long, default_value = "0", value_parser = parse_share)]
    max_mismatch_rate: f64,
    /// Print one JSON object (the result schema's `load` part) instead of the summary.
    #[arg(long)]
    json: bool,
    /// The series' interval: requests, errors and latency are kept per interval of the
    /// measured window. A series holds at most 600: past that the interval doubles.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    interval: Duration,
    /// Write the series as an HdrHistogram interval log (tags `corrected` and `uncorrected`,
    /// microseconds) to FILE, as HistogramLogAnalyzer and the hdrhistogram crates read it.
    #[arg(long, value_name = "FILE")]
    hlog: Option<std::path::PathBuf>,
    /// Start (the warmup, then the measured window) at this time, in seconds since the Unix
    /// epoch on this host's clock: loadgens on several hosts measure one window. A start in
    /// the past or more than an hour ahead is refused.
    #[arg(long, value_name = "UNIX_TIME", value_parser = start_at::parse)]
    start_at: Option<f64>,
    #[command(flatten)]
    http: HttpArgs,
}

/// What `loadgen http` sends and checks. Without a URL and without any of --path, --method,
/// --header, --body, --body-file and --host, it sends what the built-in servers answer,
/// `GET /`, and expects their `Hello, World!`.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "HTTP (the http scenario)")]
struct HttpArgs {
    /// Request target: path and query [default: /, or the URL's].
    #[arg(long, conflicts_with = "url")]
    path: Option<String>,
    /// Request method [default: GET].
    #[arg(long)]
    method: Option<String>,
    /// A request header, "Name: value"; repeat it for several. A Host header here replaces
    /// the default one.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body, sent with every request (with a Content-Length, even when empty, unless
    /// a --header gives one, or Transfer-Encoding).
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body read from FILE once, before the run.
    #[arg(long, value_name = "FILE")]
    body_file: Option<std::path::PathBuf>,
    /// The Host header [default: the address as given, -a's or the URL's HOST[:PORT]].
    #[arg(long)]
    host: Option<String>,
    /// The status every reply must have; another is a mismatch.
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// The body every reply must carry; another is a mismatch [default: `Hello, World!` for
    /// the built-in servers' request (no URL and none of the options above); otherwise
    /// bodies are read but not checked].
    #[arg(long, value_name = "TEXT")]
    expect_body: Option<String>,
}

impl HttpArgs {
    /// The HTTP options given, by name, for a scenario that is not `http`.
    fn given(&self) -> Vec<&'static str> {
        [
            ("--path", self.path.is_some()),
            ("--method", self.method.is_some()),
            ("--header", !self.headers.is_empty()),
            ("--body", self.body.is_some()),
            ("--body-file", self.body_file.is_some()),
            ("--host", self.host.is_some()),
            ("--expect-status", self.expect_status != 200),
            ("--expect-body", self.expect_body.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// The request and its checks; `url` from the URL form, `addr` as the user gave it.
    fn spec(&self, url: Option<&http::Url>, addr: &str) -> Result<http::Spec, Failure> {
        let described = url.is_some()
            || self.path.is_some()
            || self.method.is_some()
            || !self.headers.is_empty()
            || self.body.is_some()
            || self.body_file.is_some()
            || self.host.is_some();
        let host_header = self.headers.iter().any(|h| {
            h.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("host"))
        });
        if self.host.is_some() && host_header {
            return usage("give the Host header once: --host or --header 'Host: ...'");
        }
        let body = match (&self.body, &self.body_file) {
            (Some(text), _) => Some(text.as_bytes().to_vec()),
            (None, Some(path)) => Some(
                std::fs::read(path)
                    .map_err(|e| Failure::Usage(format!("--body-file {}: {e}", path.display())))?,
            ),
            (None, None) => None,
        };
        let default = http::Settings::hello(addr);
        let settings = http::Settings {
            method: self.method.clone().unwrap_or(default.method),
            path: match (url, &self.path) {
                (Some(url), _) => url.path.clone(),
                (None, Some(path)) => path.clone(),
                (None, None) => default.path,
            },
            host: match (url, &self.host) {
                (_, Some(host)) => host.clone(),
                (Some(url), None) => url.host.clone(),
                (None, None) => default.host,
            },
            headers: self.headers.clone(),
            body_bytes: body.as_ref().map_or(0, |b| b.len() as u64),
            expect_status: self.expect_status,
            expect_body: match (&self.expect_body, described) {
                (Some(text), _) => Some(text.clone()),
                (None, false) => default.expect_body,
                (None, true) => None,
            },
        };
        http::Spec::new(settings, body.as_deref()).map_err(Failure::Usage)
    }
}

/// Why loadgen stops without a clean run: a usage error exits 2, a failed run 1.
enum Failure {
    Usage(String),
    Run(String),
}

fn usage<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Usage(message.into()))
}

fn parse_share(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if (0.0..=scale).contains(&v) => Ok(v / scale),
        _ => Err(format!(
            "'{text}' is not a share from 0 to 1 (or 0% to 100%)"
        )),
    }
}

/// Every address `text` names, in the resolver's order. Takes HOST:PORT, [V6]:PORT, and a
/// bare IPv6 address followed by :PORT (::1:7000).
fn resolve(text: &str) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if let Some((ip, port)) = text.rsplit_once(':') {
        if let (Ok(ip), Ok(port)) = (ip.parse::<Ipv6Addr>(), port.parse::<u16>()) {
            return Ok(vec![SocketAddr::new(ip.into(), port)]);
        }
    }
    let hint = "expected HOST:PORT, e.g. 127.0.0.1:7000, localhost:7000 or [::1]:7000";
    if text.parse::<std::net::IpAddr>().is_ok() || !text.contains(':') {
        return usage(format!("address '{text}' has no port ({hint})"));
    }
    match text.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                return usage(format!("address '{text}' resolves to nothing"));
            }
            Ok(addrs)
        }
        Err(e) => usage(format!("bad address '{text}': {e} ({hint})")),
    }
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
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Run(message)) => {
            eprintln!("loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<(), Failure> {
    let url = match (&cli.url, cli.scenario) {
        (Some(url), Scenario::Http) => Some(http::parse_url(url).map_err(Failure::Usage)?),
        (Some(url), _) => return usage(format!("a URL ({url}) belongs to the http scenario")),
        (None, _) => None,
    };
    let addr = match (&url, &cli.addr) {
        (Some(url), _) => url.addr.clone(),
        (None, Some(addr)) => addr.clone(),
        (None, None) => return usage("give the server's address (-a HOST:PORT) or a URL"),
    };
    if cli.scenario != Scenario::Http {
        if let Some(option) = cli.http.given().first() {
            return usage(format!("{option} belongs to the http scenario"));
        }
    }
    let addrs = resolve(&addr)?;
    let size = cli.size.unwrap_or(if cli.scenario == Scenario::Bulk {
        1 << 20
    } else {
        128
    });
    let (active, idle) = match cli.scenario {
        Scenario::Idle => (
            cli.active.unwrap_or(cli.connections),
            match cli.idle {
                Some(idle) => idle,
                None => return usage("the idle scenario needs --idle M (and --active K)"),
            },
        ),
        _ if cli.active.is_some() || cli.idle.is_some() => {
            return usage("--active and --idle belong to the idle scenario")
        }
        _ => (cli.connections, 0),
    };
    if active == 0 {
        return usage("at least one active connection is needed");
    }
    let connections = match cli.scenario {
        Scenario::Idle => format!("--active {active} --idle {idle}"),
        _ => format!("-c {active}"),
    };
    let total = (active as u64).saturating_add(idle as u64);
    let workload = match cli.scenario {
        Scenario::Http => Workload::Http(Arc::new(cli.http.spec(url.as_ref(), &addr)?)),
        Scenario::Bulk if size > MAX_TRANSFER => {
            return usage(format!(
                "-l {size} is more than the transfer protocol's largest PUT or GET, \
                 {MAX_TRANSFER} bytes (2^40)"
            ))
        }
        Scenario::Bulk => Workload::Bulk { size },
        _ => {
            if size == 0 {
                return usage("--size must be at least 1");
            }
            Workload::Echo {
                size: size as usize,
            }
        }
    };
    let rate = match (cli.scenario, cli.rate) {
        (Scenario::Rate, Some(r)) if r > MAX_RATE && r.is_finite() => {
            return usage(format!(
                "--rate {r} is more than loadgen can schedule: at most {MAX_RATE:e} requests/s \
                 (one a nanosecond; one loadgen thread sends well under a million a second)"
            ))
        }
        (Scenario::Rate, Some(r)) if r > 0.0 && r.is_finite() => Some(r),
        (Scenario::Rate, _) => {
            return usage("the rate scenario needs --rate R (requests per second, > 0)")
        }
        (_, Some(_)) => return usage("--rate belongs to the rate scenario"),
        (_, None) => None,
    };
    if cli.requests == Some(0) {
        return usage("--requests must be at least 1");
    }
    if cli.duration.is_zero() && cli.requests.is_none() {
        return usage("-t 0 measures nothing: give a duration (10s, 500ms) or --requests N");
    }
    if cli.timeout.is_zero() {
        return usage("--timeout must be more than 0");
    }
    if cli.interval < Duration::from_millis(1) {
        return usage("--interval must be at least 1ms");
    }
    // A long run starts with the interval it would double to anyway, so the series is never
    // coarsened in flight.
    let mut interval = cli.interval;
    while cli.requests.is_none() && cli.duration > interval * MAX_INTERVALS as u32 {
        interval *= 2;
    }
    // Created before the run, so an unwritable path costs no measurement.
    let hlog = match &cli.hlog {
        Some(path) => Some((
            path,
            std::fs::File::create(path)
                .map_err(|e| Failure::Usage(format!("--hlog {}: {e}", path.display())))?,
        )),
        None => None,
    };
    let threads = cli.threads.unwrap_or_else(run::available_cpus);
    if !(1..=MAX_THREADS).contains(&threads) {
        return usage(format!(
            "--threads {threads}: give 1 to {MAX_THREADS} event-loop threads (this process may \
             run on {} CPUs)",
            run::available_cpus()
        ));
    }
    check_descriptors(&connections, total, threads)?;
    if let Workload::Echo { size } = workload {
        check_memory(&connections, size as u64, active)?;
    }
    if let Some((low, high)) = limits::local_port_range() {
        let ports = u64::from(high - low + 1);
        if total > ports {
            return usage(format!(
                "{connections} needs {total} local ports for connections to one server \
                 address, but net.ipv4.ip_local_port_range ({low} {high}) has {ports}"
            ));
        }
    }
    if let Some(at) = cli.start_at {
        start_at::wait_for(at, series::unix_now()).map_err(Failure::Usage)?;
    }
    let addr = run::probe(&addrs, cli.timeout).map_err(|e| Failure::Run(e.to_string()))?;
    if let Some(at) = cli.start_at {
        start_at::sleep_until(at);
    }
    let plan = Plan {
        scenario: cli.scenario,
        workload,
        addr,
        warmup: cli.warmup,
        duration: cli.duration,
        requests: cli.requests,
        timeout: cli.timeout,
        spin: cli.spin,
        interval,
    };
    let options = Options {
        progress: run::want_progress(cli.json),
        plan,
        active,
        idle,
        rate,
        threads,
        size,
    };
    let measured = run::run(&options).map_err(|e| Failure::Run(e.to_string()))?;
    let result = measured.result;
    if let Some((path, mut file)) = hlog {
        let intervals =
            series::log_intervals(&measured.series, result.start_unix_s, result.duration_s);
        let comment = format!(
            "loadgen {} {} -c {} {}",
            env!("CARGO_PKG_VERSION"),
            result.scenario,
            result.connections,
            result.addr
        );
        series::write_log(&mut file, result.start_unix_s, &intervals, &comment)
            .map_err(|e| Failure::Run(format!("--hlog {}: {e}", path.display())))?;
    }
    print(&result, cli.json);
    let thresholds = Thresholds {
        max_error_rate: cli.max_error_rate,
        max_mismatch_rate: cli.max_mismatch_rate,
    };
    verdict::judge(&result, &thresholds).map_err(Failure::Run)
}

/// Refuses echo messages that cannot all be in flight at once: each active connection holds
/// its message until the reply is verified.
fn check_memory(connections: &str, size: u64, active: usize) -> Result<(), Failure> {
    let in_flight = size.saturating_mul(active as u64);
    match limits::available_memory() {
        Some(memory) if in_flight > memory / 2 => usage(format!(
            "-l {size} with {connections} keeps {} of messages in flight (one per connection), \
             more than half of the {} of memory available; lower -l or -c",
            human_bytes(in_flight),
            human_bytes(memory)
        )),
        _ => Ok(()),
    }
}

/// Raises RLIMIT_NOFILE to its hard limit and refuses connections that cannot fit under it.
fn check_descriptors(connections: &str, total: u64, threads: usize) -> Result<(), Failure> {
    let (soft, hard) = match limits::raise_nofile() {
        Ok(limits) => limits,
        Err(e) => return Err(Failure::Run(format!("cannot read RLIMIT_NOFILE: {e}"))),
    };
    let threads = (threads as u64).min(total);
    let own = OWN_DESCRIPTORS + threads;
    if total.saturating_add(own) > soft {
        let raised = if soft == hard {
            format!("raised to its hard limit {hard}")
        } else {
            format!("its hard limit is {hard}")
        };
        return usage(format!(
            "{connections} needs {total} descriptors and loadgen {own} more of its own, but \
             RLIMIT_NOFILE allows {soft} ({raised}); raise the hard limit (ulimit -Hn, \
             limits.conf) or open at most {} connections",
            soft.saturating_sub(own)
        ));
    }
    Ok(())
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
        eprintln!(
            "usage: loadgen merge A.json B.json ... [--json] | loadgen merge A.hlog B.hlog ..."
        );
        return ExitCode::from(2);
    }
    if paths.iter().all(|p| p.ends_with(".hlog")) {
        return merge_logs(&paths);
    }
    let results: Result<Vec<LoadResult>, String> = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
            stats::results_in(&text).map_err(|e| format!("{p}: {e}"))
        })
        .collect::<Result<Vec<Vec<LoadResult>>, String>>()
        .map(|r| r.concat());
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

/// `loadgen merge A.hlog B.hlog ...`: the interval logs merged interval by interval, written
/// to stdout as one log.
fn merge_logs(paths: &[&String]) -> ExitCode {
    let logs: Result<Vec<_>, String> = paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| format!("{p}: {e}"))?;
            series::read_log(&bytes).map_err(|e| format!("{p}: {e}"))
        })
        .collect();
    let merged = logs.and_then(|logs| series::merge_logs(&logs));
    let written = merged.and_then(|(origin, intervals)| {
        let comment = format!("loadgen merge of {} interval logs", paths.len());
        series::write_log(&mut std::io::stdout().lock(), origin, &intervals, &comment)
            .map_err(|e| e.to_string())
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen merge: {e}");
            ExitCode::FAILURE
        }
    }
}
