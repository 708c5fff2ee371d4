//! Where each token of a batch sits: its RoPE position, and which tokens it may attend to.
//!
//! A plain batch holds one sequence per row from position 0, right-padded; one causal mask
//! serves every row (see [`super::mask`]). A slotted batch gives every token a [`Slot`]:
//! several continuations can then share one copy of their common prefix in a row (the prefix
//! in segment 0, each continuation in its own segment, positions continuing the prefix), and
//! ragged rows can decode together through one key/value cache. Running the shared prefix
//! once is exact: the model is causal, so the prefix's keys and values are the same for every
//! continuation.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// The segment of padding: seen by no other token.
pub const PAD: u32 = u32::MAX;

/// One token's place in its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Position for RoPE and causality.
    pub pos: u32,
    /// 0: seen by every later token of the row; `s > 0`: only by later tokens of segment `s`;
    /// [`PAD`]: by none.
    pub seg: u32,
}

impl Slot {
    pub const PAD: Slot = Slot { pos: 0, seg: PAD };

    /// Whether a token at `self` may attend to a key at `key` (a token always sees itself;
    /// that is decided by the caller, who knows the columns).
    pub fn sees(self, key: Slot, window: Option<usize>) -> bool {
        self.seg != PAD
            && key.seg != PAD
            && (key.seg == 0 || key.seg == self.seg)
            && key.pos <= self.pos
            && window.is_none_or(|w| ((self.pos - key.pos) as usize) < w)
    }
}

/// An additive `[batch, 1, queries, keys]` mask: 0 where query `q` of a row may attend to key
/// `k`, -inf elsewhere. The queries are the last `queries[r].len()` keys of each row, so every
/// query sees at least itself.
pub fn slot_mask(
    keys: &[Vec<Slot>],
    queries: &[Vec<Slot>],
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let (b, t, s) = (queries.len(), queries[0].len(), keys[0].len());
    let mut data = Vec::with_capacity(b * t * s);
    for (row_keys, row_queries) in keys.iter().zip(queries) {
        let first = s - t;
        for (i, q) in row_queries.iter().enumerate() {
            for (j, k) in row_keys.iter().enumerate() {
                let visible = j == first + i || q.sees(*k, window);
                data.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(Tensor::from_vec(data, (b, 1, t, s), device)?.to_dtype(dtype)?)
}

/// RoPE `cos`, `sin` of shape `[batch, seq, dim / 2]` at each slot's position, in `dtype`.
pub fn slot_tables(
    inv_freq: &[f32],
    slots: &[Vec<Slot>],
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (b, t, half) = (slots.len(), slots[0].len(), inv_freq.len());
    let mut angles = Vec::with_capacity(b * t * half);
    for row in slots {
        for slot in row {
            angles.extend(inv_freq.iter().map(|f| slot.pos as f32 * f));
        }
    }
    let angles = Tensor::from_vec(angles, (b, t, half), device)?;
    Ok((
        angles.cos()?.to_dtype(dtype)?,
        angles.sin()?.to_dtype(dtype)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(pos: u32, seg: u32) -> Slot {
        Slot { pos, seg }
    }

    #[test]
    fn continuations_see_the_prefix_and_themselves_only() {
        let prefix = slot(1, 0);
        let (a, b) = (slot(2, 1), slot(2, 2));
        assert!(a.sees(prefix, None) && b.sees(prefix, None));
        assert!(!a.sees(b, None) && !b.sees(a, None));
        assert!(!prefix.sees(a, None));
        assert!(!a.sees(Slot::PAD, None) && !Slot::PAD.sees(prefix, None));
        assert!(!slot(9, 1).sees(slot(2, 0), Some(4)));
        assert!(slot(5, 1).sees(slot(2, 0), Some(4)));
    }

    #[test]
    fn a_pad_query_sees_itself_so_no_row_is_empty() {
        let row = vec![slot(0, 0), Slot::PAD];
        let rows = std::slice::from_ref(&row);
        let m = slot_mask(rows, rows, None, DType::F32, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = m.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(v, vec![vec![0.0, inf], vec![inf, 0.0]]);
    }
}
