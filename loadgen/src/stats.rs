//! Measurements: latency histograms (HdrHistogram, microseconds, 3 significant digits),
//! counters, errors by class, and the `load` JSON object (DESIGN.md section 4), which carries
//! the histograms serialised (V2 + deflate, base64) so runs can be merged exactly.

use std::io;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One hour, in microseconds: the largest latency recorded (larger values saturate).
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    pub connect: u64,
    pub reset: u64,
    pub timeout: u64,
    pub mismatch: u64,
    pub protocol: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.mismatch + self.protocol
    }

    pub fn add(&mut self, other: &Errors) {
        self.connect += other.connect;
        self.reset += other.reset;
        self.timeout += other.timeout;
        self.mismatch += other.mismatch;
        self.protocol += other.protocol;
    }
}

/// What one thread measured.
pub struct Stats {
    /// From each request's intended send time (open loop) or its send time (closed loop).
    pub latency: Histogram<u64>,
    /// From the moment each request was actually written.
    pub uncorrected: Histogram<u64>,
    /// Open loop, per measured request, in µs: how long it waited for a free connection
    /// after its intended time, and how late loadgen sent it once one was free.
    pub wait: Histogram<u64>,
    pub late: Histogram<u64>,
    pub requests: u64,
    pub bytes_read: u64,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub connects: u64,
    /// Replies after which the server ended the connection (HTTP `Connection: close`,
    /// HTTP/1.0, a body that ran to the close); loadgen opened a new one each time.
    pub server_closes: u64,
    pub errors: Errors,
    /// Requests of the open-loop schedule never sent because the run ended first.
    pub unsent: u64,
    /// Requests of the open-loop schedule that waited for a free connection longer than
    /// `--timeout` and were dropped unsent (the schedule fell that far behind).
    pub missed: u64,
    /// Idle connections still open at the end, and how many there were.
    pub idle_open: u64,
    pub idle_total: u64,
    /// Active connections that completed no request in the measured window: starved by a
    /// server that serves fewer clients at once than there are.
    pub starved: u64,
    /// Of those, the ones that never completed a connect during the run.
    pub unconnected: u64,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            latency: new_histogram(),
            uncorrected: new_histogram(),
            wait: new_histogram(),
            late: new_histogram(),
            requests: 0,
            bytes_read: 0,
            up_bytes: 0,
            down_bytes: 0,
            connects: 0,
            server_closes: 0,
            errors: Errors::default(),
            unsent: 0,
            missed: 0,
            idle_open: 0,
            idle_total: 0,
            starved: 0,
            unconnected: 0,
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.uncorrected
            .add(&other.uncorrected)
            .expect("same histogram bounds");
        self.wait.add(&other.wait).expect("same histogram bounds");
        self.late.add(&other.late).expect("same histogram bounds");
        self.requests += other.requests;
        self.bytes_read += other.bytes_read;
        self.up_bytes += other.up_bytes;
        self.down_bytes += other.down_bytes;
        self.connects += other.connects;
        self.server_closes += other.server_closes;
        self.errors.add(&other.errors);
        self.unsent += other.unsent;
        self.missed += other.missed;
        self.idle_open += other.idle_open;
        self.idle_total += other.idle_total;
        self.starved += other.starved;
        self.unconnected += other.unconnected;
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
}

impl Cpu {
    /// CPU time this process has used so far.
    pub fn of_self() -> Cpu {
        // SAFETY: getrusage writes into `usage`, a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Cpu {
            cpu_user_s: secs(usage.ru_utime),
            cpu_sys_s: secs(usage.ru_stime),
        }
    }
}

