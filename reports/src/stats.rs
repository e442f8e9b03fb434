//! Medians, bootstrap confidence intervals and coefficients of variation over trials.

/// Resamples drawn for a bootstrap interval.
const RESAMPLES: usize = 2000;

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Coefficient of variation: standard deviation over mean (0 for fewer than two values).
pub fn cv(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    let var = values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    if m == 0.0 {
        0.0
    } else {
        var.sqrt() / m.abs()
    }
}

/// Stalls in a series of rates: runs of consecutive values below half the series' median.
/// Returns how many runs, and the longest, in values; `None` when the median is 0 (nothing
/// to fall from) or there are no values.
pub fn dips(rates: &[f64]) -> Option<(usize, usize)> {
    let m = median(rates);
    if m.is_nan() || m <= 0.0 {
        return None;
    }
    let (mut count, mut longest, mut run) = (0, 0, 0);
    for &r in rates {
        if r < m / 2.0 {
            run += 1;
            if run == 1 {
                count += 1;
            }
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    Some((count, longest))
}

/// A small deterministic generator, so a report is the same every time it is rendered.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn resample(values: &[f64], rng: &mut Rng) -> Vec<f64> {
    (0..values.len())
        .map(|_| values[rng.below(values.len())])
        .collect()
}

fn percentile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// 95% bootstrap interval of the median (percentile method).
pub fn median_ci(values: &[f64]) -> (f64, f64) {
    if values.len() < 2 {
        let m = median(values);
        return (m, m);
    }
    let mut rng = Rng::new(0x9e37_79b9);
    let mut medians: Vec<f64> = (0..RESAMPLES)
        .map(|_| median(&resample(values, &mut rng)))
        .collect();
    medians.sort_by(f64::total_cmp);
    (
        percentile_of_sorted(&medians, 0.025),
        percentile_of_sorted(&medians, 0.975),
    )
}

/// Relative change of the median from `base` to `new` (0.05 = 5% higher), with its 95%
/// bootstrap interval (both sides resampled).
pub fn change_ci(base: &[f64], new: &[f64]) -> (f64, f64, f64) {
    let change = |b: &[f64], n: &[f64]| {
        let mb = median(b);
        if mb == 0.0 {
            0.0
        } else {
            median(n) / mb - 1.0
        }
    };
    let point = change(base, new);
    let mut rng = Rng::new(0x5851_f42d);
    let mut changes: Vec<f64> = (0..RESAMPLES)
        .map(|_| change(&resample(base, &mut rng), &resample(new, &mut rng)))
        .collect();
    changes.sort_by(f64::total_cmp);
    (
        point,
        percentile_of_sorted(&changes, 0.025),
        percentile_of_sorted(&changes, 0.975),
    )
}

/// The paired form of [`change_ci`], for trials run in the same rounds: the change is the
/// median over rounds of `new / base - 1` taken round by round (`pairs`: base, new), with the
/// 95% bootstrap interval of that median (rounds resampled whole, so each keeps its pair).
/// What both trials of a round shared (the machine's speed at the time) cancels.
pub fn paired_change_ci(pairs: &[(f64, f64)]) -> (f64, f64, f64) {
    let changes: Vec<f64> = pairs
        .iter()
        .filter(|(b, _)| *b != 0.0)
        .map(|(b, n)| n / b - 1.0)
        .collect();
    if changes.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let (lo, hi) = median_ci(&changes);
    (median(&changes), lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((cv(&[10.0, 10.0, 10.0])).abs() < 1e-12);
        assert!(cv(&[9.0, 10.0, 11.0]) > 0.09);
        let (lo, hi) = median_ci(&[100.0, 101.0, 99.0, 100.5, 99.5]);
        assert!(lo <= 100.0 && hi >= 100.0 && hi - lo <= 2.0);
        let (c, lo, hi) = change_ci(&[100.0, 101.0, 99.0], &[80.0, 81.0, 79.0]);
        assert!((c + 0.2).abs() < 1e-9 && hi < 0.0 && lo < hi);
        let (c, lo, hi) = change_ci(&[100.0, 100.0], &[100.0, 100.0]);
        assert_eq!((c, lo, hi), (0.0, 0.0, 0.0));
        // Paired: rounds at two speeds, the new side 10% lower in each; the speed cancels.
        let pairs = [(100.0, 90.0), (150.0, 135.0), (100.0, 90.0), (150.0, 135.0)];
        let (c, lo, hi) = paired_change_ci(&pairs);
        assert!((c + 0.1).abs() < 1e-9 && (lo + 0.1).abs() < 1e-9 && (hi + 0.1).abs() < 1e-9);
        let unpaired = change_ci(&[100.0, 150.0, 100.0, 150.0], &[90.0, 135.0, 90.0, 135.0]);
        assert!(
            unpaired.2 > 0.0,
            "unpaired, the speeds swamp it: {unpaired:?}"
        );
    }
}
