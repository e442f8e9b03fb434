//! Suite files (TOML under `benches/suites/`) and their expansion into cells.
//!
//! ```toml
//! description = "..."
//! trials = 3
//! warmup = "300ms"
//! duration = "1s"
//! models = "all"                 # or ["epoll-et", "poll"]
//! precision = "5%"             # optional: adaptive trials (see below)
//! max_trials = 8
//! max_time = "5m"
//! rerun_noisy = true             # optional: as `bench run --rerun-noisy`
//! server_host = "srv"           # optional: the server on this ssh host ...
//! load_hosts = ["l1", "l2"]      # ... and one loadgen on each of these (see `hosts`)
//! [[scenario]]
//! scenario = "echo"              # a loadgen scenario
//! connections = [50, 500]        # every list is one axis of the grid
//! size = [128]
//! duration = "1s"                # optional: this scenario's measured time per cell
//! [[server]]                     # a server run by command, a model like the others
//! name = "py"                    # (keys: see `external`)
//! command = ["python3", "{dir}/server.py", "--port", "{port}"]
//! protocols = ["echo"]
//! ```
//! A suite's servers run beside its models, on the scenarios whose protocol they declare.
//!
//! A cell is one (model, scenario, parameters, trial). Cells are ordered trial by trial, and
//! within a trial model by model for each parameter set (A B C A B C), so drift of a shared
//! machine spreads over every model evenly.
//!
//! With `precision`, `trials` is the least count: after it, rounds of one more trial (still
//! interleaved over models) run for the cells whose median's 95% interval is wider than
//! ±`precision`, until every cell meets it, a cell has `max_trials`, or another round would
//! end past `max_time` (counted from the start of the run; after a `--resume`, the cells
//! run before it count at their warmup and measured time plus what starting and stopping a
//! cell takes now; see `adaptive::Budget`). `precision.json` in the run
//! directory says per cell which happened. Reruns of noisy cells (`rerun_noisy`) come first,
//! after the planned rounds (and again after the adaptive ones, for theirs) and, in a suite
//! with `max_time`, only while one more ends within it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub description: String,
    pub trials: usize,
    #[serde(with = "duration_text")]
    pub warmup: Duration,
    #[serde(with = "duration_text")]
    pub duration: Duration,
    #[serde(default)]
    pub models: Models,
    /// loadgen's timeout for a reply or a connect: thousands of connects at once queue behind
    /// the accept backlog, so c10k needs longer than the default.
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// Raise RLIMIT_NOFILE to the hard limit and check it suffices (c10k).
    #[serde(default)]
    pub raise_nofile: bool,
    /// Adaptive trials: the precision target for the median of each cell (0.05 = ± 5%).
    #[serde(default, deserialize_with = "percent_text::deserialize")]
    pub precision: Option<f64>,
    /// Adaptive trials: at most this many trials per cell (default: 3 x `trials`).
    #[serde(default)]
    pub max_trials: Option<usize>,
    /// Adaptive trials: no round starts that would end past this time from the run's start.
    #[serde(default, deserialize_with = "duration_text::deserialize_option")]
    pub max_time: Option<Duration>,
    /// Run each cell flagged noisy again (before any adaptive round, and after them for
    /// their own), as `bench run --rerun-noisy` does (within `max_time` when the suite has
    /// one).
    #[serde(default)]
    pub rerun_noisy: bool,
    /// Run the server on this host and a loadgen on each of `load_hosts`, over ssh (see
    /// `hosts`); `bench run --server-host`/`--load-hosts` override them.
    #[serde(default)]
    pub server_host: Option<String>,
    #[serde(default)]
    pub load_hosts: Option<Vec<String>>,
    /// The address loadgens reach the server at [default: `server_host` without `user@`].
    #[serde(default)]
    pub server_addr: Option<String>,
    #[serde(rename = "scenario")]
    pub scenarios: Vec<ScenarioGrid>,
    /// Servers run by command beside the models (`[[server]]`, see `external`), and those
    /// `bench run --server` adds.
    #[serde(default, rename = "server")]
    pub servers: Vec<crate::external::Server>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Models {
    #[default]
    #[serde(skip)]
    All,
    Keyword(String),
    List(Vec<String>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioGrid {
    pub scenario: String,
    /// The server protocol: the one the scenario speaks (`SCENARIOS`), the only one allowed.
    pub protocol: Option<String>,
    #[serde(default)]
    pub connections: Vec<u64>,
    #[serde(default)]
    pub size: Vec<u64>,
    #[serde(default)]
    pub rate: Vec<u64>,
    #[serde(default)]
    pub active: Vec<u64>,
    #[serde(default)]
    pub idle: Vec<u64>,
    /// Only these models run this scenario (for example: the idle sweep's multiplexers); see
    /// [`ScenarioGrid::runs`] for how aliases and variants match.
    pub models: Option<Vec<String>>,
    /// This scenario's measured time per cell, instead of the suite's `duration` (an open
    /// loop's p99 needs a longer window than a closed loop's throughput).
    #[serde(default, deserialize_with = "duration_text::deserialize_option")]
    pub duration: Option<Duration>,
}

impl ScenarioGrid {
    /// Whether `model` (a suite or `--models` name) runs this scenario. A list names models
    /// by name; an alias (`epoll-et#2`) runs where its model does; a variant with server
    /// options (`uring-multishot+bundle`) runs where it is named, or where its model is named
    /// and the list names no variant of it (a list that names variants chooses among them).
    pub fn runs(&self, model: &str, base: &str) -> bool {
        let Some(list) = &self.models else {
            return true;
        };
        // A name without its alias number: `epoll-et#2+bundle` is the variant
        // `epoll-et+bundle`; list entries and the model are compared both ways.
        let plain = |x: &str| -> String {
            let (head, options) = x.split_once('+').unwrap_or((x, ""));
            let head = head.split('#').next().unwrap_or(head);
            match options {
                "" => head.to_string(),
                _ => format!("{head}+{options}"),
            }
        };
        let names = |m: &str| list.iter().any(|x| x == m || plain(x) == m);
        let is_variant = model.contains('+');
        if names(model) || names(&plain(model)) || (!is_variant && names(base)) {
            return true;
        }
        let variant_named = list
            .iter()
            .any(|x| plain(x).starts_with(&format!("{base}+")));
        is_variant && names(base) && !variant_named
    }
}

/// One cell of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub model: String,
    pub protocol: String,
    pub scenario: String,
    /// Parameter name to value, in a stable order (`connections`, `size`, ...).
    pub params: BTreeMap<String, u64>,
    pub trial: usize,
    /// Its measured time (after the suite's warmup): its scenario's `duration`, else the
    /// suite's.
    pub duration: Duration,
}

impl Cell {
    /// `echo/epoll-et/c=50,size=128`: the cell without its trial.
    pub fn id(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{}={v}", if k == "connections" { "c" } else { k }))
            .collect();
        format!("{}/{}/{}", self.scenario, self.model, params.join(","))
    }

    /// What `--resume` matches finished cells by.
    pub fn key(&self) -> String {
        format!("{}#{}", self.id(), self.trial)
    }

    /// Connections the loadgen opens (active and idle).
    pub fn connections(&self) -> u64 {
        self.params.get("connections").copied().unwrap_or(0)
            + self.params.get("active").copied().unwrap_or(0)
            + self.params.get("idle").copied().unwrap_or(0)
    }
}

/// The server model behind a model name, and the extra server arguments it stands for.
///
/// Test aids for calibrating the tiers: `epoll-et#2` is an alias (the same server under a
/// second name, its own series: A/A), and `epoll-et+extra-work=5000` a slowed variant
/// (`server --extra-work 5000`, which only a server built with the feature `extra-work`
/// takes: A/B). They combine (`epoll-et#2+extra-work=5000`). Any server option can follow a
/// `+` the same way, so one model's settings are compared side by side as models of their
/// own: `uring-multishot+taskrun=plain+plain-ring-fd` runs `server --model uring-multishot
/// --taskrun=plain --plain-ring-fd`. The server refuses an option the model does not take
/// (a failed cell saying so).
pub fn server_model(name: &str) -> Result<(&str, Vec<String>), String> {
    let (base, rest) = name
        .find(['#', '+'])
        .map(|i| name.split_at(i))
        .unwrap_or((name, ""));
    let mut args = Vec::new();
    for part in rest.split('+').skip(1) {
        let (option, value) = part.split_once('=').unwrap_or((part, ""));
        let option_ok = option.starts_with(|c: char| c.is_ascii_lowercase())
            && option
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let value_ok = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !option_ok || !value_ok || (part.contains('=') && value.is_empty()) {
            return Err(format!(
                "model '{name}': after '+' comes a server option, like extra-work=5000 or fixed-files"
            ));
        }
        args.push(if value.is_empty() {
            format!("--{option}")
        } else {
            format!("--{option}={value}")
        });
    }
    if base.is_empty() {
        return Err(format!("model '{name}' names no model"));
    }
    Ok((base, args))
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Where a run records the start/stop overhead per cell it measured.
pub fn overhead_file() -> std::path::PathBuf {
    crate::runner::results_root().join("cell-overhead.json")
}

/// What a cell costs beyond its warmup and measured time (starting the server, waiting for
/// it, stopping it, sampling): as the last run on this machine measured it, and whether it
/// was measured (else 400 ms, what it took on the project's 2-core machine).
pub fn cell_overhead() -> (Duration, bool) {
    std::fs::read_to_string(overhead_file())
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["per_cell_s"].as_f64())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 60.0)
        .map(|s| (Duration::from_secs_f64(s), true))
        .unwrap_or((Duration::from_millis(400), false))
}

