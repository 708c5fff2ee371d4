//! Gemma-2 and Gemma-3 text decoders, following HF transformers' `modeling_gemma2.py` and
//! `modeling_gemma3.py` with `attn_implementation="eager"` (the default `sdpa` path silently
//! drops Gemma-2's attention soft-cap).
//!
//! What differs from candle-transformers' Gemma-2: attention is scaled by
//! `query_pre_attn_scalar^-0.5` (not head_dim), only the blocks HF marks as sliding use the
//! window, and padding is masked. Gemma-3 adds RMS norms on queries and keys, a separate
//! unscaled RoPE base for sliding blocks, and a five-sliding-then-one-global block pattern.
//! Both wrap attention and MLP in a pre-norm and a post-norm, scale embeddings by
//! `sqrt(hidden_size)`, and scale norms by `1 + w`.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::attention::Attention;
use super::config::{Activation, HfConfig, TextConfig};
use super::decoder::{self, Block, ForwardContext, Tap};
use super::mlp::Mlp;
use super::norm::{NormStyle, RmsNorm};
use super::{Architecture, GgufFacts, KvCache, LayerType};
use crate::error::{Error, Result};

pub const GEMMA2: Architecture = Architecture {
    name: "Gemma-2",
    hf_classes: &["Gemma2ForCausalLM"],
    model_types: &["gemma2"],
    text_config: None,
    text_prefixes: &["model"],
    // HF's Gemma2Config.
    defaults: r#"{
        "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "query_pre_attn_scalar": 256, "sliding_window": 4096,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "pad_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": true,
        "attention_bias": false, "mlp_bias": false
    }"#,
    resolve: gemma2_rules,
    build: decoder::build::<DecoderLayer>,
    gguf: Some(GgufFacts {
        arch: "gemma2",
        norms_plus_one: true,
        permuted_qk: false,
        post_attention_norm: "post_attention_norm",
        complete_config: complete_gguf_config,
    }),
};

pub const GEMMA3: Architecture = Architecture {
    name: "Gemma-3",
    hf_classes: &["Gemma3ForCausalLM"],
    model_types: &["gemma3_text"],
    text_config: None,
    text_prefixes: &["model"],
    // HF's Gemma3TextConfig.
    defaults: r#"{
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "query_pre_attn_scalar": 256, "sliding_window": 4096, "sliding_window_pattern": 6,
        "attn_logit_softcapping": null, "final_logit_softcapping": null,
        "pad_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": true,
        "attention_bias": false, "mlp_bias": false
    }"#,
    resolve: gemma3_rules,
    build: decoder::build::<DecoderLayer>,
    gguf: Some(GgufFacts {
        arch: "gemma3",
        norms_plus_one: true,
        permuted_qk: false,
        post_attention_norm: "post_attention_norm",
        complete_config: complete_gguf_config,
    }),
};

/// A Gemma-3 vision-language checkpoint: only its text model is used.
pub const GEMMA3_MULTIMODAL: Architecture = Architecture {
    name: "Gemma-3 (multimodal)",
    hf_classes: &["Gemma3ForConditionalGeneration"],
    model_types: &["gemma3"],
    text_config: Some("text_config"),
    // Older checkpoints nest the text model as `language_model.model`, newer ones as
    // `model.language_model`.
    text_prefixes: &["language_model.model", "model.language_model"],
    defaults: GEMMA3.defaults,
    resolve: gemma3_rules,
    build: decoder::build::<DecoderLayer>,
    gguf: None,
};

/// What both generations share.
fn common_rules(hf: &HfConfig, cfg: &mut TextConfig) -> Result<()> {
    let act = hf.hidden_activation.as_deref().or(hf.hidden_act.as_deref());
    cfg.activation = act.map_or(Ok(Activation::GeluTanh), Activation::parse)?;
    let scalar = hf
        .query_pre_attn_scalar
        .ok_or_else(|| Error::new("missing query_pre_attn_scalar"))?;
    if scalar <= 0.0 {
        return Err(Error::new("query_pre_attn_scalar must be positive"));
    }
    cfg.attention_scale = scalar.powf(-0.5);
    cfg.attn_logit_softcapping = hf.attn_logit_softcapping;
    cfg.final_logit_softcapping = hf.final_logit_softcapping;
    cfg.norm = NormStyle::GemmaOnePlus;
    cfg.scale_embeddings = true;
    Ok(())
}

/// Gemma-2 alternates sliding and global blocks, starting with sliding, and uses one RoPE.
fn gemma2_rules(hf: &HfConfig, cfg: &mut TextConfig) -> Result<()> {
    common_rules(hf, cfg)?;
    cfg.sliding = (0..cfg.num_hidden_layers)
        .map(|i| hf.listed_sliding(i).unwrap_or(i.is_multiple_of(2)))
        .collect();
    cfg.rope_scaling = None;
    Ok(())
}

