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
        self.render(&[Message {
            role: Role::User,
            content: prompt.to_string(),
        }])
    }

    /// A conversation, ready for the model's next reply. System text goes where the format
    /// puts it: its own turn (ChatML, Llama-3), or before the first user turn (Gemma, `[INST]`,
    /// which have no system role).
    pub fn render(self, messages: &[Message]) -> String {
        let mut out = self.transcript(messages);
        out.push_str(match self {
            ChatFormat::Gemma => "<start_of_turn>model\n",
            ChatFormat::ChatMl => "<|im_start|>assistant\n",
            ChatFormat::Llama3 => "<|start_header_id|>assistant<|end_header_id|>\n\n",
            ChatFormat::Inst => "",
        });
        out
    }

    /// A conversation as it stands, each turn closed (no reply started): how a chat-formatted
    /// contrast side reads.
    pub fn transcript(self, messages: &[Message]) -> String {
        let system: Vec<&str> = messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let mut out = String::new();
        let mut pending_system = (!system.is_empty()).then(|| system.join("\n\n"));
        for m in messages {
            match (self, m.role) {
                (ChatFormat::ChatMl | ChatFormat::Llama3, Role::System) => {
                    out.push_str(&self.turn("system", &m.content))
                }
                (_, Role::System) => {}
                (_, Role::User) => {
                    let content = match (self, pending_system.take()) {
                        (ChatFormat::Gemma | ChatFormat::Inst, Some(sys)) => {
                            format!("{sys}\n\n{}", m.content)
                        }
                        _ => m.content.clone(),
                    };
                    out.push_str(&self.turn("user", &content));
                }
                (_, Role::Assistant) => out.push_str(&self.turn("assistant", &m.content)),
            }
        }
        out
    }

    fn turn(self, role: &str, content: &str) -> String {
        match self {
            ChatFormat::Gemma => {
                let role = if role == "assistant" { "model" } else { role };
                format!("<start_of_turn>{role}\n{content}<end_of_turn>\n")
            }
            ChatFormat::ChatMl => format!("<|im_start|>{role}\n{content}<|im_end|>\n"),
            ChatFormat::Llama3 => {
                format!("<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>")
            }
            ChatFormat::Inst if role == "assistant" => format!(" {content}</s>"),
            ChatFormat::Inst => format!("[INST] {content} [/INST]"),
        }
    }
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
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
    fn conversations_keep_turn_order_and_place_system_text() {
        let msgs = [
            Message {
                role: Role::System,
                content: "Be brief.".into(),
            },
            Message {
                role: Role::User,
                content: "Hi".into(),
            },
            Message {
                role: Role::Assistant,
                content: "Hello".into(),
            },
            Message {
                role: Role::User,
                content: "Bye".into(),
            },
        ];
        assert_eq!(
            ChatFormat::Gemma.render(&msgs),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        assert!(ChatFormat::ChatMl
            .render(&msgs)
            .starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"));
    }

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
