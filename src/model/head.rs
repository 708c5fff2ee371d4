//! The final norm and LM head, used only when logits are wanted (steered generation and
//! evaluation); training never computes them.

use candle_core::{DType, Tensor};

use super::norm::RmsNorm;
use super::{LogitPositions, TokenBatch};
use crate::error::Result;

pub struct LmHead {
    norm: RmsNorm,
    /// `[vocab, hidden]`, the embedding table itself when the checkpoint ties them.
    weight: Tensor,
    /// Gemma-2's final logit soft-cap.
    softcap: Option<f64>,
}

impl LmHead {
    pub fn new(norm: RmsNorm, weight: Tensor, softcap: Option<f64>) -> Self {
        Self {
            norm,
            weight,
            softcap,
        }
    }

    /// f32 logits for the residual stream `[batch, seq, hidden]` leaving the last block.
    pub fn forward(
        &self,
        xs: &Tensor,
        batch: &TokenBatch,
        positions: LogitPositions,
    ) -> Result<Tensor> {
        let (b, t, h) = xs.dims3()?;
        let rows = match positions {
            LogitPositions::Last => xs
                .reshape((b * t, h))?
                .index_select(&batch.last_token_rows()?, 0)?,
            LogitPositions::All => xs.reshape((b * t, h))?,
            LogitPositions::Rows(rows) => xs.reshape((b * t, h))?.index_select(rows, 0)?,
        };
        let logits = self.logits(&rows)?;
        Ok(match positions {
            LogitPositions::All => logits.reshape((b, t, ()))?,
            LogitPositions::Last | LogitPositions::Rows(_) => logits,
        })
    }

    /// `log p(token)` at each `(row, token)` of the flattened `[batch * seq]` residual stream,
    /// rows computed once however many targets share them, a chunk of rows at a time.
    pub fn target_logprobs(&self, xs: &Tensor, targets: &[(u32, u32)]) -> Result<Vec<f32>> {
        const CHUNK: usize = 64;
        let (b, t, h) = xs.dims3()?;
        let flat = xs.reshape((b * t, h))?;
        let mut rows: Vec<u32> = targets.iter().map(|&(r, _)| r).collect();
        rows.sort_unstable();
        rows.dedup();
        let mut out = vec![0f32; targets.len()];
        for chunk in rows.chunks(CHUNK) {
            let idx = Tensor::new(chunk, xs.device())?;
            let logits = self.logits(&flat.index_select(&idx, 0)?)?;
            let vocab = logits.dim(1)?;
            let logp = candle_nn::ops::log_softmax(&logits, 1)?.flatten_all()?;
            let (mine, picks): (Vec<usize>, Vec<u32>) = targets
                .iter()
                .enumerate()
                .filter_map(|(i, &(r, tok))| {
                    let at = chunk.binary_search(&r).ok()?;
                    Some((i, (at * vocab) as u32 + tok))
                })
                .unzip();
            let picked: Vec<f32> = logp
                .index_select(&Tensor::new(picks, xs.device())?, 0)?
                .to_vec1()?;
            for (i, v) in mine.into_iter().zip(picked) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// f32 logits of `[rows, hidden]` residual rows: final norm, head, soft-cap.
    fn logits(&self, rows: &Tensor) -> Result<Tensor> {
        let logits = self
            .norm
            .forward(rows)?
            .matmul(&self.weight.t()?)?
            .to_dtype(DType::F32)?;
        Ok(match self.softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }
}