/// Gemma-3 repeats `sliding_window_pattern - 1` sliding blocks then one global one; the global
/// blocks' RoPE may be scaled, the sliding blocks' has its own base.
fn gemma3_rules(hf: &HfConfig, cfg: &mut TextConfig) -> Result<()> {
    common_rules(hf, cfg)?;
    let pattern = hf.sliding_window_pattern.unwrap_or(6).max(1);
    cfg.sliding = (0..cfg.num_hidden_layers)
        .map(|i| {
            hf.listed_sliding(i)
                .unwrap_or(!(i + 1).is_multiple_of(pattern))
        })
        .collect();
    cfg.qk_norm = true;
    cfg.rope_local_base_freq = hf.rope_local_base_freq;
    Ok(())
}

/// llama.cpp does not store `query_pre_attn_scalar`; it hard-codes it: the 27B models (46
/// Gemma-2 or 62 Gemma-3 blocks) scale attention by hidden / heads, the others by head_dim.
fn complete_gguf_config(cfg: &mut serde_json::Map<String, serde_json::Value>) {
    let get = |k: &str| cfg.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let (layers, hidden, heads) = (
        get("num_hidden_layers"),
        get("hidden_size"),
        get("num_attention_heads"),
    );
    let gemma2 = cfg.get("model_type").and_then(|t| t.as_str()) == Some("gemma2");
    let big = (gemma2 && layers == 46) || (!gemma2 && layers == 62);
    let scalar = if big {
        hidden / heads.max(1)
    } else {
        get("head_dim")
    };
    cfg.insert("query_pre_attn_scalar".into(), scalar.into());
}

/// One block: attention and MLP, each wrapped in a pre-norm and a post-norm. The layer types
/// steering-vectors hooks are these modules' outputs: `input_layernorm` (the normed input to
/// attention), `self_attn` (the attention output, before its post-norm),
/// `post_attention_layernorm` (that output normed, just before it is added to the residual
/// stream) and `mlp` (the MLP output, before `post_feedforward_layernorm`).
pub struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
}

impl Block for DecoderLayer {
    fn new(cfg: &TextConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let norm =
            |name: &str| RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, cfg.norm, vb.pp(name));
        Ok(Self {
            self_attn: Attention::new(cfg, index, vb.pp("self_attn"))?,
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
        tap: &mut Tap,
    ) -> Result<Tensor> {
        let normed = tap.apply(LayerType::InputLayernorm, self.input_layernorm.forward(xs)?)?;
        let attn = tap.apply(
            LayerType::SelfAttn,
            self.self_attn.forward(&normed, ctx, cache)?,
        )?;
        let attn = tap.apply(
            LayerType::PostAttentionLayernorm,
            self.post_attention_layernorm.forward(&attn)?,
        )?;
        let xs = (xs + attn)?;
        let mlp = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&xs)?)?;
        let mlp = tap.apply(LayerType::Mlp, mlp)?;
        Ok((xs + self.post_feedforward_layernorm.forward(&mlp)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::parse_config;
    use super::*;

    fn config(model_type: &str, extra: &str) -> TextConfig {
        parse_config(&format!(
            r#"{{"model_type": "{model_type}", "vocab_size": 8, "hidden_size": 4,
                "intermediate_size": 8, "num_hidden_layers": 12, "num_attention_heads": 2,
                "num_key_value_heads": 1, "head_dim": 2, "query_pre_attn_scalar": 144 {extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn sliding_blocks_follow_hf_defaults() {
        let g2 = config("gemma2", "");
        assert_eq!(g2.sliding[..4], [true, false, true, false]);
        let g3 = config("gemma3_text", "");
        let global: Vec<usize> = (0..12).filter(|&i| !g3.sliding[i]).collect();
        assert_eq!(global, vec![5, 11]);
        let listed = config(
            "gemma2",
            r#", "num_hidden_layers": 2, "layer_types": ["full_attention", "sliding_attention"]"#,
        );
        assert_eq!(listed.sliding, [false, true]);
    }

    #[test]
    fn attention_scale_uses_query_pre_attn_scalar() {
        assert_eq!(config("gemma2", "").attention_scale, 1.0 / 12.0);
        let err =
            parse_config(r#"{"model_type": "gemma2", "query_pre_attn_scalar": null}"#).unwrap_err();
        assert!(err.message().contains("query_pre_attn_scalar"));
    }

    #[test]
    fn gemma3_scales_only_global_rope() {
        let cfg = config(
            "gemma3_text",
            r#", "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "rope_scaling": {"rope_type": "linear", "factor": 8.0}"#,
        );
        let (global, local) = cfg.inv_freqs().unwrap();
        assert_eq!(global, vec![1.0 / 8.0]);
        assert_eq!(local, Some(vec![1.0]));
        // Gemma-2 has one unscaled RoPE.
        let cfg = config(
            "gemma2",
            r#", "rope_scaling": {"rope_type": "linear", "factor": 8.0}"#,
        );
        assert_eq!(cfg.inv_freqs().unwrap(), (vec![1.0], None));
    }

    #[test]
    fn gguf_scalar_follows_llama_cpp() {
        let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"model_type": "gemma2", "num_hidden_layers": 46, "hidden_size": 4608,
                "num_attention_heads": 32, "head_dim": 128}"#,
        )
        .unwrap();
        complete_gguf_config(&mut m);
        assert_eq!(m["query_pre_attn_scalar"], 144);
        m.insert("num_hidden_layers".into(), 42.into());
        complete_gguf_config(&mut m);
        assert_eq!(m["query_pre_attn_scalar"], 128);
    }
}
