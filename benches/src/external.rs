//! Servers the harness did not write: a `[[server]]` table of a suite, or `bench run --server`.
//!
//! ```toml
//! [[server]]
//! name = "nginx"
//! command = ["nginx", "-c", "{dir}/nginx.conf", "-g", "daemon off;"]   # and {addr}, {host},
//!                            # {protocol} (the cell's), {run} (the run directory)
//! protocols = ["http"]
//! port = "{port}"           # bench picks a free port; or a fixed one: port = 8080
//! ready = "connect"         # or a regular expression a line of its stdout matches
//! cpus = [0]                # default: the run's server CPUs
//! env = { LANG = "C" }
//! stop_grace = "2s"         # SIGTERM, then SIGKILL after this
//! ready_timeout = "10s"
//! load_args = []            # extra loadgen arguments for this server's cells
//! needs = ["nginx"]         # programs that must be on PATH (the command's own is checked)
//! install = "apt-get install nginx-light"   # said when one is missing
//! ```
//!
//! Such a server is a model like the built-in ones: pinned, sampled, stopped and judged the
//! same way, its lines in the same `results.jsonl`. What differs is what bench cannot know of
//! it, so it checks instead: that the port is free before the start, that the port opens
//! (after the ready line too, since a line proves nothing about the socket), and that nothing
//! of it is left after the stop. For that last check the server gets a process group of its
//! own, which SIGTERM and SIGKILL reach whole (nginx's workers, a shell's children), and bench
//! becomes a child subreaper ([`adopt_orphans`]): a process that left the group and its
//! parent (a daemon) is re-parented to bench instead of init, so it is found and ended too.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cell;

/// The protocols a server may declare: those the loadgen scenarios speak.
pub const PROTOCOLS: [&str; 3] = ["echo", "http", "transfer"];
/// The placeholders a command or an environment value may hold; `{{` and `}}` stand for
/// braces.
pub const PLACEHOLDERS: [&str; 6] = ["port", "addr", "host", "protocol", "dir", "run"];
/// Where every external server listens and loadgen connects.
pub const HOST: &str = "127.0.0.1";

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    pub command: Vec<String>,
    pub protocols: Vec<String>,
    #[serde(default)]
    pub port: Port,
    #[serde(default = "connect")]
    pub ready: String,
    pub cpus: Option<Vec<usize>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_grace", with = "crate::suite::duration_text")]
    pub stop_grace: Duration,
    #[serde(
        default = "default_ready_timeout",
        with = "crate::suite::duration_text"
    )]
    pub ready_timeout: Duration,
    #[serde(default)]
    pub load_args: Vec<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    pub install: Option<String>,
    /// `{dir}`: the suite file's directory, or the working directory of `--server`.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// `"{port}"`: a free port bench picks for each cell; or a fixed port.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Fixed(u16),
    Placeholder(String),
}

impl Default for Port {
    fn default() -> Self {
        Port::Placeholder("{port}".into())
    }
}

fn connect() -> String {
    "connect".into()
}

fn default_grace() -> Duration {
    Duration::from_secs(2)
}

