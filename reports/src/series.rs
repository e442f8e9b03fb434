//! What a result line says about time and connections (schema 2): its `series` (per
//! interval of the measured window: requests, errors, p99) and its `fairness` (requests per
//! connection: Jain's index, how many connections were served). Lines of schema 1 have
//! neither, and every reader here says `None` for them.

use serde_json::Value;

use crate::stats::dips;
use crate::text::Lang;

/// One interval of a cell's series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Its start, in seconds from the measured window's start.
    pub t: f64,
    /// Requests completed per second in it.
    pub rps: f64,
    /// Corrected p99 of the requests completed in it, µs (`None` when none completed).
    pub p99: Option<f64>,
}

/// A cell's series: the interval (ms) and each interval's rate, taken over the time it
/// covered of the window; a last sliver under half an interval is left out (its rate says
/// nothing).
pub fn intervals(line: &Value) -> Option<(f64, Vec<Interval>)> {
    let series = &line["load"]["series"];
    let interval_ms = series["interval_ms"].as_f64().filter(|w| *w > 0.0)?;
    let width = interval_ms / 1000.0;
    let duration = line["load"]["duration_s"].as_f64().unwrap_or(f64::INFINITY);
    let points = series["intervals"]
        .as_array()?
        .iter()
        .filter_map(|p| {
            let t = p["t"].as_f64()?;
            let covered = width.min(duration - t);
            (covered >= width / 2.0).then(|| Interval {
                t,
                rps: p["requests"].as_f64().unwrap_or(0.0) / covered,
                p99: p["p99"]
                    .as_f64()
                    .filter(|_| p["requests"].as_u64() > Some(0)),
            })
        })
        .collect();
    Some((interval_ms, points))
}

/// Where a cell's throughput fell below half its median interval: how many times, and the
/// longest, in ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stalls {
    pub count: usize,
    pub longest_ms: f64,
}

pub fn stalls(line: &Value) -> Option<Stalls> {
    let (interval_ms, points) = intervals(line)?;
    let rates: Vec<f64> = points.iter().map(|p| p.rps).collect();
    let (count, longest) = dips(&rates)?;
    Some(Stalls {
        count,
        longest_ms: longest as f64 * interval_ms,
    })
}

impl Stalls {
    /// "stalled 3 times, longest 300 ms" in `lang`; `None` when it never stalled.
    pub fn describe(&self, lang: Lang) -> Option<String> {
        (self.count > 0).then(|| {
            lang.say(
                if self.count == 1 {
                    "stalls.one"
                } else {
                    "stalls.many"
                },
                &[
                    ("n", &self.count),
                    ("ms", &format!("{:.0}", self.longest_ms)),
                ],
            )
        })
    }
}

/// Jain's fairness index over the cell's active connections.
pub fn jain(line: &Value) -> Option<f64> {
    line["load"]["fairness"]["jain"].as_f64()
}

/// (connections served at least once, active connections).
pub fn served(line: &Value) -> Option<(u64, u64)> {
    let f = &line["load"]["fairness"];
    Some((f["served"].as_u64()?, f["connections"].as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(requests: &[u64], duration_s: f64) -> Value {
        let intervals: Vec<Value> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"t": i as f64 * 0.1, "requests": r, "errors": 0, "p50": 5, "p99": 9, "max": 10}))
            .collect();
        json!({"load": {"duration_s": duration_s, "series": {"interval_ms": 100.0, "intervals": intervals}}})
    }

    #[test]
    fn stalls_are_runs_below_half_the_median() {
        let l = line(&[100, 100, 0, 0, 0, 100, 40, 100, 100, 100], 1.0);
        let s = stalls(&l).unwrap();
        assert_eq!((s.count, s.longest_ms), (2, 300.0));
        assert_eq!(
            s.describe(Lang::En).unwrap(),
            "stalled 2 times, longest 300 ms"
        );
        assert_eq!(s.describe(Lang::Zh).unwrap(), "停顿 2 次，最长 300 毫秒");
        let once = Stalls {
            count: 1,
            longest_ms: 100.0,
        };
        assert_eq!(
            once.describe(Lang::En).unwrap(),
            "stalled 1 time, longest 100 ms"
        );
        let steady = stalls(&line(&[100, 90, 110, 100], 0.4)).unwrap();
        assert_eq!(steady.describe(Lang::En), None);
        // A last interval of 20 ms is left out, not counted as a dip.
        let cut = stalls(&line(&[100, 100, 100, 20], 0.32)).unwrap();
        assert_eq!(cut.count, 0);
        // Schema 1: no series.
        assert_eq!(stalls(&json!({"load": {"duration_s": 1.0}})), None);
    }
}
