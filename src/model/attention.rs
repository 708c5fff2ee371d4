//! Self-attention as every supported architecture computes it (HF's eager path): q/k/v
//! projections with optional biases, optional per-head RMS norms on queries and keys, RoPE,
//! the key/value cache, then scores, optional soft-cap, additive mask, softmax with f32
//! accumulation and weighted values.
//!
//! Grouped-query heads are handled by folding each key/value head's query group into the
//! sequence axis (`[b, kv, groups * t, d]`), so keys and values are never copied per head.

use candle_core::{DType, Module, Tensor};
use candle_nn::{linear_b, Linear, VarBuilder};

use super::config::TextConfig;
use super::decoder::ForwardContext;
use super::norm::RmsNorm;
use super::{rope, KvCache};
use crate::error::Result;

/// The `self_attn` module of block `index`.
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
    sliding: bool,
}

impl Attention {
    pub fn new(cfg: &TextConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let qkv = cfg.qkv_bias;
        let qk_norm = |name: &str| -> Result<Option<RmsNorm>> {
            match cfg.qk_norm {
                true => RmsNorm::new(d, cfg.rms_norm_eps, cfg.norm, vb.pp(name)).map(Some),
                false => Ok(None),
            }
        };
        Ok(Self {
            q_proj: linear_b(h, nh * d, qkv, vb.pp("q_proj"))?,
            k_proj: linear_b(h, nkv * d, qkv, vb.pp("k_proj"))?,
            v_proj: linear_b(h, nkv * d, qkv, vb.pp("v_proj"))?,
            o_proj: linear_b(nh * d, h, cfg.o_bias, vb.pp("o_proj"))?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: cfg.attention_scale,
            softcap: cfg.attn_logit_softcapping,
            sliding: cfg.sliding[index],
        })
    }

    /// `[b, t, hidden]` -> `[b, t, hidden]`; `cache` holds block `layer`'s earlier keys and
    /// values when decoding.
    pub fn forward(
        &self,
        xs: &Tensor,
        ctx: &ForwardContext,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let d = self.head_dim;
        let mut q = split_heads(&self.q_proj.forward(xs)?, self.num_heads, d)?;
        let mut k = split_heads(&self.k_proj.forward(xs)?, self.num_kv_heads, d)?;
        let v = split_heads(&self.v_proj.forward(xs)?, self.num_kv_heads, d)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let ((cos, sin), mask) = ctx.for_block(self.sliding);
        let q = rope::apply(&q, cos, sin)?;
        let k = rope::apply(&k, cos, sin)?;
        let (k, v) = match cache {
            Some((c, layer)) => c.extend(layer, k, v)?,
            None => (k, v),
        };
        let out = attend(&q, &k, &v, self.scale, self.softcap, mask)?;
        Ok(self.o_proj.forward(&out)?)
    }
}

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
/// additive mask `[1 or b, 1, t, s]` in the model dtype; returns `[b, t, h * d]`.
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
        .broadcast_add(&mask.reshape((mask.dim(0)?, 1, 1, t, s))?)?;
    let probs = softmax_f32_accum(&logits)?.reshape((b, kv, groups * t, s))?;
    let out = probs.matmul(&v.contiguous()?)?;
    Ok(out
        .reshape((b, h, t, d))?
        .transpose(1, 2)?
        .reshape((b, t, h * d))?)
}
