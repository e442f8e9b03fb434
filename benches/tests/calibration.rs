//! The tier rule, calibrated end to end on real servers (a reduced grid, seconds): the same
//! server under two names (`epoll-et` and its alias `epoll-et#2`) shares a tier, and a
//! server slowed by a large known amount (`--extra-work`, about 3x its CPU per request) is
//! put in a worse tier, on throughput and on CPU per request. Relations that hold by
//! construction, never an absolute figure. The full calibration over the quick suite's cells
//! is `report calibrate` on a run (docs/ARCHITECTURE.md, "Tiers").

use std::path::{Path, PathBuf};
use std::process::Command;

use benches::gate;
use reports::calibration::{same_tier, separated, Axis};

/// A release server built with the test aid (feature `extra-work`) and a release loadgen,
/// side by side in a target directory of their own (shared with the gate's sensitivity
/// test, so the server is built once). Release loadgen: a debug one could be the bottleneck
/// and hide the server's slowdown.
fn bin_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_BIN_EXE_bench"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("gate-sensitivity");
    let workspace = benches::runner::workspace_root();
    gate::build_server(&workspace, &target, &["extra-work"])
        .expect("build the server with the feature extra-work");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "loadgen"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&workspace)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building loadgen failed");
    target.join("release")
}

const SUITE: &str = r#"
description = "calibration: A/A and A/B on one cell"
trials = 5
warmup = "200ms"
duration = "500ms"
models = ["epoll-et", "epoll-et#2", "epoll-et+extra-work=30000"]
[[scenario]]
scenario = "echo"
connections = [50]
size = [128]
"#;

/// One calibration run in a fresh directory: `Err` with what went wrong and the run's
/// summary when a relation does not hold.
fn calibrate(bins: &Path) -> Result<(), String> {
    let scratch = tempfile::Builder::new()
        .prefix("bench-calibration-")
        .tempdir()
        .unwrap();
    let suite = scratch.path().join("suite.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let out = scratch.path().join("run");
    // As the quick suite runs: a trial run with the CPUs apart or stopped is run again.
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "run",
            "--rerun-noisy",
            "--suite",
            suite.to_str().unwrap(),
            "--out",
        ])
        .arg(&out)
        .arg("--bin-dir")
        .arg(bins)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = reports::run::Run::load(&out).unwrap();
    assert_eq!(run.ok().count(), 15, "every cell ran: {stdout}");
    assert!(stdout.contains("epoll-et#2"), "{stdout}");
    let slowed = "epoll-et+extra-work=30000";
    for axis in [Axis::Headline, Axis::Efficiency] {
        let aa = same_tier(&run, "epoll-et", "epoll-et#2", axis);
        if (aa.hits, aa.groups) != (1, 1) {
            return Err(format!("A/A {axis:?}: {aa:?}\n{stdout}"));
        }
        let ab = separated(&run, "epoll-et", slowed, axis);
        if (ab.hits, ab.groups) != (1, 1) {
            return Err(format!("A/B {axis:?}: {ab:?}\n{stdout}"));
        }
    }
    Ok(())
}

/// The rule's own promise is a rate: the alias shares the tier in 95% of groups, so one
/// group splits it now and then by chance (s22's CI: 0.90x [0.78, 0.95] on a machine whose
/// trials spread by 18%). One more run is made then; both failing is a rule that does not
/// hold (a rule that always separates, or never does, fails both).
#[test]
fn an_alias_ties_and_a_slowed_server_is_a_tier_below() {
    let bins = bin_dir();
    let first = match calibrate(&bins) {
        Ok(()) => return,
        Err(e) => e,
    };
    eprintln!("first calibration run missed, running it once more:\n{first}");
    if let Err(second) = calibrate(&bins) {
        panic!("both calibration runs missed.\nfirst: {first}\nsecond: {second}");
    }
}
