//! A run directory as `bench` leaves it: `results.jsonl` (one line per cell, each checked on
//! read) and `env.json`; and how files in it are written (whole or not at all).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The newest version of the result line this crate understands (`"schema"` in each line).
/// 2 added the load's `series` and `fairness` (absent from lines of schema 1, which read as
/// before).
pub const SCHEMA: u64 = 2;

pub struct Run {
    pub dir: PathBuf,
    pub env: Value,
    /// Every usable line of `results.jsonl`, each checked by [`parse_line`].
    pub lines: Vec<Value>,
    /// Lines that could not be used, skipped (see [`Run::load`]).
    pub damaged: Vec<LineError>,
}

/// Why one line of `results.jsonl` cannot be used. A value, not an abort, so that a reader
/// may decide what a damaged line costs: [`Run::load`] skips it and says so,
/// [`Run::load_strict`] refuses the run and names the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based, as an editor counts.
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

/// Every non-blank line of a `results.jsonl`, with its number, parsed and checked. The outer
/// error is the file's (it cannot be read); the inner ones are each line's.
pub fn read_lines(path: &Path) -> Result<Vec<Result<Value, LineError>>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|problem| LineError {
                line: i + 1,
                problem,
            })
        })
        .collect())
}

/// One result line as `bench` writes it (DESIGN.md section 4): a JSON object of schema
/// [`SCHEMA`] or older, with the fields every report reads, of the right types. An `ok` line
/// also has its `load` and `server` objects.
pub fn parse_line(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde counts lines within this one line: keep only the column.
        let message = e.to_string();
        let cause = message
            .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
            .unwrap_or(&message);
        format!("not JSON ({cause} at column {})", e.column())
    })?;
    let Some(object) = value.as_object() else {
        return Err(format!("{}, not a result object", kind(&value)));
    };
    match object.get("schema") {
        None => return Err("no \"schema\": not a result line written by bench".into()),
        Some(v) => match v.as_u64() {
            Some(n) if n > SCHEMA => {
                return Err(format!(
                    "schema {n} is newer than this report understands ({SCHEMA})"
                ))
            }
            Some(n) if n >= 1 => {}
            _ => return Err(format!("schema {v} is not a version (1 to {SCHEMA})")),
        },
    }
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut check =
        |field: &'static str, ok: fn(&Value) -> bool, what: &str| match object.get(field) {
            None => missing.push(field),
            Some(v) if !ok(v) => wrong.push(format!("{field} is {}, not {what}", kind(v))),
            Some(_) => {}
        };
    for field in ["run", "cell", "model", "protocol", "scenario", "status"] {
        check(field, Value::is_string, "a string");
    }
    check(
        "trial",
        |v| v.as_u64().is_some_and(|t| t >= 1),
        "a trial number",
    );
    check("params", Value::is_object, "an object");
    if object.get("status").and_then(Value::as_str) == Some("ok") {
        check("load", Value::is_object, "an object (the status is ok)");
        check("server", Value::is_object, "an object (the status is ok)");
    }
    // Schema 2's additions, when present, are of the shape the report reads.
    if let Some(load) = object.get("load").and_then(Value::as_object) {
        let series = load.get("series").filter(|v| !v.is_null());
        if series.is_some_and(|s| {
            !(s["interval_ms"].as_f64().is_some_and(|w| w > 0.0) && s["intervals"].is_array())
        }) {
            wrong.push("load.series has no interval_ms above 0 and intervals array".into());
        }
        let fairness = load.get("fairness").filter(|v| !v.is_null());
        if fairness.is_some_and(|f| !(f["connections"].is_u64() && f["served"].is_u64())) {
            wrong.push("load.fairness lacks its connections and served counts".into());
        }
    }
    if !missing.is_empty() {
        wrong.insert(0, format!("lacks {}", missing.join(", ")));
    }
    if !wrong.is_empty() {
        return Err(wrong.join("; "));
    }
    let status = object["status"].as_str().unwrap_or_default();
    if !["ok", "failed", "unsupported"].contains(&status) {
        return Err(format!(
            "status \"{status}\" is none of ok, failed, unsupported"
        ));
    }
    Ok(value)
}