/// A precision target as a percentage, as the suite wrote it: 5 for 5%, 0.5 for 0.5% (not
/// rounded away).
pub fn percent(target: f64) -> f64 {
    (target * 100_000.0).round() / 1000.0
}

pub const BUILT_IN: [&str; 8] = [
    "smoke",
    "quick",
    "full",
    "c10k",
    "ci",
    "uring",
    "uring-options",
    "tail",
];

/// Finds a suite by built-in name (a file in `benches/suites/`) or path.
pub fn locate(name_or_path: &str) -> Result<PathBuf, String> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let built_in = suites_dir().join(format!("{name_or_path}.toml"));
    if built_in.is_file() {
        return Ok(built_in);
    }
    Err(format!(
        "no suite '{name_or_path}': built-in suites are {} (in {}), or give a path to a TOML file",
        BUILT_IN.join(", "),
        suites_dir().display()
    ))
}

pub fn suites_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("suites")
}

pub fn load(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, path)
}

/// A suite from its TOML text; errors name `path`, where the text came from.
pub fn parse(text: &str, path: &Path) -> Result<Suite, String> {
    let mut suite: Suite = toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
    // `{dir}` of a suite's servers: the suite file's directory, wherever bench runs from.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for server in &mut suite.servers {
        server.dir = dir.clone();
    }
    if suite.trials == 0 {
        return Err(format!("{}: trials must be at least 1", path.display()));
    }
    for grid in &suite.scenarios {
        grid.protocol()
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    suite
        .check()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(suite)
}

