//! Cells across machines: the server on one host, a loadgen on each of several others, all
//! reached with the system's OpenSSH client (`bench run --server-host S --load-hosts A,B`).
//!
//! Nothing here is a cluster protocol of our own. `ssh` runs every remote command, with the
//! user's own configuration (keys, agents, jump hosts, `~/.ssh/config`) and `BatchMode`, so it
//! never asks for a password; it copies the binaries too when asked (`--push-binaries`).
//!
//! Before the first cell, each host is checked once ([`prepare`]): reachable, holding the same
//! build of `server` or `loadgen` as this machine (version and SHA-256), and its clock's offset
//! from ours measured. The offset is the NTP estimate over one ssh session that answers each
//! line we send with `date +%s%N`: the round trip with the least delay, its remote time against
//! the midpoint of our send and receive (error at most half that round trip). Measuring inside
//! one session keeps ssh's connection setup, hundreds of milliseconds and one-sided, out of it.
//! Hosts whose clocks disagree by more than `--max-clock-offset` are refused.
//!
//! A cell ([`measure`]): the server starts on its host (pinned with `taskset`, as it would be
//! here) and says `listening`; a sampler reads its process tree's /proc over a second ssh
//! session; each loadgen gets `--start-at`, one instant on our clock shifted by its host's
//! offset, so all measured windows open together; their results are merged with loadgen's own
//! `stats::merge` (histograms and interval series added exactly) after each host's window is
//! put on our clock. The line keeps each host's own result beside the merge (`hosts`).
//!
//! No remote process outlives its ssh session: every remote command runs under [`tied`], which
//! sends it SIGTERM when the session's stdin closes, which happens when bench closes it, when
//! the ssh client dies (bench killed: the client gets SIGTERM from PR_SET_PDEATHSIG), or when
//! the connection drops (ServerAliveInterval notices a dead peer).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::cell::{self, Outcome, Setup};
use crate::process_tree::{Sample, Stat};
use crate::suite::Cell;

/// Where the cells run, as given on the command line or in the suite.
#[derive(Clone, Debug)]
pub struct Hosts {
    /// ssh destination of the server (`host`, `user@host` or an alias from ssh's config).
    pub server: String,
    /// The address loadgens connect to [default: `server` without its `user@`].
    pub server_addr: Option<String>,
    /// ssh destinations of the load hosts, one loadgen each.
    pub load: Vec<String>,
    /// Where `server` and `loadgen` are on every host (relative: from the remote home).
    pub remote_dir: String,
    /// An ssh configuration file to use instead of the user's (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
    /// Copy this machine's binaries to `remote_dir` before checking them.
    pub push: bool,
    /// The most the hosts' clocks may disagree.
    pub max_offset: Duration,
}

pub const DEFAULT_REMOTE_DIR: &str = ".iomodels/bin";
pub const DEFAULT_MAX_OFFSET: Duration = Duration::from_millis(50);

/// How long ssh may take to connect.
const CONNECT_TIMEOUT_S: u64 = 10;
/// From handing loadgens their start time to that time: room for every ssh session to connect
/// and authenticate. A loadgen reached later refuses the past start and fails the cell.
const START_MARGIN: Duration = Duration::from_secs(2);
/// Round trips of the clock measurement; the least delayed one counts.
const CLOCK_PROBES: usize = 8;
/// Test aid: `HOST=MS,...` adds MS to the offset measured for HOST, so the refusal of clocks
/// too far apart is tested on hosts that share one clock.
pub const OFFSET_AID: &str = "IOMODELS_CLOCK_OFFSET_MS";

/// A host's clock against ours.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Its clock minus ours, in seconds.
    pub offset_s: f64,
    /// The round trip the offset was taken from: the offset is within half of it.
    pub rtt_s: f64,
}

/// The hosts, checked, with their clocks measured: what every cell of the run uses.
#[derive(Debug)]
pub struct Prepared {
    pub hosts: Hosts,
    pub clocks: BTreeMap<String, Clock>,
}

impl Hosts {
    /// Every host once, server first.
    fn all(&self) -> Vec<&str> {
        let mut all = vec![self.server.as_str()];
        for h in &self.load {
            if !all.contains(&h.as_str()) {
                all.push(h);
            }
        }
        all
    }

    fn ssh(&self, host: &str) -> Command {
        let mut command = Command::new("ssh");
        cell::ends_with_bench(&mut command);
        command.args(self.options()).arg("-T").arg(host);
        command
    }

