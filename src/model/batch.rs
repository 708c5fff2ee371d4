//! Token sequences of one forward call, right-padded to a common length.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[batch, max_len]` token ids, padding after each sequence's real tokens.
    pub input_ids: Tensor,
    /// Real (non-pad) tokens per sequence; every sequence has at least one.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// Packs sequences into one right-padded batch on `device`.
    pub fn new(seqs: &[&[u32]], pad_id: u32, device: &Device) -> Result<TokenBatch> {
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::new("a forward batch needs non-empty sequences"));
        }
        let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(seqs.len() * max_len);
        for s in seqs {
            flat.extend_from_slice(s);
            flat.extend(std::iter::repeat_n(pad_id, max_len - s.len()));
        }
        let input_ids = Tensor::from_vec(flat, (seqs.len(), max_len), device)?;
        Ok(TokenBatch {
            input_ids,
            lengths: seqs.iter().map(|s| s.len()).collect(),
        })
    }

    pub fn max_len(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    pub fn real_tokens(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Each sequence's last real token as a row of the flattened `[batch * max_len, ..]`
    /// activations.
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
}
