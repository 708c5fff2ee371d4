//! The ways to turn one layer's per-pair activations into a steering direction: the mean
//! difference, steering-vectors' PCA and logistic aggregators, and repeng's `pca_diff` and
//! `pca_center`.
//!
//! References, read for their math (never copied):
//! - steering-vectors 0.12.2, `steering_vectors/aggregators.py`: `mean_aggregator`,
//!   `pca_aggregator` with `_uncentered_pca`, `logistic_aggregator` with
//!   `_get_normalized_regression_coef`;
//! - repeng 0.4.0, `repeng/extract.py::read_representations`: sklearn `PCA(n_components=1)`
//!   of the differences or of the pair-centred activations, then a sign by majority vote.
//!
//! Deterministic by construction: exact eigendecompositions where repeng runs a randomized,
//! unseeded PCA, a Newton solver started at zero for the logistic regression, and faer built
//! without its `rayon` feature, so nothing runs in parallel and the same activations always
//! give the same bits.
//!
//! Cost for `n` pairs of hidden size `h`, with `m = min(n, h)`: the differences take
//! `8·n·h` bytes in f64; PCA forms the smaller Gram matrix (`O(n·h·m)` time, `8·m²` bytes) and
//! eigendecomposes it (`O(m³)`); logistic regression forms the `n x n` Gram matrix
//! (`O(n²·h)`) and factors one `n x n` matrix per Newton step (`O(n³/3)`, 10 to 20 steps).
//! On two CPU cores that is about 0.1 s per layer for 500 pairs of width 4608 and 4 s for
//! 2000 (`benches/aggregate.rs`); `mean` is a single pass.

mod logistic;
mod pca;

use std::fmt;
use std::str::FromStr;

use faer::Mat;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a layer's activation differences become its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregator {
    /// Mean over pairs of positive minus negative (steering-vectors' default); not normalized.
    #[default]
    Mean,
    /// steering-vectors' `pca_aggregator`: the first principal direction of the differences
    /// and their negations (no centring), signed so the differences project positively on
    /// average.
    Pca,
    /// steering-vectors' `logistic_aggregator`: the coefficient of an L2-regularized logistic
    /// regression separating the pair-centred positives from the negatives.
    Logistic,
    /// repeng's `pca_diff`: the first principal component of the centred differences.
    PcaDiff,
    /// repeng's `pca_center`: the first principal component of the pair-centred activations.
    PcaCenter,
}

impl Aggregator {
    pub const ALL: [Aggregator; 5] = [
        Aggregator::Mean,
        Aggregator::Pca,
        Aggregator::Logistic,
        Aggregator::PcaDiff,
        Aggregator::PcaCenter,
    ];

    /// The name on the command line, in files and in serde.
    pub fn name(self) -> &'static str {
        match self {
            Aggregator::Mean => "mean",
            Aggregator::Pca => "pca",
            Aggregator::Logistic => "logistic",
            Aggregator::PcaDiff => "pca-diff",
            Aggregator::PcaCenter => "pca-center",
        }
    }

    /// Whether the direction comes out with unit L2 norm (all but `mean`).
    pub fn is_unit_norm(self) -> bool {
        self != Aggregator::Mean
    }
}

impl fmt::Display for Aggregator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Aggregator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim();
        Aggregator::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                let names: Vec<String> = Aggregator::ALL
                    .iter()
                    .map(|a| format!("`{}`", a.name()))
                    .collect();
                Error::new(format!("unknown aggregator `{name}`"))
                    .with_hint(format!("use one of {}", names.join(", ")))
            })
    }
}

/// The direction of one layer from its pairs: pair `i` is `(positive[i], negative[i])`.
///
/// `mean` returns the mean difference as today's trainer computes it; every other method
/// returns a unit vector (the zero vector only where steering-vectors' `pca` itself does).
pub fn aggregate(
    method: Aggregator,
    positive: &[Vec<f32>],
    negative: &[Vec<f32>],
) -> Result<Vec<f32>> {
    let hidden = check_pairs(positive, negative)?;
    // The aggregators read `d` (`n x h`, a row per pair) as a view of this transpose.
    let dt = || differences(positive, negative, hidden);
    let direction = match method {
        Aggregator::Mean => return mean_difference(positive, negative, hidden),
        Aggregator::Pca => pca::steering_vectors(dt().transpose())?,
        Aggregator::Logistic => logistic::coefficients(dt().transpose())?,
        Aggregator::PcaDiff => pca::repeng_diff(dt().transpose())?,
        Aggregator::PcaCenter => pca::repeng_center(dt().transpose())?,
    };
    Ok(unit_f32(&direction))
}

