//! What happened over time: per interval (default 100 ms of the measured window) the requests
//! completed, the errors, and the latency histograms, corrected and uncorrected.
//!
//! Each engine thread records into one pair of interval histograms; at an interval's end it
//! seals them (adds them to its whole-run totals, keeps them serialised, resets them), so a
//! request costs the same as before and the O(buckets) work happens ten times a second, not
//! per request. A series is at most [`MAX_INTERVALS`] long: past that the interval doubles and
//! neighbours are added together, exactly, so a long run costs bounded memory and any two
//! series recorded from the same start line up.
//!
//! The run merges its threads' series interval by interval (exact histogram addition); the
//! result goes into the `load` JSON (`series`) and, with `--hlog`, into a standard HdrHistogram
//! interval log (`Tag=corrected` and `Tag=uncorrected`) that HistogramLogAnalyzer and the
//! hdrhistogram crates read. `loadgen merge` merges such logs of several processes the same way.

use std::io;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{decode, encode, new_histogram};

/// The longest series: 100 ms intervals cover a minute; longer runs get wider intervals.
pub const MAX_INTERVALS: usize = 600;

/// The default `--interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// One interval sealed by a thread: its counts and its histograms, serialised (V2, no
/// compression: cheap to write, and small for the few buckets one interval fills).
struct Sealed {
    requests: u64,
    errors: u64,
    latency: Vec<u8>,
    uncorrected: Vec<u8>,
}

/// What a thread tells the live view when it seals an interval.
pub struct LiveInterval {
    /// The interval's end, since the measured start.
    pub end: Duration,
    pub width: Duration,
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

/// One thread's recorder of the measured window.
pub struct Recorder {
    start: Instant,
    width: Duration,
    /// The measured window's end, when it has one: a completion handled just after it counts
    /// in the last interval, not in one of its own.
    end: Option<Instant>,
    /// The interval being recorded, counted in `width`s from `start`.
    index: u32,
    next: Instant,
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
    uncorrected: Histogram<u64>,
    /// The whole window, the sealed intervals added up.
    pub total_latency: Histogram<u64>,
    pub total_uncorrected: Histogram<u64>,
    sealed: Vec<Sealed>,
    live: Option<Sender<LiveInterval>>,
}

/// A thread's finished series.
pub struct ThreadSeries {
    width: Duration,
    sealed: Vec<Sealed>,
}

impl Recorder {
    pub fn new(
        start: Instant,
        width: Duration,
        end: Option<Instant>,
        live: Option<Sender<LiveInterval>>,
    ) -> Recorder {
        let width = width.max(Duration::from_millis(1));
        Recorder {
            start,
            width,
            end,
            index: 0,
            next: start + width,
            requests: 0,
            errors: 0,
            latency: new_histogram(),
            uncorrected: new_histogram(),
            total_latency: new_histogram(),
            total_uncorrected: new_histogram(),
            sealed: Vec::new(),
            live,
        }
    }

    /// A measured request completed at `now`.
    pub fn record(&mut self, now: Instant, latency_us: u64, uncorrected_us: u64) {
        self.roll(now);
        self.requests += 1;
        self.latency.saturating_record(latency_us);
        self.uncorrected.saturating_record(uncorrected_us);
    }

    /// A measured request (or connect) failed at `now`.
    pub fn error(&mut self, now: Instant) {
        self.roll(now);
        self.errors += 1;
    }