/// The `load` object: what `--json` prints and the bench runner stores per cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResult {
    pub scenario: String,
    pub addr: String,
    pub connections: usize,
    pub size: u64,
    pub threads: usize,
    pub requests: u64,
    pub duration_s: f64,
    pub throughput_rps: f64,
    /// Reply bytes read per second.
    pub throughput_bps: f64,
    pub latency_us: Percentiles,
    pub uncorrected_latency_us: Percentiles,
    pub target_rps: Option<f64>,
    /// True when the open-loop schedule could not be kept (achieved below 99% of target, or
    /// requests left unsent or missed).
    pub behind_schedule: bool,
    /// Open loop: measured requests of the schedule that waited for a free connection longer
    /// than `--timeout` and were dropped unsent. They are in no histogram and count as errors
    /// for the exit status.
    #[serde(default)]
    pub missed: u64,
    /// Open loop: measured requests of the schedule still waiting for a free connection when
    /// the run ended (at most `--timeout` of the schedule). Not errors.
    #[serde(default)]
    pub unsent: u64,
    pub errors: Errors,
    pub connects: u64,
    /// Replies after which the server ended the connection, each followed by a new connect.
    #[serde(default)]
    pub server_closes: u64,
    pub connects_per_s: f64,
    pub upload_bps: f64,
    pub download_bps: f64,
    pub idle_open: u64,
    pub idle_total: u64,
    /// Active connections that completed no request while measured.
    #[serde(default)]
    pub starved_connections: u64,
    /// Of `starved_connections`, those that never completed a connect during the run
    /// (connecting took longer than the run, or every connect failed).
    #[serde(default)]
    pub unconnected_connections: u64,
    pub warmup_s: f64,
    /// The measured window, in seconds since the Unix epoch (for merging runs).
    pub start_unix_s: f64,
    pub end_unix_s: f64,
    pub loadgen: Cpu,
    pub histogram: String,
    pub uncorrected_histogram: String,
    /// Requests, errors and latency per interval of the measured window (absent in results
    /// of loadgen before it kept them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<crate::series::Series>,
    /// `http`: the request sent and what its replies were checked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::http::Settings>,
    /// How evenly the active connections were served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<Fairness>,
    /// Open loop: where the time between a request's intended and actual send went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<Pacing>,
}

/// Open loop: the corrected latency of a request is its uncorrected latency plus how late it
/// went out, and that lateness has two causes this splits apart. `wait_us`: it came due while
/// every connection had a request in flight (the server had not answered yet: the server's
/// doing, as wrk2's correction intends). `late_us`: a connection was free and loadgen still
/// sent after the due time (its own pacing: a late wake-up, a long turn of its loop, the
/// VM pausing its CPU). A tail made of `late_us` is the load generator's, not the server's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pacing {
    pub wait_us: Percentiles,
    pub late_us: Percentiles,
    pub wait_histogram: String,
    pub late_histogram: String,
}

impl Pacing {
    pub fn of(wait: &Histogram<u64>, late: &Histogram<u64>) -> Pacing {
        Pacing {
            wait_us: Percentiles::of(wait),
            late_us: Percentiles::of(late),
            wait_histogram: encode(wait),
            late_histogram: encode(late),
        }
    }
}

/// How evenly the requests completed in the measured window spread over the active
/// connections: a server that serves some connections and starves others (a pool of N
/// workers among more clients, a loop that favours the busiest socket) shows here long before
/// its median latency moves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    /// Active connections.
    pub connections: u64,
    /// Of them, those that completed at least one request.
    pub served: u64,
    /// Requests per connection.
    pub min: u64,
    /// Absent after `loadgen merge`: a median of medians is not one.
    pub median: Option<f64>,
    pub max: u64,
    pub mean: f64,
    /// Coefficient of variation of the requests per connection (standard deviation / mean).
    pub cv: f64,
    /// Jain's fairness index, (Σx)² / (n Σx²): 1 when every connection got as many requests,
    /// k/n when k of n connections got the same and the others none. Absent when no request
    /// completed.
    pub jain: Option<f64>,
}

impl Fairness {
    /// Over each active connection's count of completed requests.
    pub fn of(counts: &[u64]) -> Fairness {
        let n = counts.len() as f64;
        let sum: f64 = counts.iter().map(|&c| c as f64).sum();
        let squares: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
        let mut sorted = counts.to_vec();
        sorted.sort_unstable();
        let median = match sorted.len() {
            0 => None,
            len if len % 2 == 1 => Some(sorted[len / 2] as f64),
            len => Some((sorted[len / 2 - 1] + sorted[len / 2]) as f64 / 2.0),
        };
        Fairness::from_sums(
            counts.len() as u64,
            counts.iter().filter(|&&c| c > 0).count() as u64,
            sorted.first().copied().unwrap_or(0),
            median,
            sorted.last().copied().unwrap_or(0),
            (n, sum, squares),
        )
    }

