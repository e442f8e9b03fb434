//! Medians, bootstrap confidence intervals, moderated intervals of a ratio (Student's t with
//! spreads shrunk toward a group's) and coefficients of variation over trials.

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
    if m == 0.0 {
        0.0
    } else {
        variance(values).sqrt() / m.abs()
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

/// The paired form of [`change_ci`] (where [`moderated_paired_change`] cannot take
/// logarithms), for trials run in the same rounds: the change is the
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

/// The variance of the per-round log ratios `ln(new / base)` of `pairs` (base, new) and its
/// degrees of freedom (n - 1); `None` below two pairs or when a value is not positive.
pub fn log_ratio_variance(pairs: &[(f64, f64)]) -> Option<(f64, f64)> {
    let logs = log_ratios(pairs)?;
    (logs.len() >= 2).then(|| (variance(&logs), (logs.len() - 1) as f64))
}

fn log_ratios(pairs: &[(f64, f64)]) -> Option<Vec<f64>> {
    let positive = |x: f64| x > 0.0 && x.is_finite();
    pairs
        .iter()
        .map(|&(b, n)| (positive(b) && positive(n)).then(|| (n / b).ln()))
        .collect()
}

/// The paired change with a moderated interval, for trials run in the same rounds: the mean
/// over rounds of `ln(new / base)` (the change is the geometric mean of the per-round
/// ratios), ± t x its standard error, the variance of the per-round logs shrunk toward
/// `prior` (a group's typical one for a pair of its models), which counts as `weight`
/// degrees of freedom; t at the degrees of freedom both rest on (limma's moderated t on log
/// ratios). Not the bootstrap of the median of a few ratios ([`paired_change_ci`]): at 4
/// rounds that interval is their range, which holds the true ratio only 7 times in 8 (1 -
/// 2/2^4), and four ratios that happen to sit close claim a precision the pair does not have.
/// The mean, not the median: t is exact for it (normal logs); the median's variance at 4 to 6
/// values is not the pi/2 times the mean's that [`moderated_change`] takes for large samples,
/// and taken so it made the interval miss 1 time in 100 where it claims 5 (so hid real
/// differences). A round far off moves the mean, and widens the interval with it.
/// `None` when a value is not positive.
pub fn moderated_paired_change(
    pairs: &[(f64, f64)],
    prior: f64,
    weight: f64,
) -> Option<(f64, f64, f64)> {
    let logs = log_ratios(pairs)?;
    if logs.is_empty() {
        return None;
    }
    let df = (logs.len() - 1) as f64;
    let se = (shrunk(variance(&logs), df, prior, weight) / logs.len() as f64).sqrt();
    let q = t975(df + weight);
    let c = mean(&logs);
    Some((
        c.exp() - 1.0,
        (c - q * se).exp() - 1.0,
        (c + q * se).exp() - 1.0,
    ))
}

/// The 97.5th percentile of Student's t with `df` degrees of freedom: the multiplier of a
/// standard error for a two-sided 95% interval. Exact to three decimals up to 30 degrees of
/// freedom (the table); a Cornish-Fisher expansion around the normal's 1.96 beyond, which is
/// within 0.001 there.
pub fn t975(df: f64) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if !df.is_finite() {
        return 1.959_964;
    }
    let df = df.max(1.0);
    if df <= 30.0 {
        // Between two whole degrees of freedom (a moderated count can be fractional), the
        // more cautious of the two.
        return TABLE[df.floor() as usize - 1];
    }
    let z: f64 = 1.959_964;
    z + (z.powi(3) + z) / (4.0 * df)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df)
}

/// Sample variance (n - 1), 0 for fewer than two values.
pub fn variance(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64
}

/// The spread of one side of a moderated comparison: its values' logarithms (all positive
/// values) and the variance of those, moderated toward a group's typical one.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    /// ln of the median.
    pub centre: f64,
    /// Moderated variance of one ln value.
    pub variance: f64,
    pub n: usize,
    /// The values' own degrees of freedom (n - 1) and the group's weight in them.
    pub own_df: f64,
    pub weight: f64,
}

impl Spread {
    /// `values` (all > 0) with their own variance of logarithms shrunk toward `group`, the
    /// group's typical variance, which counts as `weight` degrees of freedom (empirical
    /// Bayes, as limma's moderated t: with three trials a model's own spread is itself a
    /// guess, often far too tight or too wide). `None` if a value is not positive.
    pub fn moderated(values: &[f64], group: f64, weight: f64) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
            return None;
        }
        let logs: Vec<f64> = values.iter().map(|v| v.ln()).collect();
        let own_df = (logs.len() - 1) as f64;
        let variance = shrunk(variance(&logs), own_df, group, weight);
        Some(Spread {
            centre: median(values).ln(),
            variance,
            n: logs.len(),
            own_df,
            weight,
        })
    }
}

/// A sample variance on `df` degrees of freedom shrunk toward `prior`, which counts as
/// `weight` degrees of freedom (0 when both are 0).
fn shrunk(own: f64, df: f64, prior: f64, weight: f64) -> f64 {
    if df + weight > 0.0 {
        (df * own + weight * prior) / (df + weight)
    } else {
        0.0
    }
}

/// The typical one of a group's sample variances (`dfs` their degrees of freedom): their
/// median divided by the median of a chi-squared variable over its degrees of freedom
/// (Wilson-Hilferty: (1 - 2/9k)^3 at the median k), since the median of sample variances
/// falls short of the variance they estimate (by 0.69 at 2 degrees of freedom). 0 when there
/// are none.
pub fn typical_variance(variances: &[f64], dfs: &[f64]) -> f64 {
    if variances.is_empty() {
        return 0.0;
    }
    let k = median(dfs);
    median(variances) / (1.0 - 2.0 / (9.0 * k)).powi(3)
}

