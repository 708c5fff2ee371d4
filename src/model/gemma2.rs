//! Gemma-2, following HF transformers' `modeling_gemma2.py` with `attn_implementation="eager"`
//! (the path that applies the attention-logit soft-cap the model was trained with).
//!
//! Reads in data-flow order: Config -> RmsNorm -> Rotary -> Mlp -> Attention -> DecoderLayer ->
//! Model. Field names are the checkpoint's tensor names. Only the blocks a run needs are
//! loaded, and the final norm and LM head are never computed while training.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear_b, Embedding, Linear, VarBuilder};
use serde::Deserialize;

use super::mask::attention_mask;
use super::{DecoderModel, LayerHook, TokenBatch};
use crate::error::{Error, Result};

/// HF's `Gemma2Config`, with HF's key names.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub attention_bias: bool,
    pub query_pre_attn_scalar: f64,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// `sliding_attention` / `full_attention` per block; HF's default alternates from sliding.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f64 {
    10_000.0
}

impl Config {
    /// Whether block `i` uses sliding-window attention, as HF decides it.
    pub fn is_sliding(&self, i: usize) -> bool {
        match &self.layer_types {
            Some(types) => types.get(i).is_some_and(|t| t == "sliding_attention"),
            None => i.is_multiple_of(2),
        }
    }

    /// The softmax scale: Gemma-2 uses `query_pre_attn_scalar`, not `head_dim`.
    pub fn attention_scale(&self) -> f64 {
        self.query_pre_attn_scalar.powf(-0.5)
    }

    fn activation(&self) -> Result<Activation> {
        let name = self
            .hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
            .unwrap_or("gelu_pytorch_tanh");
        match name {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            other => Err(Error::new(format!(
                "unsupported hidden activation `{other}` in config.json"
            ))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::new(format!("invalid Gemma-2 config: {what}")));
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "{} attention heads cannot share {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even", self.head_dim));
        }
        if self.num_hidden_layers == 0 || self.hidden_size == 0 {
            return bad("no layers or zero hidden size".to_string());
        }
        if self.query_pre_attn_scalar <= 0.0 {
            return bad("query_pre_attn_scalar must be positive".to_string());
        }
        self.activation().map(|_| ())
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluTanh,
    GeluErf,
}

/// Gemma's RMSNorm: computed in f32 and scaled by `1 + weight`.
struct RmsNorm {
    one_plus_weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get(size, "weight")?.to_dtype(DType::F32)?;
        Ok(Self {
            one_plus_weight: (weight + 1.0)?,
            eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let x = xs.to_dtype(DType::F32)?;
        let out = candle_nn::ops::rms_norm(&x, &self.one_plus_weight, self.eps as f32)?;
        Ok(out.to_dtype(dtype)?)
    }
}

/// RoPE tables. Frequencies and angles are computed in f32 whatever the model dtype: bf16
/// angles drift badly past a few hundred positions.
struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    fn new(cfg: &Config) -> Self {
        let d = cfg.head_dim;
        let inv_freq = (0..d)
            .step_by(2)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf(i as f32 / d as f32))
            .collect();
        Self { inv_freq }
    }

    /// `cos`, `sin` of shape `[seq, head_dim / 2]` for positions `0..seq`, in `dtype`.
    fn tables(&self, seq: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(seq * half);
        for p in 0..seq {
            angles.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (seq, half), device)?;
        Ok((
            angles.cos()?.to_dtype(dtype)?,
            angles.sin()?.to_dtype(dtype)?,
        ))
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl Mlp {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: linear_b(h, i, false, vb.pp("gate_proj"))?,
            up_proj: linear_b(h, i, false, vb.pp("up_proj"))?,
            down_proj: linear_b(i, h, false, vb.pp("down_proj"))?,
            act: cfg.activation()?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(xs)?;
        let gate = match self.act {
            Activation::GeluTanh => gate.gelu()?,
            Activation::GeluErf => gate.gelu_erf()?,
        };
        let up = self.up_proj.forward(xs)?;
        Ok(self.down_proj.forward(&(gate * up)?)?)
    }
}

/// Per-forward state shared by every block: RoPE tables and the two attention masks.
struct ForwardContext {
    cos: Tensor,
    sin: Tensor,
    full_mask: Tensor,
    sliding_mask: Option<Tensor>,
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
    sliding: bool,
}

impl Attention {
    fn new(cfg: &Config, sliding: bool, vb: VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let bias = cfg.attention_bias;
        Ok(Self {
            q_proj: linear_b(h, nh * d, bias, vb.pp("q_proj"))?,
            k_proj: linear_b(h, nkv * d, bias, vb.pp("k_proj"))?,
            v_proj: linear_b(h, nkv * d, bias, vb.pp("v_proj"))?,
            o_proj: linear_b(nh * d, h, bias, vb.pp("o_proj"))?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: cfg.attention_scale(),
            softcap: cfg.attn_logit_softcapping,
            sliding,
        })
    }

