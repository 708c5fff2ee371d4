//! Attention masks for right-padded batches: causal, optionally sliding, padding-aware.
//!
//! Sequences are right-padded and every sequence starts at position 0, so padding never moves
//! a real token's RoPE position. Real queries never see pad keys. A pad query may see itself,
//! so its softmax row is never empty: an all-masked row would give NaN, and `0 * NaN` in the
//! next `attn @ v` would poison real rows too.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Whether query `q` may attend to key `k` in a sequence with `len` real tokens.
pub fn allowed(q: usize, k: usize, len: usize, window: Option<usize>) -> bool {
    if k == q {
        return true;
    }
    k < q && k < len && window.is_none_or(|w| q - k < w)
}

/// An additive `[batch, 1, seq, seq]` f32 mask: 0 where allowed, -inf elsewhere.
pub fn attention_mask(
    lengths: &[usize],
    seq_len: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(lengths.len() * seq_len * seq_len);
    for &len in lengths {
        for q in 0..seq_len {
            for k in 0..seq_len {
                let ok = allowed(q, k, len, window);
                data.push(if ok { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(Tensor::from_vec(
        data,
        (lengths.len(), 1, seq_len, seq_len),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_keeps_the_last_w_positions() {
        // HF: a sliding layer lets q see k when 0 <= q - k < window.
        let w = Some(3);
        assert!(allowed(5, 3, 10, w));
        assert!(allowed(5, 5, 10, w));
        assert!(!allowed(5, 2, 10, w));
        assert!(!allowed(5, 6, 10, w));
        assert!(allowed(5, 0, 10, None));
    }

    #[test]
    fn real_tokens_never_see_padding_and_pad_rows_are_not_empty() {
        assert!(!allowed(6, 4, 4, None));
        assert!(allowed(3, 0, 4, None));
        for q in 0..8 {
            assert!((0..8).any(|k| allowed(q, k, 2, Some(1))));
        }
    }
}
