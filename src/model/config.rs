//! `config.json`: which architecture a checkpoint is, before any weights are touched.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Architectures this build can run, as `config.json` names them.
pub const SUPPORTED: &[&str] = &["Gemma2ForCausalLM"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Gemma2,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
}

/// Reads `config.json` as text and identifies its architecture.
pub fn read_config(path: &Path) -> Result<(String, Architecture)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read `{}`: {e}", path.display())))?;
    let header: Header = serde_json::from_str(&text).map_err(|e| {
        Error::new(format!(
            "`{}` is not a valid model config: {e}",
            path.display()
        ))
    })?;
    let arch = identify(&header).ok_or_else(|| {
        let found = header
            .architectures
            .first()
            .cloned()
            .or(header.model_type.clone())
            .unwrap_or_else(|| "none given".to_string());
        Error::new(format!(
            "unsupported model architecture `{found}` in `{}`",
            path.display()
        ))
        .with_hint(format!("supported architectures: {}", SUPPORTED.join(", ")))
    })?;
    Ok((text, arch))
}

fn identify(h: &Header) -> Option<Architecture> {
    let by_name = h.architectures.iter().find_map(|a| match a.as_str() {
        "Gemma2ForCausalLM" => Some(Architecture::Gemma2),
        _ => None,
    });
    by_name.or(match h.model_type.as_deref() {
        Some("gemma2") if h.architectures.is_empty() => Some(Architecture::Gemma2),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> Header {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn identifies_gemma2_by_class_or_type() {
        let h = header(r#"{"architectures": ["Gemma2ForCausalLM"]}"#);
        assert_eq!(identify(&h), Some(Architecture::Gemma2));
        assert_eq!(
            identify(&header(r#"{"model_type": "gemma2"}"#)),
            Some(Architecture::Gemma2)
        );
        let h = header(r#"{"architectures": ["BertModel"], "model_type": "gemma2"}"#);
        assert_eq!(identify(&h), None);
    }
}