/// Relative change of the median from `base` to `new` with its 95% interval from moderated
/// spreads ([`Spread::moderated`]): the difference of log medians ± t x its standard error,
/// the median's variance taken as pi/2 times the mean's (its large-sample efficiency for
/// normal data), with t at the degrees of freedom both sides' variances rest on (their own,
/// and the group's once: it is the same group).
pub fn moderated_change(base: &Spread, new: &Spread) -> (f64, f64, f64) {
    let d = new.centre - base.centre;
    let se = (std::f64::consts::FRAC_PI_2
        * (base.variance / base.n as f64 + new.variance / new.n as f64))
        .sqrt();
    let q = t975(base.own_df + new.own_df + base.weight.max(new.weight));
    (
        d.exp() - 1.0,
        (d - q * se).exp() - 1.0,
        (d + q * se).exp() - 1.0,
    )
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

    /// A standard normal draw (Box-Muller) from the deterministic generator.
    fn normal(rng: &mut Rng) -> f64 {
        let u = |rng: &mut Rng| (rng.below(1 << 30) as f64 + 0.5) / (1u64 << 30) as f64;
        let (u1, u2) = (u(rng), u(rng));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    #[test]
    fn paired_intervals_at_four_rounds_hold_the_true_ratio() {
        // Two servers of the same speed, four rounds, each round's ratio off by normal noise
        // of 5%: how often does the interval miss the true ratio, 1? The bootstrap of the
        // median of four ratios (their range) misses 1 time in 8, past its 95%; the
        // moderated interval, alone (no group: exactly 1 in 20 in theory, so the bound
        // leaves two standard errors of 4000 draws) or with the group's spread known,
        // about 1 in 20 or fewer.
        let mut rng = Rng::new(7);
        let (mut boot, mut alone, mut grouped) = (0, 0, 0);
        let draws = 4000;
        for _ in 0..draws {
            let pairs: Vec<(f64, f64)> = (0..4)
                .map(|_| (100.0, 100.0 * (0.05 * normal(&mut rng)).exp()))
                .collect();
            let misses = |(_, lo, hi): (f64, f64, f64)| usize::from(lo > 0.0 || hi < 0.0);
            boot += misses(paired_change_ci(&pairs));
            alone += misses(moderated_paired_change(&pairs, 0.0, 0.0).unwrap());
            grouped += misses(moderated_paired_change(&pairs, 0.05f64.powi(2), 2.0).unwrap());
        }
        let share = |k: usize| k as f64 / draws as f64;
        assert!(share(boot) > 0.09, "bootstrap misses {}", share(boot));
        assert!(share(alone) <= 0.057, "alone misses {}", share(alone));
        assert!(share(grouped) <= 0.05, "grouped misses {}", share(grouped));
        // A pair whose four ratios sit still in a group whose pairs move by 5%: the group's
        // spread widens it; where the group is as still, the same ratios are as precise.
        let still = [(100.0, 95.0), (100.0, 95.1), (100.0, 94.9), (100.0, 95.05)];
        let (_, lo_noisy, _) = moderated_paired_change(&still, 0.05f64.powi(2), 2.0).unwrap();
        let (_, lo_still, _) = moderated_paired_change(&still, 1e-6, 2.0).unwrap();
        assert!(
            lo_noisy < -0.08 && lo_still > -0.06,
            "{lo_noisy} {lo_still}"
        );
        assert!(moderated_paired_change(&[(100.0, 0.0)], 0.0, 0.0).is_none());
        assert_eq!(log_ratio_variance(&[(100.0, 95.0)]), None);
    }

    #[test]
    fn t_quantiles() {
        assert_eq!(t975(2.0), 4.303);
        assert_eq!(t975(2.5), 4.303);
        assert_eq!(t975(30.0), 2.042);
        assert!((t975(31.0) - 2.040).abs() < 0.001);
        assert!((t975(60.0) - 2.000).abs() < 0.001);
        assert!((t975(120.0) - 1.980).abs() < 0.001);
        assert!((t975(f64::INFINITY) - 1.96).abs() < 0.001);
        assert_eq!(t975(0.2), 12.706);
    }

    #[test]
    fn moderated_spreads() {
        // Three identical trials alone would claim certainty; the group's spread widens them.
        let tight = Spread::moderated(&[100.0, 100.0, 100.0], 0.01, 2.0).unwrap();
        assert!((tight.variance - 0.005).abs() < 1e-12 && tight.own_df == 2.0);
        assert!(Spread::moderated(&[100.0, 0.0], 0.01, 2.0).is_none());
        assert!(Spread::moderated(&[], 0.01, 2.0).is_none());
        // 20% apart with 1% spreads: separated, the point is the ratio of the medians.
        let a = Spread::moderated(&[100.0, 101.0, 99.0], 0.0001, 2.0).unwrap();
        let b = Spread::moderated(&[80.0, 81.0, 79.0], 0.0001, 2.0).unwrap();
        let (c, lo, hi) = moderated_change(&a, &b);
        assert!(
            (c + 0.2).abs() < 1e-9 && lo < c && c < hi && hi < -0.15,
            "{lo} {hi}"
        );
        // The same gap in a group whose trials spread by 20%: not separated.
        let a = Spread::moderated(&[100.0, 101.0, 99.0], 0.04, 2.0).unwrap();
        let b = Spread::moderated(&[80.0, 81.0, 79.0], 0.04, 2.0).unwrap();
        assert!(moderated_change(&a, &b).2 > 0.0);
    }
}
