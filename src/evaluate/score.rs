//! Scoring candidates fast: each item's candidates share one copy of their common token prefix
//! in a slotted row ([`crate::model::layout`]), rows are batched by token budget with similar
//! lengths together, logits are computed only where a candidate token is predicted, and a
//! steered pass starts at the first steered block from the unsteered pass's residual stream,
//! since nothing before it depends on the multiplier.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use indicatif::ProgressBar;
use tokenizers::Tokenizer;

use crate::benchmark::Item;
use crate::error::{Error, Result};
use crate::model::{DecoderModel, LayerHook, LayerType, Slot, SlottedRow, Start, TokenBatch};
use crate::steer::Steering;
use crate::train::plan_batches;
use crate::vector::SteeringVector;

/// An item's candidates as tokens: their common prefix once, then what each adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedItem {
    pub prefix: Vec<u32>,
    pub suffixes: Vec<Vec<u32>>,
}

impl TokenizedItem {
    /// Splits full candidate token sequences at their common prefix.
    pub fn split(candidates: &[Vec<u32>]) -> TokenizedItem {
        let first = &candidates[0];
        let p = (0..first.len())
            .take_while(|&i| candidates.iter().all(|c| c.get(i) == Some(&first[i])))
            .count();
        TokenizedItem {
            prefix: first[..p].to_vec(),
            suffixes: candidates.iter().map(|c| c[p..].to_vec()).collect(),
        }
    }

    fn tokens(&self) -> usize {
        self.prefix.len() + self.suffixes.iter().map(Vec::len).sum::<usize>()
    }
}

/// Tokenizes every candidate as HF's `tokenizer(text)` does, refusing what the model cannot
/// score: a candidate past the context, token ids outside the vocabulary, candidates that
/// tokenize the same, or one that adds nothing to the others' common prefix.
pub fn tokenize_items(
    tokenizer: &Tokenizer,
    items: &[Item],
    model: &dyn DecoderModel,
) -> Result<Vec<TokenizedItem>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let bad = |what: String| Error::new(format!("item {i} {what}"));
            let cands = item
                .candidates
                .iter()
                .zip(&item.labels)
                .map(|(text, label)| {
                    let ids = tokenizer
                        .encode(text.as_str(), true)
                        .map_err(|e| bad(format!("cannot be tokenized: {e}")))?
                        .get_ids()
                        .to_vec();
                    if let Some(&id) = ids.iter().find(|&&id| id as usize >= model.vocab_size()) {
                        return Err(bad(format!(
                            "({label}) has token id {id}, outside the model's vocabulary"
                        ))
                        .with_hint("the tokenizer does not belong to this model"));
                    }
                    if let Some(max) = model.max_positions().filter(|&m| ids.len() > m) {
                        return Err(bad(format!(
                            "({label}) is {} tokens long, more than the model's context of {max}",
                            ids.len()
                        )));
                    }
                    Ok(ids)
                })
                .collect::<Result<Vec<_>>>()?;
            let t = TokenizedItem::split(&cands);
            for (c, s) in t.suffixes.iter().enumerate() {
                if s.is_empty() {
                    return Err(bad(format!(
                        "({}) adds no tokens to what its candidates share",
                        item.labels[c]
                    ))
                    .with_hint(
                        "two of its candidates tokenize the same, or one is the start of another",
                    ));
                }
            }
            Ok(t)
        })
        .collect()
}

/// Which of the vector's layers a steered pass adds it at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Setup {
    /// `all` or `layer k`.
    pub name: String,
    pub layers: Vec<usize>,
}

impl Setup {
    /// The vector's layers together.
    pub fn all(v: &SteeringVector) -> Setup {
        Setup {
            name: "all".to_string(),
            layers: v.layer_activations.keys().copied().collect(),
        }
    }

    pub fn layer(k: usize) -> Setup {
        Setup {
            name: format!("layer {k}"),
            layers: vec![k],
        }
    }
}

/// Candidate scores: `[item][candidate]`, the sum of the log-probs of the candidate's tokens
/// after the prefix its item's candidates share.
pub type ItemScores = Vec<Vec<f64>>;

/// One item laid out in a row, with what to read from it.
struct Row {
    row: SlottedRow,
    /// `(column that predicts, token, candidate)`.
    targets: Vec<(usize, u32, usize)>,
    /// Each candidate's last column: where its full text's last token sits.
    ends: Vec<usize>,
}