    /// `[b, t, heads * d]` -> `[b, heads, t, d]`
    fn split_heads(&self, xs: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        Ok(xs
            .reshape((b, t, heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Grouped-query attention: each key/value head serves `heads / kv_heads` query heads.
    fn repeat_kv(&self, xs: Tensor) -> Result<Tensor> {
        let groups = self.num_heads / self.num_kv_heads;
        if groups == 1 {
            return Ok(xs);
        }
        let (b, kv, t, d) = xs.dims4()?;
        Ok(xs
            .unsqueeze(2)?
            .expand((b, kv, groups, t, d))?
            .reshape((b, kv * groups, t, d))?)
    }

    fn forward(&self, xs: &Tensor, ctx: &ForwardContext) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let q = self.split_heads(&self.q_proj.forward(xs)?, self.num_heads)?;
        let k = self.split_heads(&self.k_proj.forward(xs)?, self.num_kv_heads)?;
        let v = self.split_heads(&self.v_proj.forward(xs)?, self.num_kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, &ctx.cos, &ctx.sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &ctx.cos, &ctx.sin)?;
        let k = self.repeat_kv(k)?;
        let v = self.repeat_kv(v)?.contiguous()?;

        let mut logits = (q.matmul(&k.t()?.contiguous()?)? * self.scale)?;
        if let Some(cap) = self.softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        let mask = match (&ctx.sliding_mask, self.sliding) {
            (Some(m), true) => m,
            _ => &ctx.full_mask,
        };
        // Softmax in f32 as HF's eager path does, then back to the model dtype.
        let logits = logits.to_dtype(DType::F32)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_dtype(v.dtype())?;
        let out = probs.matmul(&v)?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, t, self.num_heads * self.head_dim))?;
        Ok(self.o_proj.forward(&out)?)
    }
}

/// One block: attention and MLP, each wrapped in a pre-norm and a post-norm.
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &Config, i: usize, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: Attention::new(cfg, cfg.is_sliding(i), vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
            pre_feedforward_layernorm: RmsNorm::new(h, eps, vb.pp("pre_feedforward_layernorm"))?,
            post_feedforward_layernorm: RmsNorm::new(h, eps, vb.pp("post_feedforward_layernorm"))?,
        })
    }

    fn forward(&self, xs: &Tensor, ctx: &ForwardContext) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs)?, ctx)?;
        let xs = (xs + self.post_attention_layernorm.forward(&attn)?)?;
        let mlp = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&xs)?)?;
        Ok((xs + self.post_feedforward_layernorm.forward(&mlp)?)?)
    }
}

pub struct Model {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    rotary: Rotary,
    cfg: Config,
    dtype: DType,
    device: Device,
}

impl Model {
    /// Loads the embedding and blocks `0..num_loaded` (never the final norm or LM head).
    pub fn new(cfg: &Config, num_loaded: usize, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let vb_m = vb.pp("model");
        let embed = vb_m.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let layers = (0..num_loaded.min(cfg.num_hidden_layers))
            .map(|i| DecoderLayer::new(cfg, i, vb_m.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: Embedding::new(embed, cfg.hidden_size),
            layers,
            rotary: Rotary::new(cfg),
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Token embeddings scaled by sqrt(hidden_size), the scale rounded to the model dtype as
    /// HF does.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let xs = self.embed_tokens.forward(ids)?;
        let scale = Tensor::new(&[(self.cfg.hidden_size as f32).sqrt()], &self.device)?
            .to_dtype(self.dtype)?;
        Ok(xs.broadcast_mul(&scale)?)
    }

    fn context(&self, batch: &TokenBatch) -> Result<ForwardContext> {
        let t = batch.max_len();
        let (cos, sin) = self.rotary.tables(t, self.dtype, &self.device)?;
        let full_mask = attention_mask(&batch.lengths, t, None, &self.device)?;
        let needs_window = self.cfg.sliding_window.is_some_and(|w| w < t)
            && (0..self.layers.len()).any(|i| self.cfg.is_sliding(i));
        let sliding_mask = if needs_window {
            Some(attention_mask(
                &batch.lengths,
                t,
                self.cfg.sliding_window,
                &self.device,
            )?)
        } else {
            None
        };
        Ok(ForwardContext {
            cos,
            sin,
            full_mask,
            sliding_mask,
        })
    }
}

impl DecoderModel for Model {
    fn num_layers(&self) -> usize {
        self.cfg.num_hidden_layers
    }

    fn loaded_layers(&self) -> usize {
        self.layers.len()
    }

    fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn max_positions(&self) -> Option<usize> {
        self.cfg.max_position_embeddings
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward_blocks(
        &self,
        batch: &TokenBatch,
        last_layer: usize,
        hook: &mut dyn LayerHook,
    ) -> Result<Tensor> {
        if last_layer >= self.layers.len() {
            return Err(Error::new(format!(
                "layer {last_layer} was not loaded ({} blocks loaded)",
                self.layers.len()
            )));
        }
        let ctx = self.context(batch)?;
        let mut xs = self.embed(&batch.input_ids)?;
        for (i, layer) in self.layers.iter().enumerate().take(last_layer + 1) {
            xs = layer.forward(&xs, &ctx)?;
            if let Some(replaced) = hook.after_block(i, &xs, batch)? {
                xs = replaced;
            }
        }
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"vocab_size": 8, "hidden_size": 4, "intermediate_size": 8,
                "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 2, "query_pre_attn_scalar": 144 {extra}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn even_blocks_slide_by_default_as_in_hf() {
        let cfg = config("");
        let sliding: Vec<bool> = (0..4).map(|i| cfg.is_sliding(i)).collect();
        assert_eq!(sliding, vec![true, false, true, false]);
        let cfg = config(r#", "layer_types": ["full_attention", "sliding_attention"]"#);
        assert!(!cfg.is_sliding(0) && cfg.is_sliding(1));
    }

    #[test]
    fn attention_scale_uses_query_pre_attn_scalar() {
        assert_eq!(config("").attention_scale(), 1.0 / 12.0);
    }

    #[test]
    fn rejects_heads_that_do_not_group() {
        let mut cfg = config("");
        cfg.num_key_value_heads = 3;
        assert!(cfg.validate().is_err());
    }
}
