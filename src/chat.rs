//! Chat formatting and stop tokens, chosen from the tokenizer's special tokens: Gemma's turns,
//! ChatML (Qwen2, SmolLM2), Llama-3 headers, or Llama-2/Mistral `[INST]`.

use tokenizers::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    Gemma,
    ChatMl,
    Llama3,
    Inst,
}

impl ChatFormat {
    pub fn detect(tok: &Tokenizer) -> ChatFormat {
        let has = |t: &str| tok.token_to_id(t).is_some();
        if has("<start_of_turn>") {
            ChatFormat::Gemma
        } else if has("<|im_start|>") {
            ChatFormat::ChatMl
        } else if has("<|start_header_id|>") {
            ChatFormat::Llama3
        } else {
            ChatFormat::Inst
        }
    }

    /// One user turn, ready for the model's reply (the tokenizer adds BOS where it should).
    pub fn wrap(self, prompt: &str) -> String {
        match self {
            ChatFormat::Gemma => {
                format!("<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n")
            }
            ChatFormat::ChatMl => {
                format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
            }
            ChatFormat::Llama3 => format!(
                "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
            ChatFormat::Inst => format!("[INST] {prompt} [/INST]"),
        }
    }
}

/// Ids that end a reply: the config's EOS ids plus the end-of-turn markers the tokenizer has.
pub fn stop_ids(tok: &Tokenizer, config_eos: &[u32]) -> Vec<u32> {
    let mut ids = config_eos.to_vec();
    for t in [
        "<end_of_turn>",
        "<|im_end|>",
        "<|eot_id|>",
        "<|end_of_text|>",
        "<eos>",
        "</s>",
    ] {
        if let Some(id) = tok.token_to_id(t) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_turns() {
        assert_eq!(
            ChatFormat::Gemma.wrap("Hi"),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        assert!(ChatFormat::ChatMl
            .wrap("Hi")
            .ends_with("<|im_start|>assistant\n"));
    }
}
