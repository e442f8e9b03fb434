//! The report commands on small run directories committed under `tests/fixtures/`: `base`
//! (a real smoke run, three trials, schema 1), `slower20` (the same with every throughput 20%
//! lower and trials as tight), `slower3wide` (3% lower, with trials spread wide), `series` (a
//! real smoke run of schema 2: interval series and fairness); and damaged copies of them:
//! result lines of the wrong shape, a disk that fills while the report is written.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPORT: &str = env!("CARGO_BIN_EXE_report");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A scratch copy of a fixture, so commands that write into a run directory leave the
/// committed fixtures alone; removed when the test ends.
fn scratch(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("reports-{name}-"))
        .tempdir()
        .unwrap();
    for file in ["results.jsonl", "env.json"] {
        std::fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap();
    }
    dir
}

fn report(args: &[&str]) -> Output {
    Command::new(REPORT).args(args).output().unwrap()
}

#[test]
fn rendered_html_has_every_chart_with_every_model() {
    let scratch = scratch("base");
    let dir = scratch.path();
    let out = report(&["render", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        !html.contains("System calls per request, measured"),
        "no anatomy without anatomy.json"
    );
    let models = ["threads", "epoll-et"];
    let figures: Vec<&str> = html
        .split("<figure class=")
        .skip(1)
        .map(|f| f.split("</figure>").next().unwrap())
        .collect();
    // The smoke fixture has echo and http: throughput vs connections, the latency spectrum,
    // CPU per request and PSS per connection.
    assert!(figures.len() >= 4, "{} charts", figures.len());
    for figure in &figures {
        assert!(
            figure.contains("<svg") && figure.contains("viewBox="),
            "inline SVG that scales"
        );
        let texts: Vec<&str> = figure
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split('<').next()?.trim()))
            .collect();
        for model in models {
            assert!(texts.contains(&model), "a series for {model} in {texts:?}");
        }
        assert!(
            !figure.contains("NaN") && !figure.contains("inf"),
            "no NaN in a chart"
        );
    }
    // Small multiples: threads and epoll-et in their families' panels, on shared axes.
    let echo = figures
        .iter()
        .find(|f| f.contains("Echo throughput vs connections"))
        .expect("the echo chart");
    assert!(echo.starts_with("\"multiples\""), "{echo}");
    for panel in ["\nblocking\n", "\nreadiness\n"] {
        assert!(echo.contains(panel), "a panel {panel}");
    }
    let spectrum = figures
        .iter()
        .find(|f| f.contains("Latency spectrum"))
        .expect("the spectrum");
    for percentile in ["p50", "p90", "p99", "p99.9", "p99.99"] {
        assert!(
            spectrum.contains(&format!("\n{percentile}\n")),
            "the spectrum's axis names {percentile}"
        );
    }
    // Each model's swatch beside its name in the tables, the same as in the charts' legends.
    for model in models {
        assert!(
            html.contains(&format!("</svg>{model}</td>")),
            "a swatch beside {model}"
        );
    }
    for needle in [
        "Echo throughput vs connections",
        "Latency spectrum",
        "Server CPU per request",
        "memory per connection",
        "requests per second",
        "µs",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    assert!(
        html.contains("<h3>epoll-et</h3>") && html.contains("epoll_wait"),
        "the model's syscalls from MODELS.md"
    );
    let silent = html
        .split("<h2 id=\"silent\">")
        .nth(1)
        .expect("a section on silent clients")
        .split("<h2")
        .next()
        .unwrap();
    assert!(
        silent.contains("<b>Idle timeout</b>")
            && silent.contains("<th>PSS each</th>")
            && silent.contains("<td><code>fork</code></td>"),
        "the slowloris lesson, with MODELS.md's measured table: {silent}"
    );
    assert!(
        html.contains("Echo at c=10,size=128: median") && html.contains(", tier "),
        "sentences measured from the data: the median and its tier"
    );
    assert!(
        html.contains("Summary per scenario: tiers") && html.contains("Tiers: models share a tier"),
        "tiers and their rule"
    );
    assert!(
        html.contains("results.jsonl") && html.contains("kernel"),
        "environment and raw data"
    );
    assert!(!html.contains("<script"), "readable without JavaScript");
    for external in ["src=\"http", "href=\"http", "<link", "@import", "url("] {
        assert!(!html.contains(external), "no network access: {external}");
    }
}

