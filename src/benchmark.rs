//! Benchmark files: multiple-choice items in the shapes researchers have, detected per file,
//! turned into [`Item`]s whose candidates the evaluator scores.
//!
//! - choice items: `{"prompt", "choices": {"labels", "texts"}, "correct_answer", "category"?,
//!   "metadata"?, "id"?}`; the prompt already lists the options, a candidate is
//!   `prompt + cue + label`;
//! - A/B behaviour items (CAA / model-written evals): `{"question", "answer_matching_behavior",
//!   "answer_not_matching_behavior"}`; a candidate is `question + cue + answer`, the matching
//!   one counting as correct;
//! - contrast pairs: the shipped schemas or `{"positive", "negative"}`, the two texts as
//!   candidates, the positive one correct.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::chat::ChatFormat;
use crate::data::{parse_pairs, ContrastPair, ContrastType};
use crate::error::{Error, Result};

/// The cue between a prompt and an answer label.
pub const DEFAULT_CUE: &str = "\nAnswer: ";

/// One multiple-choice question, ready to score.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: Option<String>,
    /// Full texts, one per answer.
    pub candidates: Vec<String>,
    /// How the answers are named in reports.
    pub labels: Vec<String>,
    /// The candidate that is correct (or shows the behaviour).
    pub correct: usize,
    /// Fields reports can group by: `category`, `metadata.<key>`, and any top-level string.
    pub fields: BTreeMap<String, String>,
}

/// What a file holds, as detected from its first item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Choice,
    AbBehaviour,
    Pairs(Option<ContrastType>),
}

impl Shape {
    pub fn describe(self) -> &'static str {
        match self {
            Shape::Choice => "choice items",
            Shape::AbBehaviour => "A/B behaviour items",
            Shape::Pairs(_) => "contrast pairs",
        }
    }
}

/// How prompts become candidates.
#[derive(Debug, Clone)]
pub struct Prompting {
    pub cue: String,
    /// Wrap the prompt as a user turn with the reply to follow; the cue comes after.
    pub chat: Option<ChatFormat>,
}

/// The keys each shape needs, for messages.
const EXPECTED: &str = "`prompt`, `choices` and `correct_answer` (choice items); `question`, \
`answer_matching_behavior` and `answer_not_matching_behavior` (A/B items); or a contrast pair \
(`positive` and `negative`, or a contrast type's fields)";

/// Far larger than a benchmark needs to be; refused before reading.
const MAX_FILE: u64 = 64 << 20;

