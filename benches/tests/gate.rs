//! The CI gate's sensitivity: a 5% slowdown is flagged, the same build twice is not.
//!
//! The slowdown is the server's hidden test aid `--extra-work ROUNDS` (throwaway work per
//! request; it exists only in a build with the feature `extra-work`), sized here to 5% of the
//! model's own count: two probe runs measure what a round costs. Then several passes of the
//! plain build and several of the slowed one are compared pairwise with the gate's own
//! comparison at its default 2% threshold: every plain/slowed pair must fail the gate, and no
//! plain/plain pair may.
//!
//! Needs valgrind. Without it these tests say so and pass, except under CI (`CI` set), where
//! a missing valgrind fails them: `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use benches::gate::{self, Verdict, Workload};
use serde_json::Value;

const REPEATS: usize = 4;
const THRESHOLD: f64 = 0.02;
const SLOWDOWN: f64 = 0.05;

/// A release server built with the test aid (feature `extra-work`), in a target directory of
/// its own so the workspace's release `server` stays the plain one. Release, as the gate
/// measures it in CI: a round of extra work is about three instructions there, so 5% can be
/// hit closely.
fn server() -> &'static Path {
    static SERVER: OnceLock<PathBuf> = OnceLock::new();
    SERVER.get_or_init(|| {
        let target = Path::new(env!("CARGO_BIN_EXE_bench"))
            .parent() // debug
            .and_then(Path::parent)
            .unwrap()
            .join("gate-sensitivity");
        gate::build_server(&benches::runner::workspace_root(), &target, &["extra-work"])
            .expect("build the server with the feature extra-work")
    })
}

fn valgrind_here() -> bool {
    match gate::valgrind_version() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            false
        }
    }
}

fn workload() -> Workload {
    Workload {
        short: 500,
        long: 10_000,
        ..Workload::default()
    }
}

/// One gate pass over one model; its figure and the pass.
fn measure(model: &str, extra_work: u32, tag: &str) -> (f64, Value) {
    let info = gate::models(server())
        .unwrap()
        .into_iter()
        .find(|m| m.name == model)
        .unwrap();
    let work = std::env::temp_dir().join(format!(
        "gate-sensitivity-{}-{model}-{tag}",
        std::process::id()
    ));
    let args = if extra_work > 0 {
        vec![format!("--extra-work={extra_work}")]
    } else {
        vec![]
    };
    let pass = gate::pass(server(), &[info], &[], &workload(), &args, &work, |_| {}).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    let m = &pass["models"][model];
    assert_eq!(m["status"], "ok", "{model}: {m}");
    (m["instructions_per_request"].as_f64().unwrap(), pass)
}

fn fails_gate(base: &Value, new: &Value) -> bool {
    let rows = gate::compare(base, new, THRESHOLD);
    assert_eq!(rows.len(), 1);
    assert!(
        matches!(
            rows[0].verdict,
            Verdict::Same | Verdict::WithinThreshold | Verdict::Regression | Verdict::Improvement
        ),
        "{:?}",
        rows[0].verdict
    );
    rows[0].verdict.fails()
}

fn sensitivity(model: &str) {
    if !valgrind_here() {
        return;
    }
    let plains: Vec<(f64, Value)> = (0..REPEATS)
        .map(|i| measure(model, 0, &format!("plain-{i}")))
        .collect();
    // Calibrate: the extra work costs a + b * rounds per request (a: entering the loop);
    // two probes give a and b, and so the rounds that come closest to 5%.
    let plain = plains[0].0;
    let (low, high) = (10u32, 110u32);
    let cost = |r: u32| measure(model, r, &format!("probe-{r}")).0 - plain;
    let (c_low, c_high) = (cost(low), cost(high));
    let b = (c_high - c_low) / f64::from(high - low);
    let a = c_low - b * f64::from(low);
    assert!(b > 0.0, "{model}: --extra-work changed nothing");
    let rounds = ((SLOWDOWN * plain - a) / b).round().max(1.0) as u32;

    let slowed: Vec<(f64, Value)> = (0..REPEATS)
        .map(|i| measure(model, rounds, &format!("slow-{i}")))
        .collect();

    let (mut false_alarms, mut same_pairs) = (0, 0);
    for i in 0..REPEATS {
        for j in 0..REPEATS {
            if i != j {
                same_pairs += 1;
                false_alarms += usize::from(fails_gate(&plains[i].1, &plains[j].1));
            }
        }
    }
    let (mut detected, mut slow_pairs) = (0, 0);
    for p in &plains {
        for s in &slowed {
            slow_pairs += 1;
            detected += usize::from(fails_gate(&p.1, &s.1));
        }
    }
    let figures =
        |v: &[(f64, Value)]| -> Vec<String> { v.iter().map(|x| format!("{:.1}", x.0)).collect() };
    let report = format!(
        "{model}: plain {:?}, slowed by {rounds} rounds {:?} (+{:.1}%); detected {detected}/{slow_pairs}, false alarms {false_alarms}/{same_pairs}",
        figures(&plains),
        figures(&slowed),
        (slowed[0].0 / plains[0].0 - 1.0) * 100.0,
    );
    eprintln!("{report}");
    assert_eq!(detected, slow_pairs, "{report}");
    assert_eq!(false_alarms, 0, "{report}");
}

#[test]
fn gate_catches_a_5_percent_slowdown_in_an_event_loop() {
    sensitivity("epoll-et");
}

#[test]
fn gate_catches_a_5_percent_slowdown_in_thread_per_connection() {
    sensitivity("threads");
}

/// fork's count is the sum over its children: the slowdown happens only in them.
#[test]
fn gate_catches_a_5_percent_slowdown_in_forked_children() {
    sensitivity("fork");
}
