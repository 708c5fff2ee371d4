//! The statistics of a multiple-choice evaluation, from candidate scores (sums of log-probs):
//! choice probabilities, accuracy with a Wilson interval, percentile-bootstrap intervals of
//! means and paired changes, the exact McNemar test, and steerability slopes.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The 97.5% quantile of the standard normal, for 95% intervals.
const Z95: f64 = 1.959963984540054;
/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 10_000;

/// `softmax(scores)`: the probability of each candidate among the item's candidates.
pub fn choice_probs(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / total).collect()
}

/// The highest-scoring candidate, the lowest index on ties.
pub fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

/// `log p(correct) - log(1 - p(correct))`, computed from the scores without forming the
/// probabilities: for two candidates, the score difference.
pub fn logit_difference(scores: &[f64], correct: usize) -> f64 {
    let others: Vec<f64> = scores
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != correct)
        .map(|(_, s)| *s)
        .collect();
    let max = others.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + others.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
    scores[correct] - lse
}

/// The Wilson score interval for `k` successes in `n` trials, at 95%.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (center - half, center + half)
}

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q` quantile with linear interpolation between order statistics (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

/// The 95% percentile-bootstrap interval of the mean of `xs`: [`RESAMPLES`] resamples of the
/// items with replacement from a generator seeded with `seed`, so the same seed gives the same
/// interval. Paired changes pass the per-item differences.
pub fn bootstrap_mean(xs: &[f64], seed: u64) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| xs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    (quantile(&means, 0.025), quantile(&means, 0.975))
}

/// The exact (binomial) McNemar p-value for `b` items that went right -> wrong and `c` that
/// went wrong -> right: `min(1, 2 P[X <= min(b, c)])` for `X ~ Bin(b + c, 1/2)`.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // The binomial pmf in logs, accumulated from 0: exact enough for tens of thousands.
    let mut log_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut log_cdf = log_pmf;
    for i in 0..b.min(c) {
        log_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
        let (hi, lo) = if log_cdf > log_pmf {
            (log_cdf, log_pmf)
        } else {
            (log_pmf, log_cdf)
        };
        log_cdf = hi + (lo - hi).exp().ln_1p();
    }
    (2.0 * log_cdf.exp()).min(1.0)
}

/// The least-squares slope of `ys` against `xs`; `None` when the `xs` do not vary.
pub fn slope(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let (mx, my) = (mean(xs), mean(ys));
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    Some(sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_and_logit_difference_agree() {
        let s = [-1.0, -2.5, -0.5];
        let p = choice_probs(&s);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let ld = logit_difference(&s, 0);
        assert!((ld - (p[0] / (1.0 - p[0])).ln()).abs() < 1e-12);
        assert_eq!(logit_difference(&[-1.0, -3.0], 0), 2.0);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn mcnemar_small_cases() {
        // b = 0, c = 3: 2 * 0.5^3
        assert!((mcnemar_exact(0, 3) - 0.25).abs() < 1e-12);
        assert_eq!(mcnemar_exact(2, 2), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // b = 1, c = 4: 2 * (1 + 5) / 32
        assert!((mcnemar_exact(1, 4) - 0.375).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_is_seeded() {
        let xs: Vec<f64> = (0..30).map(|i| f64::from(i % 7)).collect();
        assert_eq!(bootstrap_mean(&xs, 3), bootstrap_mean(&xs, 3));
        let (lo, hi) = bootstrap_mean(&xs, 3);
        assert!(lo < mean(&xs) && mean(&xs) < hi);
    }

    #[test]
    fn slopes_and_quantiles() {
        assert_eq!(slope(&[-1.0, 0.0, 1.0], &[3.0, 1.0, -1.0]), Some(-2.0));
        assert_eq!(slope(&[1.0, 1.0], &[0.0, 2.0]), None);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