/// Each loadgen scenario and the server protocol it speaks. A cell of a scenario over another
/// protocol measures nothing (loadgen's bulk PUTs against an HTTP server: every request
/// refused, 0 requests, yet an `ok` line), so suites may only name these.
const SCENARIOS: [(&str, &str); 6] = [
    ("echo", "echo"),
    ("rate", "echo"),
    ("idle", "echo"),
    ("churn", "echo"),
    ("bulk", "transfer"),
    ("http", "http"),
];

impl Suite {
    /// Adaptive keys make sense together, and so do servers and scenarios.
    pub fn check(&self) -> Result<(), String> {
        self.check_servers()?;
        if self.precision.is_none() && (self.max_trials.is_some() || self.max_time.is_some()) {
            return Err("max_trials and max_time need a precision target".into());
        }
        if self.max_trials.is_some_and(|m| m < self.trials) {
            return Err("max_trials is below trials".into());
        }
        if self.duration.is_zero() {
            return Err("duration: must be above zero (loadgen measures nothing)".into());
        }
        if let Some(g) = self
            .scenarios
            .iter()
            .find(|g| g.duration.is_some_and(|d| d.is_zero()))
        {
            return Err(format!(
                "scenario '{}': duration: must be above zero (loadgen measures nothing)",
                g.scenario
            ));
        }
        Ok(())
    }