/// The prefix in segment 0 at positions `0..P`, candidate `c` in segment `c + 1` at positions
/// from `P`. A candidate's first token is predicted by the prefix's last token (when there is
/// one: without a shared prefix a sequence's first token has no prediction, as in HF).
fn layout(item: &TokenizedItem) -> Row {
    let p = item.prefix.len();
    let mut row = SlottedRow {
        tokens: item.prefix.clone(),
        slots: (0..p as u32).map(|pos| Slot { pos, seg: 0 }).collect(),
    };
    let (mut targets, mut ends) = (Vec::new(), Vec::new());
    for (c, suffix) in item.suffixes.iter().enumerate() {
        let start = row.tokens.len();
        for (j, &tok) in suffix.iter().enumerate() {
            let before = match j {
                0 => p.checked_sub(1),
                _ => Some(start + j - 1),
            };
            if let Some(col) = before {
                targets.push((col, tok, c));
            }
            row.tokens.push(tok);
            row.slots.push(Slot {
                pos: (p + j) as u32,
                seg: c as u32 + 1,
            });
        }
        ends.push(row.tokens.len() - 1);
    }
    Row { row, targets, ends }
}

/// Reads the residual stream at chosen columns of chosen layers, and keeps the whole stream
/// leaving chosen layers (where steered passes resume).
struct Reader<'a> {
    columns: &'a Tensor,
    /// Where activations are read (the vector's layer type), and at which layers.
    point: LayerType,
    read: &'a [usize],
    keep: &'a [usize],
    read_out: BTreeMap<usize, Vec<Vec<f32>>>,
    kept: BTreeMap<usize, Tensor>,
}

impl LayerHook for Reader<'_> {
    fn at(&mut self, layer: usize, point: LayerType, residual: &Tensor) -> Result<Option<Tensor>> {
        if point == self.point && self.read.contains(&layer) {
            let (b, t, h) = residual.dims3()?;
            let rows = residual
                .reshape((b * t, h))?
                .index_select(self.columns, 0)?
                .to_dtype(DType::F32)?
                .to_vec2()?;
            self.read_out.insert(layer, rows);
        }
        if point == LayerType::DecoderBlock && self.keep.contains(&layer) {
            self.kept.insert(layer, residual.clone());
        }
        Ok(None)
    }
}

/// How the passes run.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub max_batch_tokens: usize,
}

/// Rows batched by token budget, longest first.
struct Plan {
    rows: Vec<Row>,
    batches: Vec<Vec<usize>>,
}

impl Plan {
    fn new(items: &[TokenizedItem], opts: &ScoreOptions) -> Plan {
        let rows: Vec<Row> = items.iter().map(layout).collect();
        let lengths: Vec<usize> = items.iter().map(TokenizedItem::tokens).collect();
        let batches = plan_batches(&lengths, None, opts.max_batch_tokens);
        Plan { rows, batches }
    }

    fn batch(
        &self,
        members: &[usize],
        model: &dyn DecoderModel,
    ) -> Result<(TokenBatch, Vec<(u32, u32)>)> {
        let rows: Vec<SlottedRow> = members.iter().map(|&i| self.rows[i].row.clone()).collect();
        let batch = TokenBatch::slotted(&rows, model.config().pad_token_id, model.device())?;
        let t = batch.max_len();
        let targets = members
            .iter()
            .enumerate()
            .flat_map(|(b, &i)| {
                self.rows[i]
                    .targets
                    .iter()
                    .map(move |&(col, tok, _)| ((b * t + col) as u32, tok))
            })
            .collect();
        Ok((batch, targets))
    }

    /// Adds a batch's target log-probs to the scores of its items.
    fn accumulate(&self, members: &[usize], logps: &[f32], scores: &mut ItemScores) {
        let mut at = 0;
        for &i in members {
            for &(_, _, c) in &self.rows[i].targets {
                scores[i][c] += f64::from(logps[at]);
                at += 1;
            }
        }
    }

    fn empty_scores(&self) -> ItemScores {
        self.rows.iter().map(|r| vec![0.0; r.ends.len()]).collect()
    }
}

/// The unsteered pass: every item's scores, and each candidate's last-token activation at
/// `read_layers` and `point` (`[layer][item][candidate]`, for separation).
pub struct Baseline {
    pub scores: ItemScores,
    pub reads: BTreeMap<usize, Vec<Vec<Vec<f32>>>>,
}

pub fn baseline(
    model: &dyn DecoderModel,
    items: &[TokenizedItem],
    read_layers: &[usize],
    point: LayerType,
    opts: &ScoreOptions,
    bar: &ProgressBar,
) -> Result<Baseline> {
    let plan = Plan::new(items, opts);
    let mut scores = plan.empty_scores();
    let mut reads: BTreeMap<usize, Vec<Vec<Vec<f32>>>> = read_layers
        .iter()
        .map(|&l| (l, vec![Vec::new(); items.len()]))
        .collect();
    for members in &plan.batches {
        let (batch, targets) = plan.batch(members, model)?;
        let t = batch.max_len();
        let cols: Vec<u32> = members
            .iter()
            .enumerate()
            .flat_map(|(b, &i)| plan.rows[i].ends.iter().map(move |&e| (b * t + e) as u32))
            .collect();
        let columns = Tensor::new(cols, model.device())?;
        let mut reader = Reader {
            columns: &columns,
            point,
            read: read_layers,
            keep: &[],
            read_out: BTreeMap::new(),
            kept: BTreeMap::new(),
        };
        let logps = model.target_logprobs(&batch, Start::Embeddings, &mut reader, &targets)?;
        plan.accumulate(members, &logps, &mut scores);
        for (layer, acts) in reader.read_out {
            let mut acts = acts.into_iter();
            for &i in members {
                let n = plan.rows[i].ends.len();
                reads.get_mut(&layer).expect("requested layer")[i] =
                    acts.by_ref().take(n).collect();
            }
        }
        bar.inc(members.len() as u64);
        crate::interrupt::stop_if_requested();
    }
    Ok(Baseline { scores, reads })
}