/// Scales `v` to unit L2 norm (computed in f64); the zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// The hidden size shared by every activation, refusing ragged, empty or non-finite input.
fn check_pairs(positive: &[Vec<f32>], negative: &[Vec<f32>]) -> Result<usize> {
    if positive.len() != negative.len() {
        return Err(Error::new(format!(
            "{} positive activations but {} negative ones: every pair needs both",
            positive.len(),
            negative.len()
        )));
    }
    let Some(first) = positive.first() else {
        return Err(Error::new("no pairs to aggregate"));
    };
    let hidden = first.len();
    if hidden == 0 {
        return Err(Error::new("the activations are empty"));
    }
    for (i, (p, q)) in positive.iter().zip(negative).enumerate() {
        if p.len() != hidden || q.len() != hidden {
            return Err(Error::new(format!(
                "pair {i} has activations of sizes {} and {}, expected {hidden}",
                p.len(),
                q.len()
            )));
        }
        if p.iter().chain(q).any(|x| !x.is_finite()) {
            return Err(Error::new(format!("pair {i} has a non-finite activation")));
        }
    }
    Ok(hidden)
}

/// `mean(pos - neg)` with the trainer's arithmetic: per pair add the positive side, subtract
/// the negative side, in f64 and pair order; divide by n; cast to f32.
fn mean_difference(
    positive: &[Vec<f32>],
    negative: &[Vec<f32>],
    hidden: usize,
) -> Result<Vec<f32>> {
    let mut sum = vec![0f64; hidden];
    for (p, q) in positive.iter().zip(negative) {
        for (s, a) in sum.iter_mut().zip(p) {
            *s += f64::from(*a);
        }
        for (s, b) in sum.iter_mut().zip(q) {
            *s -= f64::from(*b);
        }
    }
    let count = positive.len() as f64;
    let v: Vec<f32> = sum.into_iter().map(|x| (x / count) as f32).collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::new(
            "the mean difference is not finite: the activation difference exceeds f32",
        ));
    }
    Ok(v)
}

/// The differences `pos - neg`, exact in f64, one pair per column (`h x n`): faer stores
/// columns contiguously, so each pair's difference is read and written in one run.
fn differences(positive: &[Vec<f32>], negative: &[Vec<f32>], hidden: usize) -> Mat<f64> {
    Mat::from_fn(hidden, positive.len(), |k, i| {
        f64::from(positive[i][k]) - f64::from(negative[i][k])
    })
}

