//! What a cell is judged by: each metric, where it comes from in a result line, its unit, and
//! which direction is better.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Throughput,
    P99,
    CpuPerRequest,
    PssPerConn,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::Throughput,
        Metric::P99,
        Metric::CpuPerRequest,
        Metric::PssPerConn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P99 => "latency_p99",
            Metric::CpuPerRequest => "cpu_per_request",
            Metric::PssPerConn => "pss_per_conn",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Throughput)
    }

    /// The metric's value in one result line, with its unit (scenario-dependent for
    /// throughput: requests, connections or megabytes per second).
    pub fn of(self, line: &Value) -> Option<(f64, &'static str)> {
        let load = &line["load"];
        let server = &line["server"];
        match self {
            Metric::Throughput => match line["scenario"].as_str()? {
                "churn" => Some((load["connects_per_s"].as_f64()?, "conn/s")),
                "bulk" => Some((
                    (load["upload_bps"].as_f64()? + load["download_bps"].as_f64()?) / 1e6,
                    "MB/s",
                )),
                _ => Some((load["throughput_rps"].as_f64()?, "req/s")),
            },
            Metric::P99 => Some((load["latency_us"]["p99"].as_f64()?, "us")),
            Metric::CpuPerRequest => Some((server["cpu_us_per_request"].as_f64()?, "us CPU/req")),
            Metric::PssPerConn => Some((server["pss_kib_per_conn"].as_f64()?, "KiB/conn")),
        }
    }
}

/// The metric a scenario's ranking uses: corrected p99 for the open loop (every model that
/// keeps up shows the target as its throughput), throughput otherwise.
pub fn headline(scenario: &str) -> Metric {
    if scenario == "rate" {
        Metric::P99
    } else {
        Metric::Throughput
    }
}