/// Steered scores `[setup][multiplier]` for every setup and multiplier (0 included, computed
/// as a steered pass like the others). Per batch, the unsteered blocks run once up to the
/// deepest first-steered block any setup needs; each pass then starts after its setup's first
/// steered block from that stream plus the steering (a vector of the residual stream), or at
/// that block from the stream entering it (a vector of a module inside the block).
pub fn steered(
    model: &dyn DecoderModel,
    items: &[TokenizedItem],
    vector: &SteeringVector,
    setups: &[Setup],
    multipliers: &[f64],
    opts: &ScoreOptions,
    bar: &ProgressBar,
) -> Result<Vec<Vec<ItemScores>>> {
    let plan = Plan::new(items, opts);
    let mut out = vec![vec![plan.empty_scores(); multipliers.len()]; setups.len()];
    let firsts: Vec<usize> = setups
        .iter()
        .map(|s| {
            s.layers
                .iter()
                .copied()
                .min()
                .ok_or_else(|| Error::new("a setup without layers"))
        })
        .collect::<Result<_>>()?;
    let point: LayerType = vector.layer_type.parse()?;
    let residual = point == LayerType::DecoderBlock;
    // The block whose output each setup resumes from, if any.
    let resume: Vec<Option<usize>> = firsts
        .iter()
        .map(|&f| if residual { Some(f) } else { f.checked_sub(1) })
        .collect();
    let keep: Vec<usize> = resume.iter().flatten().copied().collect();
    for members in &plan.batches {
        let (batch, targets) = plan.batch(members, model)?;
        let none = Tensor::new(&[0u32], model.device())?;
        let mut reader = Reader {
            columns: &none,
            point,
            read: &[],
            keep: &keep,
            read_out: BTreeMap::new(),
            kept: BTreeMap::new(),
        };
        if let Some(&deepest) = keep.iter().max() {
            model.forward_blocks(&batch, deepest, &mut reader)?;
        }
        for (s, setup) in setups.iter().enumerate() {
            for (m, &mult) in multipliers.iter().enumerate() {
                let mut hook = Steering::new(vector, mult, Some(&setup.layers), model.device())?;
                let entering = match (resume[s], residual) {
                    (Some(k), true) => Some(
                        hook.at(k, LayerType::DecoderBlock, &reader.kept[&k])?
                            .unwrap_or_else(|| reader.kept[&k].clone()),
                    ),
                    (Some(k), false) => Some(reader.kept[&k].clone()),
                    (None, _) => None,
                };
                let start = match (&entering, resume[s]) {
                    (Some(xs), Some(k)) => Start::Block(k + 1, xs),
                    _ => Start::Embeddings,
                };
                let logps = model.target_logprobs(&batch, start, &mut hook, &targets)?;
                plan.accumulate(members, &logps, &mut out[s][m]);
                bar.inc(members.len() as u64);
                crate::interrupt::stop_if_requested();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_the_common_prefix_once() {
        let t = TokenizedItem::split(&[vec![1, 2, 3, 4], vec![1, 2, 5]]);
        assert_eq!(t.prefix, [1, 2]);
        assert_eq!(t.suffixes, [vec![3, 4], vec![5]]);
    }

    #[test]
    fn layout_predicts_each_candidate_token_from_its_own_past() {
        let t = TokenizedItem::split(&[vec![1, 2, 3, 4], vec![1, 2, 5]]);
        let r = layout(&t);
        assert_eq!(r.row.tokens, [1, 2, 3, 4, 5]);
        let segs: Vec<u32> = r.row.slots.iter().map(|s| s.seg).collect();
        let pos: Vec<u32> = r.row.slots.iter().map(|s| s.pos).collect();
        assert_eq!(segs, [0, 0, 1, 1, 2]);
        assert_eq!(pos, [0, 1, 2, 3, 2]);
        // 3 and 5 are predicted by the prefix's last token (column 1), 4 by 3 (column 2).
        assert_eq!(r.targets, [(1, 3, 0), (2, 4, 0), (1, 5, 1)]);
        assert_eq!(r.ends, [3, 4]);
    }
}
