//! What the trainer runs: each pair as one row holding the prefix its two sides share once and
//! then each side's rest (exact: the model is causal, so the prefix's keys and values are the
//! same for both sides), or, when the sides share little, each side as its own row. Batches of
//! rows are planned by token budget with similar lengths together.

use candle_core::Device;

use super::TokenPair;
use crate::error::Result;
use crate::model::{Slot, SlottedRow, TokenBatch};

/// Where a side's last token sits in its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub column: usize,
    pub pair: usize,
    pub positive: bool,
}

/// One row of a forward batch.
#[derive(Debug, Clone)]
pub struct Unit {
    pub row: SlottedRow,
    /// Plain rows (one sequence from position 0) run with a shared causal mask.
    pub plain: bool,
    pub reads: Vec<Read>,
    /// Tokens of the texts it stands for (both sides in full, for a shared row).
    pub text_tokens: usize,
}

impl Unit {
    fn side(tokens: &[u32], pair: usize, positive: bool) -> Unit {
        Unit {
            row: SlottedRow {
                tokens: tokens.to_vec(),
                slots: (0..tokens.len() as u32)
                    .map(|pos| Slot { pos, seg: 0 })
                    .collect(),
            },
            plain: true,
            reads: vec![Read {
                column: tokens.len() - 1,
                pair,
                positive,
            }],
            text_tokens: tokens.len(),
        }
    }

    /// The prefix in segment 0, the positive rest in segment 1, the negative rest in 2. A side
    /// with no rest of its own ends at the prefix's last token.
    fn shared(p: &TokenPair, prefix: usize, pair: usize) -> Unit {
        let mut row = SlottedRow {
            tokens: p.positive[..prefix].to_vec(),
            slots: (0..prefix as u32).map(|pos| Slot { pos, seg: 0 }).collect(),
        };
        let mut reads = Vec::with_capacity(2);
        for (seg, (side, positive)) in [(&p.positive, true), (&p.negative, false)]
            .into_iter()
            .enumerate()
        {
            for (j, &tok) in side[prefix..].iter().enumerate() {
                row.tokens.push(tok);
                row.slots.push(Slot {
                    pos: (prefix + j) as u32,
                    seg: seg as u32 + 1,
                });
            }
            let column = match side.len() > prefix {
                true => row.tokens.len() - 1,
                false => prefix - 1,
            };
            reads.push(Read {
                column,
                pair,
                positive,
            });
        }
        Unit {
            row,
            plain: false,
            reads,
            text_tokens: p.positive.len() + p.negative.len(),
        }
    }

