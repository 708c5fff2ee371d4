//! RMSNorm in the two conventions HF uses: Gemma scales by `1 + w` in f32, Llama scales by `w`
//! after casting back to the model dtype.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormStyle {
    /// `(x / rms(x) * (1 + w))` computed in f32, then cast.
    GemmaOnePlus,
    /// `w * (x / rms(x)).to(dtype)`.
    Llama,
}

pub struct RmsNorm {
    scale: Tensor,
    /// All ones in f32: the Llama style normalizes first and scales after the cast.
    unit: Tensor,
    eps: f32,
    style: NormStyle,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, style: NormStyle, vb: VarBuilder) -> Result<Self> {
        let w = vb.get(size, "weight")?;
        let scale = match style {
            NormStyle::GemmaOnePlus => (w.to_dtype(DType::F32)? + 1.0)?,
            NormStyle::Llama => w,
        };
        let unit = Tensor::ones(size, DType::F32, scale.device())?;
        Ok(Self {
            scale,
            unit,
            eps: eps as f32,
            style,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let x = xs.to_dtype(DType::F32)?;
        Ok(match self.style {
            NormStyle::GemmaOnePlus => {
                candle_nn::ops::rms_norm(&x, &self.scale, self.eps)?.to_dtype(dtype)?
            }
            NormStyle::Llama => {
                let normed = candle_nn::ops::rms_norm(&x, &self.unit, self.eps)?.to_dtype(dtype)?;
                normed.broadcast_mul(&self.scale)?
            }
        })
    }
}