    /// Seals every interval that ended by `now` (also called while nothing completes, so a
    /// stall is sealed on time and the live view sees it).
    pub fn roll(&mut self, now: Instant) {
        let now = match self.end {
            Some(end) if now >= end => end - Duration::from_nanos(1),
            _ => now,
        };
        while now >= self.next {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if !self.latency.is_empty() {
            self.total_latency
                .add(&self.latency)
                .expect("same histogram bounds");
            self.total_uncorrected
                .add(&self.uncorrected)
                .expect("same histogram bounds");
        }
        if let Some(live) = &self.live {
            let _ = live.send(LiveInterval {
                end: self.width * (self.index + 1),
                width: self.width,
                requests: self.requests,
                errors: self.errors,
                latency: self.latency.clone(),
            });
        }
        self.sealed.push(Sealed {
            requests: self.requests,
            errors: self.errors,
            latency: serialise(&self.latency),
            uncorrected: serialise(&self.uncorrected),
        });
        self.requests = 0;
        self.errors = 0;
        self.latency.reset();
        self.uncorrected.reset();
        self.index += 1;
        if self.sealed.len() >= MAX_INTERVALS {
            self.sealed = coarsen(std::mem::take(&mut self.sealed), 2);
            self.width *= 2;
            self.index /= 2;
        }
        self.next = self.start + self.width * (self.index + 1);
    }

    /// Seals the interval in progress at `now` (the run's end) and hands the series over.
    pub fn finish(mut self, now: Instant) -> (ThreadSeries, Histogram<u64>, Histogram<u64>) {
        self.roll(now);
        if now > self.start || self.requests + self.errors > 0 {
            self.live = None;
            self.seal();
        }
        (
            ThreadSeries {
                width: self.width,
                sealed: self.sealed,
            },
            self.total_latency,
            self.total_uncorrected,
        )
    }
}

fn serialise(h: &Histogram<u64>) -> Vec<u8> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("histogram serialises to memory");
    bytes
}

/// A histogram this process serialised: its bounds travel with it (V2 keeps them), so it adds
/// into any of ours without a copy.
fn deserialise(bytes: &[u8]) -> Histogram<u64> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("a histogram this process serialised reads back")
}

/// Adds each run of `factor` neighbouring intervals into one.
fn coarsen(sealed: Vec<Sealed>, factor: usize) -> Vec<Sealed> {
    sealed
        .chunks(factor)
        .map(|group| {
            let mut latency = new_histogram();
            let mut uncorrected = new_histogram();
            for s in group {
                latency.add(deserialise(&s.latency)).expect("same bounds");
                uncorrected
                    .add(deserialise(&s.uncorrected))
                    .expect("same bounds");
            }
            Sealed {
                requests: group.iter().map(|s| s.requests).sum(),
                errors: group.iter().map(|s| s.errors).sum(),
                latency: serialise(&latency),
                uncorrected: serialise(&uncorrected),
            }
        })
        .collect()
}

/// One interval of the whole run (every thread added up).
pub struct Interval {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
}

/// The whole run's series.
pub struct Merged {
    pub width: Duration,
    pub intervals: Vec<Interval>,
}

/// Merges the threads' series: all brought to the widest interval (a power-of-two multiple
/// of the others, from the same start), then added interval by interval.
pub fn merge_threads(parts: Vec<ThreadSeries>) -> Merged {
    let width = parts
        .iter()
        .map(|p| p.width)
        .max()
        .unwrap_or(DEFAULT_INTERVAL);
    let mut intervals: Vec<Interval> = Vec::new();
    for part in parts {
        let factor = (width.as_nanos() / part.width.as_nanos()).max(1) as usize;
        let sealed = if factor > 1 {
            coarsen(part.sealed, factor)
        } else {
            part.sealed
        };
        for (i, s) in sealed.into_iter().enumerate() {
            if intervals.len() <= i {
                intervals.push(Interval {
                    requests: 0,
                    errors: 0,
                    latency: new_histogram(),
                    uncorrected: new_histogram(),
                });
            }
            let into = &mut intervals[i];
            into.requests += s.requests;
            into.errors += s.errors;
            into.latency
                .add(deserialise(&s.latency))
                .expect("same bounds");
            into.uncorrected
                .add(deserialise(&s.uncorrected))
                .expect("same bounds");
        }
    }
    Merged { width, intervals }
}

/// The `series` object of the `load` JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Series {
    /// Every interval is this long (the last one may be cut short by the run's end).
    pub interval_ms: f64,
    pub intervals: Vec<Point>,
}

/// One interval in the JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Its start, in seconds from the measured window's start.
    pub t: f64,
    /// Requests completed in it.
    pub requests: u64,
    /// Requests and connects that failed in it (connect, reset, timeout, mismatch, protocol).
    pub errors: u64,
    /// Corrected latency of the requests completed in it, µs (0 when none completed).
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    /// Its corrected latency histogram (V2 + deflate, base64), so series merge exactly.
    pub histogram: String,
}

impl Series {
    pub fn of(merged: &Merged) -> Series {
        let width_s = merged.width.as_secs_f64();
        Series {
            interval_ms: merged.width.as_secs_f64() * 1000.0,
            intervals: merged
                .intervals
                .iter()
                .enumerate()
                .map(|(i, iv)| point(i as f64 * width_s, iv.requests, iv.errors, &iv.latency))
                .collect(),
        }
    }
}