    fn weight(&self) -> usize {
        self.reads.len()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The rows for `pairs`. With `share`, a pair whose sides share a prefix at least as long as
/// either rest becomes one shared row; a shorter prefix would save too little to pay for the
/// longer row's attention.
pub fn units(pairs: &[TokenPair], share: bool) -> Vec<Unit> {
    let mut out = Vec::with_capacity(2 * pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        let prefix = common_prefix(&p.positive, &p.negative);
        let longest_rest = (p.positive.len() - prefix).max(p.negative.len() - prefix);
        if share && prefix >= 1 && prefix >= longest_rest {
            out.push(Unit::shared(p, prefix, i));
        } else {
            out.push(Unit::side(&p.positive, i, true));
            out.push(Unit::side(&p.negative, i, false));
        }
    }
    out
}

/// Groups rows into forward batches: longest first, so each batch holds rows of similar length
/// and padding stays small, up to `max_tokens` padded tokens and `max_sides` sides (a shared row
/// holds two). Returns indices into `lengths`; every index appears exactly once.
pub fn plan(
    lengths: &[usize],
    weights: &[usize],
    max_sides: Option<usize>,
    max_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let cap = max_sides.unwrap_or(usize::MAX).max(1);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let (mut current, mut weight): (Vec<usize>, usize) = (Vec::new(), 0);
    for i in order {
        // `current[0]` is the longest in its batch, so it sets the padded width.
        let width = current.first().map_or(lengths[i], |&f| lengths[f]);
        let full = weight + weights[i] > cap || (current.len() + 1) * width > max_tokens;
        if !current.is_empty() && full {
            batches.push(std::mem::take(&mut current));
            weight = 0;
        }
        current.push(i);
        weight += weights[i];
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The batches of `units`, by [`plan`].
pub fn plan_units(units: &[Unit], max_pairs: Option<usize>, max_tokens: usize) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = units.iter().map(|u| u.row.tokens.len()).collect();
    let weights: Vec<usize> = units.iter().map(Unit::weight).collect();
    plan(&lengths, &weights, max_pairs.map(|n| 2 * n), max_tokens)
}

/// One batch of units, and where to read each side (flattened `[batch * len]` rows, in the
/// order of `reads`).
pub fn batch(
    units: &[&Unit],
    pad: u32,
    device: &Device,
) -> Result<(TokenBatch, Vec<u32>, Vec<Read>)> {
    let batch = match units.iter().all(|u| u.plain) {
        true => {
            let seqs: Vec<&[u32]> = units.iter().map(|u| u.row.tokens.as_slice()).collect();
            TokenBatch::new(&seqs, pad, device)?
        }
        false => {
            let rows: Vec<SlottedRow> = units.iter().map(|u| u.row.clone()).collect();
            TokenBatch::slotted(&rows, pad, device)?
        }
    };
    let t = batch.max_len();
    let reads: Vec<Read> = units.iter().flat_map(|u| u.reads.iter().copied()).collect();
    let rows = units
        .iter()
        .enumerate()
        .flat_map(|(b, u)| u.reads.iter().map(move |r| (b * t + r.column) as u32))
        .collect();
    Ok((batch, rows, reads))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(pos: &[u32], neg: &[u32]) -> TokenPair {
        TokenPair {
            positive: pos.to_vec(),
            negative: neg.to_vec(),
        }
    }

    #[test]
    fn long_shared_prefixes_run_once() {
        let u = units(&[pair(&[1, 2, 3, 4], &[1, 2, 3, 5, 6])], true);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].row.tokens, [1, 2, 3, 4, 5, 6]);
        let pos: Vec<u32> = u[0].row.slots.iter().map(|s| s.pos).collect();
        assert_eq!(pos, [0, 1, 2, 3, 3, 4]);
        let cols: Vec<usize> = u[0].reads.iter().map(|r| r.column).collect();
        assert_eq!(cols, [3, 5]);
        assert_eq!(u[0].text_tokens, 9);
        // A side that is all prefix is read at the prefix's end.
        let u = units(&[pair(&[1, 2, 3], &[1, 2, 3, 4])], true);
        assert_eq!(u[0].reads[0].column, 2);
    }

    #[test]
    fn short_or_no_prefixes_stay_two_rows() {
        assert_eq!(units(&[pair(&[1, 2, 3, 4], &[1, 5, 6, 7])], true).len(), 2);
        assert_eq!(units(&[pair(&[1, 2, 3, 4], &[1, 2, 3, 5])], false).len(), 2);
    }

    #[test]
    fn plan_covers_every_row_once_within_budgets() {
        let lengths = [5, 40, 12, 12, 3, 40, 7, 100];
        let weights = [1, 2, 1, 1, 2, 1, 1, 2];
        for (max_sides, budget) in [(None, 80), (Some(2), 1000), (Some(3), 64), (None, 1)] {
            let plan = plan(&lengths, &weights, max_sides, budget);
            let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            for b in &plan {
                let width = b.iter().map(|&i| lengths[i]).max().unwrap();
                assert!(
                    b.len() == 1 || b.len() * width <= budget,
                    "{b:?} over {budget}"
                );
                let w: usize = b.iter().map(|&i| weights[i]).sum();
                assert!(b.len() == 1 || w <= max_sides.unwrap_or(usize::MAX));
            }
        }
    }
}
