//! Token sequences of one forward call, as rows of a right-padded `[batch, len]` tensor, and
//! where each token sits ([`super::layout`]).

use candle_core::{Device, Tensor};

use super::layout::Slot;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[batch, len]` token ids, padding after each row's tokens.
    pub input_ids: Tensor,
    /// Real (non-pad) tokens per row; every row has at least one.
    pub lengths: Vec<usize>,
    /// Each token's slot, `[batch][len]`; `None` for plain rows: one sequence each from
    /// position 0.
    pub slots: Option<Vec<Vec<Slot>>>,
}

/// One row of a slotted batch: its tokens and their slots.
#[derive(Debug, Clone, Default)]
pub struct SlottedRow {
    pub tokens: Vec<u32>,
    pub slots: Vec<Slot>,
}

fn pack(rows: &[&[u32]], pad_id: u32, device: &Device) -> Result<Tensor> {
    let max_len = rows.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(rows.len() * max_len);
    for s in rows {
        flat.extend_from_slice(s);
        flat.extend(std::iter::repeat_n(pad_id, max_len - s.len()));
    }
    Ok(Tensor::from_vec(flat, (rows.len(), max_len), device)?)
}

impl TokenBatch {
    /// Packs sequences into one right-padded batch on `device`.
    pub fn new(seqs: &[&[u32]], pad_id: u32, device: &Device) -> Result<TokenBatch> {
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::new("a forward batch needs non-empty sequences"));
        }
        Ok(TokenBatch {
            input_ids: pack(seqs, pad_id, device)?,
            lengths: seqs.iter().map(|s| s.len()).collect(),
            slots: None,
        })
    }

    /// Rows whose tokens carry explicit slots; rows are right-padded with [`Slot::PAD`].
    pub fn slotted(rows: &[SlottedRow], pad_id: u32, device: &Device) -> Result<TokenBatch> {
        if rows.is_empty() || rows.iter().any(|r| r.tokens.is_empty()) {
            return Err(Error::new("a forward batch needs non-empty rows"));
        }
        if rows.iter().any(|r| r.tokens.len() != r.slots.len()) {
            return Err(Error::new("every token of a slotted row needs a slot"));
        }
        let max_len = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        let tokens: Vec<&[u32]> = rows.iter().map(|r| r.tokens.as_slice()).collect();
        let slots = rows
            .iter()
            .map(|r| {
                let mut s = r.slots.clone();
                s.resize(max_len, Slot::PAD);
                s
            })
            .collect();
        Ok(TokenBatch {
            input_ids: pack(&tokens, pad_id, device)?,
            lengths: rows.iter().map(|r| r.tokens.len()).collect(),
            slots: Some(slots),
        })
    }

    pub fn max_len(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    pub fn real_tokens(&self) -> usize {
        match &self.slots {
            Some(rows) => rows
                .iter()
                .flatten()
                .filter(|s| s.seg != super::layout::PAD)
                .count(),
            None => self.lengths.iter().sum(),
        }
    }

    /// Each row's last token as a row of the flattened `[batch * len, ..]` activations.
    pub fn last_token_rows(&self) -> Result<Tensor> {
        let t = self.max_len();
        let rows: Vec<u32> = self
            .lengths
            .iter()
            .enumerate()
            .map(|(b, &len)| (b * t + len - 1) as u32)
            .collect();
        Ok(Tensor::new(rows, self.input_ids.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_rows_skip_padding() {
        let b = TokenBatch::new(&[&[1, 2, 3], &[4]], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.last_token_rows().unwrap().to_vec1::<u32>().unwrap(),
            [2, 3]
        );
        assert_eq!(b.real_tokens(), 4);
    }

    #[test]
    fn slotted_rows_pad_with_pad_slots() {
        let row = |n: u32| SlottedRow {
            tokens: (0..n).collect(),
            slots: (0..n).map(|pos| Slot { pos, seg: 0 }).collect(),
        };
        let b = TokenBatch::slotted(&[row(3), row(1)], 7, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            [[0, 1, 2], [0, 7, 7]]
        );
        assert_eq!(b.slots.as_ref().unwrap()[1][2], Slot::PAD);
        assert_eq!(b.real_tokens(), 4);
    }
}