fn default_ready_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Server {
    /// A server from `--server 'NAME:PROTOCOL,PROTOCOL=COMMAND ARGS...'` (the command split as
    /// a POSIX shell would, without running one); `{dir}` is `dir`.
    pub fn from_arg(spec: &str, dir: &Path) -> Result<Server, String> {
        let usage = "write --server 'NAME:PROTOCOL[,PROTOCOL]=COMMAND ARGS', e.g. --server 'py:echo,transfer=python3 server.py --port {port}'";
        let (head, command) = spec
            .split_once('=')
            .ok_or_else(|| format!("--server '{spec}': no '=' before the command; {usage}"))?;
        let (name, protocols) = head.split_once(':').ok_or_else(|| {
            format!("--server '{spec}': no protocols after the name (NAME:echo,...); {usage}")
        })?;
        let command = shlex::split(command)
            .ok_or_else(|| format!("--server '{spec}': the command has an unclosed quote"))?;
        let server = Server {
            name: name.trim().to_string(),
            command,
            protocols: protocols.split(',').map(|p| p.trim().to_string()).collect(),
            port: Port::default(),
            ready: connect(),
            cpus: None,
            env: BTreeMap::new(),
            stop_grace: default_grace(),
            ready_timeout: default_ready_timeout(),
            load_args: Vec::new(),
            needs: Vec::new(),
            install: None,
            dir: dir.to_path_buf(),
        };
        server
            .check()
            .map_err(|e| format!("--server '{spec}': {e}"))?;
        Ok(server)
    }

    /// What a suite may not hold: each error names the server and the key.
    pub fn check(&self) -> Result<(), String> {
        let named = |key: &str, e: String| format!("server '{}': {key}: {e}", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "server '{}': name: letters, digits, '-', '_' and '.' only",
                self.name
            ));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(named("command", "names no program".into()));
        }
        for word in &self.command {
            check_placeholders(word).map_err(|e| named("command", e))?;
        }
        for (key, value) in &self.env {
            check_placeholders(value).map_err(|e| named(&format!("env.{key}"), e))?;
        }
        if self.protocols.is_empty() {
            return Err(named(
                "protocols",
                format!("declares none ({})", PROTOCOLS.join(", ")),
            ));
        }
        if let Some(p) = self
            .protocols
            .iter()
            .find(|p| !PROTOCOLS.contains(&p.as_str()))
        {
            return Err(named(
                "protocols",
                format!("unknown protocol '{p}' ({})", PROTOCOLS.join(", ")),
            ));
        }
        match &self.port {
            Port::Placeholder(p) if p != "{port}" => {
                return Err(named(
                    "port",
                    format!("'{p}': write \"{{port}}\" (a free port) or a number"),
                ))
            }
            Port::Fixed(0) => return Err(named("port", "0: write \"{port}\" instead".into())),
            _ => {}
        }
        self.ready_line().map_err(|e| {
            named(
                "ready",
                format!("not \"connect\" nor a regular expression: {e}"),
            )
        })?;
        if self.cpus.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(named("cpus", "an empty list".into()));
        }
        Ok(())
    }

    /// The ready line's pattern, or `None` for `connect`.
    fn ready_line(&self) -> Result<Option<regex::Regex>, String> {
        if self.ready == "connect" {
            return Ok(None);
        }
        regex::Regex::new(&self.ready)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Every program it needs is there (its command's, unless a placeholder names it, and
    /// `needs`); else which is not, and how to install it.
    pub fn check_programs(&self) -> Result<(), String> {
        let own = self.command.first().filter(|p| !p.contains('{'));
        for program in own.into_iter().chain(&self.needs) {
            let found = if program.contains('/') {
                self.dir.join(program).is_file()
            } else {
                std::env::var_os("PATH").is_some_and(|path| {
                    std::env::split_paths(&path).any(|d| d.join(program).is_file())
                })
            };
            if !found {
                return Err(format!(
                    "server '{}' needs {program}, which is not {}{}",
                    self.name,
                    if program.contains('/') {
                        "there"
                    } else {
                        "on PATH"
                    },
                    self.install
                        .as_ref()
                        .map_or(String::new(), |i| format!(": install it ({i})"))
                ));
            }
        }
        Ok(())
    }

    /// Whether the server speaks `protocol`.
    pub fn speaks(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p == protocol)
    }
}

fn check_placeholders(text: &str) -> Result<(), String> {
    substitute(text, &|_| Some(String::new())).map(|_| ())
}

