//! `--start-at`: start the run at a given time on this host's clock, so that loadgens on
//! several hosts measure the same window (the bench runner gives each the same instant,
//! corrected by that host's measured clock offset).
//!
//! The time is checked before anything else happens: a start already past would measure a
//! window the others did not (the caller was too slow to reach this host, or its clock is
//! wrong), and one far ahead is almost always a typo (milliseconds for seconds) that would
//! leave a process waiting for days. Both are refused with the numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The furthest ahead a start may be: room for a cluster to schedule its pods and pull an
/// image, short of anything a person would wait for.
pub const MAX_AHEAD: Duration = Duration::from_secs(3600);

/// Seconds since the Unix epoch, as `--start-at` takes it: `1700000000` or `1700000000.25`.
pub fn parse(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(at) if at.is_finite() && at > 0.0 => Ok(at),
        _ => Err(format!(
            "'{text}' is not a time: give seconds since the Unix epoch, e.g. $(( $(date +%s) + 5 ))"
        )),
    }
}

/// How long to wait from `now` until `at` (both seconds since the epoch), or why not.
pub fn wait_for(at: f64, now: f64) -> Result<Duration, String> {
    if at < now {
        return Err(format!(
            "--start-at {at:.3} is {:.3} s in the past on this host's clock ({now:.3}): the \
             start must be ahead of every host that waits for it",
            now - at
        ));
    }
    let ahead = Duration::from_secs_f64(at - now);
    if ahead > MAX_AHEAD {
        return Err(format!(
            "--start-at {at:.3} is {:.0} s ahead of this host's clock ({now:.3}), more than \
             the {} s allowed (seconds, not milliseconds?)",
            ahead.as_secs_f64(),
            MAX_AHEAD.as_secs()
        ));
    }
    Ok(ahead)
}

/// Sleeps until the wall clock reads `at`. The clock is read again after each sleep, so a
/// step of the clock (NTP) while waiting moves the start with it, as on every other host.
pub fn sleep_until(at: f64) {
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        if now >= at {
            return;
        }
        std::thread::sleep(Duration::from_secs_f64(at - now).min(Duration::from_millis(200)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_and_far_future_are_refused() {
        let now = 1_700_000_000.0;
        assert_eq!(wait_for(now + 2.5, now), Ok(Duration::from_secs_f64(2.5)));
        assert_eq!(wait_for(now, now), Ok(Duration::ZERO));
        let past = wait_for(now - 0.5, now).unwrap_err();
        assert!(past.contains("0.500 s in the past"), "{past}");
        let far = wait_for(now + MAX_AHEAD.as_secs_f64() + 1.0, now).unwrap_err();
        assert!(far.contains("more than the 3600 s allowed"), "{far}");
        assert!(wait_for(now + MAX_AHEAD.as_secs_f64(), now).is_ok());
    }

    #[test]
    fn parses_seconds_with_a_fraction() {
        assert_eq!(parse("1700000000.25"), Ok(1_700_000_000.25));
        assert!(parse("soon").is_err());
        assert!(parse("-5").is_err());
        assert!(parse("inf").is_err());
    }
}
