//! The human summary, in the style of wrk: throughput, a latency percentile table, errors
//! (loudly), and the CPU loadgen itself used.

use std::fmt::Write as _;

use crate::series::{stalls, Series};
use crate::stats::{LoadResult, Percentiles};

pub fn render(r: &LoadResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} test @ {}, {:.2}s measured",
        r.scenario, r.addr, r.duration_s
    );
    let what = match (r.scenario.as_str(), &r.http) {
        // --size does not shape an HTTP request.
        ("http", Some(h)) => format!(
            "keep-alive {} {}, expecting {}{}",
            h.method,
            h.path,
            h.expect_status,
            match &h.expect_body {
                Some(body) if body.len() <= 40 => format!(" {body:?}"),
                Some(body) => format!(" and a {}-byte body", body.len()),
                None => " (body not checked)".to_string(),
            }
        ),
        ("http", None) => "keep-alive GET /".to_string(),
        ("bulk", _) => format!("{}-byte transfers", r.size),
        _ => format!("{}-byte messages", r.size),
    };
    let _ = writeln!(
        s,
        "  {} thread{}, {} connection{}, {what}",
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.connections,
        if r.connections == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "  Latency (us) {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    row(
        &mut s,
        if r.target_rps.is_some() {
            "  corrected  "
        } else {
            "             "
        },
        &r.latency_us,
    );
    if r.target_rps.is_some() {
        row(&mut s, "  uncorrected", &r.uncorrected_latency_us);
    }
    if let Some(pacing) = &r.pacing {
        // corrected = uncorrected + how late it went out, split by cause.
        row(&mut s, "  + waited   ", &pacing.wait_us);
        row(&mut s, "  + late     ", &pacing.late_us);
        let _ = writeln!(
            s,
            "  (a request's corrected latency = its uncorrected + the time it waited for a free \
             connection, the server's doing + how late loadgen sent it once one was free, \
             loadgen's own pacing)"
        );
    }
    let _ = writeln!(
        s,
        "  {} requests in {:.2}s, {:.1} MiB read",
        r.requests,
        r.duration_s,
        r.throughput_bps * r.duration_s / (1 << 20) as f64
    );
    let _ = writeln!(s, "Requests/sec: {:.2}", r.throughput_rps);
    let _ = writeln!(
        s,
        "Transfer/sec: {:.2} MiB",
        r.throughput_bps / (1 << 20) as f64
    );
    if let Some(target) = r.target_rps {
        let _ = writeln!(
            s,
            "Target rate:  {target:.0}/s, achieved {:.1}/s{}",
            r.throughput_rps,
            if r.behind_schedule {
                "  BEHIND SCHEDULE: the server (or loadgen) could not keep up"
            } else {
                ""
            }
        );
    }
    if r.missed > 0 {
        let _ = writeln!(
            s,
            "!!! MISSED: {} scheduled requests waited for a free connection longer than the \
             timeout and were never sent (errors; not in the latency) !!!",
            r.missed
        );
    }
    if r.unsent > 0 {
        let _ = writeln!(
            s,
            "!!! UNSENT: {} scheduled requests were still waiting for a free connection when the \
             run ended (errors; not in the latency) !!!",
            r.unsent
        );
    }
    if r.scenario == "churn" {
        let _ = writeln!(s, "Connects/sec: {:.1}", r.connects_per_s);
    }
    if r.server_closes > 0 {
        let _ = writeln!(
            s,
            "Server closes: {} replies ended their connection (Connection: close, HTTP/1.0 or \
             a body to the close); each was reopened",
            r.server_closes
        );
    }
    if r.scenario == "bulk" {
        let _ = writeln!(
            s,
            "Upload:       {:.1} MB/s\nDownload:     {:.1} MB/s",
            r.upload_bps / 1e6,
            r.download_bps / 1e6
        );
    }
    if r.idle_total > 0 {
        let _ = writeln!(
            s,
            "Idle connections open at the end: {} of {}",
            r.idle_open, r.idle_total
        );
    }
    let cpu = r.loadgen.cpu_user_s + r.loadgen.cpu_sys_s;
    let _ = writeln!(
        s,
        "loadgen CPU:  {:.2}s user, {:.2}s system ({:.0}% of one CPU)",
        r.loadgen.cpu_user_s,
        r.loadgen.cpu_sys_s,
        100.0 * cpu / (r.duration_s + r.warmup_s).max(1e-9)
    );
    let active = r.connections - r.idle_total as usize;
    if r.unconnected_connections > 0 {
        let why = if r.errors.connect > 0 {
            "their connects failed or timed out (see connect errors)".to_string()
        } else {
            format!(
                "connecting took longer than the {:.2}s run (--warmup + -t)",
                r.warmup_s + r.duration_s
            )
        };
        let _ = writeln!(
            s,
            "!!! {} of {active} active connections never connected: {why} !!!",
            r.unconnected_connections,
        );
    }
    let unserved = r
        .starved_connections
        .saturating_sub(r.unconnected_connections);
    if unserved > 0 {
        let _ = writeln!(
            s,
            "!!! {unserved} of {active} active connections connected but completed no request: \
             the server did not serve them !!!",
        );
    }
    if let Some(f) = &r.fairness {
        let _ = writeln!(
            s,
            "Per connection: {} to {} requests (median {}), cv {:.2}, Jain's index {}{}",
            f.min,
            f.max,
            f.median.map_or("-".into(), |m| format!("{m:.0}")),
            f.cv,
            f.jain.map_or("-".into(), |j| format!("{j:.3}")),
            if f.served < f.connections {
                format!(", {} of {} connections served", f.served, f.connections)
            } else {
                String::new()
            }
        );
    }
    if let Some(series) = &r.series {
        over_time(&mut s, series, r.duration_s);
    }
    let e = &r.errors;
    if e.total() == 0 && r.missed + r.unsent > 0 {
        let _ = writeln!(s, "Errors:       none among the requests sent");
    } else if e.total() == 0 {
        let _ = writeln!(s, "Errors:       none");
    } else {
        let _ = writeln!(
            s,
            "!!! ERRORS: {} in all: connect {}, reset {}, timeout {}, mismatch {}, protocol {} !!!",
            e.total(),
            e.connect,
            e.reset,
            e.timeout,
            e.mismatch,
            e.protocol
        );
    }
    s
}

/// Requests per second over the intervals, and the stalls.
fn over_time(s: &mut String, series: &Series, duration_s: f64) {
    let width_s = series.interval_ms / 1000.0;
    let mut rates: Vec<f64> = series
        .intervals
        .iter()
        .filter(|p| duration_s - p.t >= width_s / 2.0)
        .map(|p| p.requests as f64 / width_s)
        .collect();
    if rates.is_empty() {
        return;
    }
    rates.sort_by(f64::total_cmp);
    let _ = write!(
        s,
        "Per {:.0} ms:   {:.0} to {:.0} req/s (median {:.0})",
        series.interval_ms,
        rates[0],
        rates[rates.len() - 1],
        rates[rates.len() / 2]
    );
    match stalls(series, duration_s) {
        Some((0, _)) | None => {
            let _ = writeln!(s);
        }
        Some((n, longest)) => {
            let _ = writeln!(
                s,
                "  !!! stalled {n} time{} (below half the median), longest {longest:.0} ms !!!",
                if n == 1 { "" } else { "s" }
            );
        }
    }
}

fn row(s: &mut String, label: &str, p: &Percentiles) {
    let _ = writeln!(
        s,
        "{label} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.1}",
        p.p50, p.p90, p.p99, p.p999, p.max, p.mean
    );
}
