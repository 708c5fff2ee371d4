//! `config.json`: which architecture a checkpoint is, and the text model's settings with HF's
//! defaults filled in for keys the file leaves out (HF's config classes do the same, so a
//! missing `attn_logit_softcapping` on Gemma-2 still means 50).

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Architectures this build can run, as `config.json` names them.
pub const SUPPORTED: &[&str] = &[
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Gemma3ForConditionalGeneration",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Gemma2,
    Gemma3,
    /// A Gemma-3 vision-language checkpoint; only its text model is used.
    Gemma3Multimodal,
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    fn from_class(name: &str) -> Option<Architecture> {
        Some(match name {
            "Gemma2ForCausalLM" => Architecture::Gemma2,
            "Gemma3ForCausalLM" => Architecture::Gemma3,
            "Gemma3ForConditionalGeneration" => Architecture::Gemma3Multimodal,
            "LlamaForCausalLM" => Architecture::Llama,
            "MistralForCausalLM" => Architecture::Mistral,
            "Qwen2ForCausalLM" => Architecture::Qwen2,
            _ => return None,
        })
    }

    fn from_model_type(name: &str) -> Option<Architecture> {
        Some(match name {
            "gemma2" => Architecture::Gemma2,
            "gemma3_text" => Architecture::Gemma3,
            "gemma3" => Architecture::Gemma3Multimodal,
            "llama" => Architecture::Llama,
            "mistral" => Architecture::Mistral,
            "qwen2" => Architecture::Qwen2,
            _ => return None,
        })
    }

    /// HF's config-class defaults for the text model.
    fn defaults(self) -> Value {
        match self {
            Architecture::Gemma2 => json!({
                "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
                "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
                "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                "query_pre_attn_scalar": 256, "sliding_window": 4096,
                "attn_logit_softcapping": 50.0, "pad_token_id": 0
            }),
            Architecture::Gemma3 | Architecture::Gemma3Multimodal => json!({
                "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
                "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0, "query_pre_attn_scalar": 256, "sliding_window": 4096,
                "attn_logit_softcapping": null, "rope_local_base_freq": 10000.0,
                "pad_token_id": 0
            }),
            Architecture::Llama => json!({
                "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
                "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0
            }),
            Architecture::Mistral => json!({
                "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0, "sliding_window": 4096
            }),
            Architecture::Qwen2 => json!({
                "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0, "use_sliding_window": false, "sliding_window": 4096,
                "max_window_layers": 28
            }),
        }
    }
}

/// A parsed `config.json`: the architecture and the text model's settings.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    /// The text model's keys over HF's defaults.
    pub text: Value,
}

impl ModelConfig {
    pub fn num_layers(&self) -> usize {
        self.usize_key("num_hidden_layers")
    }

    pub fn hidden_size(&self) -> usize {
        self.usize_key("hidden_size")
    }

    fn usize_key(&self, k: &str) -> usize {
        self.text.get(k).and_then(Value::as_u64).unwrap_or(0) as usize
    }
}

/// Reads `config.json` and identifies its architecture.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read `{}`: {e}", path.display())))?;
    parse_config(&text).map_err(|e| e.context(format!("`{}`", path.display())))
}

pub fn parse_config(text: &str) -> Result<ModelConfig> {
    let raw: Value = serde_json::from_str(text)
        .map_err(|e| Error::new(format!("not a valid model config: {e}")))?;
    let Value::Object(obj) = &raw else {
        return Err(Error::new(
            "not a valid model config: expected a JSON object",
        ));
    };
    let classes: Vec<&str> = obj
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let model_type = obj.get("model_type").and_then(Value::as_str);
    let architecture = match classes.first() {
        Some(c) => Architecture::from_class(c),
        None => model_type.and_then(Architecture::from_model_type),
    }
    .ok_or_else(|| {
        let found = classes
            .first()
            .copied()
            .or(model_type)
            .unwrap_or("none given");
        Error::new(format!("unsupported model architecture `{found}`"))
            .with_hint(format!("supported architectures: {}", SUPPORTED.join(", ")))
    })?;
    let own: &Map<String, Value> = match architecture {
        Architecture::Gemma3Multimodal => obj
            .get("text_config")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::new("Gemma-3 multimodal config has no `text_config`"))?,
        _ => obj,
    };
    let mut text = architecture.defaults();
    if let Value::Object(merged) = &mut text {
        for (k, v) in own {
            merged.insert(k.clone(), v.clone());
        }
        adopt_rope_parameters(merged);
    }
    Ok(ModelConfig { architecture, text })
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
        assert_eq!(c.architecture, Architecture::Gemma2);
        let c = parse_config(r#"{"model_type": "qwen2"}"#).unwrap();
        assert_eq!(c.architecture, Architecture::Qwen2);
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
        assert_eq!(c.text["attn_logit_softcapping"], 50.0);
        assert_eq!(c.num_layers(), 3);
        // ... while an explicit null turns it off.
        let c =
            parse_config(r#"{"model_type": "gemma2", "attn_logit_softcapping": null}"#).unwrap();
        assert!(c.text["attn_logit_softcapping"].is_null());
    }

    #[test]
    fn transformers5_rope_parameters() {
        let c = parse_config(
            r#"{"model_type": "llama", "rope_parameters": {"rope_type": "llama3",
                "rope_theta": 500000.0, "factor": 8.0}}"#,
        )
        .unwrap();
        assert_eq!(c.text["rope_theta"], 500000.0);
        assert_eq!(c.text["rope_scaling"]["factor"], 8.0);
        let c = parse_config(
            r#"{"model_type": "gemma3_text", "rope_parameters": {
                "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}"#,
        )
        .unwrap();
        assert_eq!(c.text["rope_theta"], 1000000.0);
        assert_eq!(c.text["rope_local_base_freq"], 10000.0);
        assert_eq!(c.text["rope_scaling"]["rope_type"], "linear");
    }

    #[test]
    fn multimodal_gemma3_reads_its_text_config() {
        let c = parse_config(
            r#"{"architectures": ["Gemma3ForConditionalGeneration"],
                "text_config": {"hidden_size": 2560, "num_hidden_layers": 34}}"#,
        )
        .unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3Multimodal);
        assert_eq!((c.hidden_size(), c.num_layers()), (2560, 34));
        assert_eq!(c.text["rope_local_base_freq"], 10000.0);
    }
}
