//! What the trainer runs: each pair as one row holding the prefix its two sides share once and
//! then each side's rest (exact: the model is causal, so the prefix's keys and values are the
//! same for both sides), or, when the sides share little, each side as its own row. Batches of
//! rows are planned by token budget with similar lengths together.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use super::TokenPair;
use crate::error::{Error, Result};
use crate::model::{Slot, SlottedRow, TokenBatch};

/// Which tokens of each side are read (their activations averaged when more than one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// steering-vectors' `read_token_index`: a negative index counts back from the last real
    /// token (-1 is the last), a non-negative one counts tokens from the start (BOS is 0).
    Index(i64),
    /// The last token that is neither a special token nor a template token (whitespace only):
    /// for chat-formatted pairs, which end in an end-of-turn marker.
    LastContent,
    /// The mean over the tokens after the prefix a pair's two sides share (the answer). A side
    /// with nothing after the shared prefix is read at its last token.
    SuffixMean,
}

impl Default for ReadAt {
    fn default() -> Self {
        ReadAt::Index(-1)
    }
}

impl fmt::Display for ReadAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadAt::Index(i) => write!(f, "{i}"),
            ReadAt::LastContent => f.write_str("last-content"),
            ReadAt::SuffixMean => f.write_str("suffix-mean"),
        }
    }
}

impl FromStr for ReadAt {
    type Err = Error;

    /// `last-content`, `suffix-mean`, or a token index.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "last-content" => Ok(ReadAt::LastContent),
            "suffix-mean" => Ok(ReadAt::SuffixMean),
            _ => s.parse().map(ReadAt::Index).map_err(|_| {
                Error::new(format!("unknown read mode `{s}`"))
                    .with_hint("use `last-content`, `suffix-mean`, or `--read-token-index N`")
            }),
        }
    }
}

/// Where each side of pair `pair` is read, as positions in that side's tokens. `template` holds
/// the ids [`ReadAt::LastContent`] skips, sorted.
pub fn side_reads(
    p: &TokenPair,
    pair: usize,
    at: ReadAt,
    template: &[u32],
) -> Result<[Vec<usize>; 2]> {
    let prefix = common_prefix(&p.positive, &p.negative);
    let read = |tokens: &[u32], side: &str| -> Result<Vec<usize>> {
        let n = tokens.len();
        match at {
            ReadAt::Index(i) => {
                let pos = if i < 0 { n as i64 + i } else { i };
                if pos < 0 || pos >= n as i64 {
                    return Err(Error::new(format!(
                        "`--read-token-index {i}` is outside pair {pair} ({side}), which has {n} tokens"
                    ))
                    .with_hint("-1 is the last token, 0 the first (BOS)"));
                }
                Ok(vec![pos as usize])
            }
            ReadAt::LastContent => match tokens
                .iter()
                .rposition(|t| template.binary_search(t).is_err())
            {
                Some(pos) => Ok(vec![pos]),
                None => Err(Error::new(format!(
                    "`--read last-content`: pair {pair} ({side}) has only special and template tokens"
                ))),
            },
            ReadAt::SuffixMean if n > prefix => Ok((prefix..n).collect()),
            ReadAt::SuffixMean => Ok(vec![n - 1]),
        }
    };
    Ok([
        read(&p.positive, "positive")?,
        read(&p.negative, "negative")?,
    ])
}

