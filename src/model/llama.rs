//! Llama-family decoders: Llama (1-3.x), Mistral and Qwen2, following HF transformers'
//! `modeling_llama.py`, `modeling_mistral.py` and `modeling_qwen2.py` (eager attention).
//!
//! Reads in data-flow order: Config -> Mlp -> Attention -> DecoderLayer -> Model. The three
//! differ only in what [`Config`] resolves: Qwen2 adds biases to q/k/v, Mistral may slide its
//! attention window on every block, Llama-3.x scales RoPE.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear_b, Linear, VarBuilder};
use serde::Deserialize;

use super::attention::{attend, split_heads};
use super::embedding::TokenEmbedding;
use super::head::LmHead;
use super::mask::causal_mask;
use super::norm::{NormStyle, RmsNorm};
use super::rope::{self, RopeScalingConfig};
use super::stack::{self, Stack};
use super::{DecoderModel, KvCache, LayerHook, LogitPositions, ModelParts, TokenBatch};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Llama,
    Mistral,
    Qwen2,
}

/// HF's `LlamaConfig` / `MistralConfig` / `Qwen2Config`, with HF's key names.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScalingConfig>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2: sliding attention only when enabled, and only from `max_window_layers` on.
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub hidden_act: Option<String>,
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
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The window block `i` attends within, if it slides.
    pub fn window(&self, flavor: Flavor, i: usize) -> Option<usize> {
        let sliding = match (&self.layer_types, flavor) {
            (Some(types), _) => types.get(i).is_some_and(|t| t == "sliding_attention"),
            (None, Flavor::Llama) => false,
            (None, Flavor::Mistral) => true,
            (None, Flavor::Qwen2) => {
                self.use_sliding_window && i >= self.max_window_layers.unwrap_or(0)
            }
        };
        if sliding {
            self.sliding_window
        } else {
            None
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::new(format!("invalid Llama-family config: {what}")));
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return bad(format!(
                "{h} attention heads cannot share {kv} key/value heads"
            ));
        }
        let d = self.head_dim();
        if d == 0 || !d.is_multiple_of(2) {
            return bad(format!("head_dim {d} must be even"));
        }
        if self.num_hidden_layers == 0 || self.hidden_size == 0 {
            return bad("no layers or zero hidden size".to_string());
        }
        match self.hidden_act.as_deref().unwrap_or("silu") {
            "silu" | "swish" => {}
            other => return bad(format!("unsupported hidden_act `{other}`")),
        }
        rope::inv_freq(d, self.rope_theta, self.rope_scaling.as_ref()).map(|_| ())
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: linear_b(h, i, b, vb.pp("gate_proj"))?,
            up_proj: linear_b(h, i, b, vb.pp("up_proj"))?,
            down_proj: linear_b(i, h, b, vb.pp("down_proj"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(xs)?)?;
        let up = self.up_proj.forward(xs)?;
        Ok(self.down_proj.forward(&(gate * up)?)?)
    }
}

/// Per-forward state shared by every block.
pub(crate) struct ForwardContext {
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
    sliding: bool,
}