/// What a JSON value is, for a message: `an array`, `"x"`, `7`.
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
        Value::String(s) if s.chars().count() <= 20 => format!("\"{s}\""),
        Value::String(_) => "a long string".into(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
    }
}

impl Run {
    /// A run directory, its damaged lines skipped: a last line cut short (what a crash or a
    /// full disk in the middle of a write leaves) and any other line that is not a result
    /// line this crate understands. [`Run::warnings`] says which; the report counts them.
    pub fn load(dir: &Path) -> Result<Run, String> {
        Run::read(dir, false)
    }

    /// A run directory, refused (naming the file and line) when any line is damaged.
    pub fn load_strict(dir: &Path) -> Result<Run, String> {
        Run::read(dir, true)
    }

    fn read(dir: &Path, strict: bool) -> Result<Run, String> {
        let path = dir.join("results.jsonl");
        let mut lines = Vec::new();
        let mut damaged = Vec::new();
        for line in read_lines(&path)? {
            match line {
                Ok(value) => lines.push(value),
                Err(e) if strict => return Err(format!("{} {e}", path.display())),
                Err(e) => damaged.push(e),
            }
        }
        crate::noise::settle_link_best(&mut lines);
        let env = fs::read_to_string(dir.join("env.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let total = fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        // The last line cut short is the expected trace of an interrupted write.
        for e in &mut damaged {
            if e.line == total && e.problem.starts_with("not JSON") {
                e.problem = format!("cut short (a write that never finished): {}", e.problem);
            }
        }
        Ok(Run {
            dir: dir.to_path_buf(),
            env,
            lines,
            damaged,
        })
    }

    /// One warning per damaged line, naming the file: what a reader prints on stderr.
    pub fn warnings(&self) -> Vec<String> {
        let path = self.dir.join("results.jsonl");
        self.damaged
            .iter()
            .map(|e| {
                format!(
                    "warning: {} {e}: skipped (--strict refuses the run instead)",
                    path.display()
                )
            })
            .collect()
    }

    /// Lines that ran ok, but those a rerun replaced ([`crate::tiers::kept`]): what every
    /// table and chart counts, so a chart's point is its table's median.
    pub fn ok(&self) -> impl Iterator<Item = &Value> {
        crate::tiers::kept(&self.lines)
            .into_iter()
            .filter(|l| l["status"] == "ok")
    }

    /// Lines that did not run ok (failed, unsupported).
    pub fn not_ok(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(|l| l["status"] != "ok")
    }

    /// Every model in the run, in the order first seen.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = Vec::new();
        for line in &self.lines {
            let m = str_of(line, "model");
            if !models.contains(&m) {
                models.push(m);
            }
        }
        models
    }

    /// Ok lines grouped by cell id (scenario/model/params), trials together; lines a rerun
    /// replaced are left out, as in every view.
    pub fn cells(&self) -> BTreeMap<String, Vec<&Value>> {
        let mut cells: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for line in crate::tiers::kept(&self.lines) {
            if line["status"] == "ok" {
                cells.entry(str_of(line, "cell")).or_default().push(line);
            }
        }
        cells
    }
}

pub fn str_of(line: &Value, key: &str) -> String {
    line[key].as_str().unwrap_or("?").to_string()
}

/// A parameter of a cell (`connections`, `size`, `rate`, `idle`, ...).
pub fn param(line: &Value, key: &str) -> Option<u64> {
    line["params"][key].as_u64()
}

/// The UTC date and time of `secs` since the Unix epoch as (year, month, day, hour, minute,
/// second): Howard Hinnant's civil-from-days, so no time crate. Run ids and `compare.html`'s
/// run times both come from it.
pub fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Writes `path` whole or not at all: into a temporary file beside it, synced, then renamed
/// over it. A full disk leaves the previous file (or none) instead of an empty or cut one,
/// and the error names `path` in full.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = fs::File::create(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let result = written.and_then(|()| fs::rename(&temp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(())
}
