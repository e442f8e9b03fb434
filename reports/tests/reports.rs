//! The report commands on small run directories committed under `tests/fixtures/`: `base`
//! (a real smoke run, three trials), `slower20` (the same with every throughput 20% lower and
//! trials as tight), `slower3wide` (3% lower, with trials spread wide).

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
    let models = ["threads", "epoll-et"];
    let figures: Vec<&str> = html
        .split("<figure>")
        .skip(1)
        .map(|f| f.split("</figure>").next().unwrap())
        .collect();
    // The smoke fixture has echo and http: throughput vs connections, the latency spectrum,
    // CPU per request and PSS per connection.
    assert!(figures.len() >= 4, "{} charts", figures.len());
    for figure in &figures {
        assert!(figure.starts_with("<svg"), "inline SVG");
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
