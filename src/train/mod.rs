//! The trainer: tokenize pairs, run them in batches, read the last real token at each
//! requested layer, and average positive minus negative.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokenizers::Tokenizer;

pub mod units;

pub use units::ReadAt;

use crate::aggregate::{aggregate, normalize, Aggregator};
use crate::data::ContrastPair;
use crate::error::{Error, Result};
use crate::model::{DecoderModel, LayerHook, LayerType, TokenBatch};
use crate::vector::SteeringVector;

/// A pair as token ids, each side as HF's `tokenizer(text)` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub positive: Vec<u32>,
    pub negative: Vec<u32>,
}

/// Tokenizes every pair, refusing sequences the model cannot run.
pub fn tokenize_pairs(
    tokenizer: &Tokenizer,
    pairs: &[ContrastPair],
    model: &dyn DecoderModel,
) -> Result<Vec<TokenPair>> {
    let encode = |i: usize, side: &str, text: &str| -> Result<Vec<u32>> {
        let enc = tokenizer
            .encode(text, true)
            .map_err(|e| Error::new(format!("cannot tokenize pair {i} ({side}): {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.is_empty() {
            return Err(Error::new(format!(
                "pair {i} ({side}) tokenizes to nothing"
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= model.vocab_size()) {
            return Err(Error::new(format!(
                "pair {i} ({side}) has token id {bad}, outside the model's vocabulary of {}",
                model.vocab_size()
            ))
            .with_hint("the tokenizer does not belong to this model"));
        }
        if let Some(max) = model.max_positions() {
            if ids.len() > max {
                return Err(Error::new(format!(
                    "pair {i} ({side}) is {} tokens long, more than the model's context of {max}",
                    ids.len()
                )));
            }
        }
        Ok(ids)
    };
    pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(TokenPair {
                positive: encode(i, "positive", &p.positive)?,
                negative: encode(i, "negative", &p.negative)?,
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Absolute block indices to read, sorted.
    pub layers: Vec<usize>,
    /// At most this many pairs' worth of sequences (2 per pair) per forward call, when set.
    pub max_pairs_per_batch: Option<usize>,
    /// Padded tokens (sequences x longest) per forward call; a longer sequence runs alone.
    pub max_batch_tokens: usize,
    pub progress: bool,
    /// Run the prefix a pair's two sides share once (exact; see [`units`]).
    pub shared_prefix: bool,
    /// Run block by block over all batches instead of batch by batch (a streaming model is
    /// always run so): each block is read once per group of batches.
    pub layer_major: bool,
    /// Bytes the residual streams of one group of batches may take in a layer-major run;
    /// `None`: every batch in one group.
    pub activation_budget: Option<u64>,
    /// Where in each block activations are read.
    pub layer_type: LayerType,
    /// Which tokens of each side are read.
    pub read: ReadAt,
    /// Ids [`ReadAt::LastContent`] skips, sorted (see [`template_tokens`]).
    pub template_tokens: Vec<u32>,
    /// How each layer's per-pair differences become its vector.
    pub aggregator: Aggregator,
    /// Scale each layer's vector to unit length.
    pub normalize: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            layers: Vec::new(),
            max_pairs_per_batch: None,
            max_batch_tokens: 4096,
            progress: false,
            shared_prefix: true,
            layer_major: false,
            activation_budget: None,
            layer_type: LayerType::DecoderBlock,
            read: ReadAt::default(),
            template_tokens: Vec::new(),
            aggregator: Aggregator::Mean,
            normalize: false,
        }
    }
}

/// The default token budget per forward call: what fits comfortably on each kind of device. On
/// the CPU, 1,024 tokens already keep the matrix products at full speed, and the forward's
/// working memory (about 190 MB on Gemma-2 2B's shape) stays below two blocks' weights.
pub fn default_max_batch_tokens(device: &candle_core::Device) -> usize {
    if device.is_cuda() {
        32768
    } else {
        1024
    }
}

/// What a run produced besides the vector.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainStats {
    pub pairs: usize,
    /// Tokens of both sides of every pair, in full.
    pub tokens: usize,
    /// Real (non-pad) tokens run through the model: shared prefixes count once.
    pub forward_tokens: usize,
    /// Forward calls made.
    pub batches: usize,
    pub seconds: f64,
}

/// The trained direction per layer, `mean(act_pos - act_neg)`.
pub type LayerVectors = BTreeMap<usize, Vec<f32>>;

/// Groups sequences into forward batches: longest first, so each batch holds sequences of
/// similar length and padding stays small, filled up to the token budget.
///
/// Returns indices into `lengths`; every index appears exactly once.
pub fn plan_batches(
    lengths: &[usize],
    max_seqs: Option<usize>,
    max_tokens: usize,
) -> Vec<Vec<usize>> {
    units::plan(lengths, &vec![1; lengths.len()], max_seqs, max_tokens)
}

/// Captures the read tokens of every sequence at the requested layers and point.
struct ReadLastToken<'a> {
    layers: &'a BTreeSet<usize>,
    point: LayerType,
    /// Flat `[batch * seq]` row index of each sequence's last real token.
    rows: Tensor,
    captured: Vec<(usize, Tensor)>,
}

impl LayerHook for ReadLastToken<'_> {
    fn at(&mut self, layer: usize, point: LayerType, residual: &Tensor) -> Result<Option<Tensor>> {
        if point == self.point && self.layers.contains(&layer) {
            let (b, t, h) = residual.dims3()?;
            let last = residual
                .reshape((b * t, h))?
                .index_select(&self.rows, 0)?
                .to_dtype(DType::F32)?;
            self.captured.push((layer, last));
        }
        Ok(None)
    }
}

/// Runs every side of every pair through the model in planned batches and hands each
/// last-token activation to `visit(layer, pair, positive, activation)`. Non-finite
/// activations are refused, naming the layer and the pair.
fn visit_last_tokens(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    opts: &TrainOptions,
    mut visit: impl FnMut(usize, usize, bool, &[f32]) -> Result<()>,
) -> Result<TrainStats> {
    if pairs.is_empty() {
        return Err(Error::new("no contrast pairs to train on"));
    }
    let Some(&deepest) = opts.layers.last() else {
        return Err(Error::new("no layers to train"));
    };
    let wanted: BTreeSet<usize> = opts.layers.iter().copied().collect();
    let reads = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| units::side_reads(p, i, opts.read, &opts.template_tokens))
        .collect::<Result<Vec<_>>>()?;
    let units = units::units(pairs, &reads, opts.shared_prefix);
    let plan = units::plan_units(&units, opts.max_pairs_per_batch, opts.max_batch_tokens);
    let mut sides_done = vec![0u8; pairs.len()];
    let bar = progress_bar(pairs.len(), opts.progress);
    let start = Instant::now();
    let (mut tokens, mut forward_tokens) = (0, 0);
    let pad = model.config().pad_token_id;
    let mut batches = Vec::with_capacity(plan.len());
    for members in &plan {
        let rows: Vec<&units::Unit> = members.iter().map(|&i| &units[i]).collect();
        let (batch, read_rows, reads) = units::batch(&rows, pad, model.device())?;
        tokens += rows.iter().map(|u| u.text_tokens).sum::<usize>();
        forward_tokens += batch.real_tokens();
        batches.push((batch, Tensor::new(read_rows, model.device())?, reads));
    }
    // Each read side's activation at a wanted layer (the mean of its read columns, `acts` holding
    // one row per column), checked and handed on.
    let mut take = |layer: usize, acts: &Tensor, reads: &[units::Read]| -> Result<()> {
        let acts: Vec<Vec<f32>> = acts.to_dtype(DType::F32)?.to_vec2()?;
        let mut rows = acts.iter();
        for read in reads {
            let (pair, positive) = (read.pair, read.positive);
            let act = mean_of(rows.by_ref().take(read.columns.len()));
            if act.iter().any(|x| !x.is_finite()) {
                let side = if positive { "positive" } else { "negative" };
                return Err(Error::new(format!(
                    "non-finite activation at layer {layer} for pair {pair} ({side})"
                ))
                .with_hint("reduced precision can overflow; try `--dtype f32`"));
            }
            visit(layer, pair, positive, &act)?;
            if layer == deepest {
                sides_done[pair] += 1;
                if sides_done[pair] == 2 {
                    bar.inc(1);
                }
            }
        }
        Ok(())
    };
    if opts.layer_major || model.streams_blocks() {
        let hidden_bytes = (model.hidden_size() * 4) as u64;
        let mut group: Vec<usize> = Vec::new();
        let mut group_bytes = 0;
        let budget = opts.activation_budget.unwrap_or(u64::MAX);
        for i in 0..=batches.len() {
            let bytes = batches.get(i).map_or(0, |(b, _, _)| {
                (b.lengths.len() * b.max_len()) as u64 * hidden_bytes
            });
            let flush = i == batches.len() || (!group.is_empty() && group_bytes + bytes > budget);
            if flush && !group.is_empty() {
                let members: Vec<TokenBatch> =
                    group.iter().map(|&g| batches[g].0.clone()).collect();
                let g = std::mem::take(&mut group);
                model.forward_layer_major(
                    &members,
                    deepest,
                    &mut |layer, bi, point, residual| {
                        if point != opts.layer_type || !wanted.contains(&layer) {
                            return Ok(());
                        }
                        let (_, rows, reads) = &batches[g[bi]];
                        let (b, t, h) = residual.dims3()?;
                        take(
                            layer,
                            &residual.reshape((b * t, h))?.index_select(rows, 0)?,
                            reads,
                        )
                    },
                )?;
                group_bytes = 0;
                crate::interrupt::stop_if_requested();
            }
            if i < batches.len() {
                group.push(i);
                group_bytes += bytes;
            }
        }
    } else {
        for (batch, rows, reads) in &batches {
            let mut hook = ReadLastToken {
                layers: &wanted,
                point: opts.layer_type,
                rows: rows.clone(),
                captured: Vec::new(),
            };
            model.forward_blocks(batch, deepest, &mut hook)?;
            for (layer, acts) in hook.captured {
                take(layer, &acts, reads)?;
            }
        }
    }
    bar.finish_and_clear();
    Ok(TrainStats {
        pairs: pairs.len(),
        tokens,
        forward_tokens,
        batches: plan.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The mean of `rows` (one row is returned as is), summed in f64.
fn mean_of<'a>(mut rows: impl Iterator<Item = &'a Vec<f32>>) -> Vec<f32> {
    let first = rows.next().cloned().unwrap_or_default();
    let mut sum: Vec<f64> = first.iter().map(|&x| f64::from(x)).collect();
    let mut n = 1usize;
    for row in rows {
        n += 1;
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    match n {
        1 => first,
        _ => sum.into_iter().map(|s| (s / n as f64) as f32).collect(),
    }
}

/// The ids `--read last-content` skips among those `pairs` use: the tokenizer's special added
/// tokens and tokens that decode to whitespace only (a chat template's line breaks). Sorted.
pub fn template_tokens(tokenizer: &Tokenizer, pairs: &[TokenPair]) -> Vec<u32> {
    let used: BTreeSet<u32> = pairs
        .iter()
        .flat_map(|p| p.positive.iter().chain(&p.negative).copied())
        .collect();
    let special: BTreeSet<u32> = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    used.into_iter()
        .filter(|id| {
            special.contains(id)
                || tokenizer
                    .id_to_token(*id)
                    .and_then(|_| tokenizer.decode(&[*id], false).ok())
                    .is_some_and(|text| text.trim().is_empty())
        })
        .collect()
}

/// Trains one vector from tokenized pairs. Positives and negatives share forward calls, and
/// the batching is ours to choose: results do not depend on it beyond float noise. The mean
/// keeps running sums; the other aggregators hold every pair's activations (two f32 vectors per
/// pair and layer). The vector's provenance is left for the caller to fill.
pub fn train(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    opts: &TrainOptions,
) -> Result<(SteeringVector, TrainStats)> {
    let (mut vectors, stats) = match opts.aggregator {
        Aggregator::Mean => mean_difference(model, pairs, opts)?,
        method => {
            let start = Instant::now();
            let (acts, mut stats) = pair_activations_with_stats(model, pairs, opts)?;
            let mut vectors = LayerVectors::new();
            for (layer, a) in acts {
                let v = aggregate(method, &a.positive, &a.negative)
                    .map_err(|e| e.context(format!("`--aggregator {method}` at layer {layer}")))?;
                vectors.insert(layer, v);
            }
            stats.seconds = start.elapsed().as_secs_f64();
            (vectors, stats)
        }
    };
    if opts.normalize {
        vectors.values_mut().for_each(|v| normalize(v));
    }
    let mut vector = SteeringVector::new(vectors);
    vector.layer_type = opts.layer_type.name().to_string();
    Ok((vector, stats))
}

/// `mean(act_pos - act_neg)` per layer from running sums.
fn mean_difference(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    opts: &TrainOptions,
) -> Result<(LayerVectors, TrainStats)> {
    let hidden = model.hidden_size();
    // sum(pos) - sum(neg) per layer, in f64 so the order of batches cannot matter.
    let mut sums: BTreeMap<usize, Vec<f64>> = opts
        .layers
        .iter()
        .map(|&l| (l, vec![0f64; hidden]))
        .collect();
    let stats = visit_last_tokens(model, pairs, opts, |layer, _, positive, act| {
        let sum = sums
            .get_mut(&layer)
            .ok_or_else(|| Error::new(format!("layer {layer} was not requested")))?;
        let sign = if positive { 1.0 } else { -1.0 };
        for (s, a) in sum.iter_mut().zip(act) {
            *s += sign * f64::from(*a);
        }
        Ok(())
    })?;
    let count = pairs.len() as f64;
    let mut vectors = LayerVectors::new();
    for (l, s) in sums {
        let v: Vec<f32> = s.into_iter().map(|x| (x / count) as f32).collect();
        // Finite activations can still average to more than f32 holds.
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::new(format!(
                "the vector at layer {l} is not finite: the activation difference exceeds f32"
            )));
        }
        vectors.insert(l, v);
    }
    Ok((vectors, stats))
}

/// The last-token activations of both sides of every pair, per layer and in pair order.
pub struct PairActivations {
    pub positive: Vec<Vec<f32>>,
    pub negative: Vec<Vec<f32>>,
}

/// Reads the activations [`train`] averages, without averaging them (for evaluation).
pub fn pair_activations(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    opts: &TrainOptions,
) -> Result<BTreeMap<usize, PairActivations>> {
    Ok(pair_activations_with_stats(model, pairs, opts)?.0)
}

fn pair_activations_with_stats(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    opts: &TrainOptions,
) -> Result<(BTreeMap<usize, PairActivations>, TrainStats)> {
    let mut out: BTreeMap<usize, PairActivations> = opts
        .layers
        .iter()
        .map(|&l| {
            let empty = || vec![Vec::new(); pairs.len()];
            (
                l,
                PairActivations {
                    positive: empty(),
                    negative: empty(),
                },
            )
        })
        .collect();
    let stats = visit_last_tokens(model, pairs, opts, |layer, pair, positive, act| {
        let slot = out
            .get_mut(&layer)
            .ok_or_else(|| Error::new(format!("layer {layer} was not requested")))?;
        let side = if positive {
            &mut slot.positive
        } else {
            &mut slot.negative
        };
        side[pair] = act.to_vec();
        Ok(())
    })?;
    Ok((out, stats))
}

/// Fraction of pairs whose positive side projects further along `v` than the negative side.
pub fn projection_accuracy(acts: &PairActivations, v: &[f32]) -> f64 {
    let dot = |a: &[f32]| {
        a.iter()
            .zip(v)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum::<f64>()
    };
    let n = acts.positive.len();
    if n == 0 {
        return 0.0;
    }
    let wins = acts
        .positive
        .iter()
        .zip(&acts.negative)
        .filter(|(p, q)| dot(p) > dot(q))
        .count();
    wins as f64 / n as f64
}

fn progress_bar(len: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "  {bar:40} {pos}/{len} pairs [{elapsed_precise}<{eta_precise}]",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_groups_similar_lengths() {
        let plan = plan_batches(&[10, 90, 11, 91], None, 200);
        assert_eq!(plan, vec![vec![3, 1], vec![2, 0]]);
    }
}