fn point(t: f64, requests: u64, errors: u64, h: &Histogram<u64>) -> Point {
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    Point {
        t: (t * 1e6).round() / 1e6,
        requests,
        errors,
        p50: q(0.5),
        p99: q(0.99),
        max: if h.is_empty() { 0 } else { h.max() },
        histogram: encode(h),
    }
}

/// Merges the series of several processes (`loadgen merge`): each interval goes to the merged
/// interval its absolute start (`start_unix_s` + `t`) is nearest to, counts and histograms
/// added exactly. Every series must have the same interval.
pub fn merge_series(parts: &[(f64, &Series)], merged_start: f64) -> io::Result<Series> {
    let Some((_, first)) = parts.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no series"));
    };
    let interval_ms = first.interval_ms;
    if let Some((_, other)) = parts
        .iter()
        .find(|(_, s)| (s.interval_ms - interval_ms).abs() > 1e-6)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the series have different intervals ({interval_ms} ms and {} ms): run every \
                 loadgen with the same --interval and duration",
                other.interval_ms
            ),
        ));
    }
    let width = interval_ms / 1000.0;
    let mut slots: Vec<(u64, u64, Histogram<u64>)> = Vec::new();
    for (start, series) in parts {
        for p in &series.intervals {
            let at = start + p.t - merged_start;
            let i = (at / width).round().max(0.0) as usize;
            while slots.len() <= i {
                slots.push((0, 0, new_histogram()));
            }
            slots[i].0 += p.requests;
            slots[i].1 += p.errors;
            slots[i].2.add(decode(&p.histogram)?).expect("same bounds");
        }
    }
    Ok(Series {
        interval_ms,
        intervals: slots
            .iter()
            .enumerate()
            .map(|(i, (r, e, h))| point(i as f64 * width, *r, *e, h))
            .collect(),
    })
}

/// The tags of the two histograms each interval has in an `--hlog` file.
pub const CORRECTED: &str = "corrected";
pub const UNCORRECTED: &str = "uncorrected";

/// One interval of an interval log, its start absolute (seconds since the epoch).
pub struct LogInterval {
    pub tag: Option<String>,
    pub start_unix_s: f64,
    pub duration_s: f64,
    pub histogram: Histogram<u64>,
}

/// Writes an HdrHistogram interval log: StartTime and BaseTime at `start_unix_s` (the measured
/// window's start), interval timestamps relative to it, values (and the max column) in
/// microseconds: HistogramLogAnalyzer and HistogramLogProcessor read them with an output unit
/// ratio of 1000 for milliseconds.
pub fn write_log(
    out: &mut impl io::Write,
    start_unix_s: f64,
    intervals: &[LogInterval],
    comment: &str,
) -> io::Result<()> {
    let base = UNIX_EPOCH + Duration::from_secs_f64(start_unix_s.max(0.0));
    let mut text = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment(comment)
            .add_comment("Histogram values are in microseconds")
            .with_start_time(base)
            .with_base_time(base);
        builder.begin_log_with(&mut text, &mut serializer)?;
    }
    text.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    {
        let mut writer =
            IntervalLogWriterBuilder::new().begin_log_with(&mut text, &mut serializer)?;
        for iv in intervals {
            let tag = iv.tag.as_deref().and_then(Tag::new);
            writer
                .write_histogram(
                    &iv.histogram,
                    Duration::from_secs_f64((iv.start_unix_s - start_unix_s).max(0.0)),
                    Duration::from_secs_f64(iv.duration_s.max(0.0)),
                    tag,
                )
                .map_err(|e| io::Error::other(format!("interval log: {e:?}")))?;
        }
    }
    out.write_all(&text)
}

/// The whole run's series as interval log entries, corrected then uncorrected per interval.
pub fn log_intervals(merged: &Merged, start_unix_s: f64, duration_s: f64) -> Vec<LogInterval> {
    let width = merged.width.as_secs_f64();
    let mut out = Vec::new();
    for (i, iv) in merged.intervals.iter().enumerate() {
        let t = i as f64 * width;
        let duration_s = width.min(duration_s - t).max(0.0);
        for (tag, h) in [(CORRECTED, &iv.latency), (UNCORRECTED, &iv.uncorrected)] {
            out.push(LogInterval {
                tag: Some(tag.to_string()),
                start_unix_s: start_unix_s + t,
                duration_s,
                histogram: h.clone(),
            });
        }
    }
    out
}

