//! A text model's settings, parsed once: `config.json` (or a GGUF file's metadata, put in HF's
//! words by [`super::gguf`]) over HF's class defaults for its architecture, resolved into a
//! [`TextConfig`] of plain fields. Nothing outside `src/model/` reads a config key.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::norm::NormStyle;
use super::rope::RopeScalingConfig;
use super::{Architecture, ARCHITECTURES};
use crate::error::{Error, Result};

/// The MLP's activation, from `hidden_act` / `hidden_activation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`.
    GeluTanh,
    /// `gelu`: the exact, erf-based GELU.
    GeluErf,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Activation> {
        match name {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(Error::new(format!(
                "unsupported hidden activation `{other}`"
            ))),
        }
    }
}

/// `eos_token_id`: one id or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

/// The text model's keys as config.json writes them, over the architecture's defaults. An
/// architecture's [`Architecture::resolve`] reads the keys only it gives meaning to.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    pub hidden_act: Option<String>,
    pub hidden_activation: Option<String>,
    pub max_position_embeddings: Option<usize>,
    pub pad_token_id: Option<u32>,
    eos_token_id: Option<EosIds>,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScalingConfig>,
    pub rope_local_base_freq: Option<f64>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    pub max_window_layers: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub sliding_window_pattern: Option<usize>,
    pub query_pre_attn_scalar: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
}

impl HfConfig {
    /// Whether block `i` is listed as sliding in `layer_types`, when the config has that list.
    pub fn listed_sliding(&self, i: usize) -> Option<bool> {
        self.layer_types
            .as_ref()
            .map(|types| types.get(i).is_some_and(|t| t == "sliding_attention"))
    }
}

/// Everything the forward pass needs to know about a text model, resolved.
#[derive(Debug, Clone)]
pub struct TextConfig {
    pub architecture: &'static Architecture,
    /// HF's `model_type` of the text model (`gemma2`, `gemma3_text`, `llama`, ...).
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Set by the architecture's rules, from the key it reads.
    pub activation: Activation,
    /// The longest sequence the model was trained for, when the config says.
    pub max_position_embeddings: Option<usize>,
    /// The padding id for batches: the config's, else 0 (padding is never attended to, so any
    /// id serves).
    pub pad_token_id: u32,
    /// Ids that end generation, as the config lists them.
    pub eos_token_id: Vec<u32>,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    /// Scaling of the global blocks' RoPE.
    pub rope_scaling: Option<RopeScalingConfig>,
    /// Base frequency of the sliding blocks' (unscaled) RoPE when they have their own.
    pub rope_local_base_freq: Option<f64>,
    pub mlp_bias: bool,
    pub sliding_window: Option<usize>,
    pub final_logit_softcapping: Option<f64>,
    // Set by the architecture's rules:
    /// Per block: whether it attends within `sliding_window`.
    pub sliding: Vec<bool>,
    /// The softmax scale of attention scores.
    pub attention_scale: f64,
    pub attn_logit_softcapping: Option<f64>,
    /// RMS norms on queries and keys per head.
    pub qk_norm: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub norm: NormStyle,
    /// Token embeddings are multiplied by `sqrt(hidden_size)`.
    pub scale_embeddings: bool,
}

