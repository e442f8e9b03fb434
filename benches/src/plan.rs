//! The plan of a run, written into its directory before the first cell (`plan.json`): what
//! `bench run` was asked for, the suite as it read it, where things run, and the binaries
//! with their build ids. `bench run --resume` runs exactly the cells of this plan not yet in
//! `results.jsonl`, and refuses when a binary changed since (unless `--allow-rebuilt`):
//! results of two builds must not mix in one run.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "plan.json";

/// What `bench run` was asked for: everything needed to expand the same cells again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The suite as named on the command line (a built-in name or a path).
    pub suite: String,
    pub models: Option<Vec<String>>,
    pub scenarios: Option<Vec<String>>,
    pub trials: Option<usize>,
    pub precision: Option<String>,
    pub max_trials: Option<usize>,
    pub max_time: Option<String>,
    pub rerun_noisy: bool,
    pub server_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    /// Where the cells ran when not here (`--server-host`, `--load-hosts`, `--server-addr`);
    /// absent in plans from before hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_addr: Option<String>,
    /// `--server` specs as given, and the directory they were given in (their `{dir}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers_dir: Option<PathBuf>,
}

/// A binary the run uses, and what identifies its build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binary {
    pub path: PathBuf,
    /// CRC-32C of the file's bytes, in hex: any rebuild that changes the code changes it.
    pub build_id: String,
}

impl Binary {
    pub fn of(path: &Path) -> Result<Binary, String> {
        let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Binary {
            path: path.to_path_buf(),
            build_id: format!("{:08x}", crc32c::crc32c(&bytes)),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub schema: u32,
    pub request: Request,
    /// Where the suite was read from, and its text then (a suite edited later does not
    /// change what the run measures).
    pub suite_path: PathBuf,
    pub suite_text: String,
    pub server: Binary,
    pub loadgen: Binary,
    /// How many cells the plan expands to (before adaptive rounds).
    pub cells: usize,
}

impl Plan {
    /// Written whole or not at all.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).expect("a plan serialises") + "\n";
        reports::run::replace_file(&dir.join(FILE), text.as_bytes())
    }

    /// The plan of the run in `dir`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Plan>, String> {
        let path = dir.join(FILE);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Why the binaries now at `server` and `loadgen` may not finish this run, if they may
    /// not: a build that changed since the run started.
    pub fn rebuilt(&self, server: &Binary, loadgen: &Binary) -> Option<String> {
        let changed: Vec<String> = [
            ("server", &self.server, server),
            ("loadgen", &self.loadgen, loadgen),
        ]
        .into_iter()
        .filter(|(_, then, now)| then.build_id != now.build_id)
        .map(|(name, then, now)| {
            format!(
                "{name} changed since the run started (build {} then, {} now: {})",
                then.build_id,
                now.build_id,
                now.path.display()
            )
        })
        .collect();
        (!changed.is_empty()).then(|| changed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_round_trips_and_a_rebuild_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("server");
        fs::write(&bin, b"version one").unwrap();
        let server = Binary::of(&bin).unwrap();
        let plan = Plan {
            schema: 1,
            request: Request {
                suite: "smoke".into(),
                models: Some(vec!["epoll-et".into()]),
                trials: Some(2),
                server_cpus: vec![0],
                load_cpus: vec![1],
                ..Request::default()
            },
            suite_path: dir.path().join("smoke.toml"),
            suite_text: "description = \"t\"".into(),
            server: server.clone(),
            loadgen: server.clone(),
            cells: 4,
        };
        plan.write(dir.path()).unwrap();
        assert_eq!(Plan::read(dir.path()).unwrap(), Some(plan.clone()));
        assert_eq!(plan.rebuilt(&server, &server), None);
        fs::write(&bin, b"version two").unwrap();
        let why = plan.rebuilt(&Binary::of(&bin).unwrap(), &server).unwrap();
        assert!(
            why.starts_with("server changed since the run started"),
            "{why}"
        );
        assert_eq!(Plan::read(&dir.path().join("none")).unwrap(), None);
    }
}