/// Reads an interval log: every interval with its absolute start. BaseTime, when present,
/// is what timestamps count from; without it, StartTime is, unless the timestamps are
/// themselves absolute (the Java reader's rule: more than a year past zero).
pub fn read_log(text: &[u8]) -> Result<Vec<LogInterval>, String> {
    const YEAR_S: f64 = 365.25 * 86_400.0;
    let (mut base, mut start) = (None, None);
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(text) {
        match entry.map_err(|e| format!("not an interval log: {e:?}"))? {
            LogEntry::BaseTime(t) => base = Some(t.as_secs_f64()),
            LogEntry::StartTime(t) => start = Some(t.as_secs_f64()),
            LogEntry::Interval(iv) => {
                let ts = iv.start_timestamp().as_secs_f64();
                let origin = match (base, start) {
                    (Some(b), _) => b,
                    (None, Some(s)) if ts < s - YEAR_S => s,
                    _ => 0.0,
                };
                let bytes = base64_decode(iv.encoded_histogram())?;
                let h: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .map_err(|e| format!("interval at {ts}s: bad histogram: {e:?}"))?;
                let mut histogram = new_histogram();
                histogram
                    .add(&h)
                    .map_err(|e| format!("interval at {ts}s: {e:?}"))?;
                out.push(LogInterval {
                    tag: iv.tag().map(|t| t.as_str().to_string()),
                    start_unix_s: origin + ts,
                    duration_s: iv.duration().as_secs_f64(),
                    histogram,
                });
            }
        }
    }
    Ok(out)
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram base64: {e}"))
}

/// Merges interval logs of several processes, tag by tag: intervals are lined up by start
/// (each goes to the slot, one interval wide from the earliest start, that its start is
/// nearest to) and their histograms added exactly. Returns the merged intervals and the
/// earliest start.
pub fn merge_logs(logs: &[Vec<LogInterval>]) -> Result<(f64, Vec<LogInterval>), String> {
    let all = || logs.iter().flatten();
    let Some(origin) = all().map(|iv| iv.start_unix_s).min_by(f64::total_cmp) else {
        return Err("no interval in any log".into());
    };
    // The interval: the most common duration (a last, shorter interval does not count).
    let mut durations: Vec<u64> = all()
        .map(|iv| (iv.duration_s * 1000.0).round() as u64)
        .collect();
    durations.sort_unstable();
    let width_ms = durations
        .chunk_by(|a, b| a == b)
        .max_by_key(|run| (run.len(), run[0]))
        .map(|run| run[0])
        .unwrap_or(0);
    if width_ms == 0 {
        return Err("the logs' intervals have no duration".into());
    }
    if let Some(odd) = all().find(|iv| (iv.duration_s * 1000.0).round() as u64 > width_ms) {
        return Err(format!(
            "the logs have different intervals ({width_ms} ms and {} ms): record every log with \
             the same --interval",
            (odd.duration_s * 1000.0).round()
        ));
    }
    let width = width_ms as f64 / 1000.0;
    let mut tags: Vec<Option<String>> = Vec::new();
    for iv in all() {
        if !tags.contains(&iv.tag) {
            tags.push(iv.tag.clone());
        }
    }
    let mut slots: Vec<(usize, usize, f64, Histogram<u64>)> = Vec::new();
    for iv in all() {
        let slot = ((iv.start_unix_s - origin) / width).round().max(0.0) as usize;
        let tag = tags.iter().position(|t| *t == iv.tag).expect("listed");
        match slots.iter_mut().find(|s| s.0 == slot && s.1 == tag) {
            Some(s) => {
                s.2 = s.2.max(iv.duration_s);
                s.3.add(&iv.histogram).map_err(|e| format!("{e:?}"))?;
            }
            None => slots.push((slot, tag, iv.duration_s, iv.histogram.clone())),
        }
    }
    slots.sort_by_key(|s| (s.0, s.1));
    Ok((
        origin,
        slots
            .into_iter()
            .map(|(slot, tag, duration_s, histogram)| LogInterval {
                tag: tags[tag].clone(),
                start_unix_s: origin + slot as f64 * width,
                duration_s,
                histogram,
            })
            .collect(),
    ))
}

