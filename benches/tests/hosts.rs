//! `bench run --server-host --load-hosts` across real ssh hosts: network namespaces joined by
//! a bridge, each with an `sshd` of its own and an address from the benchmarking range
//! 198.18.0.0/15 (RFC 2544), no route anywhere else, so no packet can leave them.
//!
//! ```text
//!   ctl (bench, ssh)  br0 198.18.0.254 ─┬─ veth ─ srv 198.18.0.1  sshd, server
//!                                       ├─ veth ─ a   198.18.0.2  sshd, loadgen
//!                                       └─ veth ─ b   198.18.0.3  sshd, loadgen
//! ```
//!
//! One lab, several runs: what bench refuses (an unreachable host, a host without the
//! binaries, another version, clocks too far apart), a 2-load-host cell whose merged count and
//! histogram must equal the sum of the hosts' own, and a load host's loadgen killed mid-cell.
//! After each, no process but the sshd listeners is left in any namespace; at the end not
//! those either. Everything the lab made (namespaces, veths, sshd, keys, directories) goes
//! with its guard, when the test fails too. Root only: skipped with the reason otherwise.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::{bin_dir, BENCH};
const SERVER: &str = "198.18.0.1";
const LOAD: [&str; 2] = ["198.18.0.2", "198.18.0.3"];
/// Where the binaries are pushed, in the lab's directory: spaces and shell characters.
const PUSHED: &str = "pushed dir;$HOME `id` 'q' *";
/// In the lab's subnet, given to no namespace: ARP for it goes unanswered.
const UNUSED: &str = "198.18.0.9";

/// Why this machine cannot run the lab, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, sshd)".into());
    }
    for program in ["ip", "ssh", "ssh-keygen", "taskset", "sha256sum"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("no `{program}` (.ci/run installs it)"));
        }
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        return Some("no /usr/sbin/sshd (openssh-server; .ci/run installs it)".into());
    }
    None
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, their sshd, the keys and files: removed on drop, whatever happened.
struct Lab {
    /// ctl, srv, a, b.
    namespaces: Vec<String>,
    sshd: Vec<Child>,
    dir: tempfile::TempDir,
    made_run_sshd: bool,
}

