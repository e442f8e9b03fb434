//! External servers end to end: the Python example measured on echo and transfer with every
//! byte verified, and bad input, each a clear refusal (exit 2) or a failed cell with its
//! reason: an unknown placeholder, an undeclared protocol, a command that exits at once, a
//! port never opened, a server that ignores SIGTERM (alone, or with workers that are still
//! exiting after the SIGKILL: no leftovers), one that leaves a daemon behind. And a server
//! started here with `external::start` and dropped before its stop (an early return, a
//! panic) is stopped all the same, once. Every bench run is bounded in time, and after each
//! case no process of the case is left (each case's processes carry its scratch directory in
//! their command line).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use benches::external;
use serde_json::Value;

mod support;
use support::{bin_dir, BENCH};

/// No case takes more than a few seconds; a hung run fails the test instead of hanging it.
const RUN_LIMIT: Duration = Duration::from_secs(90);

fn python3() {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "these tests run Python servers: install python3 (apt-get install python3)"
    );
}

/// A case's scratch directory: its suite, its scripts, its run.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bench-external-{name}-"))
        .tempdir()
        .unwrap()
}

/// `bench run` on `suite` (written into `dir`) with `args`, killed if it overruns.
fn run(dir: &Path, suite: &str, args: &[&str]) -> Output {
    let path = dir.join("suite.toml");
    std::fs::write(&path, suite).unwrap();
    let mut child = Command::new(BENCH)
        .args(["run", "--suite", path.to_str().unwrap(), "--out"])
        .arg(dir.join("run"))
        .args(["--bin-dir", bin_dir().to_str().unwrap()])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bench");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "bench ran over {RUN_LIMIT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert_nothing_left(dir);
    output
}

/// No process whose command line names `dir` is alive (zombies aside).
fn assert_nothing_left(dir: &Path) {
    let needle = dir.to_str().unwrap();
    // A process killed a moment ago may still be on its way out.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .filter_map(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (state != "Z" && cmdline.contains(needle)).then_some(cmdline)
            })
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("run/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The run was refused (exit 2), saying `says`.
fn assert_refused(output: &Output, says: &str) {
    assert_eq!(output.status.code(), Some(2), "{}", stderr(output));
    assert!(stderr(output).contains(says), "{}", stderr(output));
}

const HEAD: &str = "description = \"t\"\ntrials = 1\nwarmup = \"100ms\"\nduration = \"300ms\"\nmodels = []\n[[scenario]]\nscenario = \"echo\"\nconnections = [4]\nsize = [128]\n";

/// The Python example, copied into `dir` so its command line names the case.
fn example_server(dir: &Path) -> String {
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/servers/selectors_server.py");
    std::fs::copy(source, dir.join("selectors_server.py")).unwrap();
    "{dir}/selectors_server.py".to_string()
}

/// One echo server table with `command` and `extra` keys.
fn server(command: &str, extra: &str) -> String {
    format!("[[server]]\nname = \"ext\"\ncommand = {command}\nprotocols = [\"echo\"]\n{extra}\n")
}

/// The one failed cell of a run that exited 1, and its reason.
fn failed_reason(dir: &Path, output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    let lines = lines(dir);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], "failed", "{}", lines[0]);
    lines[0]["reason"].as_str().unwrap().to_string()
}