impl Attention {
    fn new(cfg: &Config, flavor: Flavor, sliding: bool, vb: VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let qkv_bias = flavor == Flavor::Qwen2 || cfg.attention_bias;
        let o_bias = flavor != Flavor::Qwen2 && cfg.attention_bias;
        Ok(Self {
            q_proj: linear_b(h, nh * d, qkv_bias, vb.pp("q_proj"))?,
            k_proj: linear_b(h, nkv * d, qkv_bias, vb.pp("k_proj"))?,
            v_proj: linear_b(h, nkv * d, qkv_bias, vb.pp("v_proj"))?,
            o_proj: linear_b(nh * d, h, o_bias, vb.pp("o_proj"))?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            sliding,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        ctx: &ForwardContext,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let d = self.head_dim;
        let q = split_heads(&self.q_proj.forward(xs)?, self.num_heads, d)?;
        let k = split_heads(&self.k_proj.forward(xs)?, self.num_kv_heads, d)?;
        let v = split_heads(&self.v_proj.forward(xs)?, self.num_kv_heads, d)?;
        let q = rope::apply(&q, &ctx.cos, &ctx.sin)?;
        let k = rope::apply(&k, &ctx.cos, &ctx.sin)?;
        let (k, v) = match cache {
            Some((c, layer)) => c.extend(layer, k, v)?,
            None => (k, v),
        };
        let mask = match (self.sliding, &ctx.sliding_mask) {
            (true, Some(m)) => m,
            _ => &ctx.full_mask,
        };
        let out = attend(&q, &k, &v, (d as f64).powf(-0.5), None, mask)?;
        Ok(self.o_proj.forward(&out)?)
    }
}

/// One pre-norm block: attention then MLP, each added to the residual stream.
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &Config, flavor: Flavor, i: usize, vb: VarBuilder) -> Result<Self> {
        let norm = |name: &str| {
            RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                NormStyle::Llama,
                vb.pp(name),
            )
        };
        let sliding = cfg.window(flavor, i).is_some();
        Ok(Self {
            self_attn: Attention::new(cfg, flavor, sliding, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        ctx: &ForwardContext,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs)?, ctx, cache)?;
        let xs = (xs + attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }
}

pub struct Model {
    embed_tokens: TokenEmbedding,
    layers: Vec<DecoderLayer>,
    head: Option<LmHead>,
    inv_freq: Vec<f32>,
    window: Option<usize>,
    cfg: Config,
    dtype: DType,
    device: Device,
}

impl Model {
    /// Loads the embedding, blocks `0..parts.num_blocks` and, only when asked, the final norm
    /// and LM head.
    pub fn new(cfg: &Config, flavor: Flavor, parts: ModelParts) -> Result<Self> {
        cfg.validate()?;
        let vb = &parts.vb;
        let n = parts.num_blocks.min(cfg.num_hidden_layers);
        let layers = (0..n)
            .map(|i| DecoderLayer::new(cfg, flavor, i, vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let head = if parts.with_head {
            let norm = RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                NormStyle::Llama,
                vb.pp("norm"),
            )?;
            Some(LmHead::new(norm, parts.head_weight()?, None))
        } else {
            None
        };
        Ok(Self {
            embed_tokens: parts.embed_tokens,
            layers,
            head,
            inv_freq: rope::inv_freq(cfg.head_dim(), cfg.rope_theta, cfg.rope_scaling.as_ref())?,
            window: (0..n).find_map(|i| cfg.window(flavor, i)),
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
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
        stack::forward_blocks(self, batch, last_layer, hook)
    }

    fn forward_logits(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
        hook: &mut dyn LayerHook,
        positions: LogitPositions,
    ) -> Result<Tensor> {
        stack::forward_logits(self, batch, cache, hook, positions)
    }
}

impl Stack for Model {
    type Context = ForwardContext;

    /// RoPE tables and masks for `t` new positions after `offset` cached ones.
    fn context(&self, t: usize, offset: usize) -> Result<ForwardContext> {
        let (dt, dev) = (self.dtype, &self.device);
        let (cos, sin) = rope::tables(&self.inv_freq, offset, t, dt, dev)?;
        let full_mask = causal_mask(t, offset, None, dt, dev)?;
        let sliding_mask = match self.window.filter(|&w| w < offset + t) {
            Some(w) => Some(causal_mask(t, offset, Some(w), dt, dev)?),
            None => None,
        };
        Ok(ForwardContext {
            cos,
            sin,
            full_mask,
            sliding_mask,
        })
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    fn loaded_blocks(&self) -> usize {
        self.layers.len()
    }

    fn total_blocks(&self) -> usize {
        self.cfg.num_hidden_layers
    }

    fn block(
        &self,
        i: usize,
        xs: &Tensor,
        ctx: &ForwardContext,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        self.layers[i].forward(xs, ctx, cache)
    }

    fn head(&self) -> Option<&LmHead> {
        self.head.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 4, "num_attention_heads": 2 {extra}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn defaults_follow_hf() {
        let cfg = config("");
        assert_eq!(cfg.kv_heads(), 2);
        assert_eq!(cfg.head_dim(), 4);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn which_blocks_slide() {
        let cfg = config(r#", "sliding_window": 16"#);
        assert_eq!(cfg.window(Flavor::Mistral, 0), Some(16));
        assert_eq!(cfg.window(Flavor::Llama, 0), None);
        assert_eq!(cfg.window(Flavor::Qwen2, 3), None);
        let cfg =
            config(r#", "sliding_window": 16, "use_sliding_window": true, "max_window_layers": 2"#);
        assert_eq!(cfg.window(Flavor::Qwen2, 1), None);
        assert_eq!(cfg.window(Flavor::Qwen2, 2), Some(16));
    }
}
