//! Attention masks for right-padded batches: causal, optionally sliding.
//!
//! Sequences are right-padded and every sequence starts at position 0, so padding never moves
//! a real token's RoPE position. Nor can it leak into attention: a real token at position `q`
//! only sees keys `k <= q`, all of them real, so a plain causal mask already keeps padding out.
//! Pad positions attend among themselves (at least to themselves, so no softmax row is empty
//! and no NaN appears); what they compute is never read. One `[1, 1, t, t]` mask therefore
//! serves the whole batch.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Whether query `q` may attend to key `k`: causal, and within the last `window` positions
/// (HF's sliding window: `0 <= q - k < window`).
pub fn allowed(q: usize, k: usize, window: Option<usize>) -> bool {
    k <= q && window.is_none_or(|w| q - k < w)
}

/// An additive `[1, 1, seq, offset + seq]` mask in `dtype` for `seq` new positions after
/// `offset` cached ones: 0 where allowed, -inf elsewhere.
pub fn causal_mask(
    seq_len: usize,
    offset: usize,
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let keys = offset + seq_len;
    let mut data = Vec::with_capacity(seq_len * keys);
    for q in offset..keys {
        for k in 0..keys {
            data.push(if allowed(q, k, window) {
                0f32
            } else {
                f32::NEG_INFINITY
            });
        }
    }
    Ok(Tensor::from_vec(data, (1, 1, seq_len, keys), device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_keeps_the_last_w_positions() {
        let w = Some(3);
        assert!(allowed(5, 3, w));
        assert!(allowed(5, 5, w));
        assert!(!allowed(5, 2, w));
        assert!(!allowed(5, 6, w));
        assert!(allowed(5, 0, None));
    }

    #[test]
    fn every_row_sees_itself() {
        for q in 0..8 {
            assert!(allowed(q, q, Some(1)));
        }
    }

    #[test]
    fn mask_values() {
        let m = causal_mask(3, 0, Some(2), DType::F32, &Device::Cpu).unwrap();
        let rows: Vec<Vec<f32>> = m.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(
            rows,
            vec![vec![0., inf, inf], vec![0., 0., inf], vec![inf, 0., 0.]]
        );
        // one new position after three cached ones sees the last two
        let m = causal_mask(1, 3, Some(2), DType::F32, &Device::Cpu).unwrap();
        let rows: Vec<Vec<f32>> = m.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(rows, vec![vec![inf, inf, 0., 0.]]);
    }
}