#[test]
fn the_python_example_passes_echo_and_transfer_with_every_byte_verified() {
    python3();
    let scratch = scratch("python");
    let dir = scratch.path();
    let script = example_server(dir);
    let suite = format!(
        "{HEAD}[[scenario]]\nscenario = \"bulk\"\nconnections = [2]\nsize = [100000]\n\
         [[server]]\nname = \"py\"\ncommand = [\"python3\", \"{script}\", \"--protocol\", \"{{protocol}}\", \"--port\", \"{{port}}\"]\n\
         protocols = [\"echo\", \"transfer\"]\nready = \"^listening \"\n"
    );
    let output = run(dir, &suite, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = lines(dir);
    let scenarios: Vec<&str> = lines
        .iter()
        .map(|l| l["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(scenarios, ["echo", "bulk"]);
    for line in &lines {
        assert_eq!(line["status"], "ok", "{line}");
        assert_eq!(line["model"], "py");
        assert_eq!(
            line["external"]["protocols"],
            serde_json::json!(["echo", "transfer"])
        );
        assert!(line["load"]["requests"].as_u64().unwrap() > 0, "{line}");
        let errors = &line["load"]["errors"];
        for class in ["connect", "reset", "timeout", "mismatch", "protocol"] {
            assert_eq!(errors[class], 0, "{class} errors: {line}");
        }
        assert!(
            line["server"]["stop"]
                .as_str()
                .unwrap()
                .starts_with("SIGTERM (exit status 0"),
            "{line}"
        );
        assert_eq!(line["server"]["peak_processes"], 1);
    }
    // Bytes went both ways: bulk uploads were answered with their CRC-32C, downloads matched
    // the pattern (loadgen verifies both, a wrong byte is a mismatch above).
    assert!(lines[1]["load"]["throughput_bps"].as_f64().unwrap() > 0.0);
}

#[test]
fn an_unknown_placeholder_is_refused_when_the_suite_is_read() {
    let scratch = scratch("placeholder");
    let dir = scratch.path();
    let suite = format!("{HEAD}{}", server(r#"["sh", "-c", "x --port {prot}"]"#, ""));
    let output = run(dir, &suite, &[]);
    assert_refused(&output, "server 'ext': command: unknown placeholder {prot}");
    assert!(!dir.join("run").exists(), "a bad suite makes no run");
    // The command line's servers are checked the same way.
    let output = run(dir, HEAD, &["--server", "x:echo=srv --port {prot}"]);
    assert_refused(&output, "unknown placeholder {prot}");
}

#[test]
fn an_external_server_is_refused_with_remote_hosts() {
    let scratch = scratch("remote");
    let dir = scratch.path();
    // Refused before any host is reached (these names do not resolve).
    let output = run(
        dir,
        HEAD,
        &[
            "--server",
            "x:echo=sh -c true {port}",
            "--server-host",
            "server.invalid",
            "--load-hosts",
            "load.invalid",
        ],
    );
    assert_refused(&output, "external servers ('x') run on this machine only");
    assert!(!dir.join("run").exists());
}

#[test]
fn a_protocol_the_server_does_not_declare_is_refused() {
    let scratch = scratch("protocol");
    let dir = scratch.path();
    let suite = format!(
        "{HEAD}[[scenario]]\nscenario = \"http\"\nconnections = [4]\nmodels = [\"ext\"]\n{}",
        server(r#"["srv", "{port}"]"#, "")
    );
    let output = run(dir, &suite, &[]);
    assert_refused(
        &output,
        "names server 'ext', which does not declare protocol 'http'",
    );
    let output = run(dir, HEAD, &["--server", "x:ftp=srv {port}"]);
    assert_refused(&output, "unknown protocol 'ftp'");
    // A server none of whose protocols a scenario speaks would run nothing.
    let output = run(dir, HEAD, &["--server", "x:http=srv {port}"]);
    assert_refused(
        &output,
        "declares http, which no scenario of this suite speaks",
    );
}

#[test]
fn a_command_that_exits_at_once_fails_its_cell_with_its_words() {
    let scratch = scratch("exits");
    let dir = scratch.path();
    std::fs::write(
        dir.join("exits.sh"),
        "echo 'no such flag: --port' >&2\nexit 3\n",
    )
    .unwrap();
    let suite = format!(
        "{HEAD}{}",
        server(r#"["sh", "{dir}/exits.sh", "{port}"]"#, "")
    );
    let output = run(dir, &suite, &[]);
    let reason = failed_reason(dir, &output);
    assert!(
        reason.contains("server exit status 3 before it was ready")
            && reason.contains("no such flag: --port"),
        "{reason}"
    );
    // A program that does not exist is refused before the run, by name.
    let output = run(
        dir,
        HEAD,
        &["--server", "x:echo=no-such-server-here {port}"],
    );
    assert_refused(&output, "needs no-such-server-here, which is not on PATH");
}

#[test]
fn a_port_never_opened_fails_its_cell_after_the_ready_timeout() {
    python3();
    let scratch = scratch("port");
    let dir = scratch.path();
    std::fs::write(dir.join("idle.py"), "import time\ntime.sleep(60)\n").unwrap();
    let suite = format!(
        "{HEAD}{}",
        server(
            r#"["python3", "{dir}/idle.py", "{port}"]"#,
            "ready_timeout = \"1s\""
        )
    );
    let started = Instant::now();
    let output = run(dir, &suite, &[]);
    let reason = failed_reason(dir, &output);
    assert!(reason.starts_with("never opened port "), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The same with a ready line that never comes.
    let suite = format!(
        "{HEAD}{}",
        server(
            r#"["python3", "{dir}/idle.py", "{port}"]"#,
            "ready_timeout = \"1s\"\nready = \"^listening\""
        )
    );
    std::fs::remove_dir_all(dir.join("run")).unwrap();
    let reason = failed_reason(dir, &run(dir, &suite, &[]));
    assert!(
        reason.starts_with("no line matching ready = \"^listening\""),
        "{reason}"
    );
}

/// An echo server that ignores SIGTERM (and, with `daemon`, first starts a process of its own
/// session that outlives it; with `workers`, two workers of its group that ignore SIGTERM too,
/// each holding 256 MiB it wrote: freeing that takes a SIGKILLed worker tens of milliseconds,
/// so the workers are still on their way out when the server itself has been reaped).
const STUBBORN: &str = r#"
import os, signal, socket, sys, threading
mode = sys.argv[2] if len(sys.argv) > 2 else ""
if mode == "daemon":
    if os.fork() == 0:
        os.setsid()
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        signal.pause()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "workers":
    ready, done = os.pipe()
    for _ in range(2):
        if os.fork() == 0:
            ballast = b"\1" * (256 << 20)
            os.write(done, b"x")
            while True:
                signal.pause()
    os.read(ready, 1), os.read(ready, 1)
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
def serve(conn):
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
    except OSError:
        pass
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// A suite of [`STUBBORN`] (given `more` arguments), 300 ms of grace.
fn stubborn(dir: &Path, more: &str) -> String {
    python3();
    std::fs::write(dir.join("stubborn.py"), STUBBORN).unwrap();
    let command = format!(r#"["python3", "{{dir}}/stubborn.py", "{{port}}", {more}]"#);
    format!("{HEAD}{}", server(&command, "stop_grace = \"300ms\""))
}

/// Runs the stubborn server (with `more` arguments) for one cell and returns its line,
/// checked to be a measured cell whose server was killed after its grace.
fn killed_after_grace(scratch_name: &str, more: &str) -> Value {
    let scratch = scratch(scratch_name);
    let dir = scratch.path();
    let output = run(dir, &stubborn(dir, more), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let line = lines(dir).swap_remove(0);
    assert_eq!(line["status"], "ok", "{line}");
    assert_eq!(
        line["server"]["stop"], "SIGKILL: still running 300ms after SIGTERM",
        "{line}"
    );
    line
}

#[test]
fn a_server_that_ignores_sigterm_is_killed_after_its_grace_and_says_so() {
    let line = killed_after_grace("sigterm", "");
    assert_eq!(line["server"]["clean_exit"], false);
}

#[test]
fn a_forking_server_that_ignores_sigterm_is_killed_whole_and_its_dying_workers_are_no_leftovers() {
    // Not "left 2 processes behind": the workers were killed with their group, and are
    // waited for while they exit.
    let line = killed_after_grace("workers", "\"workers\"");
    assert_eq!(line["server"]["peak_processes"], 3, "{line}");
}

#[test]
fn a_server_that_leaves_a_daemon_behind_fails_and_the_daemon_is_ended() {
    let scratch = scratch("daemon");
    let dir = scratch.path();
    let suite = stubborn(dir, "\"daemon\"");
    let reason = failed_reason(dir, &run(dir, &suite, &[]));
    assert!(
        reason.starts_with(
            "server did not stop cleanly: left 1 process behind after it stopped (killed now): "
        ),
        "{reason}"
    );
}

#[test]
fn ci_for_an_external_server_refuses_what_it_cannot_compare() {
    let scratch = scratch("ci");
    let dir = scratch.path();
    let ci = |args: &[&str]| {
        Command::new(BENCH)
            .arg("ci")
            .args(args)
            .args(["--out", dir.join("ci").to_str().unwrap()])
            .args(["--bin-dir", bin_dir().to_str().unwrap()])
            .current_dir(dir)
            .output()
            .expect("run bench ci")
    };
    let sh = "x:echo=sh -c 'exit 1' {port}";
    assert_refused(
        &ci(&["--server", sh]),
        "--server x: give a --base-server of the same name, or a BASE_REF to run it at",
    );
    assert_refused(
        &ci(&["--server", sh, "--base-server", "y:echo=sh {port}"]),
        "--base-server y: no --server of that name to compare it with",
    );
    assert_refused(
        &ci(&["--server", "x:http=sh {port}"]),
        "the gate's workload is echo",
    );
    assert_refused(&ci(&[]), "a BASE_REF is needed");
    assert_nothing_left(dir);
}

/// Tests that start servers in this process with `external::start`, one at a time: a stop ends
/// every child of this process in a group of its own (it would be a daemon bench adopted),
/// which another such test's server is.
static IN_THIS_PROCESS: Mutex<()> = Mutex::new(());

/// A server that forks a worker of its group, then opens its port once the worker says it
/// is past the fork (CPython drops a signal that reaches the child before its after-fork
/// work is done, so a SIGTERM right after the port opened could be lost); on SIGTERM each
/// of the two leaves a file `terminated-PID` in the directory it is given and exits 0.
const TERMINABLE: &str = r#"
import os, signal, socket, sys
def on_term(*_):
    open(os.path.join(sys.argv[2], "terminated-%d" % os.getpid()), "w").close()
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
ready_r, ready_w = os.pipe()
if os.fork() > 0:
    os.read(ready_r, 1)
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
else:
    os.write(ready_w, b"x")
while True:
    signal.pause()
"#;

/// [`TERMINABLE`] started in `dir` by `external::start`, as `bench gate --server` starts one.
fn start_terminable(dir: &Path) -> external::Running {
    python3();
    std::fs::write(dir.join("terminable.py"), TERMINABLE).unwrap();
    let server =
        external::Server::from_arg("t:echo=python3 {dir}/terminable.py {port} {dir}", dir).unwrap();
    external::start(&server, "echo", &[0], dir, &[]).unwrap()
}

/// How many of its processes got SIGTERM (the files they left).
fn terminated(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("terminated-"))
        .count()
}

#[test]
fn a_server_dropped_without_its_stop_is_stopped_as_the_stop_does() {
    let _one = IN_THIS_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = scratch("dropped");
    let dir = scratch.path();
    let running = start_terminable(dir);
    // An early return between the start and the stop: the server goes with its guard.
    drop(running);
    assert_nothing_left(dir);
    assert_eq!(terminated(dir), 2, "SIGTERM first, to the whole group");
}

#[test]
fn a_panic_between_the_start_and_the_stop_leaves_no_process() {
    let _one = IN_THIS_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = scratch("panic");
    let dir = scratch.path();
    let panicked = std::panic::catch_unwind(|| {
        let _running = start_terminable(dir);
        panic!("a fault between the start and the stop (this panic is the test's)");
    });
    assert!(panicked.is_err());
    assert_nothing_left(dir);
    assert_eq!(terminated(dir), 2);
}

#[test]
fn a_drop_after_the_stop_stops_nothing_again() {
    let _one = IN_THIS_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = scratch("stopped");
    let dir = scratch.path();
    let mut running = start_terminable(dir);
    let how = running.stop().unwrap();
    assert!(how.starts_with("SIGTERM (exit status 0"), "{how}");
    // A child of this process in a group of its own, as a daemon bench adopted would be: a
    // second stop would take it for one the server left, and kill it.
    let mut bystander = Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    drop(running);
    // (A second stop would have reaped it too: then this process has no such child.)
    let alive = matches!(bystander.try_wait(), Ok(None));
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(alive, "the drop after the stop signalled again");
    assert_nothing_left(dir);
}