impl TextConfig {
    /// The architecture's defaults overlaid with `own` (the text model's keys), resolved.
    pub fn resolve(arch: &'static Architecture, own: &Map<String, Value>) -> Result<TextConfig> {
        let mut merged: Map<String, Value> = serde_json::from_str(arch.defaults)
            .map_err(|e| Error::new(format!("defaults of {} are invalid: {e}", arch.name)))?;
        for (k, v) in own {
            merged.insert(k.clone(), v.clone());
        }
        adopt_rope_parameters(&mut merged);
        let hf: HfConfig = serde_json::from_value(Value::Object(merged))
            .map_err(|e| Error::new(format!("not a valid {} config: {e}", arch.name)))?;
        let heads = hf.num_attention_heads;
        // HF's computed defaults: one key/value head per query head, head_dim = hidden / heads.
        let head_dim = hf.head_dim.unwrap_or(hf.hidden_size / heads.max(1));
        let mut cfg = TextConfig {
            architecture: arch,
            model_type: hf
                .model_type
                .clone()
                .unwrap_or_else(|| arch.model_types[0].to_string()),
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim,
            rms_norm_eps: hf.rms_norm_eps,
            activation: Activation::Silu,
            max_position_embeddings: hf.max_position_embeddings,
            pad_token_id: hf.pad_token_id.unwrap_or(0),
            eos_token_id: match &hf.eos_token_id {
                Some(EosIds::One(id)) => vec![*id],
                Some(EosIds::Many(ids)) => ids.clone(),
                None => Vec::new(),
            },
            tie_word_embeddings: hf.tie_word_embeddings,
            rope_theta: hf.rope_theta,
            rope_scaling: hf.rope_scaling.clone(),
            rope_local_base_freq: None,
            mlp_bias: hf.mlp_bias,
            sliding_window: hf.sliding_window,
            final_logit_softcapping: None,
            sliding: vec![false; hf.num_hidden_layers],
            attention_scale: (head_dim as f64).powf(-0.5),
            attn_logit_softcapping: None,
            qk_norm: false,
            qkv_bias: hf.attention_bias,
            o_bias: hf.attention_bias,
            norm: NormStyle::Llama,
            scale_embeddings: false,
        };
        (arch.resolve)(&hf, &mut cfg)?;
        cfg.validate()
            .map_err(|e| e.context(format!("invalid {} config", arch.name)))
    }

    fn validate(self) -> Result<TextConfig> {
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return Err(Error::new(format!(
                "{h} attention heads cannot share {kv} key/value heads"
            )));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(Error::new(format!(
                "head_dim {} must be even",
                self.head_dim
            )));
        }
        if self.num_hidden_layers == 0 || self.hidden_size == 0 {
            return Err(Error::new("no layers or zero hidden size"));
        }
        if !(self.attention_scale.is_finite() && self.attention_scale > 0.0) {
            return Err(Error::new("the attention scale must be positive"));
        }
        self.inv_freqs()?;
        Ok(self)
    }

    /// RoPE inverse frequencies of the global blocks, and of the sliding blocks when they
    /// differ.
    pub fn inv_freqs(&self) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let d = self.head_dim;
        let global = super::rope::inv_freq(d, self.rope_theta, self.rope_scaling.as_ref())?;
        let local = match self.rope_local_base_freq {
            Some(base) => Some(super::rope::inv_freq(d, base, None)?),
            None => None,
        };
        Ok((global, local))
    }
}

/// What `config.json` says: the architecture and its text model's settings.
pub fn read_config(path: &Path) -> Result<TextConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read `{}`: {e}", path.display())))?;
    parse_config(&text).map_err(|e| e.context(format!("`{}`", path.display())))
}

/// Identifies the architecture by `architectures[0]`, or by `model_type` when there is no
/// such list, and resolves its text model's settings.
pub fn parse_config(text: &str) -> Result<TextConfig> {
    let raw: Value = serde_json::from_str(text)
        .map_err(|e| Error::new(format!("not a valid model config: {e}")))?;
    let Value::Object(obj) = &raw else {
        return Err(Error::new(
            "not a valid model config: expected a JSON object",
        ));
    };
    let class = obj
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    let model_type = obj.get("model_type").and_then(Value::as_str);
    let arch = match class {
        Some(c) => ARCHITECTURES.iter().find(|a| a.hf_classes.contains(&c)),
        None => model_type.and_then(|t| ARCHITECTURES.iter().find(|a| a.model_types.contains(&t))),
    }
    .copied()
    .ok_or_else(|| {
        let found = class.or(model_type).unwrap_or("none given");
        let supported: Vec<&str> = ARCHITECTURES
            .iter()
            .flat_map(|a| a.hf_classes.iter().copied())
            .collect();
        Error::new(format!("unsupported model architecture `{found}`"))
            .with_hint(format!("supported architectures: {}", supported.join(", ")))
    })?;
    let own = match arch.text_config {
        Some(key) => obj
            .get(key)
            .and_then(Value::as_object)
            .ok_or_else(|| Error::new(format!("{} config has no `{key}`", arch.name)))?,
        None => obj,
    };
    TextConfig::resolve(arch, own)
}

