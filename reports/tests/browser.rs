//! The rendered report in headless Chromium at a laptop's width (1400 px) and a phone's
//! (420 px): the page must not scroll sideways (tables scroll inside their own box) and no
//! chart may be cut off or squashed.
//!
//! No webdriver: a wrapper page holds the report in an iframe exactly that wide (Chromium's
//! headless window is never narrower than 500 px, an iframe is) and a small script that
//! measures the report's layout once it has loaded and writes the verdict into the wrapper's
//! DOM, which `chromium --dump-dom` prints. The report itself stays free of script. Without
//! Chromium the test says so and passes, unless `CI` is set: there a missing browser fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPORT: &str = env!("CARGO_BIN_EXE_report");

/// Chromium has this long to load, lay out and dump a page.
const TIMEOUT: Duration = Duration::from_secs(90);

/// Measures the page in the iframe `page`: overflow of its document, and each SVG against its
/// viewport and the box that holds it (cut off), and against its own viewBox (squashed).
const PROBE: &str = r#"<script>
document.getElementById('page').addEventListener('load', () => {
  const doc = document.getElementById('page').contentDocument.documentElement;
  const problems = [];
  if (doc.scrollWidth > doc.clientWidth + 1)
    problems.push(`the page scrolls sideways: ${doc.scrollWidth} px wide in ${doc.clientWidth}`);
  const svgs = [...doc.querySelectorAll('svg')];
  svgs.forEach((svg, i) => {
    const r = svg.getBoundingClientRect();
    const name = `svg ${i} (${(svg.textContent || '').trim().split('\n')[0].slice(0, 60)})`;
    if (r.width < 1 || r.height < 1) { problems.push(`${name} has no size`); return; }
    const box = svg.parentElement.getBoundingClientRect();
    if (r.left < box.left - 1 || r.right > box.right + 1)
      problems.push(`${name} is cut off by its box: ${r.left}..${r.right} in ${box.left}..${box.right}`);
    if (r.left < -1 || r.right > doc.clientWidth + 1)
      problems.push(`${name} runs off the screen: ${r.left}..${r.right} in 0..${doc.clientWidth}`);
    const vb = svg.viewBox && svg.viewBox.baseVal;
    if (vb && vb.width > 0 && Math.abs(r.height / r.width - vb.height / vb.width) > 0.02)
      problems.push(`${name} is squashed: ${r.width}x${r.height} for a viewBox of ${vb.width}x${vb.height}`);
  });
  const out = document.createElement('pre');
  out.id = 'probe-result';
  out.textContent = JSON.stringify({ width: doc.clientWidth, svgs: svgs.length, problems });
  document.body.appendChild(out);
});
</script>"#;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium and a scratch directory for its pages and profile (removed at the end), or `None`
/// after saying the layout goes unchecked; under `CI` a missing Chromium fails instead.
fn chromium_or_skip() -> Option<(PathBuf, tempfile::TempDir)> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "Chromium is required under CI (Debian: apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED: no chromium on PATH (set CHROMIUM to its path): report.html's layout was not checked"
        );
    }
    let browser = found?;
    let scratch = tempfile::Builder::new()
        .prefix("reports-browser-")
        .tempdir()
        .unwrap();
    Some((browser, scratch))
}

struct Probe {
    width: u64,
    svgs: u64,
    problems: Vec<String>,
}

/// Opens `page` in Chromium at `width` px and returns what the probe found. Chromium runs in
/// a process group of its own with a timeout; the whole group is killed when it is done or
/// out of time, and the test checks that nothing of it is left.
fn probe(browser: &Path, scratch: &Path, page: &Path, width: u32) -> Probe {
    let wrapper = scratch.join(format!("probe-{width}.html"));
    std::fs::write(
        &wrapper,
        format!(
            "<!doctype html><html><body style=\"margin:0\"><iframe id=\"page\" src=\"file://{}\" style=\"border:0;width:{width}px;height:900px\"></iframe>{PROBE}</body></html>",
            page.display()
        ),
    )
    .unwrap();
    let dom = scratch.join(format!("dom-{width}.html"));
    let log = scratch.join(format!("chromium-{width}.log"));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            // The wrapper reads the iframe's document: both are file:// pages.
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--window-size={},1000", width.max(500) + 20))
        .arg(format!(
            "--user-data-dir={}",
            scratch.join(format!("profile-{width}")).display()
        ))
        .arg(format!("file://{}", wrapper.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", browser.display()));
    let group = child.id() as i32;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) with a negative pid signals the process group `spawn` made for
    // Chromium (process_group(0): its id is the child's pid); it touches no memory.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    let gone = Instant::now();
    // SAFETY: as above; signal 0 only asks whether any process of the group is left.
    while unsafe { libc::kill(-group, 0) } == 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "Chromium's processes outlived the kill of their group"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        panic!("Chromium at {width} px did not finish in {TIMEOUT:?}: {stderr}");
    };
    assert!(
        status.success(),
        "Chromium at {width} px: {status}: {stderr}"
    );
    let dom = std::fs::read_to_string(&dom).unwrap();
    let json = dom
        .split("<pre id=\"probe-result\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no probe result in the DOM at {width} px: {stderr}"));
    let json = json
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    Probe {
        width: v["width"].as_u64().unwrap(),
        svgs: v["svgs"].as_u64().unwrap(),
        problems: v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
    }
}

#[test]
fn the_report_fits_a_laptop_and_a_phone_screen() {
    let Some((browser, scratch)) = chromium_or_skip() else {
        return;
    };
    // `base`: every summary table and chart of a schema 1 run; `series`: the over-time and
    // fairness charts of schema 2.
    for fixture in ["base", "series"] {
        let run = scratch.path().join(fixture);
        std::fs::create_dir(&run).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        for file in ["results.jsonl", "env.json"] {
            std::fs::copy(source.join(file), run.join(file)).unwrap();
        }
        let out = Command::new(REPORT)
            .arg("render")
            .arg(&run)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page = run.join("report.html");
        let charts = std::fs::read_to_string(&page)
            .unwrap()
            .matches("<svg")
            .count() as u64;
        for width in [1400, 420] {
            let found = probe(&browser, &run, &page, width);
            assert_eq!(found.width, width as u64, "{fixture}: the viewport's width");
            assert_eq!(
                found.svgs, charts,
                "{fixture} at {width} px: every chart measured"
            );
            assert!(
                found.problems.is_empty(),
                "{fixture} at {width} px:\n{}",
                found.problems.join("\n")
            );
        }
    }
}

/// The probe can fail: a page made to overflow, with a chart cut off by its box, is caught.
#[test]
fn the_layout_probe_catches_overflow_and_a_cut_off_chart() {
    let Some((browser, scratch)) = chromium_or_skip() else {
        return;
    };
    let page = scratch.path().join("bad.html");
    std::fs::write(
        &page,
        "<!doctype html><html><body><div style=\"width:2000px\">wide</div><div style=\"width:100px;overflow:hidden\"><svg width=\"300\" height=\"100\" viewBox=\"0 0 300 100\"><text>cut</text></svg></div><svg style=\"width:100px;height:100px\" viewBox=\"0 0 300 100\"></svg></body></html>",
    )
    .unwrap();
    let found = probe(&browser, scratch.path(), &page, 420);
    let all = found.problems.join("\n");
    assert!(all.contains("the page scrolls sideways"), "{all}");
    assert!(all.contains("svg 0 (cut) is cut off by its box"), "{all}");
    assert!(all.contains("svg 1 () is squashed"), "{all}");
}
