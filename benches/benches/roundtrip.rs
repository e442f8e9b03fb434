//! One 64-byte echo round trip over loopback for every model the server lists. The server is
//! started once per model outside the timed part (`iter_custom`) and pinned to CPU 0; the
//! client is a plain blocking socket on this thread, pinned to CPU 1 when there is one.

#[path = "support/criterion_config.rs"]
mod criterion_config;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// The release `server` binary, built if it is missing.
fn server_binary() -> PathBuf {
    let target = std::env::current_exe()
        .expect("bench path")
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let server = target.join("server");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "servers"])
        .status()
        .expect("cargo build");
    assert!(
        status.success() && server.exists(),
        "build the server: cargo build --release -p servers"
    );
    server
}

fn pin(cpu: usize) {
    // SAFETY: sched_setaffinity on this thread with a valid set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill only signals our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start(server: &PathBuf, model: &str, cpus: usize) -> Option<(Server, TcpStream)> {
    let mut command = Command::new("taskset");
    command.args(["-c", "0"]).arg(server);
    if cpus < 2 {
        command = Command::new(server);
    }
    let mut child = command
        .args(["--model", model, "--protocol", "echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let addr = line.trim().strip_prefix("listening ")?.to_string();
    let server = Server(child);
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some((server, stream))
}

fn roundtrips(c: &mut Criterion) {
    let server = server_binary();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpus >= 2 {
        pin(1);
    }
    let listing = Command::new(&server)
        .args(["--list", "--json"])
        .output()
        .expect("server --list");
    let models: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("listing JSON");
    let mut group = c.benchmark_group("roundtrip");
    for model in models.as_array().expect("array") {
        let name = model["name"].as_str().expect("name");
        if model["supported"] != true {
            eprintln!("roundtrip/{name}: unsupported here ({})", model["reason"]);
            continue;
        }
        let Some((_server, mut stream)) = start(&server, name, cpus) else {
            eprintln!("roundtrip/{name}: could not start");
            continue;
        };
        let message = [0x2au8; 64];
        let mut back = [0u8; 64];
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    stream.write_all(&message).expect("write");
                    stream.read_exact(&mut back).expect("read");
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion_config::config();
    targets = roundtrips
}
criterion_main!(benches);
