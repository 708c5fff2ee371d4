//! Output file names, exactly as the Python script builds them.

use crate::layers::LayerSpec;

/// The last `/`-separated part of `--model` with `google-`, `-it` and `-instruct` removed
/// (`google/gemma-2-27b-it` -> `gemma-2-27b`). A trailing `/` on a directory and a `.gguf`
/// extension are ignored.
pub fn model_short(model: &str) -> String {
    let last = model.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let last = last.strip_suffix(".gguf").unwrap_or(last);
    last.replace("google-", "")
        .replace("-it", "")
        .replace("-instruct", "")
}

/// `{contrast_type}_{model_short}_{layer_str}_{YYYYMMDD}`.
pub fn base_name(contrast_key: &str, model: &str, layers: &LayerSpec, date: &str) -> String {
    format!(
        "{contrast_key}_{}_{}_{date}",
        model_short(model),
        layers.file_part()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_follow_python_str_replace() {
        assert_eq!(model_short("google/gemma-2-27b-it"), "gemma-2-27b");
        assert_eq!(model_short("google/gemma-2-9b"), "gemma-2-9b");
        assert_eq!(model_short("org/google-foo-instruct"), "foo");
        // every occurrence goes, as with str.replace
        assert_eq!(model_short("a/x-it-it"), "x");
        assert_eq!(model_short("models/tiny/"), "tiny");
        // case-sensitive, as Python's str.replace
        assert_eq!(
            model_short("/m/SmolLM2-135M-Instruct.gguf"),
            "SmolLM2-135M-Instruct"
        );
    }

    #[test]
    fn base_names() {
        let spec = LayerSpec::parse("-1,-2,-3").unwrap();
        assert_eq!(
            base_name("tom", "google/gemma-2-27b-it", &spec, "20261128"),
            "tom_gemma-2-27b_layers--1--2--3_20261128"
        );
        assert_eq!(
            base_name("irony", "m", &LayerSpec::All, "20260101"),
            "irony_m_all-layers_20260101"
        );
    }
}
