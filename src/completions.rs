//! Completions over a dataset: every item of a prompts file continued at each multiplier, the
//! output file rewritten whole after every finished batch (all or nothing on disk), so a killed
//! run keeps what it finished and a resumed one continues after it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::file_set::{write_all_or_nothing, Entry};

/// The key each output item carries its completions under.
pub const COMPLETIONS: &str = "completions";

/// One input item and the prompt read from it.
#[derive(Debug, Clone)]
pub struct PromptItem {
    pub item: Map<String, Value>,
    pub prompt: String,
}

/// One multiplier's continuation of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub multiplier: f64,
    pub completion: String,
    /// Generated tokens.
    pub tokens: usize,
    /// The text collapsed into repetition (see [`degenerate`]).
    pub degenerate: bool,
}

/// Reads a JSON list of objects and the prompt of each: `field`, else `prompt`, else
/// `question`.
pub fn load_prompts(path: &Path, field: Option<&str>) -> Result<Vec<PromptItem>> {
    let origin = format!("`{}`", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read prompts {origin}: {e}")))?;
    parse_prompts(&text, field).map_err(|e| e.context(&origin))
}

pub fn parse_prompts(text: &str, field: Option<&str>) -> Result<Vec<PromptItem>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Error::new(format!(
            "not valid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Array(entries) = value else {
        return Err(Error::new("expected a JSON list of items"));
    };
    if entries.is_empty() {
        return Err(Error::new("the list of items is empty"));
    }
    let keys: Vec<&str> = match field {
        Some(f) => vec![f],
        None => vec!["prompt", "question"],
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let Value::Object(item) = e else {
                return Err(Error::new(format!("item {i} is not an object")));
            };
            let prompt = keys
                .iter()
                .find_map(|k| item.get(*k))
                .ok_or_else(|| {
                    let names: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                    Error::new(format!("item {i} has no {}", names.join(" or ")))
                        .with_hint("name the prompt's field with `--field NAME`")
                })?
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| Error::new(format!("item {i} has an empty or non-string prompt")))?
                .to_string();
            Ok(PromptItem { item, prompt })
        })
        .collect()
}

/// Whether a text collapsed into repetition: a word repeated three times in a row, or a run of
/// two to eight words repeated three times in a row ("However However However"). Words are
/// compared without case and surrounding punctuation.
pub fn degenerate(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    (1..=8).any(|n| {
        words.len() >= 3 * n
            && (0..=words.len() - 3 * n).any(|i| {
                let a = &words[i..i + n];
                a == &words[i + n..i + 2 * n] && a == &words[i + 2 * n..i + 3 * n]
            })
    })
}

/// The output file: the input items finished so far, each with its completions.
pub struct Output {
    path: PathBuf,
    done: Vec<Value>,
}

impl Output {
    /// A new output, or with `resume` the items an earlier run finished (checked against the
    /// inputs and multipliers). An existing file without `resume` is an error.
    pub fn open(
        path: &Path,
        resume: bool,
        inputs: &[PromptItem],
        multipliers: &[f64],
    ) -> Result<Output> {
        let shown = path.display();
        if !path.exists() {
            return Ok(Output {
                path: path.to_path_buf(),
                done: Vec::new(),
            });
        }
        if !resume {
            return Err(Error::new(format!("`--output` `{shown}` already exists"))
                .with_hint("pass `--resume` to continue it, or choose another file"));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(format!("cannot read `{shown}` to resume: {e}")))?;
        let done: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| Error::new(format!("`{shown}` is not an output of this command: {e}")))?;
        if done.len() > inputs.len() {
            return Err(Error::new(format!(
                "`{shown}` holds {} items, the prompts only {}",
                done.len(),
                inputs.len()
            )));
        }
        for (i, (d, input)) in done.iter().zip(inputs).enumerate() {
            let mut item = d.as_object().cloned().unwrap_or_default();
            let saved: Vec<Completion> = item
                .remove(COMPLETIONS)
                .and_then(|c| serde_json::from_value(c).ok())
                .unwrap_or_default();
            if item != input.item {
                return Err(Error::new(format!(
                    "item {i} of `{shown}` is not item {i} of the prompts"
                ))
                .with_hint("resume with the prompts file the run started with"));
            }
            let ms: Vec<f64> = saved.iter().map(|c| c.multiplier).collect();
            if ms != multipliers {
                return Err(Error::new(format!(
                    "item {i} of `{shown}` was generated at multipliers {ms:?}, not {multipliers:?}"
                )));
            }
        }
        Ok(Output {
            path: path.to_path_buf(),
            done,
        })
    }

    /// Items already finished.
    pub fn finished(&self) -> usize {
        self.done.len()
    }

    /// Adds a finished item and its completions.
    pub fn push(&mut self, input: &PromptItem, completions: &[Completion]) {
        let mut item = input.item.clone();
        item.insert(
            COMPLETIONS.to_string(),
            serde_json::to_value(completions).unwrap_or(Value::Null),
        );
        self.done.push(Value::Object(item));
    }

    /// Rewrites the file with everything finished so far, all or nothing.
    pub fn save(&self) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(&self.done)
            .map_err(|e| Error::new(format!("cannot encode the output: {e}")))?;
        bytes.push(b'\n');
        write_all_or_nothing(&[Entry {
            dest: &self.path,
            bytes: &bytes,
        }])
    }

    /// The finished completions, per item.
    pub fn completions(&self) -> Vec<Vec<Completion>> {
        self.done
            .iter()
            .map(|d| {
                d.get(COMPLETIONS)
                    .and_then(|c| serde_json::from_value(c.clone()).ok())
                    .unwrap_or_default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_is_degenerate() {
        assert!(degenerate("However However However, the"));
        assert!(degenerate("I think so. I think so. I think so."));
        assert!(!degenerate("The ball is in the basket, not the box."));
        assert!(!degenerate("no no"));
    }

    #[test]
    fn prompts_come_from_a_field() {
        let items = parse_prompts(r#"[{"prompt": "a"}, {"question": "b", "x": 1}]"#, None).unwrap();
        assert_eq!(items[1].prompt, "b");
        let err = parse_prompts(r#"[{"prompt": "a"}, {"text": "b"}]"#, None).unwrap_err();
        assert_eq!(err.message(), "item 1 has no `prompt` or `question`");
        let items = parse_prompts(r#"[{"text": "b"}]"#, Some("text")).unwrap();
        assert_eq!(items[0].prompt, "b");
    }
}