/// `v / |v|` cast to f32 (the zero vector stays zero).
fn unit_f32(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter().map(|a| (a / norm) as f32).collect()
    } else {
        vec![0.0; v.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random activations in [-1, 1).
    fn noise(seed: u64, n: usize, h: usize) -> Vec<Vec<f32>> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                (0..h)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    /// Negatives such that pair `i`'s difference is `deltas[i]`.
    fn with_deltas(positive: &[Vec<f32>], deltas: &[Vec<f32>]) -> Vec<Vec<f32>> {
        positive
            .iter()
            .zip(deltas)
            .map(|(p, d)| p.iter().zip(d).map(|(a, b)| a - b).collect())
            .collect()
    }

    fn scaled(u: &[f32], t: f32) -> Vec<f32> {
        u.iter().map(|x| x * t).collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut u = v.to_vec();
        normalize(&mut u);
        u
    }

    #[test]
    fn names_parse_display_and_serialize_the_same() {
        for a in Aggregator::ALL {
            assert_eq!(a.name().parse::<Aggregator>().unwrap(), a);
            assert_eq!(a.to_string(), a.name());
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<Aggregator>(&json).unwrap(), a);
        }
        assert_eq!(Aggregator::default(), Aggregator::Mean);
        let e = "pca_diff".parse::<Aggregator>().unwrap_err();
        assert_eq!(e.message(), "unknown aggregator `pca_diff`");
        assert_eq!(
            e.hint(),
            Some("use one of `mean`, `pca`, `logistic`, `pca-diff`, `pca-center`")
        );
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = [3.0f32, -4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, -0.8]);
        let mut z = [0.0f32; 3];
        normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }

    #[test]
    fn mean_is_the_trainers_formula_bit_for_bit() {
        let (pos, neg) = (noise(1, 7, 33), noise(2, 7, 33));
        // src/train.rs: sum += sign * act in f64, side by side, then / n and cast.
        let mut sum = vec![0f64; 33];
        for (p, q) in pos.iter().zip(&neg) {
            for (side, sign) in [(p, 1.0), (q, -1.0)] {
                for (s, a) in sum.iter_mut().zip(side) {
                    *s += sign * f64::from(*a);
                }
            }
        }
        let want: Vec<f32> = sum.iter().map(|x| (x / 7.0) as f32).collect();
        let got = aggregate(Aggregator::Mean, &pos, &neg).unwrap();
        assert_eq!(got, want);
        let one = aggregate(Aggregator::Mean, &[vec![1.0, 5.0]], &[vec![3.0, 1.0]]).unwrap();
        assert_eq!(one, [-2.0, 4.0]);
    }

    #[test]
    fn pca_of_deltas_along_one_direction_is_that_direction_signed_by_the_mean() {
        let u = noise(3, 1, 16).remove(0);
        let pos = noise(4, 3, 16);
        for (ts, sign) in [([2.0, 3.0, -1.0], 1.0), ([-2.0, -3.0, 1.0], -1.0)] {
            let deltas: Vec<Vec<f32>> = ts.iter().map(|&t| scaled(&u, t)).collect();
            let got = aggregate(Aggregator::Pca, &pos, &with_deltas(&pos, &deltas)).unwrap();
            let cos = cosine(&got, &u);
            assert!((cos - sign).abs() < 1e-6, "{cos}");
            assert!((cosine(&got, &got) - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn pca_is_zero_where_torch_sign_is_zero() {
        // Deltas u and -u: the mean projection is exactly zero, and steering-vectors
        // multiplies the direction by sign(0) = 0.
        let u = vec![0.5f32, -1.0, 0.25];
        let pos = vec![u.clone(), vec![0.0; 3]];
        let neg = vec![vec![0.0; 3], u.clone()];
        assert_eq!(aggregate(Aggregator::Pca, &pos, &neg).unwrap(), [0.0; 3]);
        let same = vec![vec![1.0f32; 3]; 2];
        assert_eq!(aggregate(Aggregator::Pca, &same, &same).unwrap(), [0.0; 3]);
    }

    #[test]
    fn repeng_breaks_a_tied_vote_by_sklearns_svd_flip() {
        // Deltas u and -u: one pair votes each way, so the sign is svd_flip's: the entry of
        // largest magnitude (-1.0 here) comes out positive.
        let u = vec![0.5f32, -1.0, 0.25];
        let pos = vec![u.clone(), vec![0.0; 3]];
        let neg = vec![vec![0.0; 3], u.clone()];
        let got = aggregate(Aggregator::PcaCenter, &pos, &neg).unwrap();
        assert!((cosine(&got, &u) + 1.0).abs() < 1e-12, "{got:?}");
        assert!(got[1] > 0.0);
    }

    #[test]
    fn repeng_methods_follow_the_majority_of_pairs() {
        // Differences base + t·u with base ⟂ u: centring leaves the t·u part, and the pairs
        // project positively exactly where t > 0.
        let u = vec![0.0f32, 1.0, 0.0, 0.0];
        let base = [2.0f32, 0.0, -1.0, 0.5];
        let pos = noise(6, 3, 4);
        for (ts, sign) in [([1.0f32, 2.0, -0.5], 1.0), ([-1.0, -2.0, 0.5], -1.0)] {
            let deltas: Vec<Vec<f32>> = ts
                .iter()
                .map(|&t| base.iter().zip(&u).map(|(b, x)| b + t * x).collect())
                .collect();
            let neg = with_deltas(&pos, &deltas);
            let got = aggregate(Aggregator::PcaDiff, &pos, &neg).unwrap();
            assert!((cosine(&got, &u) - sign).abs() < 1e-6, "{got:?}");
        }
        // Deltas ±u only, two positive: pca-center finds u and the vote keeps its sign.
        let deltas = vec![u.clone(), scaled(&u, 3.0), scaled(&u, -1.0)];
        let got = aggregate(Aggregator::PcaCenter, &pos, &with_deltas(&pos, &deltas)).unwrap();
        assert!((cosine(&got, &u) - 1.0).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn pca_center_shares_the_axis_of_pca() {
        for (n, h) in [(5, 12), (12, 5)] {
            let (pos, neg) = (noise(7, n, h), noise(8, n, h));
            let a = aggregate(Aggregator::Pca, &pos, &neg).unwrap();
            let b = aggregate(Aggregator::PcaCenter, &pos, &neg).unwrap();
            assert!((cosine(&a, &b).abs() - 1.0).abs() < 1e-6, "{n}x{h}");
        }
    }

    #[test]
    fn wide_and_tall_gram_paths_agree() {
        // 6 pairs in 4 dimensions take the `h x h` path; padded to 8 dimensions with zeros,
        // the `n x n` path. The direction must be the same.
        let (pos, neg) = (noise(9, 6, 4), noise(10, 6, 4));
        let pad = |v: &[Vec<f32>]| -> Vec<Vec<f32>> {
            v.iter()
                .map(|a| a.iter().copied().chain([0.0; 4]).collect())
                .collect()
        };
        for method in [Aggregator::Pca, Aggregator::PcaDiff, Aggregator::Logistic] {
            let tall = aggregate(method, &pos, &neg).unwrap();
            let wide = aggregate(method, &pad(&pos), &pad(&neg)).unwrap();
            assert_eq!(&wide[4..], &[0.0; 4]);
            assert!((cosine(&tall, &wide[..4]) - 1.0).abs() < 1e-9, "{method}");
        }
    }

    #[test]
    fn every_unit_method_returns_unit_vectors_and_the_same_bits_twice() {
        let (pos, neg) = (noise(11, 9, 20), noise(12, 9, 20));
        for method in Aggregator::ALL {
            let a = aggregate(method, &pos, &neg).unwrap();
            assert_eq!(a, aggregate(method, &pos, &neg).unwrap(), "{method}");
            if method.is_unit_norm() {
                let norm = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                assert!((norm - 1.0).abs() < 1e-6, "{method}: {norm}");
            }
        }
    }

    #[test]
    fn logistic_of_deltas_along_one_direction_is_that_direction() {
        let u = noise(13, 1, 10).remove(0);
        let pos = noise(14, 4, 10);
        let deltas: Vec<Vec<f32>> = [1.0, 0.5, 2.0, 0.1]
            .iter()
            .map(|&t| scaled(&u, t))
            .collect();
        let got = aggregate(Aggregator::Logistic, &pos, &with_deltas(&pos, &deltas)).unwrap();
        assert!((cosine(&got, &u) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_input_is_refused_with_a_reason() {
        let one = (vec![vec![1.0f32, 2.0]], vec![vec![0.0f32, 1.0]]);
        let e = aggregate(Aggregator::PcaDiff, &one.0, &one.1).unwrap_err();
        assert!(e.message().contains("`pca-diff`"), "{}", e.message());
        assert!(e.hint().unwrap().contains("`mean`"));
        let same = vec![vec![1.0f32; 3]; 2];
        assert!(aggregate(Aggregator::PcaCenter, &same, &same).is_err());
        // Identical differences, so nothing varies once centred.
        let pos = vec![vec![0.1f32, 0.7, 0.3]; 3];
        let neg = vec![vec![0.0f32; 3]; 3];
        assert!(aggregate(Aggregator::PcaDiff, &pos, &neg).is_err());
        // A single pair is fine for the others.
        for method in [Aggregator::Pca, Aggregator::PcaCenter, Aggregator::Logistic] {
            let v = aggregate(method, &one.0, &one.1).unwrap();
            assert!(
                (cosine(&v, &unit(&[1.0, 1.0])) - 1.0).abs() < 1e-6,
                "{method}"
            );
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        let a = vec![vec![1.0f32, 2.0]];
        let e = aggregate(Aggregator::Mean, &a, &[]).unwrap_err();
        assert_eq!(
            e.message(),
            "1 positive activations but 0 negative ones: every pair needs both"
        );
        let e = aggregate(Aggregator::Pca, &[], &[]).unwrap_err();
        assert_eq!(e.message(), "no pairs to aggregate");
        let e = aggregate(Aggregator::Pca, &a, &[vec![1.0]]).unwrap_err();
        assert_eq!(
            e.message(),
            "pair 0 has activations of sizes 2 and 1, expected 2"
        );
        let e = aggregate(Aggregator::Logistic, &a, &[vec![1.0, f32::NAN]]).unwrap_err();
        assert_eq!(e.message(), "pair 0 has a non-finite activation");
        let e = aggregate(Aggregator::Mean, &[vec![f32::MAX]], &[vec![-f32::MAX]]).unwrap_err();
        assert!(e.message().contains("not finite"));
    }
}
