//! A run directory as `bench` leaves it: `results.jsonl` (one line per cell) and `env.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub struct Run {
    pub dir: PathBuf,
    pub env: Value,
    pub lines: Vec<Value>,
}

impl Run {
    pub fn load(dir: &Path) -> Result<Run, String> {
        let path = dir.join("results.jsonl");
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let value: Value = serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            lines.push(value);
        }
        let env = fs::read_to_string(dir.join("env.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Ok(Run {
            dir: dir.to_path_buf(),
            env,
            lines,
        })
    }

    pub fn ok(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(|l| l["status"] == "ok")
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

    /// Ok lines grouped by cell id (scenario/model/params), trials together.
    pub fn cells(&self) -> BTreeMap<String, Vec<&Value>> {
        let mut cells: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for line in self.ok() {
            cells.entry(str_of(line, "cell")).or_default().push(line);
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