/// `bench anatomy`'s JSON in the run directory: each model's section quotes its calls.
#[test]
fn the_report_shows_the_measured_anatomy_beside_each_model() {
    let scratch = scratch("base");
    let dir = scratch.path();
    let anatomy = serde_json::json!({
        "schema": 1, "kind": "iomodels-anatomy", "tool": "perf stat (syscall tracepoints)",
        "workload": {"size": 128, "connections": 50},
        "models": {
            "epoll-et": {"status": "ok", "connections": 50,
                "syscalls_per_request": {"recvfrom": 1.0, "sendto": 1.0, "epoll_wait": 0.08},
                "total_syscalls_per_request": 2.08, "context_switches_per_request": 0.04},
        }
    });
    std::fs::write(dir.join("anatomy.json"), anatomy.to_string()).unwrap();
    let out = report(&["render", dir.to_str().unwrap()]);
    assert!(out.status.success());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let section = html.split("<h3>epoll-et</h3>").nth(1).unwrap();
    let section = section.split("</section>").next().unwrap();
    assert!(
        section.contains("<code>recvfrom</code> 1.00, <code>sendto</code> 1.00, <code>epoll_wait</code> 0.08 (total 2.08; 0.04 context switches"),
        "{section}"
    );
    let threads = html.split("<h3>threads</h3>").nth(1).unwrap();
    assert!(!threads
        .split("</section>")
        .next()
        .unwrap()
        .contains("System calls per request, measured"));
}

