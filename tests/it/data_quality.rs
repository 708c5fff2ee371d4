//! Quality rules for the shipped contrast pairs (data/README.md explains them): schema,
//! duplicates, length balance, surface cues, category coverage and sizes.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

struct FileRules {
    file: &'static str,
    min_entries: usize,
    /// The two differing fields, positive first.
    sides: (&'static str, &'static str),
    /// Every key an entry carries, besides `category`.
    keys: &'static [&'static str],
    categories: &'static [&'static str],
    /// Whether the first word of each side is capped at 25%.
    first_word_cap: bool,
}

const RULES: [FileRules; 4] = [
    FileRules {
        file: "theory_of_mind.json",
        min_entries: 200,
        sides: ("high_tom", "low_tom"),
        keys: &["scenario", "high_tom", "low_tom"],
        categories: &[
            "location_change",
            "unexpected_contents",
            "second_order_belief",
            "knowledge_access",
            "deception",
            "perspective_taking",
            "faux_pas",
            "true_belief_location",
            "true_belief_contents",
            "true_belief_knowledge",
        ],
        first_word_cap: true,
    },
    FileRules {
        file: "irony.json",
        min_entries: 150,
        sides: ("literal", "ironic"),
        keys: &["literal", "ironic", "domain"],
        categories: &["sarcasm", "understatement", "hyperbole", "situational"],
        first_word_cap: true,
    },
    FileRules {
        file: "self_other.json",
        min_entries: 300,
        sides: ("self_subject", "other_subject"),
        keys: &["self_subject", "other_subject", "other_kind"],
        categories: &[
            "assistant_tasks",
            "capabilities_limits",
            "feelings_preferences",
            "memories_plans",
            "mistakes_corrections",
        ],
        first_word_cap: false,
    },
    FileRules {
        file: "harmfulness.json",
        min_entries: 200,
        sides: ("harmless", "harmful"),
        keys: &["instruction", "harmless", "harmful"],
        categories: &[
            "cyber",
            "weapons",
            "drugs",
            "fraud_scams",
            "harassment",
            "privacy",
            "misinformation",
            "self_harm",
            "dangerous_chemistry",
            "borderline_benign",
        ],
        first_word_cap: true,
    },
];

fn load(file: &str) -> Vec<Map<String, Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/contrast_pairs")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    value
        .as_array()
        .unwrap_or_else(|| panic!("{file} is not a list"))
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.as_object()
                .unwrap_or_else(|| panic!("{file} entry {i} is not an object"))
                .clone()
        })
        .collect()
}

fn normalize(s: &str) -> String {
    s.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_word(s: &str) -> String {
    let w = s.split_whitespace().next().unwrap_or("");
    w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
        .to_lowercase()
}

fn field<'a>(e: &'a Map<String, Value>, k: &str, file: &str, i: usize) -> &'a str {
    e.get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{file} entry {i}: `{k}` missing or not a string"))
}

#[test]
fn schema_strings_and_duplicates() {
    for r in &RULES {
        let entries = load(r.file);
        let mut seen = HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut want: Vec<&str> = r.keys.iter().copied().chain(["category"]).collect();
            want.sort_unstable();
            assert_eq!(keys, want, "{} entry {i}: keys", r.file);
            for (k, v) in e {
                let s = v
                    .as_str()
                    .unwrap_or_else(|| panic!("{} entry {i}: `{k}` is not a string", r.file));
                assert!(!s.is_empty(), "{} entry {i}: `{k}` is empty", r.file);
                assert_eq!(s, s.trim(), "{} entry {i}: `{k}` is not trimmed", r.file);
                assert!(
                    !s.chars().any(char::is_control),
                    "{} entry {i}: `{k}` has a control character",
                    r.file
                );
                assert!(!s.contains("/s"), "{} entry {i}: `{k}` has \"/s\"", r.file);
            }
            let (pos, neg) = (
                field(e, r.sides.0, r.file, i),
                field(e, r.sides.1, r.file, i),
            );
            assert_ne!(
                normalize(pos),
                normalize(neg),
                "{} entry {i}: sides equal",
                r.file
            );
            let whole: Vec<String> = r
                .keys
                .iter()
                .map(|k| normalize(field(e, k, r.file, i)))
                .collect();
            assert!(
                seen.insert(whole),
                "{} entry {i} duplicates an earlier entry",
                r.file
            );
        }
        // Neither side's text may repeat across entries (with its shared prefix, if any).
        for side in [r.sides.0, r.sides.1] {
            let mut texts = HashSet::new();
            for (i, e) in entries.iter().enumerate() {
                let prefix: Vec<&str> = r
                    .keys
                    .iter()
                    .filter(|k| ["scenario", "instruction"].contains(k))
                    .map(|k| field(e, k, r.file, i))
                    .collect();
                let text = normalize(&format!(
                    "{} {}",
                    prefix.join(" "),
                    field(e, side, r.file, i)
                ));
                assert!(texts.insert(text), "{} entry {i}: `{side}` repeats", r.file);
            }
        }
    }
}

#[test]
fn sizes_and_categories() {
    for r in &RULES {
        let entries = load(r.file);
        assert!(
            entries.len() >= r.min_entries,
            "{}: {} entries, need {}",
            r.file,
            entries.len(),
            r.min_entries
        );
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            let c = field(e, "category", r.file, i);
            assert!(
                r.categories.contains(&c),
                "{} entry {i}: unknown category `{c}`",
                r.file
            );
            *counts.entry(c).or_default() += 1;
        }
        for c in r.categories {
            assert!(counts.contains_key(c), "{}: no `{c}` entries", r.file);
        }
    }
}

#[test]
fn sides_are_balanced_in_length() {
    for r in &RULES {
        for (i, e) in load(r.file).iter().enumerate() {
            let a = field(e, r.sides.0, r.file, i).chars().count() as f64;
            let b = field(e, r.sides.1, r.file, i).chars().count() as f64;
            let ratio = a.max(b) / a.min(b);
            assert!(
                ratio <= 1.5,
                "{} entry {i}: length ratio {ratio:.2}",
                r.file
            );
        }
    }
}

#[test]
fn no_first_word_gives_the_label_away() {
    for r in RULES.iter().filter(|r| r.first_word_cap) {
        let entries = load(r.file);
        for side in [r.sides.0, r.sides.1] {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for (i, e) in entries.iter().enumerate() {
                *counts
                    .entry(first_word(field(e, side, r.file, i)))
                    .or_default() += 1;
            }
            let (word, n) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
            let share = *n as f64 / entries.len() as f64;
            assert!(
                share <= 0.25,
                "{} `{side}`: `{word}` opens {:.0}%",
                r.file,
                share * 100.0
            );
        }
    }
}

#[test]
fn theory_of_mind_has_enough_true_belief_controls() {
    let entries = load("theory_of_mind.json");
    let controls = entries
        .iter()
        .filter(|e| e["category"].as_str().unwrap().starts_with("true_belief"))
        .count();
    let share = controls as f64 / entries.len() as f64;
    assert!(share >= 0.35, "true-belief share {:.1}%", share * 100.0);
}

#[test]
fn first_word_ignores_punctuation_and_case() {
    assert_eq!(first_word("Sure, I will."), "sure");
    assert_eq!(first_word("I'll do it"), "i'll");
    assert_eq!(first_word("\"Great\" she said"), "great");
}
