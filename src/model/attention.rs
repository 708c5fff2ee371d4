//! The eager attention core shared by every architecture: scores, optional soft-cap, additive
//! mask, softmax in f32, weighted values. Grouped-query heads are expanded here.

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

/// Grouped-query attention: each key/value head serves `groups` query heads.
pub fn repeat_kv(xs: Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(xs);
    }
    let (b, kv, t, d) = xs.dims4()?;
    Ok(xs
        .unsqueeze(2)?
        .expand((b, kv, groups, t, d))?
        .reshape((b, kv * groups, t, d))?)
}

/// Eager attention over `[b, h, t, d]` queries and `[b, kv, s, d]` keys and values with an
/// additive f32 mask `[b, 1, t, s]`; returns `[b, t, h * d]`.
pub fn attend(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    scale: f64,
    softcap: Option<f64>,
    mask: &Tensor,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let groups = h / k.dim(1)?;
    let k = repeat_kv(k, groups)?;
    let v = repeat_kv(v, groups)?.contiguous()?;
    let mut logits = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    if let Some(cap) = softcap {
        logits = ((logits / cap)?.tanh()? * cap)?;
    }
    // Softmax in f32 as HF's eager path does, then back to the model dtype.
    let logits = logits.to_dtype(DType::F32)?.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_dtype(v.dtype())?;
    let out = probs.matmul(&v)?;
    Ok(out.transpose(1, 2)?.reshape((b, t, h * d))?)
}
