//! The eager attention core shared by every architecture: scores, optional soft-cap, additive
//! mask, softmax with f32 accumulation, weighted values.
//!
//! Grouped-query heads are handled by folding each key/value head's query group into the
//! sequence axis (`[b, kv, groups * t, d]`), so keys and values are never copied per head.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// `[b, t, heads * d]` -> `[b, heads, t, d]`
pub fn split_heads(xs: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, t, _) = xs.dims3()?;
    Ok(xs
        .reshape((b, t, heads, head_dim))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Softmax over the last axis, accumulated in f32 as HF's eager path does (`softmax(...,
/// dtype=float32)`), returned in the input dtype. candle's CUDA kernels accumulate half types
/// in f32 already; its CPU kernel does not, so half types go through f32 there.
fn softmax_f32_accum(xs: &Tensor) -> Result<Tensor> {
    let dtype = xs.dtype();
    if dtype == DType::F32 || xs.device().is_cuda() {
        return Ok(candle_nn::ops::softmax_last_dim(xs)?);
    }
    let p = candle_nn::ops::softmax_last_dim(&xs.to_dtype(DType::F32)?)?;
    Ok(p.to_dtype(dtype)?)
}

/// Eager attention over `[b, h, t, d]` queries and `[b, kv, s, d]` keys and values with an
/// additive mask `[1, 1, t, s]` in the model dtype; returns `[b, t, h * d]`.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    softcap: Option<f64>,
    mask: &Tensor,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (kv, s) = (k.dim(1)?, k.dim(2)?);
    let groups = h / kv;
    // Query heads j*groups .. (j+1)*groups share key/value head j, as HF's repeat_kv lays out.
    let q = q.contiguous()?.reshape((b, kv, groups * t, d))?;
    let logits = q.matmul(&k.t()?)?;
    let logits = match softcap {
        Some(cap) => ((logits * (scale / cap))?.tanh()? * cap)?,
        None => (logits * scale)?,
    };
    let logits = logits
        .reshape((b, kv, groups, t, s))?
        .broadcast_add(&mask.reshape((1, 1, 1, t, s))?)?;
    let probs = softmax_f32_accum(&logits)?.reshape((b, kv, groups * t, s))?;
    let out = probs.matmul(&v.contiguous()?)?;
    Ok(out
        .reshape((b, h, t, d))?
        .transpose(1, 2)?
        .reshape((b, t, h * d))?)
}
