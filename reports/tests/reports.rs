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

/// `report render DIR --lang LANG`, checked to succeed; the page it wrote.
fn render_page(dir: &Path, lang: &str) -> String {
    let out = report(&["render", dir.to_str().unwrap(), "--lang", lang]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("report.html")).unwrap()
}

/// Adds copies of the run's echo lines at more connection counts, so that the echo chart
/// has a curve to draw.
fn add_connection_counts(dir: &Path, counts: &[u64]) {
    let path = dir.join("results.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = text.clone();
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        if line["scenario"] != "echo" {
            continue;
        }
        for &c in counts {
            let mut copy = line.clone();
            copy["params"]["connections"] = c.into();
            copy["cell"] =
                format!("echo/{}/c={c},size=128", line["model"].as_str().unwrap()).into();
            out.push_str(&copy.to_string());
            out.push('\n');
        }
    }
    std::fs::write(&path, out).unwrap();
}

#[test]
fn a_chart_with_fewer_than_three_points_is_left_out_with_a_sentence() {
    // The base fixture measured echo at one connection count: no curve to draw.
    let html = scratch_render("base");
    assert!(
        html.contains("<p class=\"left-out\"><strong>Echo throughput vs connections, 128-byte messages</strong>: not drawn. A curve needs at least 3 connection counts; this run measured 10."),
        "{}",
        &html[html.find("id=\"charts\"").unwrap()..][..600]
    );
    assert!(
        !html.contains("<figcaption>Echo throughput vs connections"),
        "never drawn as a dot"
    );
    // Two more counts make it a curve.
    let scratch = scratch("base");
    add_connection_counts(scratch.path(), &[100, 1000]);
    assert!(report(&["render", scratch.path().to_str().unwrap()])
        .status
        .success());
    let html = std::fs::read_to_string(scratch.path().join("report.html")).unwrap();
    assert!(html.contains("<figcaption>Echo throughput vs connections, 128-byte messages"));
    assert!(!html.contains("class=\"left-out\"><strong>Echo"));
}

