//! The trainer: tokenize pairs, run them in batches, read the last real token at each
//! requested layer, and average positive minus negative.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokenizers::Tokenizer;

use crate::data::ContrastPair;
use crate::error::{Error, Result};
use crate::model::{DecoderModel, LayerHook, TokenBatch};

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

pub struct TrainOptions {
    /// Absolute block indices to read, sorted.
    pub layers: Vec<usize>,
    /// Pairs per forward call (each call runs both sides, so twice as many sequences).
    pub batch_size: usize,
    pub progress: bool,
    pub pad_id: u32,
}

/// What a run produced besides the vector.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainStats {
    pub pairs: usize,
    /// Real (non-pad) tokens run through the model.
    pub tokens: usize,
    pub seconds: f64,
}

/// The trained direction per layer, `mean(act_pos - act_neg)`.
pub type LayerVectors = BTreeMap<usize, Vec<f32>>;

/// Captures the last real token of every sequence at the requested layers.
struct ReadLastToken<'a> {
    layers: &'a BTreeSet<usize>,
    /// Flat `[batch * seq]` row index of each sequence's last real token.
    rows: Tensor,
    captured: Vec<(usize, Tensor)>,
}

impl LayerHook for ReadLastToken<'_> {
    fn after_block(
        &mut self,
        layer: usize,
        residual: &Tensor,
        _: &TokenBatch,
    ) -> Result<Option<Tensor>> {
        if self.layers.contains(&layer) {
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

/// Trains one vector from tokenized pairs; results do not depend on `batch_size`.
pub fn train(
    model: &dyn DecoderModel,
    pairs: &[TokenPair],
    opts: &TrainOptions,
) -> Result<(LayerVectors, TrainStats)> {
    if pairs.is_empty() {
        return Err(Error::new("no contrast pairs to train on"));
    }
    let Some(&deepest) = opts.layers.last() else {
        return Err(Error::new("no layers to train"));
    };
    let wanted: BTreeSet<usize> = opts.layers.iter().copied().collect();
    let hidden = model.hidden_size();
    let mut sums: BTreeMap<usize, Vec<f64>> =
        wanted.iter().map(|&l| (l, vec![0f64; hidden])).collect();
    let bar = progress_bar(pairs.len(), opts.progress);
    let start = Instant::now();
    let mut tokens = 0;

    for (chunk_index, chunk) in pairs.chunks(opts.batch_size.max(1)).enumerate() {
        let first_pair = chunk_index * opts.batch_size.max(1);
        let seqs: Vec<&[u32]> = chunk
            .iter()
            .map(|p| p.positive.as_slice())
            .chain(chunk.iter().map(|p| p.negative.as_slice()))
            .collect();
        let batch = TokenBatch::new(&seqs, opts.pad_id, model.device())?;
        let t = batch.max_len();
        let rows: Vec<u32> = batch
            .lengths
            .iter()
            .enumerate()
            .map(|(b, &len)| (b * t + len - 1) as u32)
            .collect();
        let mut hook = ReadLastToken {
            layers: &wanted,
            rows: Tensor::new(rows, model.device())?,
            captured: Vec::new(),
        };
        model.forward_blocks(&batch, deepest, &mut hook)?;
        tokens += batch.real_tokens();

        let n = chunk.len();
        for (layer, acts) in hook.captured {
            let acts: Vec<Vec<f32>> = acts.to_vec2()?;
            let sum = sums
                .get_mut(&layer)
                .expect("captured layers are requested layers");
            for i in 0..n {
                let (pos, neg) = (&acts[i], &acts[n + i]);
                if let Some(side) = non_finite(pos, neg) {
                    return Err(Error::new(format!(
                        "non-finite activation at layer {layer} for pair {} ({side})",
                        first_pair + i
                    ))
                    .with_hint("reduced precision can overflow; try `--dtype f32`"));
                }
                for ((s, p), q) in sum.iter_mut().zip(pos).zip(neg) {
                    *s += f64::from(*p) - f64::from(*q);
                }
            }
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();

    let count = pairs.len() as f64;
    let vectors = sums
        .into_iter()
        .map(|(l, s)| (l, s.into_iter().map(|x| (x / count) as f32).collect()))
        .collect();
    Ok((
        vectors,
        TrainStats {
            pairs: pairs.len(),
            tokens,
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}

fn non_finite(pos: &[f32], neg: &[f32]) -> Option<&'static str> {
    if pos.iter().any(|x| !x.is_finite()) {
        Some("positive")
    } else if neg.iter().any(|x| !x.is_finite()) {
        Some("negative")
    } else {
        None
    }
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
