//! How well a vector separates and steers, per layer: projection separation of held pairs, and
//! the behavioural effect of steering on the log-probability margin of the positive
//! continuation over the negative one.

use candle_core::{DType, Tensor, D};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{DecoderModel, LayerHook, LogitPositions, TokenBatch};
use crate::steer::Steering;
use crate::train::{pair_activations, TokenPair, TrainOptions};
use crate::vector::SteeringVector;

#[derive(Debug, Clone, Serialize)]
pub struct Separation {
    pub layer: usize,
    /// Fraction of pairs with `pos . v > neg . v`.
    pub accuracy: f64,
    /// Mean of `(pos - neg) . v/|v|`, in standard deviations of all projections.
    pub gap_sd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Margin {
    /// `layer k` (that layer alone) or `all`.
    pub steer: String,
    pub multiplier: f64,
    /// Mean over pairs of `log p(positive continuation) - log p(negative continuation)`.
    pub margin: f64,
}

/// Projection separation at every layer of `v`.
pub fn separation(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    v: &SteeringVector,
    opts: &TrainOptions,
) -> Result<Vec<Separation>> {
    let layers: Vec<usize> = v.layer_activations.keys().copied().collect();
    let opts = TrainOptions {
        layers: layers.clone(),
        progress: false,
        ..opts.clone()
    };
    let acts = pair_activations(model, pairs, &opts)?;
    layers
        .iter()
        .map(|&l| {
            let dir = &v.layer_activations[&l];
            let norm = dir
                .iter()
                .map(|x| f64::from(*x).powi(2))
                .sum::<f64>()
                .sqrt();
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
            let a = &acts[&l];
            let pos: Vec<f64> = a.positive.iter().map(|x| proj(x)).collect();
            let neg: Vec<f64> = a.negative.iter().map(|x| proj(x)).collect();
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

/// Tokens the two sides share from the start; the margin is measured on what follows.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `sum log p(ids[t] | ids[..t])` for `t >= from`, per sequence, with `hook` applied.
pub fn continuation_logprobs(
    model: &dyn DecoderModel,
    seqs: &[(&[u32], usize)],
    hook: &mut dyn LayerHook,
) -> Result<Vec<f64>> {
    let ids: Vec<&[u32]> = seqs.iter().map(|(s, _)| *s).collect();
    let batch = TokenBatch::new(&ids, 0, model.device())?;
    let logits = model.forward_logits(&batch, None, hook, LogitPositions::All)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let t = batch.max_len();
    // position i predicts token i + 1
    let targets: Vec<u32> = ids
        .iter()
        .flat_map(|s| (0..t).map(move |i| s.get(i + 1).copied().unwrap_or(0)))
        .collect();
    let targets = Tensor::from_vec(targets, (ids.len(), t, 1), model.device())?;
    let picked: Vec<Vec<f32>> = logp
        .gather(&targets, 2)?
        .squeeze(2)?
        .to_dtype(DType::F32)?
        .to_vec2()?;
    Ok(seqs
        .iter()
        .zip(&picked)
        .map(|((s, from), row)| {
            let start = from.max(&1) - 1;
            (start..s.len() - 1).map(|i| f64::from(row[i])).sum()
        })
        .collect())
}

/// Mean margin of the positive over the negative continuation, steering each layer of `v`
/// alone and all together, at each multiplier.
pub fn behaviour(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    v: &SteeringVector,
    multipliers: &[f64],
) -> Result<Vec<Margin>> {
    let mut setups: Vec<(String, Option<Vec<usize>>)> = v
        .layer_activations
        .keys()
        .map(|&l| (format!("layer {l}"), Some(vec![l])))
        .collect();
    setups.push(("all".to_string(), None));
    let mut out = Vec::new();
    for (name, layers) in &setups {
        for &m in multipliers {
            let mut hook = Steering::new(v, m, layers.as_deref(), model.device())?;
            let mut total = 0.0;
            for p in pairs {
                let c = common_prefix(&p.positive, &p.negative);
                let lp =
                    continuation_logprobs(model, &[(&p.positive, c), (&p.negative, c)], &mut hook)?;
                total += lp[0] - lp[1];
            }
            out.push(Margin {
                steer: name.clone(),
                multiplier: m,
                margin: total / pairs.len().max(1) as f64,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_stops_at_the_first_difference() {
        assert_eq!(common_prefix(&[1, 2, 3, 4], &[1, 2, 5]), 2);
        assert_eq!(common_prefix(&[1], &[2]), 0);
    }
}