#[test]
fn rendered_html_has_every_chart_with_every_model() {
    let scratch = scratch("base");
    let dir = scratch.path();
    add_connection_counts(dir, &[100, 1000]);
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
    let threads = html.split("<h3>threads</h3>").nth(1).unwrap();
    assert!(
        threads.contains(
            "echo: c=10,size=128 78.84k req/s (median of 3), tier 2 of 2, 0.69x the best"
        ),
        "sentences measured from the data: the median and its tier: {}",
        &threads[..400]
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
    let over_time = section(&html, "over-time");
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
    let fairness = section(&html, "fairness");
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
    // Trials of two intervals (the quick suite's quarter second) show no stall or warm-up:
    // the section says so instead of drawing two points a line.
    let short: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(iv) = v["load"]["series"]["intervals"].as_array_mut() {
                iv.truncate(2);
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(dir.join("results.jsonl"), short).unwrap();
    assert!(report(&["render", dir.to_str().unwrap()]).status.success());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let over_time = section(&html, "over-time");
    assert!(
        over_time.contains("Not drawn: this run's trials measured 2 intervals of 100 ms"),
        "{over_time}"
    );
    assert!(!over_time.contains("<figure"), "{over_time}");
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

/// A run that tells a story, made from the base fixture's lines with the figures changed: in
/// echo c=10 `epoll-lt` and `epoll-et` cannot be told apart; at 10 100 connections `threads`
/// meets its `--max-conns` cap and `fork` forks its way up; with 2000 idle connections
/// `poll` falls while `epoll-et` holds, and `select` refuses what passes FD_SETSIZE. Three trials each, the middle one the
/// median, the first the best (so a figure from the best trial would show).
fn story() -> tempfile::TempDir {
    let scratch = scratch("base");
    let dir = scratch.path();
    let text = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    let template: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut add = |scenario: &str,
                   params: serde_json::Value,
                   model: &str,
                   rps: f64,
                   edit: &dyn Fn(&mut serde_json::Value)| {
        let name: Vec<String> = params
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let short = match k.as_str() {
                    "connections" => "c",
                    other => other,
                };
                format!("{short}={v}")
            })
            .collect();
        for (trial, factor) in [(1, 1.02), (2, 1.0), (3, 0.99)] {
            let mut line = template.clone();
            line["scenario"] = scenario.into();
            line["model"] = model.into();
            line["cell"] = format!("{scenario}/{model}/{}", name.join(",")).into();
            line["params"] = params.clone();
            line["trial"] = trial.into();
            line["load"]["throughput_rps"] = (rps * factor).into();
            line["server"]["cpu_us_per_request"] = (1e6 / rps * factor).into();
            edit(&mut line);
            lines.push(line.to_string());
        }
    };
    // Within the 3% noise floor of epoll-et's 115.0k: a tie.
    add(
        "echo",
        serde_json::json!({"connections": 10, "size": 128}),
        "epoll-lt",
        116_000.0,
        &|_| {},
    );
    let c10k = serde_json::json!({"connections": 10100, "size": 128});
    add("echo", c10k.clone(), "epoll-et", 90_000.0, &|l| {
        l["load"]["connections"] = 10100.into()
    });
    add("echo", c10k.clone(), "threads", 40_000.0, &|l| {
        l["load"]["connections"] = 10100.into();
        l["load"]["errors"]["reset"] = (21310 - 10 * (l["trial"].as_u64().unwrap() - 1)).into();
    });
    add("echo", c10k, "fork", 20_000.0, &|l| {
        l["load"]["connections"] = 10100.into();
        l["load"]["starved_connections"] = 2634.into();
        l["load"]["unconnected_connections"] = 2634.into();
        l["server"]["peak_processes"] = 7421.into();
    });
    for (idle, figures) in [
        (
            0,
            [
                ("epoll-et", 165_000.0),
                ("poll", 150_000.0),
                ("select", 140_000.0),
            ],
        ),
        (
            2000,
            [
                ("epoll-et", 163_000.0),
                ("poll", 23_000.0),
                ("select", 21_000.0),
            ],
        ),
    ] {
        for (model, rps) in figures {
            let params = serde_json::json!({"active": 10, "idle": idle, "size": 128});
            // At 2000 idle, select refuses the descriptors past FD_SETSIZE, as it does.
            add("idle", params, model, rps, &|l| {
                if model == "select" && idle == 2000 {
                    l["load"]["connections"] = 2010.into();
                    l["load"]["errors"]["reset"] = 7686.into();
                }
            });
        }
    }
    std::fs::write(dir.join("results.jsonl"), lines.join("\n") + "\n").unwrap();
    scratch
}

fn section(html: &str, id: &str) -> String {
    html.split(&format!("<h2 id=\"{id}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no section {id}"))
        .split("<h2")
        .next()
        .unwrap()
        .to_string()
}

/// The verdict opens the page: per scenario who wins, by how much, what ties, and why, from
/// medians; a capped model is described as capped, with its numbers.
#[test]
fn the_verdict_says_who_wins_what_ties_and_why_in_words() {
    let story = story();
    let out = report(&["render", story.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(story.path().join("report.html")).unwrap();
    let first_h2 = html.split("<h2 id=\"").nth(1).unwrap();
    assert!(first_h2.starts_with("verdict\""), "the verdict comes first");
    let verdict = section(&html, "verdict");
    let echo = verdict
        .split("<b>echo</b> <code>")
        .nth(1)
        .expect("an echo verdict");
    // The most demanding echo cell leads; the tie of c=10 is said where it is judged.
    assert!(echo.starts_with("c=10100,size=128</code>"), "{echo}");
    assert!(
        echo.contains("epoll-et wins with 90.00k req/s (median of 3 trials), 2.25x the next tier's best, threads at 40.00k req/s."),
        "{echo}"
    );
    assert!(
        echo.contains("threads at 10100 connections (echo c=10100,size=128) closed 21310 of them right after accept, seen by the client as resets: that is its --max-conns cap of 10000 live connections working as designed, not a failure."),
        "the cap, with the trial's count: {echo}"
    );
    assert!(
        echo.contains("fork left 2634 of 10100 connections never served in its worst trial (echo c=10100,size=128) while it forked its way up to 7421 processes"),
        "{echo}"
    );
    assert!(
        echo.contains("<li>At c=10,size=128, epoll-lt and epoll-et tie for first: the data cannot tell them apart.</li>"),
        "the tie of the other echo cell, in words: {echo}"
    );
    let summary = section(&html, "summary");
    assert!(
        summary.contains("epoll-lt, epoll-et tie for first"),
        "the tie of echo c=10 in words"
    );
    let idle = verdict
        .split("<b>idle</b>")
        .nth(1)
        .expect("an idle verdict");
    assert!(
        idle.contains("The throughput of poll falls with idle connections because every wait scans all of them: poll 23.00k req/s at 2000 idle (each did better at 0) vs 163.0k for epoll-et."),
        "select over FD_SETSIZE is its ceiling's, not the scan's: {idle}"
    );
    assert!(
        idle.contains("select closed 7686 connections at accept (idle active=10,idle=2000,size=128, 2010 connections): descriptors from FD_SETSIZE (1024) up cannot go in its bitmaps"),
        "{idle}"
    );
    // Medians, never the best trial (2% above the median in this run).
    assert!(
        !verdict.contains("91.80k") && !verdict.contains("166.2k"),
        "{verdict}"
    );
    // An all-tie in words: c=10 alone with two trials each would be "fewer than 3 trials".
    let models = section(&html, "models");
    let section_of = |model: &str| {
        models
            .split(&format!("<h3>{model}</h3>"))
            .nth(1)
            .unwrap()
            .split("</section>")
            .next()
            .unwrap()
            .to_string()
    };
    let threads = section_of("threads");
    assert!(
        threads.contains("working as designed, not a failure") && !threads.contains("cells failed"),
        "{threads}"
    );
    let (lt, et) = (section_of("epoll-lt"), section_of("epoll-et"));
    assert!(
        lt.contains("level-triggered") && !lt.contains("EPOLLIN|EPOLLET"),
        "{lt}"
    );
    assert!(
        et.contains("EPOLLIN|EPOLLET") && et.contains("EAGAIN"),
        "{et}"
    );
    assert_ne!(
        lt.split("<pre>").nth(1),
        et.split("<pre>").nth(1),
        "each epoll mode has its own text"
    );
}

/// A model that limits itself in every cell of a sweep is described once per scenario, from
/// its largest count, not once per cell.
#[test]
fn a_limit_by_design_is_said_once_per_scenario() {
    let scratch = scratch("base");
    let path = scratch.path().join("results.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let template: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut out = text.clone();
    for c in [10u64, 100, 1000] {
        for trial in 1..=3u64 {
            let mut line = template.clone();
            line["model"] = "iterative".into();
            line["cell"] = format!("echo/iterative/c={c},size=128").into();
            line["params"]["connections"] = c.into();
            line["trial"] = trial.into();
            line["load"]["connections"] = c.into();
            line["load"]["starved_connections"] = (c - 1).into();
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    std::fs::write(&path, out).unwrap();
    assert!(report(&["render", scratch.path().to_str().unwrap()])
        .status
        .success());
    let html = std::fs::read_to_string(scratch.path().join("report.html")).unwrap();
    let verdict = section(&html, "verdict");
    assert_eq!(
        verdict
            .matches("iterative serves one client at a time")
            .count(),
        1,
        "{verdict}"
    );
    assert!(verdict.contains("999 of 1000 connections"), "{verdict}");
}

/// With fewer than 3 trials nothing separates, and the verdict says so in words.
#[test]
fn an_all_tie_is_stated_in_words() {
    let scratch = scratch("series");
    let out = report(&["render", scratch.path().to_str().unwrap()]);
    assert!(out.status.success());
    let html = std::fs::read_to_string(scratch.path().join("report.html")).unwrap();
    let verdict = section(&html, "verdict");
    assert!(
        verdict.contains("All 2 models tie (epoll-et and threads: ")
            && verdict.contains("fewer than 3 trials cannot separate them."),
        "{verdict}"
    );
}

/// `--lang zh`: the same page in Chinese, numbers and model names unchanged; an unknown
/// language is refused.
#[test]
fn the_page_renders_in_chinese_with_the_same_numbers() {
    let story = story();
    let dir = story.path().to_str().unwrap();
    assert!(report(&["render", dir]).status.success());
    let en = std::fs::read_to_string(story.path().join("report.html")).unwrap();
    let out = report(&["render", dir, "--lang", "zh"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zh = std::fs::read_to_string(story.path().join("report.html")).unwrap();
    assert!(zh.starts_with("<!doctype html><html lang=\"zh\">"));
    assert!(zh.contains("Noto Sans CJK SC"), "a CJK-capable font list");
    for heading in [
        "结论：逐个场景",
        "各场景汇总：梯队",
        "各模型：做了什么，本次运行测得什么",
        "<th>梯队</th><th>模型</th>",
        // The charts' titles and axes come from the same table.
        "延迟分布，",
        "百分位（对数刻度",
        // The tiers in words under each table, labelled in Chinese.
        "<p class=\"words\"><b>吞吐量</b>：",
    ] {
        assert!(zh.contains(heading), "{heading}");
    }
    assert!(
        !zh.contains("Latency spectrum"),
        "no English chart title left"
    );
    let verdict = section(&zh, "verdict");
    assert!(verdict.contains("epoll-et 胜出，90.00k req/s（3 次试验的中位数），是下一梯队最优者 threads（40.00k req/s）的 2.25 倍。"), "{verdict}");
    assert!(
        verdict.contains("--max-conns 上限（10000 个活动连接）按设计生效，不是故障"),
        "{verdict}"
    );
    // The same figures as the English page: every number the English verdict quotes.
    let numbers = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'k'))
            .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    };
    let en_numbers = numbers(&section(&en, "verdict"));
    assert!(en_numbers.len() > 20);
    for n in &en_numbers {
        assert!(
            verdict.contains(n.as_str()),
            "{n} missing from the Chinese verdict"
        );
    }
    let et = zh.split("<h3>epoll-et</h3>").nth(1).unwrap();
    assert!(
        et.split("</section>").next().unwrap().contains("边沿触发"),
        "MODELS.zh.md's text"
    );
    for args in [
        vec!["render", dir, "--lang", "fr"],
        vec!["compare", dir, dir, "--lang", "xx"],
    ] {
        let out = report(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown language"));
    }
}

/// The notes of the summary tables (a noisy trial and its reason, a precision target missed,
/// connections never served, a stall) and the stalls "Over time" names come from the language
/// tables: in Chinese on the Chinese page, in English (as the terminal says them) on the
/// English one.
#[test]
fn the_notes_and_stalls_are_said_in_the_page_language() {
    let scratch = scratch("series");
    let dir = scratch.path();
    let text = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // epoll-et's echo trial: loadgen saturated while the server's CPUs had time to spare,
    // three connections never served, and a stall of one interval.
    let et = &mut lines[1];
    assert_eq!(et["cell"], "echo/epoll-et/c=10,size=128");
    et["noise"] = serde_json::json!({
        "server_cpus": {"busy": 0.78, "steal": 0.0, "foreign": 0.0},
        "load_cpus": {"busy": 1.0, "steal": 0.0, "foreign": 0.0},
        "loadgen_cpu": 0.96});
    et["load"]["starved_connections"] = 3.into();
    et["load"]["series"]["intervals"][1]["requests"] = 0.into();
    let jsonl: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("results.jsonl"), jsonl).unwrap();
    let precision = serde_json::json!({"target": 0.05, "min_trials": 3, "max_trials": 6,
        "cells": {"echo/epoll-et/c=10,size=128": {"trials": 6, "precision": 0.17, "outcome": "max_trials"}}});
    std::fs::write(dir.join("precision.json"), precision.to_string()).unwrap();
    let render = |lang: &str| render_page(dir, lang);
    let english = [
        "3 connections never served; ⚠ 1 of 1 trials noisy: loadgen saturated (96% of its CPUs) while the server's CPUs were 78% busy; ± 17% after 6 trials, short of the 5% target (max trials); stalled 1 time, longest 100 ms",
        "<b>epoll-et</b> stalled 1 time, longest 100 ms",
    ];
    let en = render("en");
    for needle in english {
        assert!(en.contains(needle), "{needle}");
    }
    let zh = render("zh");
    let summary = section(&zh, "summary");
    assert!(
        summary.contains("3 个连接始终未被服务；⚠ 1 次试验中有 1 次被判为有噪声：loadgen 饱和（占用了其 CPU 的 96%），而服务器所在 CPU 只有 78% 的时间在忙；6 次试验后精度为 ±17%，未达到 ±5% 的目标（试验次数已达上限）；停顿 1 次，最长 100 毫秒"),
        "{summary}"
    );
    let over_time = section(&zh, "over-time");
    assert!(
        over_time.contains("<b>epoll-et</b> 停顿 1 次，最长 100 毫秒"),
        "{over_time}"
    );
    for phrase in [
        "never served",
        "trials noisy",
        "loadgen saturated",
        "short of the",
        "max trials",
        "stalled",
    ] {
        assert!(
            !zh.contains(phrase),
            "English left on the Chinese page: {phrase}"
        );
    }
}

/// compare.html names both runs, lists what differs in their environments, and draws each
/// change with its interval, regressions first.
#[test]
fn compare_html_names_both_runs_and_draws_the_forest_plot() {
    let scratch = scratch("slower20");
    let new = scratch.path();
    let mut env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(new.join("env.json")).unwrap()).unwrap();
    env["kernel"] = "6.19.0-test".into();
    env["git_commit"] = "0123456789abcdef0123456789abcdef01234567".into();
    env["git_dirty"] = false.into();
    env["started_unix_s"] = 1_700_000_000.into();
    std::fs::write(new.join("env.json"), env.to_string()).unwrap();
    let out = report(&[
        "compare",
        fixture("base").to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let html = std::fs::read_to_string(new.join("compare.html")).unwrap();
    for needle in [
        "<td><code>99a591833d46</code></td><td>yes (dirty)</td>",
        "<td><code>0123456789ab</code></td><td>no (clean)</td>",
        "2023-11-14 22:13:20 UTC",
        "<tr><th>kernel</th><td><code>6.18.44-fc-v769</code></td><td><code>6.19.0-test</code></td></tr>",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    assert!(
        !html.contains("<tr><th>cpu_model</th>"),
        "only what differs"
    );
    let forest = html
        .split("<figure class=\"forest\">")
        .nth(1)
        .expect("a forest plot")
        .split("</figure>")
        .next()
        .unwrap();
    assert!(forest.starts_with("<svg"));
    let rows: Vec<&str> = html
        .split("<tr class=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    let first_other = rows
        .iter()
        .position(|c| *c != "REGRESSION")
        .unwrap_or(rows.len());
    assert!(
        first_other > 0 && rows[first_other..].iter().all(|c| *c != "REGRESSION"),
        "regressions first: {rows:?}"
    );
    // Each row's label in the plot, in the table's order from the top (plotters writes the
    // labels bottom up).
    let cells: Vec<&str> = html
        .split("<tr class=\"")
        .skip(1)
        .map(|r| r.split("<td>").nth(1).unwrap().split('<').next().unwrap())
        .collect();
    assert_eq!(
        forest.matches("<circle").count(),
        cells.len(),
        "a dot per row"
    );
    let mut at = 0;
    for cell in cells.into_iter().rev() {
        let found = forest[at..]
            .find(cell)
            .unwrap_or_else(|| panic!("{cell} in order"));
        at += found;
    }
}

/// The machine check bench runs before a run (`env.json` `pauses`) is said in words on the
/// page, in each language; a run without one (from before it existed) says nothing.
#[test]
fn the_machine_check_is_said_in_words() {
    let render = |pauses: serde_json::Value, lang: &str| {
        let scratch = scratch("base");
        let dir = scratch.path();
        let path = dir.join("env.json");
        let mut env: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        env["pauses"] = pauses;
        std::fs::write(&path, env.to_string()).unwrap();
        render_page(dir, lang)
    };
    let paused = serde_json::json!({"window_s": 1.0, "cpus": [
        {"cpu": 0, "over_100us": 4, "over_1ms": 0, "longest_us": 300, "paused_us": 900},
        {"cpu": 1, "over_100us": 9, "over_1ms": 3, "longest_us": 4100, "paused_us": 9000}]});
    let html = render(paused.clone(), "en");
    assert!(
        html.contains("a CPU stopped for 1 ms or more 3 times (longest 4.1 ms)"),
        "{}",
        &html[html.find("id=\"summary\"").unwrap()..][..800]
    );
    assert!(render(paused, "zh").contains("停顿 1 毫秒以上共 3 次（最长 4.1 毫秒）"));
    let quiet = serde_json::json!({"window_s": 1.0, "cpus": [
        {"cpu": 0, "over_100us": 1, "over_1ms": 0, "longest_us": 240, "paused_us": 240}]});
    assert!(render(quiet, "en").contains("no CPU stopped for 1 ms or more (longest 240 µs)"));
    assert!(!render(serde_json::Value::Null, "en").contains("Machine check"));
}
