//! The conformance suite's harness: start any model as a real `server` process, talk to it
//! over loopback, and look at its process tree in /proc.
//!
//! The models come from `server --list --json`, so a model added to the registry is tested by
//! every case without touching the suite. What a case expects of a model is derived from the
//! listing (`clients`, `fd_table`), never from its name.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub const SERVER: &str = env!("CARGO_BIN_EXE_server");

/// Pool models are started with this many workers, so their limits are visible in tests.
pub const TEST_WORKERS: usize = 4;

/// Long enough for a client queued behind a hundred others on a serial model.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub family: String,
    /// "one-at-a-time", "workers", "per-connection" or "event-loop".
    pub clients: String,
    /// "shared" or "per-process" (or "direct": a variant with `--fixed-files`).
    pub fd_table: String,
    /// Connections on descriptors at or above this are refused.
    pub max_fd: Option<usize>,
    pub options: Vec<String>,
    pub supported: bool,
    pub reason: Option<String>,
    /// Options this run of the model is started with (a variant: see [`variants`]).
    #[serde(default)]
    pub variant: Vec<String>,
}

impl ModelInfo {
    /// The model and its variant's options, as failures name it.
    pub fn label(&self) -> String {
        std::iter::once(self.name.clone())
            .chain(self.variant.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How many clients the model serves at once when started by this harness.
    pub fn concurrency(&self) -> Option<usize> {
        match self.clients.as_str() {
            "one-at-a-time" => Some(1),
            "workers" => Some(TEST_WORKERS),
            _ => None, // as many as connect
        }
    }
}

pub fn models() -> Vec<ModelInfo> {
    let output = Command::new(SERVER)
        .args(["--list", "--json"])
        .output()
        .expect("run server --list --json");
    assert!(output.status.success(), "server --list --json failed");
    serde_json::from_slice(&output.stdout).expect("server --list --json prints JSON")
}

/// Runs `case` against every listed model and reports every failure at once. A model this
/// machine cannot run is reported as unsupported (with its reason) on stderr, never as passed.
pub fn for_each_model(protocol: &str, case: impl Fn(&mut Server) -> Result<(), String>) {
    for_each_model_with(protocol, &[], case)
}

/// Every listed model, plus the io_uring models again with the ring options that are not
/// their default, so that each option passes every case: all of `uring-multishot`'s extras at
/// once, its former defaults (task work interrupting the loop, a plain ring descriptor), and
/// `uring` batching completions with cooperative task work.
pub fn variants() -> Vec<ModelInfo> {
    let mut all = models();
    let extra: &[(&str, &[&str])] = &[
        ("uring-multishot", &["--fixed-files", "--batch=8"]),
        ("uring-multishot", &["--taskrun=plain", "--plain-ring-fd"]),
        ("uring", &["--taskrun=coop", "--batch=8", "--zerocopy"]),
        ("uring-multishot", &["--bundle", "--zerocopy"]),
        // Echo only (ECHO_ONLY): the server refuses it with another protocol.
        ("uring-multishot", &["--send-in-place", "--bundle"]),
        // Scheduling order only, but a different interleaving of the same tasks.
        ("tokio", &["--global-queue-interval=2"]),
    ];
    for (name, args) in extra {
        if let Some(model) = all.iter().find(|m| m.name == *name).cloned() {
            // Direct descriptors live in the ring's own table, sized when the loop starts: a
            // lower RLIMIT_NOFILE later does not bound them (docs/MODELS.md).
            let fd_table = if args.contains(&"--fixed-files") {
                "direct".to_string()
            } else {
                model.fd_table.clone()
            };
            all.push(ModelInfo {
                variant: args.iter().map(|a| a.to_string()).collect(),
                fd_table,
                ..model
            });
        }
    }
    all
}

/// Options only an echo server takes: variants with them run the echo cases only.
const ECHO_ONLY: &[&str] = &["--send-in-place"];

pub fn for_each_model_with(
    protocol: &str,
    extra_args: &[&str],
    case: impl Fn(&mut Server) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    for model in variants() {
        if protocol != "echo"
            && model
                .variant
                .iter()
                .any(|a| ECHO_ONLY.contains(&a.as_str()))
        {
            continue;
        }
        if !model.supported {
            eprintln!(
                "UNSUPPORTED {}: {} (not run, not passed)",
                model.name,
                model.reason.as_deref().unwrap_or("no reason given")
            );
            continue;
        }
        let server = match Server::start(&model, protocol, extra_args) {
            // A variant's option this kernel lacks: reported, never passed.
            Err(e) if !model.variant.is_empty() && e.contains("unsupported: ") => {
                eprintln!("UNSUPPORTED {}: {e} (not run, not passed)", model.label());
                continue;
            }
            other => other,
        };
        let outcome = server.and_then(|mut server| {
            let result = case(&mut server);
            let log = server.stop_and_log();
            result.map_err(|e| format!("{e}\n    server stderr:\n{log}"))
        });
        match outcome {
            Ok(()) => passed.push(model.label()),
            Err(e) => failures.push(format!("{}: {e}", model.label())),
        }
    }
    eprintln!("passed: {}", passed.join(", "));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Returns `Err(message)` from the enclosing function unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

pub struct Server {
    pub model: ModelInfo,
    pub addr: SocketAddr,
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(model: &ModelInfo, protocol: &str, extra_args: &[&str]) -> Result<Server, String> {
        Server::start_with_nofile(model, protocol, extra_args, None)
    }

    /// Starts the server with its RLIMIT_NOFILE set before it runs (when `nofile` is given).
    pub fn start_with_nofile(
        model: &ModelInfo,
        protocol: &str,
        extra_args: &[&str],
        nofile: Option<u64>,
    ) -> Result<Server, String> {
        let mut command = Command::new(SERVER);
        if let Some(limit) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child's limits.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command.args([
            "--model",
            &model.name,
            "--protocol",
            protocol,
            "--addr",
            "127.0.0.1:0",
        ]);
        if model.options.iter().any(|o| o == "--workers") {
            command.args(["--workers", &TEST_WORKERS.to_string()]);
        }
        command.args(&model.variant).args(extra_args);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {SERVER}: {e}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Anything more on stdout breaks the contract; the case checks for it.
            for line in lines.map_while(Result::ok) {
                eprintln!("unexpected stdout line from server: {line}");
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no `listening` line ({other:?}); stderr: {}",
                    stderr.lock().unwrap()
                ));
            }
        };
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("bad first line {line:?}"))?;
        Ok(Server {
            model: model.clone(),
            addr,
            child,
            stderr,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn connect(&self) -> io::Result<TcpStream> {
        connect(self.addr)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Result<(ExitStatus, Duration), String> {
        let start = Instant::now();
        // SAFETY: kill only sends a signal to our own, not yet reaped, child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > limit {
                return Err(format!("still running {limit:?} after SIGTERM"));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop_and_log(&mut self) -> String {
        if self.is_alive() && self.terminate(Duration::from_secs(3)).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let log = self.stderr();
        log.lines()
            .take(40)
            .map(|l| format!("      {l}\n"))
            .collect()
    }

    /// The server and every process below it.
    pub fn tree(&self) -> Vec<i32> {
        process_tree(self.pid())
    }

    /// Proportional set size of the whole process tree, in KiB.
    pub fn tree_pss_kib(&self) -> u64 {
        self.tree()
            .iter()
            .filter_map(|pid| status_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:"))
            .sum()
    }

    /// CPU time (user + system) of the whole tree, children reaped so far included.
    pub fn tree_cpu(&self) -> Duration {
        let ticks: u64 = self.tree().iter().map(|&pid| cpu_ticks(pid)).sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz.max(1))
    }

    /// The descriptor numbers open in the server process itself.
    pub fn open_fds(&self) -> Vec<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The RLIMIT_NOFILE that leaves exactly `room` descriptor numbers free: new descriptors
    /// take the lowest free number, and inherited ones may leave holes.
    pub fn nofile_leaving_room(&self, room: usize) -> u64 {
        let open = self.open_fds();
        let mut free = 0;
        let mut limit = 0;
        while free < room {
            if !open.contains(&limit) {
                free += 1;
            }
            limit += 1;
        }
        limit as u64
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => format!("{status:?}"),
    }
}

pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

pub fn process_tree(root: i32) -> Vec<i32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let pid = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let path = task.path().join("children");
                if let Ok(children) = std::fs::read_to_string(path) {
                    all.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<i32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    all
}

/// A line `Name:   1234 kB` of a /proc file, as a number.
fn status_field(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime + cutime + cstime of one process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces; the fields after it are plain.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) is at index 11.
    fields[11..15]
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}

/// True if a process with this pid exists and is not a zombie.
pub fn process_exists(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Deterministic pseudo-random bytes, different for every `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

/// Writes `data` in random-sized chunks on a second thread while this one reads the echo;
/// returns what came back. Needed whenever `data` exceeds what the socket buffers hold.
pub fn echo_concurrently(stream: &TcpStream, data: &[u8], seed: u64) -> io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let mut reader = stream.try_clone()?;
    thread::scope(|scope| {
        let sender = scope.spawn(move || -> io::Result<()> {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut rest = data;
            while !rest.is_empty() {
                let n = rng.usize(1..=65536).min(rest.len());
                writer.write_all(&rest[..n])?;
                rest = &rest[n..];
            }
            Ok(())
        });
        let mut back = vec![0u8; data.len()];
        let read = reader.read_exact(&mut back);
        sender.join().expect("writer thread")?;
        read.map(|()| back)
    })
}

/// One short echo round trip.
pub fn echo_once(stream: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    stream
        .write_all(message)
        .map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; message.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("read: {e}"))?;
    ensure!(back == message, "echo mismatch");
    Ok(())
}

/// Reads until the peer closes; returns what arrived. A reset counts as a close.
pub fn read_to_close(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(all),
            Err(e) => return Err(format!("waiting for close: {e} (got {} bytes)", all.len())),
        }
    }
}

/// Polls `stream` for `want` bytes without blocking longer than `wait`.
pub fn try_read_exact(stream: &mut TcpStream, want: usize, wait: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(wait)).ok()?;
    let mut got = vec![0u8; want];
    let result = stream.read_exact(&mut got);
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    result.ok().map(|()| got)
}

/// Makes close() send RST instead of FIN.
pub fn set_linger_zero(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
}

pub fn half_close(stream: &TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)
}

/// Sets another process's soft and hard limit of `resource`.
pub fn set_rlimit(pid: i32, resource: libc::__rlimit_resource_t, limit: u64) -> io::Result<()> {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `new` is a valid rlimit; the old value is not wanted (null).
    let rc = unsafe { libc::prlimit(pid, resource, &new, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