/// Reads and validates a benchmark file; errors name the file and the item.
pub fn load_benchmark(path: &Path, prompting: &Prompting) -> Result<(Shape, Vec<Item>)> {
    let origin = format!("`{}`", path.display());
    let len = std::fs::metadata(path)
        .map_err(|e| Error::new(format!("cannot read benchmark {origin}: {e}")))?
        .len();
    if len > MAX_FILE {
        return Err(Error::new(format!(
            "benchmark {origin} is {len} bytes, more than a benchmark file should be"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read benchmark {origin}: {e}")))?;
    parse_benchmark(&text, prompting).map_err(|e| e.context(&origin))
}

/// Parses benchmark JSON text: a list of items of one shape.
pub fn parse_benchmark(text: &str, prompting: &Prompting) -> Result<(Shape, Vec<Item>)> {
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
    let Some(first) = entries.first() else {
        return Err(Error::new("the list of items is empty"));
    };
    let shape = detect(first).ok_or_else(|| {
        Error::new("item 0 has none of the shapes a benchmark can have")
            .with_hint(format!("items need {EXPECTED}"))
    })?;
    if let Shape::Pairs(Some(t)) = shape {
        return Ok((shape, items_from_pairs(&parse_pairs(text, t)?)));
    }
    let items = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let obj = e
                .as_object()
                .ok_or_else(|| Error::new(format!("item {i} is not an object")))?;
            let item = match shape {
                Shape::Choice => choice_item(obj, prompting),
                Shape::AbBehaviour => ab_item(obj, prompting),
                Shape::Pairs(_) => plain_pair(obj),
            };
            item.map_err(|e| e.context(format!("item {i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((shape, items))
}

fn detect(first: &Value) -> Option<Shape> {
    let obj = first.as_object()?;
    let has = |k: &str| obj.contains_key(k);
    if has("choices") && has("correct_answer") {
        return Some(Shape::Choice);
    }
    if has("answer_matching_behavior") {
        return Some(Shape::AbBehaviour);
    }
    if has("positive") && has("negative") {
        return Some(Shape::Pairs(None));
    }
    ContrastType::ALL
        .into_iter()
        .find(|t| t.required_fields().iter().all(|f| has(f)))
        .map(|t| Shape::Pairs(Some(t)))
}

/// Contrast pairs as two-way choices: the positive text is correct.
pub fn items_from_pairs(pairs: &[ContrastPair]) -> Vec<Item> {
    pairs
        .iter()
        .map(|p| Item {
            id: None,
            candidates: vec![p.positive.clone(), p.negative.clone()],
            labels: vec!["positive".into(), "negative".into()],
            correct: 0,
            fields: BTreeMap::new(),
        })
        .collect()
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    match obj.get(key) {
        None => Err(Error::new(format!("has no `{key}`"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(Error::new(format!("has an empty `{key}`")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::new(format!("`{key}` is not a string"))),
    }
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>> {
    v.and_then(Value::as_array)
        .ok_or_else(|| Error::new(format!("has no list `{what}`")))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::new(format!("`{what}` holds a non-string")))
        })
        .collect()
}

/// `category`, every string in `metadata` (as `metadata.<key>`), and every other top-level
/// string, for `--group-by`.
fn group_fields(obj: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    for (k, v) in obj {
        if let Some(s) = scalar(v) {
            fields.insert(k.clone(), s);
        }
    }
    if let Some(Value::Object(meta)) = obj.get("metadata") {
        for (k, v) in meta {
            if let Some(s) = scalar(v) {
                fields.insert(format!("metadata.{k}"), s);
            }
        }
    }
    fields
}

fn framed(prompt: &str, p: &Prompting) -> String {
    match p.chat {
        Some(format) => format!("{}{}", format.wrap(prompt), p.cue),
        None => format!("{prompt}{}", p.cue),
    }
}

fn choice_item(obj: &Map<String, Value>, p: &Prompting) -> Result<Item> {
    let prompt = string(obj, "prompt")?;
    let choices = obj
        .get("choices")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::new("`choices` is not an object with `labels` and `texts`"))?;
    let labels = strings(choices.get("labels"), "choices.labels")?;
    if let Some(texts) = choices.get("texts") {
        let texts = strings(Some(texts), "choices.texts")?;
        if texts.len() != labels.len() {
            return Err(Error::new(format!(
                "has {} labels but {} texts",
                labels.len(),
                texts.len()
            )));
        }
    }
    if labels.len() < 2 {
        return Err(Error::new("has fewer than two choices"));
    }
    for (i, l) in labels.iter().enumerate() {
        if l.trim().is_empty() {
            return Err(Error::new(format!("has an empty label at {i}")));
        }
        if labels[..i].contains(l) {
            return Err(Error::new(format!("has the label `{l}` twice")));
        }
    }
    let answer = string(obj, "correct_answer")?;
    let correct = labels.iter().position(|l| l == answer).ok_or_else(|| {
        Error::new(format!(
            "has `correct_answer` `{answer}`, which is not one of its labels {labels:?}"
        ))
    })?;
    let head = framed(prompt, p);
    Ok(Item {
        id: obj.get("id").and_then(Value::as_str).map(str::to_string),
        candidates: labels.iter().map(|l| format!("{head}{l}")).collect(),
        labels,
        correct,
        fields: group_fields(obj),
    })
}

fn ab_item(obj: &Map<String, Value>, p: &Prompting) -> Result<Item> {
    let question = string(obj, "question")?;
    let matching = string(obj, "answer_matching_behavior")?;
    let other = string(obj, "answer_not_matching_behavior")?;
    if matching == other {
        return Err(Error::new("has the same matching and not-matching answer"));
    }
    let head = framed(question, p);
    Ok(Item {
        id: obj.get("id").and_then(Value::as_str).map(str::to_string),
        candidates: vec![format!("{head}{matching}"), format!("{head}{other}")],
        labels: vec![matching.to_string(), other.to_string()],
        correct: 0,
        fields: group_fields(obj),
    })
}

fn plain_pair(obj: &Map<String, Value>) -> Result<Item> {
    let (pos, neg) = (string(obj, "positive")?, string(obj, "negative")?);
    if pos == neg {
        return Err(Error::new("has the same positive and negative text"));
    }
    Ok(Item {
        id: obj.get("id").and_then(Value::as_str).map(str::to_string),
        candidates: vec![pos.to_string(), neg.to_string()],
        labels: vec!["positive".into(), "negative".into()],
        correct: 0,
        fields: group_fields(obj),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Prompting {
        Prompting {
            cue: DEFAULT_CUE.to_string(),
            chat: None,
        }
    }

    #[test]
    fn choice_items_append_cue_and_label() {
        let text = r#"[{"prompt": "Where?\nA. box\nB. bag", "choices": {"labels": ["A", "B"],
            "texts": ["box", "bag"]}, "correct_answer": "B", "category": "belief",
            "metadata": {"difficulty": "hard"}, "id": "q1"}]"#;
        let (shape, items) = parse_benchmark(text, &plain()).unwrap();
        assert_eq!(shape, Shape::Choice);
        let it = &items[0];
        assert_eq!(it.candidates[1], "Where?\nA. box\nB. bag\nAnswer: B");
        assert_eq!(it.correct, 1);
        assert_eq!(it.fields["metadata.difficulty"], "hard");
        assert_eq!(it.fields["category"], "belief");
        assert_eq!(it.id.as_deref(), Some("q1"));
    }

    #[test]
    fn ab_items_put_the_matching_answer_first() {
        let text = r#"[{"question": "Q? (A) yes (B) no", "answer_matching_behavior": "(B)",
            "answer_not_matching_behavior": "(A)"}]"#;
        let (shape, items) = parse_benchmark(text, &plain()).unwrap();
        assert_eq!(shape, Shape::AbBehaviour);
        assert_eq!(items[0].candidates[0], "Q? (A) yes (B) no\nAnswer: (B)");
        assert_eq!(items[0].correct, 0);
    }

    #[test]
    fn pairs_of_either_kind() {
        let (shape, items) =
            parse_benchmark(r#"[{"positive": "a b", "negative": "a c"}]"#, &plain()).unwrap();
        assert_eq!(shape, Shape::Pairs(None));
        assert_eq!(items[0].candidates, ["a b", "a c"]);
        let tom = r#"[{"scenario": "S.", "high_tom": "A.", "low_tom": "B."}]"#;
        let (shape, items) = parse_benchmark(tom, &plain()).unwrap();
        assert_eq!(shape, Shape::Pairs(Some(ContrastType::Tom)));
        assert_eq!(items[0].candidates, ["S. A.", "S. B."]);
    }

    #[test]
    fn bad_items_name_the_item_and_what_is_wrong() {
        let bad = |items: &str| parse_benchmark(items, &plain()).unwrap_err().to_string();
        let choice = |labels: &str, answer: &str| {
            format!(
                r#"[{{"prompt": "p", "choices": {{"labels": ["A", "B"]}}, "correct_answer": "A"}},
                    {{"prompt": "p", "choices": {{"labels": {labels}}}, "correct_answer": "{answer}"}}]"#
            )
        };
        assert_eq!(
            bad(&choice(r#"["A", "B"]"#, "C"))
                .split(',')
                .next()
                .unwrap(),
            "item 1: has `correct_answer` `C`"
        );
        assert!(bad(&choice(r#"["A"]"#, "A")).contains("item 1: has fewer than two choices"));
        assert!(bad(&choice(r#"["A", "A"]"#, "A")).contains("item 1: has the label `A` twice"));
        let no_prompt = r#"[{"prompt": "p", "choices": {"labels": ["A", "B"]}, "correct_answer": "A"},
            {"choices": {"labels": ["A", "B"]}, "correct_answer": "A"}]"#;
        assert_eq!(bad(no_prompt), "item 1: has no `prompt`");
        let unknown = parse_benchmark(r#"[{"text": "x"}]"#, &plain()).unwrap_err();
        assert!(unknown.to_string().contains("item 0"));
        assert!(unknown.hint().unwrap().contains("answer_matching_behavior"));
    }
}