    fn from_sums(
        connections: u64,
        served: u64,
        min: u64,
        median: Option<f64>,
        max: u64,
        (n, sum, squares): (f64, f64, f64),
    ) -> Fairness {
        let mean = if n > 0.0 { sum / n } else { 0.0 };
        let variance = if n > 0.0 {
            (squares / n - mean * mean).max(0.0)
        } else {
            0.0
        };
        let round = |x: f64| (x * 1e6).round() / 1e6;
        Fairness {
            connections,
            served,
            min,
            median,
            max,
            mean: round(mean),
            cv: if mean > 0.0 {
                round(variance.sqrt() / mean)
            } else {
                0.0
            },
            jain: (squares > 0.0).then(|| round(sum * sum / (n * squares))),
        }
    }

    /// The sums behind it (n, Σx, Σx²), recovered from mean and cv.
    fn sums(&self) -> (f64, f64, f64) {
        let n = self.connections as f64;
        let sd = self.cv * self.mean;
        (n, n * self.mean, n * (sd * sd + self.mean * self.mean))
    }

    /// Several processes' connections as one population (exact but for rounding, except the
    /// median, which is dropped).
    pub fn merge(parts: &[Fairness]) -> Option<Fairness> {
        let first = parts.first()?;
        let (mut n, mut sum, mut squares) = (0.0, 0.0, 0.0);
        for p in parts {
            let (pn, ps, pq) = p.sums();
            n += pn;
            sum += ps;
            squares += pq;
        }
        Some(Fairness::from_sums(
            parts.iter().map(|p| p.connections).sum(),
            parts.iter().map(|p| p.served).sum(),
            parts.iter().map(|p| p.min).min().unwrap_or(first.min),
            if parts.len() == 1 { first.median } else { None },
            parts.iter().map(|p| p.max).max().unwrap_or(first.max),
            (n, sum, squares),
        ))
    }
}

pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("histogram serialises to memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode(text: &str) -> io::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("histogram base64: {e}"))
        })?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("histogram: {e:?}")))?;
    let mut bounded = new_histogram();
    bounded
        .add(&h)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("histogram: {e:?}")))?;
    Ok(bounded)
}

/// Every result in `text`: one `--json` result, or the lines of a log that hold results (each
/// a line starting with `{`) among others. `kubectl logs` gives a pod's stdout and stderr as
/// one stream, so a result comes with whatever loadgen said on stderr (why it exited 1), and
/// the logs of several pods can be one file.
pub fn results_in(text: &str) -> Result<Vec<LoadResult>, String> {
    if let Ok(result) = serde_json::from_str::<LoadResult>(text) {
        return Ok(vec![result]);
    }
    let results = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with('{'))
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| format!("line {}: not a loadgen --json result: {e}", i + 1))
        })
        .collect::<Result<Vec<LoadResult>, String>>()?;
    if results.is_empty() {
        return Err("no loadgen --json result in it".into());
    }
    Ok(results)
}