    /// ssh's options: never prompt, give up on a dead peer.
    fn options(&self) -> Vec<String> {
        let mut options: Vec<String> = [
            "BatchMode=yes".to_string(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_S}"),
            "ServerAliveInterval=5".into(),
            "ServerAliveCountMax=3".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        if let Some(config) = &self.ssh_config {
            options.extend(["-F".to_string(), config.display().to_string()]);
        }
        options
    }

    /// `ssh host command` started, its stdout and stderr piped.
    fn spawn(&self, host: &str, command: &str, stdin: Stdio) -> Result<Child, String> {
        self.ssh(host)
            .arg(command)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run ssh: {e}"))
    }

    /// `ssh host command` to its end, with a bound; stdout, or an error naming the host.
    fn run(&self, host: &str, command: &str, timeout: Duration) -> Result<String, String> {
        let mut child = self.spawn(host, command, Stdio::null())?;
        let out = cell::collect_keeping(child.stdout.take().expect("piped"), 1 << 20);
        let err = cell::collect(child.stderr.take().expect("piped"));
        let status = wait_bounded(&mut child, timeout)
            .ok_or_else(|| format!("{host}: no answer over ssh within {timeout:.0?}"))?;
        thread::sleep(Duration::from_millis(20)); // the readers catch the last bytes
        if !status.success() {
            return Err(ssh_failure(host, status, &err));
        }
        let text = out.lock().unwrap().clone();
        Ok(text)
    }

    fn path(&self, binary: &str) -> String {
        format!("{}/{binary}", self.remote_dir.trim_end_matches('/'))
    }

    /// The address loadgens reach the server at, with the port the server bound.
    fn server_endpoint(&self, port: u16) -> String {
        let host = self.server_addr.clone().unwrap_or_else(|| {
            let host = self.server.rsplit('@').next().unwrap_or(&self.server);
            host.to_string()
        });
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
}

/// Why an ssh command failed, naming the host: ssh's own failures (exit 255: unreachable,
/// refused, authentication) apart from the remote command's.
fn ssh_failure(host: &str, status: ExitStatus, err: &Arc<Mutex<String>>) -> String {
    match status.code() {
        Some(255) => cell::with_tail(format!("{host}: ssh failed"), err),
        _ => cell::with_tail(format!("{host}: {}", cell::describe(status)), err),
    }
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `--remote-dir` as the remote commands use it: a leading `~/` (or `~` alone) is the remote
/// home, where ssh's commands start, so it is dropped; every remote path is quoted, and a
/// quoted `~` would not expand (it made a directory named `~`). Another user's home
/// (`~user/x`) is refused, not taken as a directory named `~user`.
pub fn home_relative(dir: &str) -> Result<String, String> {
    match dir.strip_prefix('~') {
        Some("") => Ok(".".to_string()),
        Some(rest) if rest.starts_with('/') => {
            let rest = rest.trim_start_matches('/');
            Ok(if rest.is_empty() {
                ".".to_string()
            } else {
                rest.to_string()
            })
        }
        Some(_) => Err(format!(
            "--remote-dir {dir}: another user's home (~user) is not expanded; give the path absolute, or relative to the remote home"
        )),
        None => Ok(dir.to_string()),
    }
}

/// `text` as one word of a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A remote shell command that runs `command` (already quoted), first saying `pid N` (the
/// command's), sends it SIGTERM when the session's stdin closes, and ends with its status.
///
/// The session's stdin is kept as descriptor 3 for a watcher, `cat`: when stdin ends (bench
/// closed it, the ssh client died, the connection dropped), `cat` returns and the command gets
/// SIGTERM, as a local server gets it from bench. The watcher holds neither stdout nor stderr,
/// so the session ends with the command; it is started from a subshell that exits at once, so
/// it is no child of the command (the sampler counts the server's process tree, and only it).
/// The shell waits for the command and exits with its status, saying on stderr which signal
/// ended it: ssh reports a remote death by signal as its own failure (255) otherwise.
fn tied(command: &str) -> String {
    let script = format!(
        "exec 3<&0; {command} </dev/null 3<&- & p=$!; echo \"pid $p\"; \
         ( (cat <&3 >/dev/null 2>&1; kill -TERM $p 2>/dev/null) </dev/null >/dev/null 2>&1 & ); \
         exec 3<&-; wait $p; s=$?; \
         if [ $s -gt 128 ]; then echo \"killed by signal $((s - 128)) (SIG$(kill -l $((s - 128))))\" >&2; fi; \
         exit $s"
    );
    // In `sh`, whatever the user's login shell is.
    format!("exec sh -c {}", quote(&script))
}

/// `taskset -c LIST` in front of a remote command, pinning it as bench pins it here.
fn pinned(cpus: &[usize], command: String) -> String {
    let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
    format!("taskset -c {} {command}", list.join(","))
}

/// Checks every host (reachable, the same build, clocks close enough); pushes the binaries
/// first with `push`. Errors name the host and say what to do.
pub fn prepare(hosts: Hosts, server: &Path, loadgen: &Path) -> Result<Prepared, String> {
    for host in hosts.all() {
        if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
            return Err(format!("'{host}' is not an ssh destination"));
        }
    }
    if hosts.load.is_empty() {
        return Err("--load-hosts names no host".into());
    }
    let local = [
        ("server", identify_local(server)?),
        ("loadgen", identify_local(loadgen)?),
    ];
    let needs = |host: &str| -> Vec<(&str, &Path)> {
        let mut binaries = Vec::new();
        if host == hosts.server {
            binaries.push(("server", server));
        }
        if hosts.load.iter().any(|h| h == host) {
            binaries.push(("loadgen", loadgen));
        }
        binaries
    };
    // Hosts are checked side by side: an unreachable one costs one ConnectTimeout, not one
    // per host.
    let checked: Vec<(String, Result<Clock, String>)> = thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .all()
            .into_iter()
            .map(|host| {
                let hosts = &hosts;
                let binaries = needs(host);
                let local = &local;
                scope.spawn(move || {
                    let result = (|| {
                        if hosts.push {
                            push(hosts, host, &binaries)?;
                        }
                        check_builds(hosts, host, &binaries, local)?;
                        measure_clock(hosts, host)
                    })();
                    (host.to_string(), result)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a host check panicked"))
            .collect()
    });
    let mut clocks = BTreeMap::new();
    let mut errors = Vec::new();
    for (host, result) in checked {
        match result {
            Ok(clock) => {
                clocks.insert(host, clock);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    apply_offset_aid(&mut clocks, std::env::var(OFFSET_AID).ok().as_deref())?;
    check_clocks(&clocks, hosts.max_offset)?;
    Ok(Prepared { hosts, clocks })
}

/// A local binary's `--version` line and SHA-256.
fn identify_local(path: &Path) -> Result<(String, String), String> {
    let output = |program: &Path, args: &[&str]| -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let version = output(path, &["--version"])?;
    let sum = output(Path::new("sha256sum"), &[&path.display().to_string()])?;
    let sum = sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if sum.len() != 64 {
        return Err(format!("sha256sum {}: no checksum", path.display()));
    }
    Ok((version, sum))
}

/// Copies the binaries to a temporary name, then renames them into place: a loadgen still
/// running from an earlier cell keeps its file, and no host ever runs half a copy.
///
/// Over ssh (`cat > TEMPORARY`, the file on its stdin), not scp: every remote path then goes
/// through the remote shell quoted as in every other remote command ([`quote`]), so
/// `--remote-dir` may hold spaces and any shell character. scp has no one right quoting: its
/// legacy protocol (OpenSSH before 9.0, or `scp -O`) hands the remote path to the remote
/// shell, which needs it quoted, while its SFTP mode (the default from 9.0) takes it
/// literally, quotes included.
fn push(hosts: &Hosts, host: &str, binaries: &[(&str, &Path)]) -> Result<(), String> {
    hosts.run(host, &make_dir(&hosts.remote_dir), connect_bound())?;
    for (name, local) in binaries {
        // Named after the host too: hosts may share the directory (an NFS home).
        let tag: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let temporary = format!("{}.new-{}-{tag}", hosts.path(name), std::process::id());
        let file = File::open(local).map_err(|e| format!("{}: {e}", local.display()))?;
        let mut child = hosts.spawn(host, &receive(&temporary), Stdio::from(file))?;
        let _out = cell::collect(child.stdout.take().expect("piped"));
        let err = cell::collect(child.stderr.take().expect("piped"));
        let status = wait_bounded(&mut child, Duration::from_secs(300))
            .ok_or_else(|| format!("{host}: copying {} took over 5 minutes", local.display()))?;
        thread::sleep(Duration::from_millis(20));
        if !status.success() {
            let why = match status.code() {
                Some(255) => "ssh failed".to_string(),
                _ => cell::describe(status),
            };
            return Err(cell::with_tail(
                format!(
                    "{host}: copying {} to {temporary} failed ({why})",
                    local.display()
                ),
                &err,
            ));
        }
        hosts.run(
            host,
            &install(&temporary, &hosts.path(name)),
            connect_bound(),
        )?;
    }
    Ok(())
}

/// The remote command that makes directory `dir` (and its parents).
fn make_dir(dir: &str) -> String {
    format!("mkdir -p {}", quote(dir))
}

/// The remote command that writes its stdin into file `path`.
fn receive(path: &str) -> String {
    format!("cat > {}", quote(path))
}

/// The remote command that makes `temporary` executable and renames it over `path`.
fn install(temporary: &str, path: &str) -> String {
    format!(
        "chmod 755 {t} && mv -f {t} {p}",
        t = quote(temporary),
        p = quote(path)
    )
}

fn connect_bound() -> Duration {
    Duration::from_secs(CONNECT_TIMEOUT_S + 20)
}

/// The same build on `host` as here: the version line for a readable refusal, the SHA-256
/// for the exact build (results of two builds must not mix, as `--resume` holds locally).
fn check_builds(
    hosts: &Hosts,
    host: &str,
    binaries: &[(&str, &Path)],
    local: &[(&str, (String, String)); 2],
) -> Result<(), String> {
    let mut script = String::new();
    for (name, _) in binaries {
        let path = quote(&hosts.path(name));
        script.push_str(&format!(
            "if [ -x {path} ]; then printf '%s|%s|%s\\n' {name} \"$({path} --version 2>&1 | head -n 1)\" \
             \"$(sha256sum < {path} | cut -d ' ' -f 1)\"; else printf '%s|missing|\\n' {name}; fi; "
        ));
    }
    let text = hosts.run(host, &script, connect_bound())?;
    for (name, _) in binaries {
        let (version, sum) = &local.iter().find(|(n, _)| n == name).expect("known").1;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}|")))
            .ok_or_else(|| format!("{host}: could not check {name}: {}", text.trim()))?;
        let (remote_version, remote_sum) = line.split_once('|').unwrap_or((line, ""));
        let path = hosts.path(name);
        if remote_version == "missing" {
            return Err(format!(
                "{host}: no executable {path} (pass --push-binaries to copy this machine's, or --remote-dir)"
            ));
        }
        if remote_version != version {
            return Err(format!(
                "{host}: {path} is '{remote_version}', this machine's is '{version}' (pass --push-binaries to copy this one)"
            ));
        }
        if remote_sum != sum {
            return Err(format!(
                "{host}: {path} is another build of '{version}' (SHA-256 {}… here {}…): results of two builds must not mix; pass --push-binaries",
                remote_sum.get(..12).unwrap_or(remote_sum),
                &sum[..12]
            ));
        }
    }
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `host`'s clock against ours, from the least delayed of [`CLOCK_PROBES`] round trips in one
/// ssh session.
fn measure_clock(hosts: &Hosts, host: &str) -> Result<Clock, String> {
    let script = format!(
        "i=0; while [ $i -lt {CLOCK_PROBES} ] && read -r _; do date +%s%N; i=$((i+1)); done"
    );
    let mut child = hosts.spawn(host, &script, Stdio::piped())?;
    let err = cell::collect(child.stderr.take().expect("piped"));
    let lines = Lines::read(child.stdout.take().expect("piped"));
    let mut stdin = child.stdin.take().expect("piped");
    let mut best: Option<Clock> = None;
    let mut deadline = Instant::now() + connect_bound();
    for _ in 0..CLOCK_PROBES {
        let sent = unix_now();
        if stdin.write_all(b"\n").and_then(|()| stdin.flush()).is_err() {
            break;
        }
        let Some((_, line)) = lines.next_until(deadline) else {
            break;
        };
        let received = unix_now();
        // Later probes ride an open session: seconds are plenty.
        deadline = Instant::now() + Duration::from_secs(5);
        let Ok(remote_ns) = line.trim().parse::<u128>() else {
            break;
        };
        let clock = Clock {
            offset_s: remote_ns as f64 / 1e9 - (sent + received) / 2.0,
            rtt_s: received - sent,
        };
        match best {
            Some(b) if b.rtt_s <= clock.rtt_s => {}
            _ => best = Some(clock),
        }
    }
    drop(stdin);
    let status = wait_bounded(&mut child, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(20));
    match (best, status) {
        (Some(clock), _) => Ok(clock),
        (None, Some(status)) if !status.success() => Err(ssh_failure(host, status, &err)),
        _ => Err(cell::with_tail(
            format!("{host}: could not read its clock (`date +%s%N` over ssh)"),
            &err,
        )),
    }
}

/// Adds the test aid's offsets (`HOST=MS,...`).
fn apply_offset_aid(clocks: &mut BTreeMap<String, Clock>, aid: Option<&str>) -> Result<(), String> {
    for part in aid.unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let parsed = part
            .split_once('=')
            .and_then(|(host, ms)| Some((host, ms.parse::<f64>().ok()?)));
        match parsed {
            Some((host, ms)) if clocks.contains_key(host) => {
                clocks.get_mut(host).expect("present").offset_s += ms / 1000.0;
            }
            _ => {
                return Err(format!(
                    "{OFFSET_AID}: '{part}' is not HOST=MS for a host of this run"
                ))
            }
        }
    }
    Ok(())
}

/// Refuses hosts whose clocks disagree by more than `bound`, with every offset.
fn check_clocks(clocks: &BTreeMap<String, Clock>, bound: Duration) -> Result<(), String> {
    let offsets = clocks.values().map(|c| c.offset_s);
    let spread = offsets.clone().fold(f64::MIN, f64::max) - offsets.fold(f64::MAX, f64::min);
    if spread <= bound.as_secs_f64() {
        return Ok(());
    }
    let each: Vec<String> = clocks
        .iter()
        .map(|(host, c)| format!("{host} {:+.1} ms", c.offset_s * 1e3))
        .collect();
    Err(format!(
        "the hosts' clocks disagree by {:.1} ms, more than --max-clock-offset {} ms (offsets from this machine: {}): synchronise them (chrony, systemd-timesyncd) or raise the bound",
        spread * 1e3,
        bound.as_millis(),
        each.join(", ")
    ))
}

/// A child's stdout as lines, each stamped with when it arrived, read on a thread of its own
/// (the channel closes at EOF).
struct Lines(Receiver<(Instant, String)>);

impl Lines {
    fn read(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    /// Every line still to come, until EOF (or `deadline`).
    fn rest(&self, deadline: Instant) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some((_, line)) = self.next_until(deadline) {
            rest.push(line);
        }
        rest
    }

    fn next_until(&self, deadline: Instant) -> Option<(Instant, String)> {
        self.0
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }
}

/// A command running on a host under [`tied`]: dropping it closes the session's stdin (the
/// remote command gets SIGTERM) and reaps the ssh client, killing it if it lingers.
struct Remote {
    host: String,
    what: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
}

impl Remote {
    fn start(
        hosts: &Hosts,
        host: &str,
        what: &'static str,
        command: String,
    ) -> Result<(Remote, Lines), Outcome> {
        let mut child = hosts
            .spawn(host, &tied(&command), Stdio::piped())
            .map_err(Outcome::Failed)?;
        let stderr = cell::collect(child.stderr.take().expect("piped"));
        let lines = Lines::read(child.stdout.take().expect("piped"));
        let stdin = child.stdin.take();
        Ok((
            Remote {
                host: host.to_string(),
                what,
                child,
                stdin,
                stderr,
            },
            lines,
        ))
    }

    /// Why it ended, naming the host: ssh's own failure (255) apart from the program's.
    fn failure(&self, status: ExitStatus) -> String {
        thread::sleep(Duration::from_millis(20));
        let what = match status.code() {
            Some(255) => format!(
                "{} on {}: ssh failed or the session was lost",
                self.what, self.host
            ),
            _ => format!("{} on {}: {}", self.what, self.host, cell::describe(status)),
        };
        cell::with_tail(what, &self.stderr)
    }

    /// Closes stdin (SIGTERM on the host) and waits for the session's end: the program's exit
    /// status, or `None` if it did not end within `timeout` (then the client is killed).
    fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stdin = None;
        wait_bounded(&mut self.child, timeout)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Runs one cell on the hosts; the parts of the line as `cell::measure` gives them, and the
/// `hosts` object.
pub(crate) fn measure(
    cell: &Cell,
    setup: &Setup,
    prepared: &Prepared,
) -> Result<(cell::Parts, Value), Outcome> {
    let hosts = &prepared.hosts;
    let shares = split(cell, hosts.load.len()).map_err(Outcome::Failed)?;
    let (model, extra_args) = crate::suite::server_model(&cell.model).map_err(Outcome::Failed)?;
    let bind = if hosts.server_endpoint(0).starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let mut server_command = vec![quote(&hosts.path("server"))];
    server_command.extend(extra_args.iter().map(|a| quote(a)));
    server_command.extend(
        [
            "--model",
            model,
            "--protocol",
            &cell.protocol,
            "--addr",
            bind,
        ]
        .into_iter()
        .map(quote),
    );
    let (mut server, server_lines) = Remote::start(
        hosts,
        &hosts.server,
        "server",
        pinned(&setup.server_cpus, server_command.join(" ")),
    )?;
    let (pid, port) = wait_listening(&mut server, &server_lines)?;
    let (_sampler, samples) = Remote::start(hosts, &hosts.server, "sampler", sampler(pid))?;
    let samples = Sampling::start(samples);
    // One instant on our clock, each host's own reading of it.
    let start_at = unix_now() + START_MARGIN.as_secs_f64();
    let started = Instant::now() + START_MARGIN;
    let addr = hosts.server_endpoint(port);
    let mut loads = Vec::new();
    for (host, share) in hosts.load.iter().zip(&shares) {
        let clock = prepared.clocks[host];
        let mut args = vec![quote(&hosts.path("loadgen"))];
        args.extend(
            cell::loadgen_args(share, setup, &addr)
                .iter()
                .map(|a| quote(a)),
        );
        args.push(format!("--start-at {:.6}", start_at + clock.offset_s));
        let (remote, lines) = Remote::start(
            hosts,
            host,
            "loadgen",
            pinned(&setup.load_cpus, args.join(" ")),
        )?;
        loads.push((remote, lines));
    }
    let deadline = started + setup.warmup + cell.duration + cell::WATCHDOG_SLACK;
    let mut done: Vec<Option<ExitStatus>> = vec![None; loads.len()];
    while done.iter().any(Option::is_none) {
        if crate::runner::interrupted().is_some() {
            return Err(Outcome::Failed("interrupted".into()));
        }
        for (i, (remote, _)) in loads.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            if let Ok(Some(status)) = remote.child.try_wait() {
                // Exit 1 is loadgen's verdict on a run it measured: its result counts.
                if !status.success() && status.code() != Some(1) {
                    return Err(Outcome::Failed(remote.failure(status)));
                }
                done[i] = Some(status);
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(Outcome::Failed(format!(
                "{} during the cell",
                server.failure(status)
            )));
        }
        if Instant::now() > deadline {
            return Err(Outcome::Failed(format!(
                "watchdog: the cell overran its {:.1}s by {}s and was stopped (loadgens still running: {})",
                (setup.warmup + cell.duration).as_secs_f64(),
                cell::WATCHDOG_SLACK.as_secs(),
                loads
                    .iter()
                    .zip(&done)
                    .filter(|(_, d)| d.is_none())
                    .map(|((r, _), _)| r.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let mut results = Vec::new();
    for (remote, lines) in &loads {
        // The session has ended: its output is all there, or on its way from the reader.
        let text = lines
            .rest(Instant::now() + Duration::from_secs(2))
            .join("\n");
        let result = loadgen::stats::results_in(&text)
            .ok()
            .and_then(|mut r| (r.len() == 1).then(|| r.remove(0)))
            .ok_or_else(|| {
                Outcome::Failed(cell::with_tail(
                    format!("loadgen on {} printed no result", remote.host),
                    &remote.stderr,
                ))
            })?;
        results.push(result);
    }
    let samples = samples.finish();
    let clean = match server.stop(cell::STOP_TIMEOUT + Duration::from_secs(2)) {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(server.failure(status)),
        None => Err(format!(
            "server on {} still running {}s after SIGTERM",
            hosts.server,
            cell::STOP_TIMEOUT.as_secs()
        )),
    };
    let merged = merge(&results, hosts, &prepared.clocks).map_err(Outcome::Failed)?;
    let load = serde_json::to_value(&merged).expect("a result serialises");
    let server_stats = cell::server_stats(cell, setup, &samples, started, &load, clean.is_ok());
    if let Err(reason) = clean {
        return Err(Outcome::Failed(format!(
            "server did not stop cleanly: {reason}"
        )));
    }
    let loadgen_cpu = json!({
        "cpu_user_s": load["loadgen"]["cpu_user_s"],
        "cpu_sys_s": load["loadgen"]["cpu_sys_s"],
    });
    let figures = figures(prepared, start_at, &results);
    // The noise object reads this machine's /proc/stat, which says nothing of the hosts.
    Ok(((load, server_stats, loadgen_cpu, Value::Null), figures))
}

/// The cell's connections and rate split over `n` load hosts (as loadgen splits them over
/// threads), so a cell means the same load however many hosts carry it.
fn split(cell: &Cell, n: usize) -> Result<Vec<Cell>, String> {
    let mut shares = vec![cell.clone(); n];
    for name in ["connections", "active", "idle", "rate"] {
        let Some(&total) = cell.params.get(name) else {
            continue;
        };
        for (i, share) in shares.iter_mut().enumerate() {
            let part = total / n as u64 + u64::from((i as u64) < total % n as u64);
            share.params.insert(name.to_string(), part);
        }
    }
    for key in ["connections", "active", "rate"] {
        if shares.iter().any(|s| s.params.get(key) == Some(&0)) {
            return Err(format!(
                "{key}={} cannot be split over {n} load hosts (each needs at least 1)",
                cell.params[key]
            ));
        }
    }
    Ok(shares)
}

/// Each host's result with its window put on our clock, merged by loadgen's own merge.
fn merge(
    results: &[loadgen::stats::LoadResult],
    hosts: &Hosts,
    clocks: &BTreeMap<String, Clock>,
) -> Result<loadgen::stats::LoadResult, String> {
    let shifted: Vec<_> = results
        .iter()
        .zip(&hosts.load)
        .map(|(r, host)| {
            let mut r = r.clone();
            r.start_unix_s -= clocks[host].offset_s;
            r.end_unix_s -= clocks[host].offset_s;
            r
        })
        .collect();
    let mut merged =
        loadgen::stats::merge(&shifted).map_err(|e| format!("merging the hosts' results: {e}"))?;
    merged.addr = results.first().map(|r| r.addr.clone()).unwrap_or_default();
    Ok(merged)
}

/// The line's `hosts` object: where it ran, the clocks, and each load host's own result.
fn figures(prepared: &Prepared, start_at: f64, results: &[loadgen::stats::LoadResult]) -> Value {
    let clock = |host: &str| {
        let c = prepared.clocks[host];
        json!({
            "offset_ms": (c.offset_s * 1e6).round() / 1e3,
            "rtt_ms": (c.rtt_s * 1e6).round() / 1e3,
        })
    };
    let mut server = clock(&prepared.hosts.server);
    server["host"] = json!(prepared.hosts.server);
    let load: Vec<Value> = prepared
        .hosts
        .load
        .iter()
        .zip(results)
        .map(|(host, result)| {
            let mut entry = clock(host);
            entry["host"] = json!(host);
            entry["result"] = serde_json::to_value(result).expect("a result serialises");
            entry
        })
        .collect();
    json!({
        "server": server,
        "load": load,
        "start_unix_s": start_at,
        "max_clock_offset_ms": prepared.hosts.max_offset.as_secs_f64() * 1e3,
    })
}

/// Waits for the tied server's `pid N` and `listening ADDR` lines.
fn wait_listening(server: &mut Remote, lines: &Lines) -> Result<(i32, u16), Outcome> {
    let deadline = Instant::now() + cell::LISTEN_TIMEOUT + Duration::from_secs(CONNECT_TIMEOUT_S);
    let (mut pid, mut port) = (None, None);
    while pid.is_none() || port.is_none() {
        let Some((_, line)) = lines.next_until(deadline) else {
            break;
        };
        if let Some(p) = line.strip_prefix("pid ") {
            pid = p.trim().parse().ok();
        } else if let Some(addr) = line.strip_prefix("listening ") {
            port = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        }
    }
    if let (Some(pid), Some(port)) = (pid, port) {
        return Ok((pid, port));
    }
    match wait_bounded(&mut server.child, Duration::from_secs(2)) {
        Some(status) if status.code() == Some(3) => Err(Outcome::Unsupported(cell::with_tail(
            format!("unsupported on {}", server.host),
            &server.stderr,
        ))),
        Some(status) => Err(Outcome::Failed(format!(
            "{} before listening",
            server.failure(status)
        ))),
        None => Err(Outcome::Failed(format!(
            "server on {}: no `listening` line within {}s",
            server.host,
            (cell::LISTEN_TIMEOUT + Duration::from_secs(CONNECT_TIMEOUT_S)).as_secs()
        ))),
    }
}

/// The remote sampler: every 100 ms, while the server lives (and at most an hour), a line
/// `S FULL`, then `/proc/PID/stat` of each process of the tree, and on every third sample its
/// PSS and each thread's context switches; the lines are stamped as they arrive here.
///
/// A shell loop rather than a program of ours: the server host then needs nothing but
/// `server`, and it reads the same files `process_tree` reads locally. What it cannot read is
/// a process's CPU-time clock, so the remote CPU comes from the ticks of `/proc/PID/stat` (a
/// whole process's utime + stime, ended threads included, in 10 ms ticks), see
/// docs/ARCHITECTURE.md.
fn sampler(pid: i32) -> String {
    let script = format!(
        "p={pid}; echo \"H $(getconf CLK_TCK)\"; \
         tree() {{ echo \"$1\"; for c in $(cat /proc/\"$1\"/task/*/children 2>/dev/null); do tree \"$c\"; done; }}; \
         n=0; while [ $n -lt 36000 ] && kill -0 $p 2>/dev/null; do \
           full=$((n % 3 == 0)); n=$((n+1)); echo \"S $full\"; \
           for q in $(tree $p); do \
             cat /proc/$q/stat 2>/dev/null; \
             if [ $full = 1 ]; then grep -h '^Pss:' /proc/$q/smaps_rollup 2>/dev/null; \
               grep -h 'ctxt_switches' /proc/$q/task/*/status 2>/dev/null; fi; \
           done; echo E; sleep 0.1; \
         done"
    );
    format!("sh -c {}", quote(&script))
}

/// The sampler's lines turned into samples as they arrive.
struct Sampling {
    thread: thread::JoinHandle<Vec<Sample>>,
    stop: mpsc::Sender<()>,
}

impl Sampling {
    fn start(lines: Lines) -> Sampling {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            let mut hz = 100u64;
            let mut current: Option<Sample> = None;
            loop {
                if stopped.try_recv() != Err(mpsc::TryRecvError::Empty) {
                    return samples;
                }
                match lines.0.recv_timeout(Duration::from_millis(50)) {
                    Ok((at, line)) => {
                        parse_sample_line(&line, at, &mut hz, &mut current, &mut samples)
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The sampler ended with the server: every sample is in.
                    Err(mpsc::RecvTimeoutError::Disconnected) => return samples,
                }
            }
        });
        Sampling { thread, stop }
    }

    fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        let mut samples = self.thread.join().unwrap_or_default();
        samples.sort_by_key(|s| s.at);
        samples
    }
}

/// One line of the sampler's output into the sample being read.
fn parse_sample_line(
    line: &str,
    at: Instant,
    hz: &mut u64,
    current: &mut Option<Sample>,
    samples: &mut Vec<Sample>,
) {
    let number = |text: &str| -> u64 {
        text.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or(0)
    };
    if let Some(ticks) = line.strip_prefix("H ") {
        *hz = number(ticks).max(1);
    } else if let Some(full) = line.strip_prefix("S ") {
        *current = Some(Sample::empty(at, full.trim() == "1"));
    } else if line == "E" {
        samples.extend(current.take());
    } else if let Some(sample) = current.as_mut() {
        if let Some(pss) = line.strip_prefix("Pss:") {
            sample.pss_kib += number(pss);
        } else if let Some(n) = line.strip_prefix("voluntary_ctxt_switches:") {
            sample.ctx_voluntary += number(n);
        } else if let Some(n) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
            sample.ctx_involuntary += number(n);
        } else if let Some(stat) = Stat::parse(line) {
            sample.add(&stat);
            let ticks = stat.utime + stat.stime + stat.reaped_ticks();
            sample.runtime_ns += ticks * 1_000_000_000 / *hz;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clocks(offsets_ms: &[(&str, f64)]) -> BTreeMap<String, Clock> {
        offsets_ms
            .iter()
            .map(|(h, ms)| {
                (
                    h.to_string(),
                    Clock {
                        offset_s: ms / 1e3,
                        rtt_s: 0.001,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn clocks_further_apart_than_the_bound_are_refused_with_each_offset() {
        let bound = Duration::from_millis(50);
        assert!(check_clocks(&clocks(&[("a", 10.0), ("b", -30.0)]), bound).is_ok());
        let e = check_clocks(&clocks(&[("a", 10.0), ("b", -45.0)]), bound).unwrap_err();
        assert!(
            e.contains("disagree by 55.0 ms") && e.contains("a +10.0 ms, b -45.0 ms"),
            "{e}"
        );
        let mut c = clocks(&[("a", 0.0), ("b", 0.0)]);
        apply_offset_aid(&mut c, Some("b=80")).unwrap();
        assert!(check_clocks(&c, bound).is_err());
        assert!(apply_offset_aid(&mut c, Some("nosuch=5")).is_err());
    }

    #[test]
    fn a_cell_splits_over_hosts_as_over_threads() {
        let cell = Cell {
            model: "m".into(),
            protocol: "echo".into(),
            scenario: "rate".into(),
            params: [("connections".to_string(), 5), ("rate".to_string(), 1001)]
                .into_iter()
                .collect(),
            trial: 1,
            duration: std::time::Duration::from_secs(1),
        };
        let shares = split(&cell, 2).unwrap();
        let sum = |k: &str| shares.iter().map(|s| s.params[k]).sum::<u64>();
        assert_eq!((sum("connections"), sum("rate")), (5, 1001));
        assert_eq!(shares[0].params["connections"], 3);
        let e = split(&cell, 6).unwrap_err();
        assert!(e.contains("connections=5 cannot be split over 6"), "{e}");
    }

    #[test]
    fn sampler_lines_make_samples() {
        let at = Instant::now();
        let (mut hz, mut current, mut samples) = (100, None, Vec::new());
        for line in [
            "H 100",
            "S 1",
            "42 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 150 50 20 10 20 0 3 0 1 1 1",
            "Pss:   1000 kB",
            "voluntary_ctxt_switches:\t7",
            "nonvoluntary_ctxt_switches:\t2",
            "E",
        ] {
            parse_sample_line(line, at, &mut hz, &mut current, &mut samples);
        }
        let s = samples[0];
        assert_eq!(
            (s.user_ticks, s.sys_ticks, s.threads, s.processes),
            (170, 60, 3, 1)
        );
        assert_eq!(
            s.runtime_ns, 2_300_000_000,
            "every tick of the process and its reaped children"
        );
        assert_eq!(
            (s.pss_kib, s.ctx_voluntary, s.ctx_involuntary, s.full),
            (1000, 7, 2, true)
        );
    }

    /// `command` run by `sh -c` as the remote shell runs it, with `input` on its stdin.
    fn shell(command: &str, input: &[u8]) {
        let mut child = Command::new("sh")
            .args(["-c", command])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{command}: {status}");
    }

    #[test]
    fn a_push_takes_any_remote_dir_literally() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = tempfile::tempdir().unwrap();
        // Spaces and every character a POSIX shell treats specially, a newline too.
        let remote_dir = format!(
            "{}/bin dir;$HOME `echo x` $(echo y) 'q' \"d\" *?[a] \\ &|<>(){{}}~#!%\n2/",
            scratch.path().display()
        );
        let hosts = Hosts {
            server: "h".into(),
            server_addr: None,
            load: vec![],
            remote_dir: remote_dir.clone(),
            ssh_config: None,
            push: true,
            max_offset: DEFAULT_MAX_OFFSET,
        };
        let temporary = format!("{}.new-1-h", hosts.path("loadgen"));
        shell(&make_dir(&hosts.remote_dir), b"");
        shell(&receive(&temporary), b"the binary");
        shell(&install(&temporary, &hosts.path("loadgen")), b"");
        let dir = Path::new(&remote_dir);
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["loadgen"],
            "the temporary file renamed, nothing else"
        );
        let installed = dir.join("loadgen");
        assert_eq!(std::fs::read(&installed).unwrap(), b"the binary");
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // Nothing else was made where the shell would have split or expanded the name.
        let made: Vec<_> = std::fs::read_dir(scratch.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(made, [Path::new(remote_dir.trim_end_matches('/'))]);
    }

    #[test]
    fn quoting_and_destinations() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        for (given, used) in [
            ("~/x/bin", "x/bin"),
            ("~", "."),
            ("~/", "."),
            ("bin", "bin"),
            ("/opt/bin", "/opt/bin"),
            ("bin/~x", "bin/~x"),
        ] {
            assert_eq!(home_relative(given).as_deref(), Ok(used), "{given}");
        }
        let refused = home_relative("~user/bin").unwrap_err();
        assert!(
            refused.contains("~user/bin") && refused.contains("absolute"),
            "{refused}"
        );
        let hosts = Hosts {
            server: "me@10.0.0.1".into(),
            server_addr: None,
            load: vec![],
            remote_dir: "bin/".into(),
            ssh_config: None,
            push: false,
            max_offset: DEFAULT_MAX_OFFSET,
        };
        assert_eq!(hosts.server_endpoint(7), "10.0.0.1:7");
        assert_eq!(hosts.path("server"), "bin/server");
        let v6 = Hosts {
            server_addr: Some("fd00::1".into()),
            ..hosts
        };
        assert_eq!(v6.server_endpoint(7), "[fd00::1]:7");
    }
}
