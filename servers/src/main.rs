//! `server`: run any I/O model with any protocol (DESIGN.md section 2, "CLI contract").

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use servers::models::{self, Clients, Config, Family, FdTable, Knob, Model, MODELS};
use servers::protocol::Protocol;
use servers::{listener, signals};

/// One small server per Linux I/O model, all speaking the same protocols.
///
/// Once ready, prints exactly one line `listening <ip>:<port>` on stdout. SIGTERM or SIGINT
/// stops it (children reaped) with exit status 0. Exit status 2: bad arguments or unknown
/// names; 3: the model cannot run on this machine (`unsupported: <reason>` on stderr).
#[derive(Parser, Debug)]
#[command(name = "server", version)]
struct Cli {
    /// The I/O model (see --list).
    #[arg(long, required_unless_present = "list")]
    model: Option<String>,
    /// The protocol to speak.
    #[arg(long, value_enum, required_unless_present = "list")]
    protocol: Option<Protocol>,
    /// Address to listen on (HOST:PORT; a name such as localhost is resolved); port 0 lets
    /// the kernel choose.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    addr: SocketAddr,
    /// Event-loop models: independent loops, each with its own SO_REUSEPORT listener [default: 1].
    #[arg(long)]
    threads: Option<usize>,
    /// Pool models: workers created up front [default: 64].
    #[arg(long)]
    workers: Option<usize>,
    /// `threads` and `fork`: most live connections; more are closed at once [default: 10000].
    #[arg(long)]
    max_conns: Option<usize>,
    /// io_uring models: a kernel thread polls the submission queue (IORING_SETUP_SQPOLL).
    #[arg(long)]
    sqpoll: bool,
    /// io_uring models: when the kernel runs completion work for the loop: defer (only when
    /// it waits: DEFER_TASKRUN, 6.1), coop (at its next syscall, no interrupt: COOP_TASKRUN,
    /// 5.19) or plain (interrupting it) [default: the best this kernel has; plain with
    /// --sqpoll].
    #[arg(long, value_enum, value_name = "MODE")]
    taskrun: Option<servers::completion::TaskRun>,
    /// io_uring models: the same as `--taskrun defer`.
    #[arg(long, conflicts_with = "taskrun")]
    defer_taskrun: bool,
    /// io_uring models: enter the ring by its descriptor instead of a registered index
    /// (the default registers it: IORING_REGISTER_RING_FDS, 5.18).
    #[arg(long)]
    plain_ring_fd: bool,
    /// uring-multishot: accept into direct descriptors (a registered file table: no
    /// descriptor lookup or reference per request; 5.19).
    #[arg(long)]
    fixed_files: bool,
    /// io_uring models: send replies of 16 KiB or more with IORING_OP_SEND_ZC, the kernel
    /// pinning our pages instead of copying them (6.0; on loopback the receiver copies
    /// anyway).
    #[arg(long)]
    zerocopy: bool,
    /// uring-multishot, echo: send each echo straight from the provided buffer it arrived
    /// in when nothing else waits to be sent (no copy into an output buffer).
    #[arg(long)]
    send_in_place: bool,
    /// uring-multishot: one recv completion may fill several provided buffers
    /// (IORING_RECVSEND_BUNDLE, 6.10).
    #[arg(long)]
    bundle: bool,
    /// io_uring models: each wait asks for N completions and returns with fewer after 50 us
    /// (IORING_FEAT_MIN_TIMEOUT, 6.12) [default: 1].
    #[arg(long, value_name = "N")]
    batch: Option<u32>,
    /// tokio: check the runtime's shared (injection) queue every N scheduler ticks instead of
    /// tokio's self-tuned interval (about 200 us of task polls, at least 2 ticks). A worker
    /// holds at most 256 runnable tasks in its own queue; the rest overflow to the shared one,
    /// which is served one task per interval: lower it for fairness at hundreds of busy
    /// connections (docs/MODELS.md, `tokio`).
    #[arg(long, value_name = "N")]
    global_queue_interval: Option<u32>,
    /// Every model: close a connection after this long without progress (no request
    /// completed, no reply byte written): 30s, 500ms. Default: never, so a silent client
    /// holds its worker, thread or process (the blocking models' lesson; docs/MODELS.md).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    idle_timeout: Option<Duration>,
    /// List every model, its family, what it does, and whether this machine can run it.
    #[arg(long)]
    list: bool,
    /// With --list: one JSON array, for programs (the conformance suite, the bench runner).
    #[arg(long, requires = "list")]
    json: bool,
    /// Test aid (built only with the feature `extra-work`): ROUNDS of throwaway work per
    /// request, a slowdown of known size for checking that the CI gate catches one.
    #[cfg(feature = "extra-work")]
    #[arg(long, hide = true, value_name = "ROUNDS", default_value_t = 0)]
    extra_work: u32,
    /// Test aid (built only with the feature `extra-work`): ROUNDS of throwaway work per
    /// connection, so a slowed server is slowed at churn too.
    #[cfg(feature = "extra-work")]
    #[arg(long, hide = true, value_name = "ROUNDS", default_value_t = 0)]
    extra_work_per_connection: u32,
}