/// Where a side is read in its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub columns: Vec<usize>,
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
    fn side(tokens: &[u32], pair: usize, positive: bool, columns: &[usize]) -> Unit {
        Unit {
            row: SlottedRow {
                tokens: tokens.to_vec(),
                slots: (0..tokens.len() as u32)
                    .map(|pos| Slot { pos, seg: 0 })
                    .collect(),
            },
            plain: true,
            reads: vec![Read {
                columns: columns.to_vec(),
                pair,
                positive,
            }],
            text_tokens: tokens.len(),
        }
    }

    /// The prefix in segment 0, the positive rest in segment 1, the negative rest in 2. A read
    /// inside the prefix is taken from the prefix's copy.
    fn shared(p: &TokenPair, prefix: usize, pair: usize, reads: &[Vec<usize>; 2]) -> Unit {
        let mut row = SlottedRow {
            tokens: p.positive[..prefix].to_vec(),
            slots: (0..prefix as u32).map(|pos| Slot { pos, seg: 0 }).collect(),
        };
        let mut out = Vec::with_capacity(2);
        for (seg, ((side, positive), at)) in [(&p.positive, true), (&p.negative, false)]
            .into_iter()
            .zip(reads)
            .enumerate()
        {
            let start = row.tokens.len();
            for (j, &tok) in side[prefix..].iter().enumerate() {
                row.tokens.push(tok);
                row.slots.push(Slot {
                    pos: (prefix + j) as u32,
                    seg: seg as u32 + 1,
                });
            }
            let columns = at
                .iter()
                .map(|&j| if j < prefix { j } else { start + j - prefix })
                .collect();
            out.push(Read {
                columns,
                pair,
                positive,
            });
        }
        Unit {
            row,
            plain: false,
            reads: out,
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

/// The rows for `pairs`, read where `reads` says (from [`side_reads`], one per pair). With
/// `share`, a pair whose sides share a prefix at least as long as either rest becomes one shared
/// row; a shorter prefix would save too little to pay for the longer row's attention.
pub fn units(pairs: &[TokenPair], reads: &[[Vec<usize>; 2]], share: bool) -> Vec<Unit> {
    let mut out = Vec::with_capacity(2 * pairs.len());
    for (i, (p, at)) in pairs.iter().zip(reads).enumerate() {
        let prefix = common_prefix(&p.positive, &p.negative);
        let longest_rest = (p.positive.len() - prefix).max(p.negative.len() - prefix);
        if share && prefix >= 1 && prefix >= longest_rest {
            out.push(Unit::shared(p, prefix, i, at));
        } else {
            out.push(Unit::side(&p.positive, i, true, &at[0]));
            out.push(Unit::side(&p.negative, i, false, &at[1]));
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

/// One batch of units, and where to read each side: flattened `[batch * len]` rows, every
/// column of each read in the order of `reads`.
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
    let reads: Vec<Read> = units.iter().flat_map(|u| u.reads.iter().cloned()).collect();
    let rows = units
        .iter()
        .enumerate()
        .flat_map(|(b, u)| {
            u.reads
                .iter()
                .flat_map(move |r| r.columns.iter().map(move |&c| (b * t + c) as u32))
        })
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

    fn reads(pairs: &[TokenPair], at: ReadAt, template: &[u32]) -> Vec<[Vec<usize>; 2]> {
        let r = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| side_reads(p, i, at, template));
        r.collect::<Result<_>>().unwrap()
    }

    fn units_at(pairs: &[TokenPair], at: ReadAt, share: bool) -> Vec<Unit> {
        units(pairs, &reads(pairs, at, &[]), share)
    }

    fn columns(u: &Unit) -> Vec<Vec<usize>> {
        u.reads.iter().map(|r| r.columns.clone()).collect()
    }

    #[test]
    fn long_shared_prefixes_run_once() {
        let p = [pair(&[1, 2, 3, 4], &[1, 2, 3, 5, 6])];
        let u = units_at(&p, ReadAt::default(), true);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].row.tokens, [1, 2, 3, 4, 5, 6]);
        let pos: Vec<u32> = u[0].row.slots.iter().map(|s| s.pos).collect();
        assert_eq!(pos, [0, 1, 2, 3, 3, 4]);
        assert_eq!(columns(&u[0]), [vec![3], vec![5]]);
        assert_eq!(u[0].text_tokens, 9);
        // A side that is all prefix is read at the prefix's end.
        let u = units_at(&[pair(&[1, 2, 3], &[1, 2, 3, 4])], ReadAt::default(), true);
        assert_eq!(u[0].reads[0].columns, [2]);
    }

    #[test]
    fn short_or_no_prefixes_stay_two_rows() {
        let p = [pair(&[1, 2, 3, 4], &[1, 5, 6, 7])];
        assert_eq!(units_at(&p, ReadAt::default(), true).len(), 2);
        let p = [pair(&[1, 2, 3, 4], &[1, 2, 3, 5])];
        assert_eq!(units_at(&p, ReadAt::default(), false).len(), 2);
    }

    #[test]
    fn read_positions_follow_the_side_not_the_row() {
        let p = [pair(&[1, 2, 3, 4, 9], &[1, 2, 3, 5, 6, 9])];
        // Index -2: the token before the last of each side, wherever it sits in the shared row.
        let u = units_at(&p, ReadAt::Index(-2), true);
        assert_eq!(u[0].row.tokens, [1, 2, 3, 4, 9, 5, 6, 9]);
        assert_eq!(columns(&u[0]), [vec![3], vec![6]]);
        // Index 0 (BOS) is inside the prefix: both sides read the prefix's copy.
        assert_eq!(
            columns(&units_at(&p, ReadAt::Index(0), true)[0]),
            [[0], [0]]
        );
        // The suffix mean reads every token after the shared prefix.
        let u = units_at(&p, ReadAt::SuffixMean, true);
        assert_eq!(columns(&u[0]), [vec![3, 4], vec![5, 6, 7]]);
        let u = units_at(&p, ReadAt::SuffixMean, false);
        assert_eq!(columns(&u[0]), [vec![3, 4]]);
        assert_eq!(columns(&u[1]), [vec![3, 4, 5]]);
        // The last content token skips template ids.
        let r = reads(&p, ReadAt::LastContent, &[6, 9]);
        assert_eq!(r[0], [vec![3], vec![3]]);
    }

    #[test]
    fn reads_outside_a_side_name_the_pair() {
        let p = pair(&[1, 2], &[1, 2, 3]);
        let err = side_reads(&p, 7, ReadAt::Index(-3), &[]).unwrap_err();
        assert!(err.to_string().contains("pair 7 (positive)"), "{err}");
        let err = side_reads(&p, 7, ReadAt::Index(2), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("pair 7 (positive), which has 2 tokens"),
            "{err}"
        );
        let err = side_reads(&p, 3, ReadAt::LastContent, &[1, 2]).unwrap_err();
        assert!(err.to_string().contains("pair 3 (positive)"), "{err}");
        assert!("sideways".parse::<ReadAt>().is_err());
        assert_eq!("-2".parse::<ReadAt>().unwrap(), ReadAt::Index(-2));
    }

    #[test]
    fn plan_covers_every_row_once_within_budgets() {
        let lengths = [5, 40, 12, 12, 3, 40, 7, 100];
        // Pair units weigh 2 sides, shared-prefix rows 1; all ones is `plan_batches`' case.
        let cases = [(None, 80), (Some(2), 1000), (Some(3), 64), (None, 1)];
        for (weights, (max_sides, budget)) in [[1, 2, 1, 1, 2, 1, 1, 2], [1; 8]]
            .into_iter()
            .flat_map(|w| cases.map(|c| (w, c)))
        {
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