/// Merges results from several processes or hosts: histograms added, counts summed, rates
/// taken over the window that spans them all (earliest start to latest end; for runs started
/// together that is their common window).
pub fn merge(results: &[LoadResult]) -> io::Result<LoadResult> {
    let first = results
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "nothing to merge"))?;
    let mut latency = new_histogram();
    let mut uncorrected = new_histogram();
    let mut merged = first.clone();
    merged.requests = 0;
    merged.errors = Errors::default();
    merged.connects = 0;
    merged.server_closes = 0;
    merged.connections = 0;
    merged.threads = 0;
    merged.idle_open = 0;
    merged.idle_total = 0;
    merged.starved_connections = 0;
    merged.unconnected_connections = 0;
    merged.missed = 0;
    merged.unsent = 0;
    merged.loadgen = Cpu::default();
    merged.target_rps = None;
    let (mut bytes_read, mut up, mut down) = (0.0, 0.0, 0.0);
    for r in results {
        latency.add(decode(&r.histogram)?).expect("same bounds");
        uncorrected
            .add(decode(&r.uncorrected_histogram)?)
            .expect("same bounds");
        merged.requests += r.requests;
        merged.errors.add(&r.errors);
        merged.connects += r.connects;
        merged.server_closes += r.server_closes;
        merged.connections += r.connections;
        merged.threads += r.threads;
        merged.idle_open += r.idle_open;
        merged.idle_total += r.idle_total;
        merged.starved_connections += r.starved_connections;
        merged.unconnected_connections += r.unconnected_connections;
        merged.missed += r.missed;
        merged.unsent += r.unsent;
        merged.loadgen.cpu_user_s += r.loadgen.cpu_user_s;
        merged.loadgen.cpu_sys_s += r.loadgen.cpu_sys_s;
        merged.behind_schedule |= r.behind_schedule;
        if let Some(t) = r.target_rps {
            merged.target_rps = Some(merged.target_rps.unwrap_or(0.0) + t);
        }
        bytes_read += r.throughput_bps * r.duration_s;
        up += r.upload_bps * r.duration_s;
        down += r.download_bps * r.duration_s;
        merged.start_unix_s = merged.start_unix_s.min(r.start_unix_s);
        merged.end_unix_s = merged.end_unix_s.max(r.end_unix_s);
    }
    let window = (merged.end_unix_s - merged.start_unix_s).max(1e-9);
    merged.duration_s = window;
    merged.throughput_rps = merged.requests as f64 / window;
    merged.throughput_bps = bytes_read / window;
    merged.upload_bps = up / window;
    merged.download_bps = down / window;
    merged.connects_per_s = merged.connects as f64 / window;
    merged.latency_us = Percentiles::of(&latency);
    merged.uncorrected_latency_us = Percentiles::of(&uncorrected);
    merged.histogram = encode(&latency);
    merged.uncorrected_histogram = encode(&uncorrected);
    let series: Vec<(f64, &crate::series::Series)> = results
        .iter()
        .filter_map(|r| Some((r.start_unix_s, r.series.as_ref()?)))
        .collect();
    merged.series = match series.len() {
        0 => None,
        n if n == results.len() => Some(crate::series::merge_series(&series, merged.start_unix_s)?),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "some results have an interval series and some do not: merge results of the \
                 same loadgen version",
            ))
        }
    };
    let pacing: Vec<&Pacing> = results.iter().filter_map(|r| r.pacing.as_ref()).collect();
    merged.pacing = if pacing.len() == results.len() {
        let (mut wait, mut late) = (new_histogram(), new_histogram());
        for p in pacing {
            wait.add(decode(&p.wait_histogram)?).expect("same bounds");
            late.add(decode(&p.late_histogram)?).expect("same bounds");
        }
        Some(Pacing::of(&wait, &late))
    } else {
        None
    };
    let fairness: Vec<Fairness> = results.iter().filter_map(|r| r.fairness).collect();
    merged.fairness = (fairness.len() == results.len())
        .then(|| Fairness::merge(&fairness))
        .flatten();
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::Fairness;

    #[test]
    fn jain_is_one_when_even_and_k_over_n_when_k_share_alike() {
        let even = Fairness::of(&[10, 10, 10, 10]);
        assert_eq!((even.jain, even.cv, even.served), (Some(1.0), 0.0, 4));
        let half = Fairness::of(&[10, 0, 10, 0, 10, 0]);
        assert_eq!(half.jain, Some(0.5));
        assert_eq!(
            (half.min, half.max, half.median, half.served),
            (0, 10, Some(5.0), 3)
        );
        assert_eq!(Fairness::of(&[0, 0]).jain, None);
        // Merged populations: the same figures as if counted together.
        let (a, b) = (Fairness::of(&[3, 5, 0]), Fairness::of(&[8, 1]));
        let merged = Fairness::merge(&[a, b]).unwrap();
        let whole = Fairness::of(&[3, 5, 0, 8, 1]);
        assert!((merged.jain.unwrap() - whole.jain.unwrap()).abs() < 1e-5);
        assert!((merged.cv - whole.cv).abs() < 1e-5);
        assert_eq!((merged.min, merged.max, merged.served), (0, 8, 4));
        assert_eq!(merged.median, None);
    }
}
