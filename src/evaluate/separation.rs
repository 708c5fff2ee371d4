//! How well a vector separates contrast pairs: the projection of each side's last-token
//! activation on the vector's direction, per layer.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::vector::SteeringVector;

#[derive(Debug, Clone, Serialize)]
pub struct Separation {
    pub layer: usize,
    /// Fraction of pairs with `pos . v > neg . v`.
    pub accuracy: f64,
    /// Mean of `(pos - neg) . v/|v|`, in standard deviations of all projections.
    pub gap_sd: f64,
}

/// Projection separation at every layer of `v`, from each pair's last-token activations
/// (`[layer][pair][side]`, side 0 positive, 1 negative).
pub fn separation(
    reads: &BTreeMap<usize, Vec<Vec<Vec<f32>>>>,
    v: &SteeringVector,
) -> Result<Vec<Separation>> {
    v.layer_activations
        .iter()
        .map(|(&l, dir)| {
            let norm = v.norms()[&l];
            if norm == 0.0 {
                return Err(Error::new(format!("the vector is zero at layer {l}")));
            }
            let proj = |a: &[f32]| {
                a.iter()
                    .zip(dir)
                    .map(|(x, y)| f64::from(*x) * f64::from(*y))
                    .sum::<f64>()
                    / norm
            };
            let acts = reads
                .get(&l)
                .ok_or_else(|| Error::new(format!("layer {l} was not read")))?;
            let pos: Vec<f64> = acts.iter().map(|a| proj(&a[0])).collect();
            let neg: Vec<f64> = acts.iter().map(|a| proj(&a[1])).collect();
            let n = pos.len() as f64;
            let wins = pos.iter().zip(&neg).filter(|(p, q)| p > q).count() as f64;
            let gap = pos.iter().zip(&neg).map(|(p, q)| p - q).sum::<f64>() / n;
            let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
            let mean = all.iter().sum::<f64>() / all.len() as f64;
            let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / all.len() as f64;
            let sd = var.sqrt();
            Ok(Separation {
                layer: l,
                accuracy: wins / n,
                gap_sd: if sd > 0.0 { gap / sd } else { 0.0 },
            })
        })
        .collect()
}

/// The `n` layers that separate best (accuracy, then gap), in layer order.
pub fn best_layers(sep: &[Separation], n: usize) -> Vec<usize> {
    let mut ranked: Vec<&Separation> = sep.iter().collect();
    ranked.sort_by(|a, b| {
        b.accuracy
            .total_cmp(&a.accuracy)
            .then(b.gap_sd.total_cmp(&a.gap_sd))
            .then(a.layer.cmp(&b.layer))
    });
    let mut best: Vec<usize> = ranked.iter().take(n).map(|s| s.layer).collect();
    best.sort_unstable();
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_layers_rank_by_accuracy_then_gap() {
        let s = |layer, accuracy, gap_sd| Separation {
            layer,
            accuracy,
            gap_sd,
        };
        let sep = [
            s(0, 0.5, 3.0),
            s(1, 0.9, 1.0),
            s(2, 0.9, 2.0),
            s(3, 0.7, 0.0),
        ];
        assert_eq!(best_layers(&sep, 2), [1, 2]);
        assert_eq!(best_layers(&sep, 3), [1, 2, 3]);
    }
}
