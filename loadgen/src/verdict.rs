//! Whether a run measured what it was asked to: the exit status. A run fails (exit 1) when no
//! request completed in the measured window, when mismatched replies exceed
//! `--max-mismatch-rate` (default 0: any wrong byte fails the run), or when the other errors
//! (connect, reset, timeout, protocol, and open-loop requests never sent: missed or unsent)
//! exceed `--max-error-rate` (default 1%). Rates are taken over every measured request that
//! settled: completed, failed, or scheduled and never sent.

use crate::stats::LoadResult;

/// The default `--max-error-rate`.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;

#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Largest share of connect, reset, timeout, protocol errors and scheduled requests never
    /// sent.
    pub max_error_rate: f64,
    /// Largest share of mismatched replies.
    pub max_mismatch_rate: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_error_rate: DEFAULT_MAX_ERROR_RATE,
            max_mismatch_rate: 0.0,
        }
    }
}

/// `Ok` when the run may exit 0, else why it failed.
pub fn judge(r: &LoadResult, limits: &Thresholds) -> Result<(), String> {
    let e = &r.errors;
    let other = e.connect + e.reset + e.timeout + e.protocol + r.missed + r.unsent;
    let settled = r.requests + e.total() + r.missed + r.unsent;
    let share = |n: u64| n as f64 / settled.max(1) as f64;
    let mut failures = Vec::new();
    if r.requests == 0 {
        let mut why = format!(
            "no request completed in the {:.2}s measured window",
            r.duration_s
        );
        if r.unconnected_connections > 0 {
            why.push_str(&format!(
                " ({} of the connections never connected)",
                r.unconnected_connections
            ));
        }
        failures.push(why);
    }
    if e.mismatch > 0 && share(e.mismatch) > limits.max_mismatch_rate {
        failures.push(format!(
            "{} of {settled} replies mismatched ({}), more than --max-mismatch-rate {}",
            e.mismatch,
            percent(share(e.mismatch)),
            limits.max_mismatch_rate
        ));
    }
    if other > 0 && share(other) > limits.max_error_rate {
        failures.push(format!(
            "{other} of {settled} requests failed ({}: connect {}, reset {}, timeout {}, \
             protocol {}, missed {}, unsent {}), more than --max-error-rate {}",
            percent(share(other)),
            e.connect,
            e.reset,
            e.timeout,
            e.protocol,
            r.missed,
            r.unsent,
            limits.max_error_rate
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn percent(share: f64) -> String {
    let p = 100.0 * share;
    if p >= 1.0 || p == 0.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.3}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Cpu, Errors, Percentiles};

    fn result(requests: u64, errors: Errors, missed: u64) -> LoadResult {
        LoadResult {
            scenario: "echo".into(),
            addr: "127.0.0.1:1".into(),
            connections: 1,
            size: 128,
            threads: 1,
            requests,
            duration_s: 1.0,
            throughput_rps: requests as f64,
            throughput_bps: 0.0,
            latency_us: Percentiles::default(),
            uncorrected_latency_us: Percentiles::default(),
            target_rps: None,
            behind_schedule: false,
            missed,
            unsent: 0,
            errors,
            connects: 1,
            server_closes: 0,
            connects_per_s: 1.0,
            upload_bps: 0.0,
            download_bps: 0.0,
            idle_open: 0,
            idle_total: 0,
            starved_connections: 0,
            unconnected_connections: 0,
            warmup_s: 0.0,
            start_unix_s: 0.0,
            end_unix_s: 1.0,
            loadgen: Cpu::default(),
            histogram: String::new(),
            uncorrected_histogram: String::new(),
            series: None,
            fairness: None,
            pacing: None,
            http: None,
        }
    }

    #[test]
    fn thresholds_are_shares_of_settled_requests() {
        let limits = Thresholds::default();
        assert!(judge(&result(1000, Errors::default(), 0), &limits).is_ok());
        let resets = Errors {
            reset: 10,
            ..Errors::default()
        };
        assert!(
            judge(&result(990, resets, 0), &limits).is_ok(),
            "1% is allowed"
        );
        let err = judge(&result(989, resets, 1), &limits).unwrap_err();
        assert!(err.contains("11 of 1000 requests failed"), "{err}");
        assert!(err.contains("missed 1"), "{err}");
        let one_mismatch = Errors {
            mismatch: 1,
            ..Errors::default()
        };
        let err = judge(&result(100_000, one_mismatch, 0), &limits).unwrap_err();
        assert!(err.contains("--max-mismatch-rate 0"), "{err}");
        let lenient = Thresholds {
            max_mismatch_rate: 0.001,
            ..limits
        };
        assert!(judge(&result(100_000, one_mismatch, 0), &lenient).is_ok());
        let err = judge(&result(0, Errors::default(), 0), &limits).unwrap_err();
        assert!(err.contains("no request completed"), "{err}");
    }
}
