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
        };
        let logits = self
            .norm
            .forward(&rows)?
            .matmul(&self.weight.t()?)?
            .to_dtype(DType::F32)?;
        let logits = match self.softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        };
        Ok(match positions {
            LogitPositions::Last => logits,
            LogitPositions::All => logits.reshape((b, t, ()))?,
        })
    }
}