impl Lab {
    fn new() -> Lab {
        let tag = format!("iomh{}", std::process::id());
        let mut lab = Lab {
            namespaces: Vec::new(),
            sshd: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("bench-hosts-")
                .tempdir()
                .unwrap(),
            made_run_sshd: false,
        };
        for name in ["c", "s", "a", "b"] {
            let ns = format!("{tag}{name}");
            run("ip", &["netns", "add", &ns]);
            lab.namespaces.push(ns);
        }
        let ctl = lab.namespaces[0].clone();
        run("ip", &["-n", &ctl, "link", "set", "lo", "up"]);
        run("ip", &["-n", &ctl, "link", "add", "br0", "type", "bridge"]);
        run(
            "ip",
            &["-n", &ctl, "addr", "add", "198.18.0.254/24", "dev", "br0"],
        );
        run("ip", &["-n", &ctl, "link", "set", "br0", "up"]);
        for (i, ns) in lab.namespaces.clone()[1..].iter().enumerate() {
            let veth = format!("v{i}");
            let addr = format!("198.18.0.{}/24", i + 1);
            // The peer end is made straight inside its namespace, as its eth0.
            run(
                "ip",
                &[
                    "-n", &ctl, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                    "netns", ns,
                ],
            );
            run(
                "ip",
                &["-n", &ctl, "link", "set", &veth, "master", "br0", "up"],
            );
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        lab.keys();
        if !Path::new("/run/sshd").exists() {
            // sshd's privilege separation directory, which a container may lack.
            std::fs::create_dir_all("/run/sshd").unwrap();
            lab.made_run_sshd = true;
        }
        for (i, ns) in lab.namespaces.clone()[1..].iter().enumerate() {
            lab.start_sshd(ns, &format!("198.18.0.{}", i + 1));
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client key, a host key (one for every host), and the files that trust them.
    fn keys(&self) {
        for key in ["id", "host"] {
            let path = self.path(key);
            run(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    path.to_str().unwrap(),
                ],
            );
        }
        std::fs::copy(self.path("id.pub"), self.path("authorized_keys")).unwrap();
        let host_key = std::fs::read_to_string(self.path("host.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        let hosts = [SERVER, LOAD[0], LOAD[1]].join(",");
        std::fs::write(
            self.path("known_hosts"),
            format!("{hosts} {}\n", host_key.join(" ")),
        )
        .unwrap();
        std::fs::write(
            self.path("ssh_config"),
            format!(
                "Host *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  ConnectTimeout 5\n",
                self.path("id").display(),
                self.path("known_hosts").display()
            ),
        )
        .unwrap();
    }

    fn start_sshd(&mut self, ns: &str, addr: &str) {
        let config = self.path(&format!("sshd_config_{addr}"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}:22\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
                 UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nPidFile none\n",
                self.path("host").display(),
                self.path("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.sshd.push(child);
        // Listening once a connection is accepted.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = Command::new("ip")
                .args(["netns", "exec", &self.namespaces[0], "ssh", "-F"])
                .arg(self.path("ssh_config"))
                .args(["-o", "BatchMode=yes", addr, "true"])
                .output()
                .unwrap();
            if probe.status.success() {
                return;
            }
            assert!(
                Instant::now() < until,
                "sshd on {addr} not reachable: {}",
                String::from_utf8_lossy(&probe.stderr)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Network namespace inodes of the lab, to find the processes inside it.
    fn inodes(&self) -> HashSet<u64> {
        self.namespaces
            .iter()
            .filter_map(|ns| std::fs::metadata(format!("/run/netns/{ns}")).ok())
            .map(|m| m.ino())
            .collect()
    }

    /// Every process inside the lab's namespaces but its sshd listeners: pid and name.
    fn others(&self) -> Vec<(i32, String)> {
        let inodes = self.inodes();
        let listeners: Vec<i32> = self.sshd.iter().map(|c| c.id() as i32).collect();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let in_lab = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| inodes.contains(&m.ino()));
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            });
            if in_lab && !listeners.contains(&pid) && !zombie {
                let name = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ");
                found.push((pid, name));
            }
        }
        found
    }

    /// Waits (a few seconds: sessions close after their client) until only the sshd
    /// listeners are left; what is left otherwise.
    fn settled(&self) -> Vec<(i32, String)> {
        let until = Instant::now() + Duration::from_secs(8);
        loop {
            let left = self.others();
            if left.is_empty() || Instant::now() > until {
                return left;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `bench run` in the ctl namespace against the lab's hosts, bounded in time.
    fn bench(&self, extra: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Output {
        let child = self.bench_child(extra, envs);
        let until = Instant::now() + timeout;
        let mut child = child;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                panic!("bench ran over {timeout:?}: {:?}", child.wait_with_output());
            }
            thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    fn bench_child(&self, extra: &[&str], envs: &[(&str, &str)]) -> Child {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let load_cpu = if cpus > 1 { "1" } else { "0" };
        Command::new("ip")
            .args(["netns", "exec", &self.namespaces[0], BENCH, "run"])
            .args(["--bin-dir", bin_dir().to_str().unwrap()])
            .args(["--ssh-config", self.path("ssh_config").to_str().unwrap()])
            .args(["--server-cpus", "0", "--load-cpus", load_cpu])
            .args(["--server-host", SERVER])
            .args(extra)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A suite of one echo cell.
    fn suite(&self, duration: &str) -> String {
        let path = self.path(&format!("suite-{duration}.toml"));
        std::fs::write(
            &path,
            format!(
                "description = \"two load hosts\"\ntrials = 1\nwarmup = \"300ms\"\n\
                 duration = \"{duration}\"\nmodels = [\"epoll-et\"]\n\
                 [[scenario]]\nscenario = \"echo\"\nconnections = [8]\n"
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.sshd {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything still inside (a failed test's sessions): killed before its namespace goes.
        for (pid, _) in self.others() {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Deleting a namespace deletes the veth ends and the bridge inside it.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if self.made_run_sshd {
            let _ = std::fs::remove_dir("/run/sshd");
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn two_load_hosts_over_ssh_merge_exactly_and_leave_nothing_behind() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED two_load_hosts_over_ssh: {reason}");
        return;
    }
    bin_dir();
    let lab = Lab::new();
    let suite = lab.suite("1s");
    let loads = LOAD.join(",");
    let out = |name: &str| lab.path(name).to_string_lossy().into_owned();
    let bin = bin_dir().to_string_lossy().into_owned();
    let quick = Duration::from_secs(60);

    // Refusals: exit 2 before any run directory is made, the host named.
    let unreachable = format!("{},{UNUSED}", LOAD[0]);
    let empty = out("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let fake = out("fake");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::copy(bin_dir().join("server"), Path::new(&fake).join("server")).unwrap();
    let fake_loadgen = Path::new(&fake).join("loadgen");
    std::fs::write(&fake_loadgen, "#!/bin/sh\necho 'loadgen 0.0.1'\n").unwrap();
    run("chmod", &["755", fake_loadgen.to_str().unwrap()]);
    let offset = format!("{}=500", LOAD[1]);
    // What is refused, the arguments, the environment, what the error must say.
    type Refusal<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
    );
    let refusals: [Refusal; 4] = [
        (
            "unreachable",
            &["--load-hosts", &unreachable, "--remote-dir", &bin],
            &[],
            &[UNUSED, "ssh failed"],
        ),
        (
            "no binaries",
            &["--load-hosts", &loads, "--remote-dir", &empty],
            &[],
            &[SERVER, LOAD[0], LOAD[1], "no executable", "--push-binaries"],
        ),
        (
            "another version",
            &["--load-hosts", &loads, "--remote-dir", &fake],
            &[],
            &[LOAD[0], "is 'loadgen 0.0.1'"],
        ),
        (
            "clocks apart",
            &["--load-hosts", &loads, "--remote-dir", &bin],
            &[("IOMODELS_CLOCK_OFFSET_MS", &offset)],
            &["clocks disagree", LOAD[1], "+500"],
        ),
    ];
    for (what, args, envs, says) in refusals {
        let dir = out(&format!("refused-{}", what.replace(' ', "-")));
        let mut all = vec!["--suite", &suite, "--out", &dir];
        all.extend(args);
        let output = lab.bench(&all, envs, quick);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{what}: {text}");
        for s in says {
            assert!(text.contains(s), "{what}: '{s}' not in: {text}");
        }
        assert!(
            !Path::new(&dir).exists(),
            "{what}: a run directory was made"
        );
        assert_eq!(lab.settled(), vec![], "{what}: processes left in the lab");
    }

    // A cell over two load hosts, the binaries pushed first, into a directory whose name a
    // shell would split and expand if it were not quoted.
    let dir = out("run");
    let pushed = out(PUSHED);
    let cell = |suite: &str, dir: &str| -> Vec<String> {
        [
            "--suite",
            suite,
            "--out",
            dir,
            "--load-hosts",
            &loads,
            "--remote-dir",
            &pushed,
        ]
        .map(String::from)
        .to_vec()
    };
    let mut args = cell(&suite, &dir);
    args.push("--push-binaries".into());
    let output = lab.bench(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        quick,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(lab.settled(), vec![], "processes left after the run");
    let text = std::fs::read_to_string(Path::new(&dir).join("results.jsonl")).unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["status"], "ok", "{}", line["reason"]);
    let hosts = line["hosts"]["load"].as_array().unwrap();
    let named: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(named, LOAD);
    assert_eq!(line["hosts"]["server"]["host"], SERVER);
    let requests: Vec<u64> = hosts
        .iter()
        .map(|h| h["result"]["requests"].as_u64().unwrap())
        .collect();
    assert!(
        requests.iter().all(|&r| r > 0),
        "each host measured: {requests:?}"
    );
    assert_eq!(
        line["load"]["requests"].as_u64().unwrap(),
        requests.iter().sum::<u64>()
    );
    // The connections were split over the hosts: 4 + 4 of the cell's 8.
    let connections: Vec<u64> = hosts
        .iter()
        .map(|h| h["result"]["connections"].as_u64().unwrap())
        .collect();
    assert_eq!(connections, [4, 4]);
    assert_eq!(line["load"]["connections"], 8);
    let decode = |h: &Value| loadgen::stats::decode(h.as_str().expect("a histogram")).unwrap();
    for key in ["histogram", "uncorrected_histogram"] {
        let mut sum = decode(&hosts[0]["result"][key]);
        sum.add(decode(&hosts[1]["result"][key])).unwrap();
        assert_eq!(
            decode(&line["load"][key]),
            sum,
            "{key}: the merge is the sum"
        );
        assert_eq!(sum.len(), line["load"]["requests"].as_u64().unwrap());
    }
    // Each host waited for the start T (on bench's clock, shifted by its offset) and then
    // measured after the 300 ms warmup: no window opened before T + warmup, give or take the
    // clock bound (a loaded machine may open them later, not earlier).
    let start = line["hosts"]["start_unix_s"].as_f64().unwrap();
    for h in hosts {
        let opened = h["result"]["start_unix_s"].as_f64().unwrap();
        assert!(
            opened >= start + 0.3 - 0.05,
            "{opened} before {start} + warmup"
        );
        assert!(h["offset_ms"].as_f64().unwrap().abs() < 50.0, "{h}");
    }
    // The server's own process tree, sampled on its host.
    assert_eq!(line["server"]["peak_processes"], 1);
    assert_eq!(line["server"]["clean_exit"], true);

    // A load host's loadgen killed mid-cell: the cell fails naming it, nothing is left.
    let long = lab.suite("4s");
    let dir = out("killed");
    let args = cell(&long, &dir);
    let mut child = lab.bench_child(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let b = std::fs::metadata(format!("/run/netns/{}", lab.namespaces[3]))
        .unwrap()
        .ino();
    let until = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        let found = lab.others().into_iter().find(|(pid, cmd)| {
            // The cell's loadgen itself (not `--version` while hosts are checked, not the
            // shells around it).
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.ends_with(Path::new(PUSHED).join("loadgen")))
                && cmd.contains("--start-at")
                && std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == b)
        });
        if let Some((pid, _)) = found {
            break pid;
        }
        assert!(Instant::now() < until, "no loadgen ever ran on {}", LOAD[1]);
        thread::sleep(Duration::from_millis(50));
    };
    // Past the 2 s to the start and the warmup: into the measured window.
    thread::sleep(Duration::from_millis(2800));
    // SAFETY: kill only sends a signal, to the loadgen found in the lab.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("bench did not end after a load host died");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = std::fs::read_to_string(Path::new(&dir).join("results.jsonl")).unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["status"], "failed");
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("loadgen on {}", LOAD[1])) && reason.contains("signal 9"),
        "{reason}"
    );
    assert_eq!(lab.settled(), vec![], "processes left after a host died");

    // Last, the listeners themselves go, and nothing is left in any namespace.
    let inodes = lab.inodes();
    drop(lab);
    let left: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| inodes.contains(&m.ino()))
        })
        .collect();
    assert_eq!(
        left,
        Vec::<i32>::new(),
        "processes left in the lab's namespaces"
    );
}