/// `HOST:PORT`, resolved; the first address wins, as `bind` would take it.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("'{text}' resolves to no address")),
        Err(e) => Err(format!("'{text}' is not HOST:PORT ({e})")),
    }
}

/// `30s`, `500ms`, `2m`, or a plain number of seconds; at least 1 ms.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (ms, s, m)")),
    };
    if !seconds.is_finite() || !(0.001..=86_400.0).contains(&seconds) {
        return Err(format!("'{text}' is out of range (1ms to 24h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

const EXIT_USAGE: u8 = 2;
const EXIT_UNSUPPORTED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        return list(cli.json);
    }
    let (Some(name), Some(protocol)) = (cli.model.as_deref(), cli.protocol) else {
        unreachable!("clap requires --model and --protocol without --list");
    };
    let Some(model) = models::find(name) else {
        eprintln!(
            "error: unknown model '{name}'\nvalid models: {}",
            models::names().join(", ")
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let config = match config_for(model, &cli, protocol) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(reason) = support_of(model) {
        eprintln!("unsupported: {reason}");
        return ExitCode::from(EXIT_UNSUPPORTED);
    }
    if model.family == Family::Completion {
        match config.ring.check() {
            Ok(()) => eprintln!("{}: {}", model.name, config.ring.describe()),
            Err((EXIT_USAGE, message)) => {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err((_, reason)) => {
                eprintln!("unsupported: {reason}");
                return ExitCode::from(EXIT_UNSUPPORTED);
            }
        }
    }
    #[cfg(feature = "extra-work")]
    servers::protocol::set_extra_work(cli.extra_work, cli.extra_work_per_connection);
    match serve(model, &config, cli.addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if signals::stopping() => signals::wait_for_exit(),
        Err(e) => {
            eprintln!("{}: {e}", model.name);
            ExitCode::FAILURE
        }
    }
}

fn serve(model: &Model, config: &Config, addr: SocketAddr) -> std::io::Result<()> {
    // First, before any thread exists, so every thread inherits the blocked signal mask.
    // Completion loops wait only in io_uring_enter and hear the stop signals in band.
    let stop = if model.family == Family::Completion {
        signals::Stop::InBand
    } else {
        signals::Stop::SignalThread
    };
    signals::start_signal_thread(stop)?;
    let loops = if model.knobs.contains(&Knob::Threads) {
        config.threads
    } else {
        1
    };
    let listeners = listener::bind(addr, loops)?;
    for l in &listeners {
        signals::on_stop_shut_down(std::os::fd::AsRawFd::as_raw_fd(l));
    }
    let local = listeners[0].local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {local}")?;
    stdout.flush()?;
    drop(stdout);
    (model.run)(listeners, config)
}

/// Whether this machine can run `model` (or a test asks us to pretend it cannot).
fn support_of(model: &Model) -> Result<(), String> {
    (model.support)().and_then(|()| simulated_refusal(model.name))
}

/// Test aid: `IOMODELS_SIMULATE_UNSUPPORTED=a,b` makes models a and b refuse to run as a
/// machine without their mechanism would, so the unsupported path can be tested anywhere.
fn simulated_refusal(name: &str) -> Result<(), String> {
    match std::env::var("IOMODELS_SIMULATE_UNSUPPORTED") {
        Ok(list) if list.split(',').any(|m| m.trim() == name) => {
            Err("simulated by IOMODELS_SIMULATE_UNSUPPORTED (a test aid)".into())
        }
        _ => Ok(()),
    }
}

/// Checks the options against what the model takes, and fills in the defaults.
fn config_for(model: &Model, cli: &Cli, protocol: Protocol) -> Result<Config, String> {
    let given = [
        (Knob::Threads, cli.threads),
        (Knob::Workers, cli.workers),
        (Knob::MaxConns, cli.max_conns),
        (Knob::Sqpoll, cli.sqpoll.then_some(1)),
        (Knob::DeferTaskrun, cli.defer_taskrun.then_some(1)),
        (Knob::Taskrun, cli.taskrun.map(|_| 1)),
        (Knob::PlainRingFd, cli.plain_ring_fd.then_some(1)),
        (Knob::Batch, cli.batch.map(|n| n as usize)),
        (Knob::FixedFiles, cli.fixed_files.then_some(1)),
        (Knob::Zerocopy, cli.zerocopy.then_some(1)),
        (Knob::SendInPlace, cli.send_in_place.then_some(1)),
        (Knob::Bundle, cli.bundle.then_some(1)),
        (
            Knob::GlobalQueueInterval,
            cli.global_queue_interval.map(|n| n as usize),
        ),
    ];
    for (knob, value) in given {
        if value.is_some() && !model.knobs.contains(&knob) {
            return Err(format!(
                "model '{}' does not take {}",
                model.name,
                knob.flag()
            ));
        }
        if value == Some(0) {
            return Err(format!("{} must be at least 1", knob.flag()));
        }
    }
    if cli.send_in_place && protocol != Protocol::Echo {
        return Err(
            "--send-in-place sends back the bytes that arrived: it is for --protocol echo only"
                .into(),
        );
    }
    Ok(Config {
        protocol,
        threads: cli.threads.unwrap_or(1),
        workers: cli.workers.unwrap_or(models::DEFAULT_WORKERS),
        max_conns: cli.max_conns.unwrap_or(models::DEFAULT_MAX_CONNS),
        ring: servers::completion::RingOptions {
            sqpoll: cli.sqpoll,
            taskrun: cli.taskrun.or(cli
                .defer_taskrun
                .then_some(servers::completion::TaskRun::Defer)),
            plain_ring_fd: cli.plain_ring_fd,
            batch: cli.batch.unwrap_or(1),
            fixed_files: cli.fixed_files,
            zerocopy: cli.zerocopy,
            send_in_place: cli.send_in_place,
            bundle: cli.bundle,
        },
        idle_timeout: cli.idle_timeout,
        global_queue_interval: cli.global_queue_interval,
    })
}

/// One model as `--list --json` prints it.
#[derive(Serialize)]
struct Listing {
    name: &'static str,
    family: Family,
    clients: Clients,
    fd_table: FdTable,
    max_fd: Option<i32>,
    options: Vec<&'static str>,
    summary: &'static str,
    supported: bool,
    reason: Option<String>,
}

fn list(json: bool) -> ExitCode {
    let listings: Vec<Listing> = MODELS
        .iter()
        .map(|m| {
            let support = support_of(m);
            Listing {
                name: m.name,
                family: m.family,
                clients: m.clients,
                fd_table: m.fd_table,
                max_fd: m.max_fd,
                options: m.knobs.iter().map(|k| k.flag()).collect(),
                summary: m.summary,
                supported: support.is_ok(),
                reason: support.err(),
            }
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listings).expect("listings serialise")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<16} {:<18} {:<10} WHAT IT DOES",
        "MODEL", "FAMILY", "SUPPORTED"
    );
    for l in &listings {
        let family = serde_json::to_value(l.family).expect("family serialises");
        let supported = match &l.reason {
            None => "yes".to_string(),
            Some(reason) => format!("no ({reason})"),
        };
        println!(
            "{:<16} {:<18} {:<10} {}",
            l.name,
            family.as_str().unwrap_or_default(),
            supported,
            l.summary
        );
    }
    ExitCode::SUCCESS
}