    /// Each server is valid, named once, and speaks a protocol of some scenario; a scenario
    /// that names a server among its models speaks a protocol the server declares.
    pub fn check_servers(&self) -> Result<(), String> {
        let speaks: Vec<String> = self
            .scenarios
            .iter()
            .filter_map(|g| g.protocol().ok())
            .collect();
        for (i, server) in self.servers.iter().enumerate() {
            server.check()?;
            if self.servers[..i].iter().any(|s| s.name == server.name) {
                return Err(format!("server '{}': name: given twice", server.name));
            }
            if !speaks.iter().any(|p| server.speaks(p)) {
                return Err(format!(
                    "server '{}': protocols: declares {}, which no scenario of this suite speaks ({})",
                    server.name,
                    server.protocols.join(", "),
                    speaks.join(", ")
                ));
            }
            for grid in &self.scenarios {
                let named = grid
                    .models
                    .as_ref()
                    .is_some_and(|m| m.contains(&server.name));
                let protocol = grid.protocol()?;
                if named && !server.speaks(&protocol) {
                    return Err(format!(
                        "scenario '{}' names server '{}', which does not declare protocol '{protocol}' (protocols: {})",
                        grid.scenario,
                        server.name,
                        server.protocols.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// The most trials a cell may get: `trials` without a precision target.
    pub fn most_trials(&self) -> usize {
        match self.precision {
            None => self.trials,
            Some(_) => self.max_trials.unwrap_or(self.trials * 3).max(self.trials),
        }
    }

    /// Every cell, in run order. `available` is every model the server lists.
    pub fn cells(
        &self,
        available: &[String],
        only_models: Option<&[String]>,
        only_scenarios: Option<&[String]>,
    ) -> Result<Vec<Cell>, String> {
        let suite_models: Vec<String> = match &self.models {
            Models::All => available.to_vec(),
            Models::Keyword(k) if k == "all" => available.to_vec(),
            Models::Keyword(k) => return Err(format!("models = \"{k}\": use \"all\" or a list")),
            Models::List(list) => list.clone(),
        };
        let external = |name: &str| self.servers.iter().find(|s| s.name == name);
        if let Some(s) = self.servers.iter().find(|s| available.contains(&s.name)) {
            return Err(format!(
                "server '{}': name: a built-in model's; give it another",
                s.name
            ));
        }
        for m in suite_models.iter().chain(only_models.unwrap_or_default()) {
            let (base, _) = server_model(m)?;
            if !available.iter().any(|a| a == base) && external(m).is_none() {
                return Err(format!(
                    "unknown model '{m}'; the server lists: {}{}",
                    available.join(", "),
                    match self.servers.len() {
                        0 => String::new(),
                        _ => format!(
                            "; this suite's servers: {}",
                            self.servers
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                ));
            }
        }
        // Models named on the command line replace the suite's list: `--models
        // epoll-et,poll` runs poll even where the suite names other models, and aliases such
        // as `epoll-et#2` are series of their own. The suite's servers run beside its
        // models unless the command line names models and not them.
        let mut suite_models = only_models.map(<[String]>::to_vec).unwrap_or(suite_models);
        if only_models.is_none() {
            for s in &self.servers {
                if !suite_models.contains(&s.name) {
                    suite_models.push(s.name.clone());
                }
            }
        }
        let in_suite: Vec<&str> = self.scenarios.iter().map(|g| g.scenario.as_str()).collect();
        if let Some(bad) = only_scenarios
            .unwrap_or_default()
            .iter()
            .find(|s| !in_suite.contains(&s.as_str()))
        {
            return Err(format!(
                "unknown scenario '{bad}': this suite has {}",
                in_suite.join(", ")
            ));
        }
        let mut groups: Vec<(ScenarioGrid, BTreeMap<String, u64>)> = Vec::new();
        for grid in &self.scenarios {
            if only_scenarios.is_some_and(|s| !s.contains(&grid.scenario)) {
                continue;
            }
            for params in grid.expand()? {
                groups.push((grid.clone(), params));
            }
        }
        let mut cells = Vec::new();
        for trial in 1..=self.trials {
            for (grid, params) in &groups {
                for model in &suite_models {
                    let base = server_model(model)?.0.to_string();
                    if !grid.runs(model, &base) {
                        continue;
                    }
                    // A server runs the scenarios of the protocols it declares.
                    let protocol = grid.protocol()?;
                    if external(model).is_some_and(|s| !s.speaks(&protocol)) {
                        continue;
                    }
                    cells.push(Cell {
                        model: model.clone(),
                        protocol,
                        scenario: grid.scenario.clone(),
                        params: params.clone(),
                        trial,
                        duration: grid.duration.unwrap_or(self.duration),
                    });
                }
            }
        }
        Ok(cells)
    }

    /// How many cells `cells` (the planned trials) lead to and how long, in words: a fixed
    /// count, or with a precision target the least and the most.
    pub fn plan(&self, cells: &[Cell]) -> String {
        let time = |t: Duration| format!("{t:.0?}");
        match self.precision {
            None => format!(
                "{} ({}), about {}",
                crate::count(cells.len(), "cell"),
                crate::count(self.trials, "trial"),
                time(self.time_of(cells))
            ),
            Some(p) => {
                let first: Vec<&Cell> = cells.iter().filter(|c| c.trial == 1).collect();
                let most = first.len() * self.most_trials();
                let upto = match self.max_time {
                    Some(t) => format!("extra rounds only while they end within {t:.0?}"),
                    None => format!(
                        "at most {}",
                        time(self.time_of(first) * self.most_trials() as u32)
                    ),
                };
                format!(
                    "{} to {most} cells ({} to {} trials, until each median is known within ±{}%), about {} planned, {upto}",
                    cells.len(),
                    self.trials,
                    self.most_trials(),
                    percent(p),
                    time(self.time_of(cells)),
                )
            }
        }
    }

    /// Wall time of `cells` one after another: warmup, each one's measured time, and the
    /// start/stop overhead per cell measured by this machine's last run
    /// ([`cell_overhead`]). Every estimate of a suite's length (`bench list`, the run's
    /// opening line, adaptive rounds before a cell has run) comes from here.
    pub fn time_of<'a>(&self, cells: impl IntoIterator<Item = &'a Cell>) -> Duration {
        self.time_with(cells, cell_overhead().0)
    }

    /// [`Suite::time_of`] at a given overhead per cell: the runner's costs before a cell has
    /// run ([`crate::adaptive::Budget`] holds the one formula).
    fn time_with<'a>(
        &self,
        cells: impl IntoIterator<Item = &'a Cell>,
        overhead: Duration,
    ) -> Duration {
        crate::adaptive::Budget::new(self.warmup, overhead)
            .times(Duration::ZERO, cells)
            .into_iter()
            .sum()
    }
}

impl ScenarioGrid {
    /// The server protocol of this scenario: the one loadgen's scenario speaks, which a
    /// `protocol` line may repeat but not change.
    fn protocol(&self) -> Result<String, String> {
        let Some(&(_, speaks)) = SCENARIOS.iter().find(|(s, _)| *s == self.scenario) else {
            let known: Vec<&str> = SCENARIOS.iter().map(|(s, _)| *s).collect();
            return Err(format!(
                "unknown scenario '{}' ({})",
                self.scenario,
                known.join(", ")
            ));
        };
        match &self.protocol {
            Some(p) if p != speaks => Err(format!(
                "scenario '{}' cannot run over protocol '{p}' (valid protocols for {}: {speaks})",
                self.scenario, self.scenario
            )),
            _ => Ok(speaks.to_string()),
        }
    }

    /// The cartesian product of the parameter lists.
    fn expand(&self) -> Result<Vec<BTreeMap<String, u64>>, String> {
        self.protocol()?;
        let axes: Vec<(&str, &Vec<u64>)> = [
            ("connections", &self.connections),
            ("size", &self.size),
            ("rate", &self.rate),
            ("active", &self.active),
            ("idle", &self.idle),
        ]
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .collect();
        let mut grid = vec![BTreeMap::new()];
        for (name, values) in axes {
            grid = grid
                .into_iter()
                .flat_map(|point| {
                    values.iter().map(move |v| {
                        let mut point = point.clone();
                        point.insert(name.to_string(), *v);
                        point
                    })
                })
                .collect();
        }
        Ok(grid)
    }
}

/// Durations written as "300ms", "1s", "2m".
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn deserialize_option<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserialize(d).map(Some)
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let split = text
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not a duration"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" | "" => value,
            "m" => value * 60.0,
            _ => return Err(format!("'{text}': unknown unit (ms, s, m)")),
        };
        Ok(Duration::from_secs_f64(seconds))
    }
}

pub use duration_text::parse as parse_duration;

/// Percentages written as "5%" (or a fraction, 0.05).
mod percent_text {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(f64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let value =
            match Text::deserialize(d)? {
                Text::Number(x) => x,
                Text::Text(t) => {
                    let number = t.trim().strip_suffix('%').ok_or_else(|| {
                        serde::de::Error::custom(format!("'{t}': write a percentage like \"5%\""))
                    })?;
                    number.trim().parse::<f64>().map_err(|_| {
                        serde::de::Error::custom(format!("'{t}' is not a percentage"))
                    })? / 100.0
                }
            };
        if !(value > 0.0 && value < 1.0) {
            return Err(serde::de::Error::custom(
                "precision must be between 0% and 100%",
            ));
        }
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_suites_parse_and_expand() {
        let models: Vec<String> = [
            "iterative",
            "threads",
            "prethreaded",
            "fork",
            "prefork",
            "spin",
            "select",
            "poll",
            "epoll-lt",
            "epoll-et",
            "sigio",
            "mio",
            "polling",
            "uring",
            "uring-multishot",
            "tokio",
        ]
        .map(String::from)
        .to_vec();
        for name in BUILT_IN {
            let suite = load(&locate(name).unwrap()).unwrap_or_else(|e| panic!("{e}"));
            let cells = suite
                .cells(&models, None, None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!cells.is_empty(), "{name} has cells");
        }
    }

    #[test]
    fn a_scenario_over_another_protocol_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        let suite = |scenario: &str, protocol: &str| {
            format!(
                "description = \"t\"\ntrials = 1\nwarmup = \"0s\"\nduration = \"1s\"\n\
                 [[scenario]]\nscenario = \"{scenario}\"\nprotocol = \"{protocol}\"\n"
            )
        };
        std::fs::write(&path, suite("bulk", "http")).unwrap();
        let e = load(&path).expect_err("bulk over http refused");
        assert!(
            e.starts_with(&path.display().to_string())
                && e.contains("'bulk' cannot run over protocol 'http'")
                && e.contains("valid protocols for bulk: transfer"),
            "{e}"
        );
        std::fs::write(&path, suite("echo", "transfer")).unwrap();
        assert!(load(&path).is_err());
        std::fs::write(&path, suite("bulk", "transfer")).unwrap();
        let cells = load(&path)
            .unwrap()
            .cells(&["a".into()], None, None)
            .unwrap();
        assert_eq!(cells[0].protocol, "transfer");
    }

    #[test]
    fn a_scenario_may_measure_longer_than_the_suite() {
        let suite: Suite = toml::from_str(
            "description = \"t\"\ntrials = 2\nwarmup = \"100ms\"\nduration = \"250ms\"\n\
             [[scenario]]\nscenario = \"echo\"\nconnections = [1]\n\
             [[scenario]]\nscenario = \"rate\"\nrate = [10, 20]\nduration = \"1s\"\n",
        )
        .unwrap();
        suite.check().unwrap();
        let cells = suite.cells(&["a".into(), "b".into()], None, None).unwrap();
        assert_eq!(cells.len(), 12);
        for c in &cells {
            let want = if c.scenario == "rate" { 1000 } else { 250 };
            assert_eq!(c.duration.as_millis(), want, "{}", c.id());
        }
        // The estimate adds each cell's own window: 4 echo cells of 0.35 s and 8 rate cells
        // of 1.1 s, plus the overhead per cell.
        assert_eq!(
            suite.time_with(&cells, Duration::from_millis(50)),
            Duration::from_millis(4 * 350 + 8 * 1100 + 12 * 50)
        );
        let zero = toml::from_str::<Suite>(
            "description = \"t\"\ntrials = 1\nwarmup = \"0s\"\nduration = \"1s\"\n\
             [[scenario]]\nscenario = \"rate\"\nduration = \"0s\"\n",
        )
        .unwrap();
        assert!(zero
            .check()
            .unwrap_err()
            .contains("scenario 'rate': duration"));
    }

    #[test]
    fn hosts_keys() {
        let suite: Suite = toml::from_str(
            "description = \"t\"\ntrials = 1\nwarmup = \"0s\"\nduration = \"1s\"\n\
             server_host = \"srv\"\nload_hosts = [\"a\", \"b\"]\nserver_addr = \"10.0.0.5\"\n\
             [[scenario]]\nscenario = \"echo\"\n",
        )
        .unwrap();
        assert_eq!(suite.server_host.as_deref(), Some("srv"));
        assert_eq!(
            suite.load_hosts,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(suite.server_addr.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn adaptive_keys() {
        let parse = |extra: &str| -> Result<Suite, String> {
            let text = format!(
                "description = \"t\"\ntrials = 3\nwarmup = \"0s\"\nduration = \"1s\"\n{extra}\n[[scenario]]\nscenario = \"echo\"\n"
            );
            let suite: Suite = toml::from_str(&text).map_err(|e| e.to_string())?;
            suite.check()?;
            Ok(suite)
        };
        let s = parse("precision = \"5%\"\nmax_trials = 8\nmax_time = \"5m\"").unwrap();
        assert_eq!(s.precision, Some(0.05));
        assert_eq!(
            (s.most_trials(), s.max_time),
            (8, Some(Duration::from_secs(300)))
        );
        assert_eq!(parse("precision = 0.1").unwrap().most_trials(), 9);
        assert_eq!(parse("").unwrap().most_trials(), 3);
        assert!(parse("precision = \"5\"").is_err());
        assert!(parse("precision = \"150%\"").is_err());
        assert!(parse("max_trials = 5").is_err(), "without a target");
        assert!(parse("precision = \"5%\"\nmax_trials = 2").is_err());
    }

    #[test]
    fn a_scenario_list_names_models_aliases_follow_and_named_variants_choose() {
        let grid = |list: &[&str]| ScenarioGrid {
            scenario: "echo".into(),
            protocol: None,
            connections: vec![1],
            size: vec![],
            rate: vec![],
            active: vec![],
            idle: vec![],
            models: Some(list.iter().map(|m| m.to_string()).collect()),
            duration: None,
        };
        let runs = |g: &ScenarioGrid, m: &str| g.runs(m, server_model(m).unwrap().0);
        let plain = grid(&["epoll-et", "uring-multishot"]);
        assert!(runs(&plain, "epoll-et") && runs(&plain, "epoll-et#2"));
        assert!(
            runs(&plain, "uring-multishot+bundle"),
            "no variant named: the model's"
        );
        assert!(!runs(&plain, "uring") && !runs(&plain, "uring+zerocopy"));
        let chosen = grid(&["uring-multishot", "uring-multishot+bundle"]);
        assert!(runs(&chosen, "uring-multishot") && runs(&chosen, "uring-multishot+bundle"));
        assert!(
            !runs(&chosen, "uring-multishot+send-in-place"),
            "a list naming variants chooses among them"
        );
        assert!(runs(&chosen, "uring-multishot#2"));
        let aliased = grid(&["uring-multishot", "uring-multishot#2+bundle"]);
        assert!(!runs(&aliased, "uring-multishot+send-in-place"));
        assert!(runs(&aliased, "uring-multishot+bundle"));
    }

    #[test]
    fn grid_is_a_cartesian_product_and_trials_interleave() {
        let suite: Suite = toml::from_str(
            r#"
            description = "t"
            trials = 2
            warmup = "0s"
            duration = "1s"
            models = ["a", "b"]
            [[scenario]]
            scenario = "echo"
            connections = [1, 50]
            size = [128, 512, 1000]
            "#,
        )
        .unwrap();
        let cells = suite
            .cells(&["a".into(), "b".into(), "c".into()], None, None)
            .unwrap();
        assert_eq!(cells.len(), 2 * 6 * 2);
        let order: Vec<(usize, &str)> = cells
            .iter()
            .take(4)
            .map(|c| (c.trial, c.model.as_str()))
            .collect();
        assert_eq!(order, [(1, "a"), (1, "b"), (1, "a"), (1, "b")]);
        assert_eq!(cells[0].id(), "echo/a/c=1,size=128");
        assert_eq!(cells.last().unwrap().trial, 2);
        assert!(
            suite.cells(&["a".into()], None, None).is_err(),
            "unknown model b"
        );
        let e = suite
            .cells(&["a".into(), "b".into()], None, Some(&["nosuch".into()]))
            .unwrap_err();
        assert_eq!(e, "unknown scenario 'nosuch': this suite has echo");
        // Aliases and slowed variants run where their base model runs, as series of their own.
        let only: Vec<String> = ["a", "a#2", "a+extra-work=100"].map(String::from).to_vec();
        let cells = suite
            .cells(&["a".into(), "b".into()], Some(&only), None)
            .unwrap();
        assert_eq!(cells.len(), 3 * 6 * 2);
        assert_eq!(cells[1].id(), "echo/a#2/c=1,size=128");
        assert_eq!(
            server_model("a#2+extra-work=100").unwrap(),
            ("a", vec!["--extra-work=100".to_string()])
        );
        assert_eq!(
            server_model("a+taskrun=plain+plain-ring-fd").unwrap(),
            (
                "a",
                vec!["--taskrun=plain".to_string(), "--plain-ring-fd".to_string()]
            )
        );
        assert!(server_model("a+Sleep!").is_err());
        assert!(server_model("a+sleep=").is_err());
    }
}