/// `text` with each `{name}` replaced by `value(name)`; `{{` and `}}` are braces. An unknown
/// name or a lone brace is an error naming it.
fn substitute(text: &str, value: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let end = tail.find('}').filter(|_| tail.starts_with('{'));
        let Some(end) = end else {
            return Err(format!(
                "a lone '{}' in '{text}' (write '{{{{' or '}}}}' for a brace)",
                &tail[..1]
            ));
        };
        let name = &tail[1..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} in '{text}' (known: {})",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        out.push_str(&value(name).unwrap_or_default());
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// From now on, processes orphaned below bench (a server's daemonised child) are re-parented
/// to bench, not to init, so a stop can find and end them.
pub fn adopt_orphans() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only changes a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
}

/// An external server started for one cell: its process (the leader of its group), where it
/// listens, and what it wrote to stderr.
///
/// It is its own guard: dropped before [`Running::stop`] (an early return, a panic between
/// the start and the stop, in a cell or in the gate), it is stopped as `stop` stops it, so
/// nothing of it outlives its owner. A drop after the stop does nothing.
pub struct Running {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
    port: u16,
    grace: Duration,
    /// `stop` has run: its group is not signalled again (its id may be another's by now).
    stopped: bool,
}

/// Starts `server` for a cell of `protocol`, pinned to `cpus`, with `{run}` = `run_dir`, its
/// command after the words of `prefix` (the gate's `valgrind ...`), and waits until it is
/// ready: its ready line seen (if it has one), then its port open. On failure nothing of it
/// is left.
pub fn start(
    server: &Server,
    protocol: &str,
    cpus: &[usize],
    run_dir: &Path,
    prefix: &[String],
) -> Result<Running, String> {
    let port = match &server.port {
        Port::Fixed(port) => {
            if TcpStream::connect_timeout(&socket(*port), Duration::from_millis(200)).is_ok() {
                return Err(format!(
                    "port {port} is already in use by another process (stop it, or write port = \"{{port}}\")"
                ));
            }
            *port
        }
        Port::Placeholder(_) => free_port()?,
    };
    let addr = socket(port).to_string();
    let value = |name: &str| {
        Some(match name {
            "port" => port.to_string(),
            "addr" => addr.clone(),
            "host" => HOST.to_string(),
            "protocol" => protocol.to_string(),
            "dir" => server.dir.display().to_string(),
            "run" => run_dir.display().to_string(),
            _ => return None,
        })
    };
    let mut words = prefix.to_vec();
    for word in &server.command {
        words.push(substitute(word, &value)?);
    }
    let mut command = Command::new(&words[0]);
    command
        .args(&words[1..])
        .current_dir(&server.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: SIGTERM and SIGKILL reach every process of it at once.
        .process_group(0);
    for (key, v) in &server.env {
        command.env(key, substitute(v, &value)?);
    }
    cell::ends_with_bench(&mut command);
    let cpus = cpus.to_vec();
    // SAFETY: sched_setaffinity only changes the child's own state, before exec.
    unsafe { command.pre_exec(move || cell::pin_this_thread(&cpus)) };
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", words[0]))?;
    let log = cell::collect(child.stderr.take().expect("stderr is piped"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let pattern = server.ready_line()?;
    // Every stdout line goes to the channel until the pipe closes: the thread keeps the pipe
    // drained, so a chatty server never blocks on it after its ready line.
    let (tx, lines) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + server.ready_timeout;
    let fail = |child: &mut Child, what: String| {
        kill_group(child);
        wait_gone(child.id() as i32, KILLED_EXIT);
        reap_leftovers(child.id() as i32);
        Err(cell::with_tail(what, &log))
    };
    let mut line_seen = pattern.is_none();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // Let the stderr reader catch the last words.
            thread::sleep(Duration::from_millis(20));
            let hint = if status.success() {
                " (a server must stay in the foreground: no daemon mode)"
            } else {
                ""
            };
            let what = format!(
                "server {} before it was ready{hint}",
                cell::describe(status)
            );
            return fail(&mut child, what);
        }
        if let Some(pattern) = pattern.as_ref().filter(|_| !line_seen) {
            line_seen = lines.try_iter().any(|line| pattern.is_match(&line));
        }
        if line_seen
            && TcpStream::connect_timeout(&socket(port), Duration::from_millis(100)).is_ok()
        {
            return Ok(Running {
                child,
                addr,
                log,
                port,
                grace: server.stop_grace,
                stopped: false,
            });
        }
        if Instant::now() > deadline {
            let what = if line_seen {
                format!(
                    "never opened port {port} within {:?} (does it take its port from {{port}}?)",
                    server.ready_timeout
                )
            } else {
                format!(
                    "no line matching ready = {:?} on its stdout within {:?}",
                    server.ready, server.ready_timeout
                )
            };
            return fail(&mut child, what);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn socket(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port nobody listens on now. Another process could take it before the server does; the
/// server's start then fails with the reason, it does not measure the wrong server.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on {HOST}: {e}"))
}

/// How long processes SIGKILLed with a server's group may take to be gone before they count
/// as left behind. A SIGKILLed process exits when it next runs and has freed its memory: tens
/// of milliseconds for a few hundred MiB, later on a busy machine.
const KILLED_EXIT: Duration = Duration::from_secs(2);

/// SIGKILL to the child's whole group, then the child reaped.
pub fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the group our child leads (process_group(0) made its pid the
    // group's id). The kernel does not reuse an id while a process of its group lives; once
    // none does, the call finds nothing (ESRCH), unless pids wrapped around within the stop.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

impl Running {
    /// SIGTERM to the group, SIGKILL to it after the grace period. Returns how it stopped (for
    /// the result line), or why the cell fails: its leader exited but other processes of it
    /// had to be killed, a daemon outside its group was left, or the port is still open.
    /// Once only: a second call is an error and signals nothing.
    pub fn stop(&mut self) -> Result<String, String> {
        if self.stopped {
            return Err("the server was stopped already".into());
        }
        self.stopped = true;
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the group our child leads, not yet reaped.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let started = Instant::now();
        let mut status = None;
        while started.elapsed() < self.grace {
            if status.is_none() {
                status = self.child.try_wait().ok().flatten();
            }
            if status.is_some() && members(pid).is_empty() {
                break;
            }
            // Each look reads every process's stat: not too often.
            thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed().as_millis();
        let stragglers = members(pid);
        kill_group(&mut self.child);
        // What the SIGKILL reached is on its way out (a server's workers of a few hundred MiB
        // each were still exiting after its leader was reaped); it is no leftover. What is
        // still there after this wait is named as one below.
        wait_gone(pid, KILLED_EXIT);
        let how = match status {
            // Ended by SIGTERM's default action: how most servers stop, not a fault.
            Some(s) if s.success() || s.signal() == Some(libc::SIGTERM) => {
                format!("SIGTERM ({}, after {took} ms)", cell::describe(s))
            }
            Some(s) => {
                // What it left behind is ended all the same before the error is told.
                let _ = reap_leftovers(pid);
                return Err(format!("server {} on SIGTERM", cell::describe(s)));
            }
            None => format!("SIGKILL: still running {:?} after SIGTERM", self.grace),
        };
        let mut left = if status.is_some() {
            stragglers
        } else {
            Vec::new()
        };
        for process in reap_leftovers(pid) {
            // A straggler that outlived the SIGKILL's wait is named once.
            if !left.contains(&process) {
                left.push(process);
            }
        }
        if !left.is_empty() {
            return Err(format!(
                "left {} process{} behind after it stopped (killed now): {}",
                left.len(),
                if left.len() == 1 { "" } else { "es" },
                left.join(", ")
            ));
        }
        if TcpStream::connect_timeout(&socket(self.port), Duration::from_millis(200)).is_ok() {
            return Err(format!(
                "port {} still open after the server stopped, held by a process bench cannot see",
                self.port
            ));
        }
        Ok(how)
    }
}

impl Drop for Running {
    /// Stopped as [`Running::stop`] stops it (SIGTERM to its group, SIGKILL after the grace,
    /// what it left ended) unless that ran already.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.stop();
        }
    }
}

/// One process as /proc/PID/stat shows it.
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    zombie: bool,
    name: String,
}

fn processes() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            // After the name: state, ppid, pgrp (stat(5) fields 3 to 5).
            let state = fields.next()?;
            Some(Proc {
                pid,
                ppid: fields.next()?.parse().ok()?,
                pgrp: fields.next()?.parse().ok()?,
                zombie: state == "Z" || state == "X",
                name: head.split_once('(').map_or("?", |(_, n)| n).to_string(),
            })
        })
        .collect()
}