/// transformers 5 writes RoPE settings as `rope_parameters` (per attention type for Gemma-3)
/// instead of `rope_theta` / `rope_scaling` / `rope_local_base_freq`; read them the same way.
fn adopt_rope_parameters(text: &mut Map<String, Value>) {
    let Some(Value::Object(params)) = text.get("rope_parameters").cloned() else {
        return;
    };
    let apply = |text: &mut Map<String, Value>, p: &Map<String, Value>, theta_key: &str| {
        if let Some(theta) = p.get("rope_theta") {
            text.insert(theta_key.to_string(), theta.clone());
        }
        let kind = p
            .get("rope_type")
            .and_then(Value::as_str)
            .unwrap_or("default");
        if theta_key == "rope_theta" && kind != "default" {
            text.insert("rope_scaling".to_string(), Value::Object(p.clone()));
        }
    };
    match (
        params.get("full_attention"),
        params.get("sliding_attention"),
    ) {
        (Some(Value::Object(full)), sliding) => {
            apply(text, full, "rope_theta");
            if let Some(Value::Object(sliding)) = sliding {
                apply(text, sliding, "rope_local_base_freq");
            }
        }
        _ => apply(text, &params, "rope_theta"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_by_class_or_type() {
        let c = parse_config(r#"{"architectures": ["Gemma2ForCausalLM"]}"#).unwrap();
        assert_eq!(c.architecture.name, "Gemma-2");
        let c = parse_config(r#"{"model_type": "qwen2"}"#).unwrap();
        assert_eq!(c.architecture.name, "Qwen2");
        let err = parse_config(r#"{"architectures": ["BertModel"], "model_type": "gemma2"}"#)
            .unwrap_err();
        assert!(err.message().contains("`BertModel`"));
        assert!(err.hint().unwrap().contains("Gemma2ForCausalLM"));
    }

    #[test]
    fn missing_keys_take_hf_defaults() {
        // HF's Gemma2Config defaults the soft-cap to 50 when the file leaves it out ...
        let c = parse_config(r#"{"architectures": ["Gemma2ForCausalLM"], "num_hidden_layers": 3}"#)
            .unwrap();
        assert_eq!(c.attn_logit_softcapping, Some(50.0));
        assert_eq!(c.num_hidden_layers, 3);
        // ... while an explicit null turns it off.
        let c =
            parse_config(r#"{"model_type": "gemma2", "attn_logit_softcapping": null}"#).unwrap();
        assert_eq!(c.attn_logit_softcapping, None);
    }

    #[test]
    fn transformers5_rope_parameters() {
        let c = parse_config(
            r#"{"model_type": "llama", "rope_parameters": {"rope_type": "llama3",
                "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling.as_ref().unwrap().factor, Some(8.0));
        let c = parse_config(
            r#"{"model_type": "gemma3_text", "rope_parameters": {
                "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 1000000.0);
        assert_eq!(c.rope_local_base_freq, Some(10000.0));
        assert_eq!(c.rope_scaling.as_ref().unwrap().rope_type, "linear");
    }

    #[test]
    fn multimodal_gemma3_reads_its_text_config() {
        let c = parse_config(
            r#"{"architectures": ["Gemma3ForConditionalGeneration"],
                "text_config": {"hidden_size": 2560, "num_hidden_layers": 34}}"#,
        )
        .unwrap();
        assert_eq!(c.architecture.name, "Gemma-3 (multimodal)");
        assert_eq!((c.hidden_size, c.num_hidden_layers), (2560, 34));
        assert_eq!(c.rope_local_base_freq, Some(10000.0));
    }

    #[test]
    fn rejects_heads_that_do_not_group() {
        let err = parse_config(
            r#"{"model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 3}"#,
        )
        .unwrap_err();
        assert!(err.message().contains("cannot share"), "{}", err.message());
    }
}