/// Where throughput fell below half its median: how many times (runs of consecutive
/// intervals), and the longest, in ms. Each interval's rate is its requests over the time it
/// covered of the measured window (`duration_s`); a last sliver under half an interval is left
/// out. None without a median to fall from.
pub fn stalls(series: &Series, duration_s: f64) -> Option<(usize, f64)> {
    let width = series.interval_ms / 1000.0;
    let rates: Vec<f64> = series
        .intervals
        .iter()
        .filter_map(|p| {
            let covered = width.min(duration_s - p.t);
            (covered >= width / 2.0).then(|| p.requests as f64 / covered)
        })
        .collect();
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => return None,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    if median <= 0.0 {
        return None;
    }
    let (mut count, mut longest, mut run) = (0, 0, 0);
    for &r in &rates {
        if r < median / 2.0 {
            run += 1;
            if run == 1 {
                count += 1;
            }
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    Some((count, longest as f64 * series.interval_ms))
}

/// Seconds since the epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_seals_intervals_and_doubles_past_the_limit() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Recorder::new(start, ms(10), None, None);
        r.record(start + ms(1), 100, 90);
        r.record(start + ms(25), 200, 190);
        r.error(start + ms(26));
        // 1 in [0,10), 0 in [10,20), 1 + an error in [20,30).
        let (series, total, _) = r.finish(start + ms(29));
        assert_eq!(series.width, ms(10));
        let counts: Vec<(u64, u64)> = series
            .sealed
            .iter()
            .map(|s| (s.requests, s.errors))
            .collect();
        assert_eq!(counts, [(1, 0), (0, 0), (1, 1)]);
        assert_eq!(total.len(), 2);
        // A request in each of 1201 intervals of 1 ms: the width doubles twice (600 at 1 ms,
        // then 600 at 2 ms), and nothing is lost.
        let mut r = Recorder::new(start, ms(1), None, None);
        for i in 0..1201u64 {
            r.record(start + Duration::from_micros(i * 1000 + 500), 10 + i, 10);
        }
        let (series, total, _) = r.finish(start + Duration::from_micros(1_200_900));
        assert_eq!(series.width, ms(4));
        assert_eq!(series.sealed.iter().map(|s| s.requests).sum::<u64>(), 1201);
        assert_eq!(series.sealed.len(), 301);
        assert_eq!(series.sealed[0].requests, 4);
        assert_eq!(total.len(), 1201);
        let merged = merge_threads(vec![series]);
        assert_eq!(merged.intervals[1].latency.min(), 14);
    }

    #[test]
    fn a_completion_after_the_end_counts_in_the_last_interval() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Recorder::new(start, ms(100), Some(start + ms(300)), None);
        r.record(start + ms(305), 5, 5);
        let (series, _, _) = r.finish(start + ms(310));
        assert_eq!(series.sealed.len(), 3);
        assert_eq!(series.sealed[2].requests, 1);
    }

    #[test]
    fn logs_merge_interval_by_interval_by_start() {
        let h = |values: &[u64]| {
            let mut h = new_histogram();
            for &v in values {
                h.record(v).unwrap();
            }
            h
        };
        let log = |start: f64, values: &[&[u64]]| {
            let intervals: Vec<LogInterval> = values
                .iter()
                .enumerate()
                .map(|(i, v)| LogInterval {
                    tag: Some(CORRECTED.into()),
                    start_unix_s: start + i as f64 * 0.1,
                    duration_s: 0.1,
                    histogram: h(v),
                })
                .collect();
            let mut text = Vec::new();
            write_log(&mut text, start, &intervals, "test").unwrap();
            read_log(&text).unwrap()
        };
        // The second process started 30 ms later: its intervals line up with the first's.
        let a = log(1_700_000_000.0, &[&[10, 20], &[30]]);
        let b = log(1_700_000_000.03, &[&[40], &[50, 60], &[70]]);
        let (origin, merged) = merge_logs(&[a, b]).unwrap();
        assert_eq!(origin, 1_700_000_000.0);
        let lens: Vec<u64> = merged.iter().map(|iv| iv.histogram.len()).collect();
        assert_eq!(lens, [3, 3, 1]);
        assert_eq!(merged[1].histogram.max(), h(&[60]).max());
        assert!((merged[2].start_unix_s - 1_700_000_000.2).abs() < 1e-6);
    }
}
