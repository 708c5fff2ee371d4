//! Gemma-2 and Gemma-3 text models, following HF transformers' `modeling_gemma2.py` and
//! `modeling_gemma3.py` with `attn_implementation="eager"` (the path that applies Gemma-2's
//! attention-logit soft-cap).
//!
//! Reads in data-flow order: Config -> Mlp -> Attention -> DecoderLayer -> Model. Field names
//! are the checkpoint's tensor names. Gemma-3 differs from Gemma-2 only in what [`Config`]
//! resolves: RMS-normed queries and keys, a separate RoPE base for sliding layers, rope
//! scaling on global layers, five sliding layers per global one, and usually no soft-cap.
//! Only the blocks a run needs are loaded; the final norm and LM head are never computed while
//! training.

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
pub enum Generation {
    Gemma2,
    Gemma3,
}

/// HF's `Gemma2Config` / `Gemma3TextConfig`, with HF's key names.
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
    /// Gemma-3: the RoPE base of sliding layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Gemma-3: scaling of the global layers' RoPE.
    #[serde(default)]
    pub rope_scaling: Option<RopeScalingConfig>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// `sliding_attention` / `full_attention` per block.
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
    /// Whether block `i` uses sliding-window attention, as HF decides it: `layer_types` when
    /// given, else Gemma-2 alternates starting with sliding and Gemma-3 repeats five sliding
    /// blocks then one global.
    pub fn is_sliding(&self, gen: Generation, i: usize) -> bool {
        match (&self.layer_types, gen) {
            (Some(types), _) => types.get(i).is_some_and(|t| t == "sliding_attention"),
            (None, Generation::Gemma2) => i.is_multiple_of(2),
            (None, Generation::Gemma3) => {
                !(i + 1).is_multiple_of(self.sliding_window_pattern.unwrap_or(6))
            }
        }
    }

    /// The softmax scale: `query_pre_attn_scalar`, not `head_dim`.
    pub fn attention_scale(&self) -> f64 {
        self.query_pre_attn_scalar.unwrap_or(256.0).powf(-0.5)
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

    pub fn validate(&self, gen: Generation) -> Result<()> {
        let bad = |what: String| Err(Error::new(format!("invalid Gemma config: {what}")));
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
        if gen == Generation::Gemma2 && self.query_pre_attn_scalar.is_none() {
            return bad("missing query_pre_attn_scalar".to_string());
        }
        if self.query_pre_attn_scalar.is_some_and(|s| s <= 0.0) {
            return bad("query_pre_attn_scalar must be positive".to_string());
        }
        self.rope_frequencies(gen)?;
        self.activation().map(|_| ())
    }

    /// Inverse frequencies of (global, sliding) blocks.
    fn rope_frequencies(&self, gen: Generation) -> Result<(Vec<f32>, Vec<f32>)> {
        let d = self.head_dim;
        match gen {
            Generation::Gemma2 => {
                let f = rope::inv_freq(d, self.rope_theta, None)?;
                Ok((f.clone(), f))
            }
            Generation::Gemma3 => Ok((
                rope::inv_freq(d, self.rope_theta, self.rope_scaling.as_ref())?,
                rope::inv_freq(d, self.rope_local_base_freq.unwrap_or(10_000.0), None)?,
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluTanh,
    GeluErf,
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

/// Per-forward state shared by every block: RoPE tables and attention masks for the global
/// and the sliding blocks.
pub(crate) struct ForwardContext {
    global_rope: (Tensor, Tensor),
    sliding_rope: (Tensor, Tensor),
    full_mask: Tensor,
    sliding_mask: Option<Tensor>,
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Gemma-3 only.
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
    fn new(cfg: &Config, gen: Generation, sliding: bool, vb: VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let bias = cfg.attention_bias;
        let qk_norm = |name: &str| match gen {
            Generation::Gemma2 => Ok(None),
            Generation::Gemma3 => {
                RmsNorm::new(d, cfg.rms_norm_eps, NormStyle::GemmaOnePlus, vb.pp(name)).map(Some)
            }
        };
        Ok(Self {
            q_proj: linear_b(h, nh * d, bias, vb.pp("q_proj"))?,
            k_proj: linear_b(h, nkv * d, bias, vb.pp("k_proj"))?,
            v_proj: linear_b(h, nkv * d, bias, vb.pp("v_proj"))?,
            o_proj: linear_b(nh * d, h, bias, vb.pp("o_proj"))?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: cfg.attention_scale(),
            softcap: cfg.attn_logit_softcapping,
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
        let mut q = split_heads(&self.q_proj.forward(xs)?, self.num_heads, d)?;
        let mut k = split_heads(&self.k_proj.forward(xs)?, self.num_kv_heads, d)?;
        let v = split_heads(&self.v_proj.forward(xs)?, self.num_kv_heads, d)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let ((cos, sin), mask) = match (self.sliding, &ctx.sliding_mask) {
            (true, Some(m)) => (&ctx.sliding_rope, m),
            (true, None) => (&ctx.sliding_rope, &ctx.full_mask),
            (false, _) => (&ctx.global_rope, &ctx.full_mask),
        };
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
    fn new(cfg: &Config, gen: Generation, i: usize, vb: VarBuilder) -> Result<Self> {
        let norm = |name: &str| {
            RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                NormStyle::GemmaOnePlus,
                vb.pp(name),
            )
        };
        Ok(Self {
            self_attn: Attention::new(cfg, gen, cfg.is_sliding(gen, i), vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
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
        let xs = (xs + self.post_attention_layernorm.forward(&attn)?)?;
        let mlp = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&xs)?)?;
        Ok((xs + self.post_feedforward_layernorm.forward(&mlp)?)?)
    }
}

pub struct Model {
    embed_tokens: TokenEmbedding,
    layers: Vec<DecoderLayer>,
    head: Option<LmHead>,
    global_inv_freq: Vec<f32>,
    sliding_inv_freq: Vec<f32>,
    any_sliding: bool,
    cfg: Config,
    dtype: DType,
    device: Device,
}

impl Model {
    /// Loads the embedding, blocks `0..parts.num_blocks` and, only when asked, the final norm
    /// and LM head.
    pub fn new(cfg: &Config, gen: Generation, parts: ModelParts) -> Result<Self> {
        cfg.validate(gen)?;
        let vb = &parts.vb;
        let n = parts.num_blocks.min(cfg.num_hidden_layers);
        let layers = (0..n)
            .map(|i| DecoderLayer::new(cfg, gen, i, vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let (global_inv_freq, sliding_inv_freq) = cfg.rope_frequencies(gen)?;
        let head = if parts.with_head {
            let norm = RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                NormStyle::GemmaOnePlus,
                vb.pp("norm"),
            )?;
            Some(LmHead::new(
                norm,
                parts.head_weight()?,
                cfg.final_logit_softcapping,
            ))
        } else {
            None
        };
        Ok(Self {
            embed_tokens: parts.embed_tokens,
            layers,
            head,
            global_inv_freq,
            sliding_inv_freq,
            any_sliding: (0..n).any(|i| cfg.is_sliding(gen, i)),
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
        let global_rope = rope::tables(&self.global_inv_freq, offset, t, dt, dev)?;
        let sliding_rope = rope::tables(&self.sliding_inv_freq, offset, t, dt, dev)?;
        let full_mask = causal_mask(t, offset, None, dt, dev)?;
        let window = self
            .cfg
            .sliding_window
            .filter(|&w| w < offset + t && self.any_sliding);
        let sliding_mask = match window {
            Some(w) => Some(causal_mask(t, offset, Some(w), dt, dev)?),
            None => None,
        };
        Ok(ForwardContext {
            global_rope,
            sliding_rope,
            full_mask,
            sliding_mask,
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
            r#"{{"vocab_size": 8, "hidden_size": 4, "intermediate_size": 8,
                "num_hidden_layers": 12, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 2, "query_pre_attn_scalar": 144 {extra}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn sliding_blocks_follow_hf_defaults() {
        let cfg = config("");
        let g2: Vec<bool> = (0..4)
            .map(|i| cfg.is_sliding(Generation::Gemma2, i))
            .collect();
        assert_eq!(g2, vec![true, false, true, false]);
        let g3: Vec<usize> = (0..12)
            .filter(|&i| !cfg.is_sliding(Generation::Gemma3, i))
            .collect();
        assert_eq!(g3, vec![5, 11]);
        let cfg = config(r#", "layer_types": ["full_attention", "sliding_attention"]"#);
        assert!(!cfg.is_sliding(Generation::Gemma2, 0) && cfg.is_sliding(Generation::Gemma2, 1));
    }

    #[test]
    fn attention_scale_uses_query_pre_attn_scalar() {
        assert_eq!(config("").attention_scale(), 1.0 / 12.0);
    }

    #[test]
    fn rejects_heads_that_do_not_group() {
        let mut cfg = config("");
        cfg.num_key_value_heads = 3;
        assert!(cfg.validate(Generation::Gemma2).is_err());
    }

    #[test]
    fn gemma3_scales_only_global_rope() {
        let cfg = config(
            r#", "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "rope_scaling": {"rope_type": "linear", "factor": 8.0}"#,
        );
        let (global, local) = cfg.rope_frequencies(Generation::Gemma3).unwrap();
        assert_eq!(global, vec![1.0 / 8.0]);
        assert_eq!(local, vec![1.0]);
    }
}
