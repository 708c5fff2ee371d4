//! Llama-family decoders: Llama (1-3.x), Mistral and Qwen2, following HF transformers'
//! `modeling_llama.py`, `modeling_mistral.py` and `modeling_qwen2.py` (eager attention).
//!
//! One pre-norm block serves all three; they differ only in what their rules resolve: Qwen2
//! adds biases to q/k/v (not to the output projection) and slides its window from
//! `max_window_layers` on when enabled, Mistral slides on every block, Llama-3.x scales RoPE.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::attention::Attention;
use super::config::{Activation, HfConfig, TextConfig};
use super::decoder::{self, Block, ForwardContext, Tap};
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::{Architecture, GgufFacts, KvCache, LayerType};
use crate::error::Result;

pub const LLAMA: Architecture = Architecture {
    name: "Llama",
    hf_classes: &["LlamaForCausalLM"],
    model_types: &["llama"],
    text_config: None,
    text_prefixes: &["model"],
    // HF's LlamaConfig.
    defaults: r#"{
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "eos_token_id": 2, "tie_word_embeddings": false, "attention_bias": false,
        "mlp_bias": false
    }"#,
    resolve: |hf, cfg| rules(hf, cfg, |_| false),
    build: decoder::build::<DecoderLayer>,
    gguf: Some(GgufFacts {
        arch: "llama",
        norms_plus_one: false,
        permuted_qk: true,
        post_attention_norm: "ffn_norm",
        complete_config: |_| {},
    }),
};

pub const MISTRAL: Architecture = Architecture {
    name: "Mistral",
    hf_classes: &["MistralForCausalLM"],
    model_types: &["mistral"],
    text_config: None,
    text_prefixes: &["model"],
    // HF's MistralConfig.
    defaults: r#"{
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "sliding_window": 4096, "eos_token_id": 2,
        "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false
    }"#,
    resolve: |hf, cfg| rules(hf, cfg, |_| true),
    build: decoder::build::<DecoderLayer>,
    // llama.cpp converts Mistral checkpoints to its `llama` architecture.
    gguf: None,
};

pub const QWEN2: Architecture = Architecture {
    name: "Qwen2",
    hf_classes: &["Qwen2ForCausalLM"],
    model_types: &["qwen2"],
    text_config: None,
    text_prefixes: &["model"],
    // HF's Qwen2Config.
    defaults: r#"{
        "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "use_sliding_window": false, "sliding_window": 4096,
        "max_window_layers": 28, "tie_word_embeddings": false, "attention_bias": false,
        "mlp_bias": false
    }"#,
    resolve: |hf, cfg| {
        let from = hf.max_window_layers.unwrap_or(0);
        let enabled = hf.use_sliding_window.unwrap_or(false);
        rules(hf, cfg, |i| enabled && i >= from)?;
        cfg.qkv_bias = true;
        cfg.o_bias = false;
        Ok(())
    },
    build: decoder::build::<DecoderLayer>,
    gguf: Some(GgufFacts {
        arch: "qwen2",
        norms_plus_one: false,
        permuted_qk: false,
        post_attention_norm: "ffn_norm",
        complete_config: |cfg| {
            cfg.insert("use_sliding_window".into(), false.into());
        },
    }),
};

/// The family's rules: `hidden_act`, and which blocks slide when `layer_types` does not say
/// (only where the config sets a window).
fn rules(hf: &HfConfig, cfg: &mut TextConfig, slides: impl Fn(usize) -> bool) -> Result<()> {
    cfg.activation = Activation::parse(hf.hidden_act.as_deref().unwrap_or("silu"))?;
    let window = hf.sliding_window.is_some();
    cfg.sliding = (0..cfg.num_hidden_layers)
        .map(|i| window && hf.listed_sliding(i).unwrap_or(slides(i)))
        .collect();
    Ok(())
}

/// One pre-norm block: attention then MLP, each added to the residual stream. The layer types
/// steering-vectors hooks are these modules' outputs: `input_layernorm` (the normed input to
/// attention), `self_attn` (the attention output), `post_attention_layernorm` (the normed input
/// to the MLP) and `mlp` (the MLP output).
pub struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
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
        let xs = (xs + attn)?;
        let normed = tap.apply(
            LayerType::PostAttentionLayernorm,
            self.post_attention_layernorm.forward(&xs)?,
        )?;
        let mlp = tap.apply(LayerType::Mlp, self.mlp.forward(&normed)?)?;
        Ok((xs + mlp)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::parse_config;

    /// A small config; Mistral's and Qwen2's default key/value head counts do not divide 2
    /// heads, so those get one.
    fn config(model_type: &str, extra: &str) -> super::TextConfig {
        let kv = match model_type {
            "llama" => "",
            _ => r#", "num_key_value_heads": 1"#,
        };
        parse_config(&format!(
            r#"{{"model_type": "{model_type}", "vocab_size": 8, "hidden_size": 8,
                "intermediate_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2
                {kv} {extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn defaults_follow_hf() {
        let cfg = config("llama", "");
        assert_eq!(cfg.num_key_value_heads, 2);
        assert_eq!(cfg.head_dim, 4);
        assert_eq!(cfg.attention_scale, 0.5);
        assert!(!cfg.tie_word_embeddings);
    }

    #[test]
    fn which_blocks_slide() {
        let w = r#", "sliding_window": 16"#;
        assert!(config("mistral", w).sliding[0]);
        assert!(!config("llama", w).sliding[0]);
        assert!(!config("qwen2", w).sliding[3]);
        let cfg = config(
            "qwen2",
            r#", "sliding_window": 16, "use_sliding_window": true, "max_window_layers": 2"#,
        );
        assert_eq!(cfg.sliding, [false, false, true, true]);
        assert!(cfg.qkv_bias && !cfg.o_bias);
    }
}