/// The live processes of group `pgid`, as `pid (name)`.
fn members(pgid: i32) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && !p.zombie)
        .map(|p| format!("{} ({})", p.pid, p.name))
        .collect()
}

/// Waits until group `pgid` has no live process (zombies are gone enough), or `limit` passed.
fn wait_gone(pgid: i32, limit: Duration) {
    let until = Instant::now() + limit;
    while !members(pgid).is_empty() && Instant::now() < until {
        // Each look reads every process's stat: not too often.
        thread::sleep(Duration::from_millis(10));
    }
}

/// Ends what is left of group `pgid` and the orphans bench adopted ([`adopt_orphans`]): a
/// child of bench in a group of its own other than a server's is a daemon a server left (bench
/// starts nothing else of its own group during a cell: loadgen and the server are reaped by
/// now). SIGKILLed, reaped when bench's; returned as `pid (name)` when they were alive.
pub fn reap_leftovers(pgid: i32) -> Vec<String> {
    let me = std::process::id() as i32;
    // SAFETY: getpgrp has no preconditions.
    let my_group = unsafe { libc::getpgrp() };
    let mut left = Vec::new();
    for p in processes() {
        let adopted = p.ppid == me && p.pgrp != my_group;
        if p.pid == me || !(p.pgrp == pgid || adopted) {
            continue;
        }
        if !p.zombie {
            left.push(format!("{} ({})", p.pid, p.name));
        }
        // SAFETY: kill(2) on a process of the server's group or one bench adopted from it.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
        if p.ppid == me {
            // SAFETY: waitpid on our own child, which SIGKILL ends.
            unsafe { libc::waitpid(p.pid, std::ptr::null_mut(), 0) };
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted_or_refused() {
        let value = |n: &str| Some(format!("<{n}>"));
        assert_eq!(
            substitute("--listen={addr} {{x}} {dir}/a", &value).unwrap(),
            "--listen=<addr> {x} <dir>/a"
        );
        let e = substitute("--p {prot}", &value).unwrap_err();
        assert!(e.contains("unknown placeholder {prot}"), "{e}");
        assert!(substitute("a } b", &value).is_err());
        assert!(substitute("a { b", &value).is_err());
    }

    #[test]
    fn a_server_from_the_command_line() {
        let s = Server::from_arg(
            "py:echo,transfer=python3 'my server.py' --port {port}",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(s.name, "py");
        assert_eq!(s.protocols, ["echo", "transfer"]);
        assert_eq!(s.command, ["python3", "my server.py", "--port", "{port}"]);
        assert_eq!(s.dir, Path::new("/x"));
        for (bad, says) in [
            ("py=python3 x.py", "no protocols"),
            ("py:echo python3", "no '='"),
            ("py:ftp=python3 x.py", "unknown protocol 'ftp'"),
            (
                "py:echo=python3 x.py {prot}",
                "command: unknown placeholder {prot}",
            ),
            ("p y:echo=x", "name:"),
            ("py:echo=", "names no program"),
            ("py:echo=x 'y", "unclosed quote"),
        ] {
            let e = Server::from_arg(bad, Path::new("/")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