#[test]
fn identical_runs_compare_as_no_change() {
    let scratch = scratch("base");
    let (a, b) = (fixture("base"), scratch.path());
    let out = report(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (table, tiers) = text
        .split_once("### Tiers, base and new")
        .expect("a tiers section");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| cell"))
        .collect();
    assert!(rows.len() >= 4, "{table}");
    assert!(rows.iter().all(|r| r.ends_with("| no change |")), "{table}");
    let tier_rows: Vec<&str> = tiers
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| cell"))
        .collect();
    assert!(tier_rows.len() >= 4, "{tiers}");
    assert!(
        tier_rows.iter().all(|r| r.ends_with("| none |")),
        "no model moved: {tiers}"
    );
    assert!(b.join("compare.html").exists());
}

#[test]
fn a_twenty_percent_slower_run_is_a_regression() {
    let scratch = scratch("slower20");
    let (a, b) = (fixture("base"), scratch.path());
    let out = report(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--metric",
        "throughput",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let regressed: Vec<&str> = table.lines().filter(|l| l.contains("REGRESSION")).collect();
    assert!(!regressed.is_empty(), "{table}");
    assert!(
        regressed
            .iter()
            .any(|l| l.contains("echo/epoll-et/") && l.contains("-20.0%")),
        "{table}"
    );
    assert!(std::fs::read_to_string(b.join("compare.html"))
        .unwrap()
        .contains("REGRESSION"));
}

#[test]
fn a_three_percent_slower_noisy_run_is_within_noise() {
    let scratch = scratch("slower3wide");
    let (a, b) = (fixture("base"), scratch.path());
    let out = report(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--metric",
        "throughput",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(
        table.contains("within noise") && !table.contains("REGRESSION"),
        "{table}"
    );
}

#[test]
fn exports_parse() {
    let dir = fixture("base");
    let out = report(&["export", dir.to_str().unwrap(), "--format", "csv"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    // Fields with commas are quoted: count commas outside quotes.
    let fields = |line: &str| {
        line.chars()
            .fold((1, false), |(n, quoted), c| match c {
                '"' => (n, !quoted),
                ',' if !quoted => (n + 1, quoted),
                _ => (n, quoted),
            })
            .0
    };
    let columns = fields(lines[0]);
    assert_eq!(columns, reports::export::CSV_COLUMNS.len());
    assert_eq!(
        lines.len() - 1,
        std::fs::read_to_string(dir.join("results.jsonl"))
            .unwrap()
            .lines()
            .count()
    );
    assert!(lines[1..].iter().all(|l| fields(l) == columns), "{csv}");

    let out = report(&["export", dir.to_str().unwrap(), "--format", "bmf"]);
    let bmf: serde_json::Value = serde_json::from_slice(&out.stdout).expect("BMF is JSON");
    let cell = &bmf["echo/epoll-et/c=10,size=128"];
    for measure in [
        "throughput",
        "latency_p99",
        "cpu_per_request",
        "pss_per_conn",
    ] {
        let m = &cell[measure];
        let (v, lo, hi) = (
            m["value"].as_f64().unwrap(),
            m["lower_value"].as_f64().unwrap(),
            m["upper_value"].as_f64().unwrap(),
        );
        assert!(lo <= v && v <= hi, "{measure}: {m}");
    }
    let out = report(&["export", dir.to_str().unwrap(), "--format", "markdown"]);
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.contains("| tier | model |") && md.contains("epoll-et"),
        "{md}"
    );
}

#[test]
fn result_lines_of_the_wrong_shape_are_skipped_or_refused_naming_the_line() {
    let good: Vec<String> = std::fs::read_to_string(fixture("base").join("results.jsonl"))
        .unwrap()
        .lines()
        .take(2)
        .map(String::from)
        .collect();
    let mut no_trial: serde_json::Value = serde_json::from_str(&good[0]).unwrap();
    no_trial.as_object_mut().unwrap().remove("trial");
    let mut bad_status: serde_json::Value = serde_json::from_str(&good[0]).unwrap();
    bad_status["status"] = "fine".into();
    let mut bad_series: serde_json::Value = serde_json::from_str(&good[0]).unwrap();
    bad_series["schema"] = 2.into();
    bad_series["load"]["series"] = serde_json::json!({"interval_ms": "100"});
    let cases = [
        ("[]".to_string(), "an array, not a result object"),
        (
            r#"{"x":1}"#.to_string(),
            "no \"schema\": not a result line written by bench",
        ),
        (
            r#"{"schema":99}"#.to_string(),
            "schema 99 is newer than this report understands (2)",
        ),
        (
            r#"{"schema":"1"}"#.to_string(),
            "schema \"1\" is not a version",
        ),
        (no_trial.to_string(), "lacks trial"),
        (
            bad_series.to_string(),
            "load.series has no interval_ms above 0 and intervals array",
        ),
        (
            bad_status.to_string(),
            "status \"fine\" is none of ok, failed, unsupported",
        ),
        (good[0][..40].to_string(), "not JSON"),
    ];
    for (line, expected) in cases {
        let scratch = scratch("base");
        let dir = scratch.path();
        let results = dir.join("results.jsonl");
        // The damaged line in the middle: two good lines before it, one after.
        std::fs::write(
            &results,
            format!("{}\n{}\n{line}\n{}\n", good[0], good[1], good[0]),
        )
        .unwrap();
        let named = format!("{} line 3: {expected}", results.display());
        for command in [&["export", "--format", "csv"][..], &["render"][..]] {
            // By default the line is skipped with a warning naming it ...
            let mut args = vec![command[0], dir.to_str().unwrap()];
            args.extend(&command[1..]);
            let out = report(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{line}: {stderr}");
            assert!(
                stderr.contains(&format!("warning: {named}")),
                "{line}: {stderr}"
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!stdout.contains(",?"), "{line}: no rows of `?`: {stdout}");
            if command[0] == "export" {
                assert_eq!(
                    stdout.lines().count(),
                    1 + 3,
                    "a header and the 3 good lines"
                );
            } else {
                let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
                assert!(html.contains("1 damaged line of results.jsonl skipped"));
            }
            // ... and --strict refuses the run, naming it.
            args.push("--strict");
            let out = report(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
            assert!(out.stdout.is_empty(), "{line}: nothing printed");
            assert!(stderr.contains(&named), "{line}: {stderr}");
        }
    }
}

/// A crash or a full disk in the middle of a write leaves the last line cut short: the run
/// is read without it, and the warning says what happened.
#[test]
fn a_last_line_cut_short_is_skipped_with_a_warning() {
    let scratch = scratch("base");
    let dir = scratch.path();
    let results = dir.join("results.jsonl");
    let text = std::fs::read_to_string(&results).unwrap();
    let lines = text.lines().count();
    let cut = &text[..text.len() - 30];
    std::fs::write(&results, cut).unwrap();
    let out = report(&["export", dir.to_str().unwrap(), "--format", "csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("line {lines}: cut short")),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), lines);
}

#[test]
fn a_full_disk_leaves_the_previous_report_whole_and_names_the_file() {
    let scratch = scratch("base");
    let dir = scratch.path();
    assert!(report(&["render", dir.to_str().unwrap()]).status.success());
    let report_html = dir.join("report.html");
    let before = std::fs::read(&report_html).unwrap();
    assert!(before.len() > 8192, "a report larger than the limit below");
    // The disk "fills" at 4 KiB: with RLIMIT_FSIZE, a write past it fails with EFBIG (once
    // SIGXFSZ, which would kill the process, is ignored).
    let mut command = Command::new(REPORT);
    command.args(["render", dir.to_str().unwrap()]);
    // SAFETY: signal and setrlimit only change the child's own state, before exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: File too large", report_html.display())),
        "{stderr}"
    );
    assert!(
        std::fs::read(&report_html).unwrap() == before,
        "the previous report.html is left whole"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["env.json", "report.html", "results.jsonl"],
        "no leftovers"
    );
}

/// The report, the Markdown export and `report compare` show the same tiers: each group's
/// tiers in words appear in all three.
#[test]
fn every_view_shows_the_same_tiers() {
    let scratch = scratch("slower3wide");
    let dir = scratch.path();
    assert!(report(&["render", dir.to_str().unwrap()]).status.success());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let md = String::from_utf8(
        report(&["export", dir.to_str().unwrap(), "--format", "markdown"]).stdout,
    )
    .unwrap();
    let compare = String::from_utf8(
        report(&[
            "compare",
            fixture("base").to_str().unwrap(),
            dir.to_str().unwrap(),
        ])
        .stdout,
    )
    .unwrap();
    let data = reports::run::Run::load(dir).unwrap();
    let groups = reports::tiers::judge(&data.lines);
    assert!(groups.len() >= 2);
    for g in &groups {
        let words = g.headline.words();
        assert!(md.contains(&words), "export: {words}\n{md}");
        assert!(compare.contains(&words), "compare: {words}\n{compare}");
        let escaped = reports::render::escape(&words);
        assert!(html.contains(&escaped), "report: {escaped}");
    }
}

#[test]
fn over_time_and_fairness_charts_come_from_schema_2_lines_only() {
    // The smoke run of schema 2, plus a pool that served 4 of its 10 connections and stalled
    // once (made from one of its lines).
    let scratch = scratch("series");
    let dir = scratch.path();
    let text = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    let echo = text.lines().next().unwrap();
    let mut pool: serde_json::Value = serde_json::from_str(echo).unwrap();
    pool["model"] = "prethreaded".into();
    pool["cell"] = "echo/prethreaded/c=10,size=128".into();
    pool["load"]["fairness"]["served"] = 4.into();
    pool["load"]["fairness"]["jain"] = 0.4.into();
    let intervals = pool["load"]["series"]["intervals"].as_array_mut().unwrap();
    assert_eq!(intervals.len(), 3, "0.3 s in 100 ms intervals");
    intervals[1]["requests"] = 0.into();
    std::fs::write(dir.join("results.jsonl"), format!("{text}{pool}\n")).unwrap();
    let out = report(&["render", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let section = |id: &str| {
        html.split(&format!("<h2 id=\"{id}\">"))
            .nth(1)
            .unwrap_or_else(|| panic!("no section {id}"))
            .split("<h2")
            .next()
            .unwrap()
            .to_string()
    };
    let over_time = section("over-time");
    assert!(
        over_time.contains("echo <code>c=10,size=128</code>"),
        "the echo cell"
    );
    for chart in ["Throughput over time", "p99 latency over time"] {
        assert!(
            over_time.contains(&format!("<figcaption>{chart}</figcaption>")),
            "{chart}"
        );
    }
    assert_eq!(
        over_time.matches("<figure class=\"multiples\">").count(),
        2,
        "throughput and p99"
    );
    assert_eq!(
        over_time.matches("\nblocking\n").count() + over_time.matches("\nreadiness\n").count(),
        4,
        "two families, a panel each in both charts"
    );
    assert!(
        over_time.contains("<b>prethreaded</b> stalled 1 time, longest 100 ms"),
        "{over_time}"
    );
    let fairness = section("fairness");
    assert_eq!(
        fairness.matches("<figure class=\"bars\"><svg").count(),
        2,
        "echo and http"
    );
    assert!(fairness.contains("Fairness: echo c=10,size=128"));
    assert!(fairness.contains("at most 4 of 10 served"), "{fairness}");
    assert!(fairness.contains("0.40"), "prethreaded's index");
    for model in ["threads", "epoll-et", "prethreaded"] {
        assert!(fairness.contains(&format!("\n{model}\n")), "{model}");
    }
    // A run of schema 1 has neither section, and renders as before.
    let old = scratch_render("base");
    assert!(!old.contains("id=\"over-time\"") && !old.contains("id=\"fairness\""));
}

fn scratch_render(name: &str) -> String {
    let scratch = scratch(name);
    let out = report(&["render", scratch.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(scratch.path().join("report.html")).unwrap()
}
