//! The real Gemma-3 270M that `scripts/demo-model.sh` fetches (`.ci/run` fetches it too): a
//! vector trained on two thirds of the first 150 shipped pairs must separate the held-out
//! third at a middle layer (block 9 of 18) well beyond chance. Skipped, with the reason
//! printed, when the model is absent.
//!
//! For harmfulness it also checks that steering moves the log-prob margin of the held-out
//! pairs' harmless continuation in the multiplier's direction.
//!
//! Measured: irony 0.84, self-other 0.98, harmfulness 1.00 at block 9; theory of mind stays
//! at chance (0.46-0.60 at every block), so this small base model shows no linear
//! belief-tracking direction at the last token and the ToM run is only printed.

use std::path::PathBuf;

use candle_core::{DType, Device};
use train_vector::chat::ChatFormat;
use train_vector::data::{load_pairs, ContrastType, DataSource};
use train_vector::evaluate::score::steered;
use train_vector::evaluate::{ScoreOptions, Setup, TokenizedItem};
use train_vector::model::ModelSpec;
use train_vector::model::{load_model, LoadOptions, LoadedModel};
use train_vector::train::{
    pair_activations, projection_accuracy, template_tokens, tokenize_pairs, train, ReadAt,
    TokenPair, TrainOptions,
};
use train_vector::vector::SteeringVector;

fn demo_cache() -> Option<PathBuf> {
    match std::env::var_os("TRAIN_VECTOR_DEMO") {
        Some(cache) => Some(PathBuf::from(cache)),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/train-vector/demo")),
    }
}

fn demo_dir() -> Option<PathBuf> {
    let dir = demo_cache()?.join("gemma-3-270m");
    (dir.join("model.gguf").is_file() && dir.join("tokenizer.json").is_file()).then_some(dir)
}

/// Trains on the first 20 ToM pairs, as `tests/fixtures/make_demo_golden.py` did with HF
/// transformers loading the same GGUF and steering-vectors, and compares every layer: as they
/// are (`vector_all`), or in the model's chat format read at the last content token
/// (`vector_chat`).
fn assert_matches_hf(model_dir: &str, golden: &str, chat: bool) {
    let Some(dir) = demo_cache().map(|c| c.join(model_dir)) else {
        return;
    };
    if !dir.join("model.gguf").is_file() {
        eprintln!(
            "skipping: demo model {model_dir} not found; run scripts/demo-model.sh to fetch it"
        );
        return;
    }
    let gdir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(gdir.join(format!("{golden}.json"))).unwrap(),
    )
    .unwrap();
    let want =
        candle_core::safetensors::load(gdir.join(format!("{golden}.safetensors")), &Device::Cpu)
            .unwrap();
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    let m = load_model(
        spec,
        &LoadOptions::for_training(Device::Cpu, DType::F32, None),
    )
    .unwrap();
    let probe = meta["probe"].as_str().unwrap();
    let ids: Vec<u32> = serde_json::from_value(meta["probe_ids"].clone()).unwrap();
    assert_eq!(
        m.tokenizer.encode(probe, true).unwrap().get_ids(),
        ids.as_slice()
    );
    let mut pairs = load_pairs(&DataSource::Shipped, ContrastType::Tom, Some(20))
        .unwrap()
        .pairs;
    if chat {
        let format = ChatFormat::detect(&m.tokenizer);
        pairs = pairs.iter().map(|p| p.in_chat(format)).collect();
    }
    let tokens = tokenize_pairs(&m.tokenizer, &pairs, m.model.as_ref()).unwrap();
    let mut opts = TrainOptions {
        layers: (0..m.model.num_layers()).collect(),
        ..Default::default()
    };
    if chat {
        opts.read = ReadAt::LastContent;
        opts.template_tokens = template_tokens(&m.tokenizer, &tokens);
    }
    let (got, _) = train(m.model.as_ref(), &tokens, &opts).unwrap();
    let key = if chat { "vector_chat" } else { "vector_all" };
    let mut worst = f64::MAX;
    for (k, v) in &got.layer_activations {
        let w: Vec<f32> = want[&format!("{key}.layer{k}")].to_vec1().unwrap();
        let dot: f64 = v
            .iter()
            .zip(&w)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let na: f64 = v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = w.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        let diff: f64 = v
            .iter()
            .zip(&w)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>()
            .sqrt();
        worst = worst.min(dot / (na * nb));
        assert!(
            dot / (na * nb) >= 0.99999,
            "{model_dir} layer {k}: cosine {}",
            dot / (na * nb)
        );
        assert!(
            diff / nb <= 1e-3,
            "{model_dir} layer {k}: rel L2 {}",
            diff / nb
        );
    }
    eprintln!("{model_dir} {key}: worst cosine against HF {worst:.8}");
}

#[test]
fn gemma3_gguf_vector_matches_hf() {
    assert_matches_hf("gemma-3-270m", "demo-gemma3", false);
}

#[test]
fn gemma3_chat_formatted_vector_read_at_the_last_content_token_matches_hf() {
    assert_matches_hf("gemma-3-270m", "demo-gemma3", true);
}

#[test]
fn smollm2_gguf_vector_matches_hf_with_the_rebuilt_tokenizer() {
    assert_matches_hf("smollm2-135m-instruct", "demo-smollm2", false);
}

/// A vector trained on two thirds of the first 150 pairs, and the held-out third.
struct HeldOut {
    accuracy: Vec<(usize, f64)>,
    vector: SteeringVector,
    held: Vec<TokenPair>,
    model: LoadedModel,
}

/// Held-out projection accuracy per layer for a vector trained on the other pairs.
fn held_out(contrast: ContrastType, with_head: bool) -> Option<HeldOut> {
    let Some(dir) = demo_dir() else {
        eprintln!("skipping: demo model not found; run scripts/demo-model.sh to fetch it");
        return None;
    };
    let layers = vec![6, 9, 12];
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    assert_eq!(spec.num_layers(), 18);
    let m = load_model(
        spec,
        &if with_head {
            LoadOptions::for_logits(Device::Cpu, DType::F32)
        } else {
            LoadOptions::for_training(Device::Cpu, DType::F32, Some(13))
        },
    )
    .unwrap();
    let pairs = load_pairs(&DataSource::Shipped, contrast, None)
        .unwrap()
        .pairs;
    // Every third pair is held out, so each category is on both sides of the split.
    let (held, trained): (Vec<_>, Vec<_>) = pairs
        .into_iter()
        .take(150)
        .enumerate()
        .partition(|(i, _)| i % 3 == 0);
    let strip = |v: Vec<(usize, _)>| v.into_iter().map(|(_, p)| p).collect::<Vec<_>>();
    let (held, trained) = (strip(held), strip(trained));
    let opts = TrainOptions {
        layers: layers.clone(),
        max_pairs_per_batch: None,
        max_batch_tokens: 4096,
        progress: false,
        shared_prefix: true,
        ..Default::default()
    };
    let train_tokens = tokenize_pairs(&m.tokenizer, &trained, m.model.as_ref()).unwrap();
    let (vector, _) = train(m.model.as_ref(), &train_tokens, &opts).unwrap();
    let held_tokens = tokenize_pairs(&m.tokenizer, &held, m.model.as_ref()).unwrap();
    let acts = pair_activations(m.model.as_ref(), &held_tokens, &opts).unwrap();
    let out: Vec<(usize, f64)> = layers
        .iter()
        .map(|l| {
            (
                *l,
                projection_accuracy(&acts[l], &vector.layer_activations[l]),
            )
        })
        .collect();
    for (l, acc) in &out {
        eprintln!(
            "{} layer {l}: held-out projection accuracy {acc:.3} on {} pairs",
            contrast.key(),
            held.len()
        );
    }
    Some(HeldOut {
        accuracy: out,
        vector,
        held: held_tokens,
        model: m,
    })
}

/// 50 held-out pairs: chance is 0.5 with a standard deviation of about 0.07.
fn assert_separates(contrast: ContrastType, at_least: f64) {
    let Some(h) = held_out(contrast, false) else {
        return;
    };
    middle_at_least(&h, contrast, at_least);
}

fn middle_at_least(h: &HeldOut, contrast: ContrastType, at_least: f64) {
    let (_, middle) = h
        .accuracy
        .iter()
        .find(|(l, _)| *l == 9)
        .copied()
        .unwrap_or((9, 0.0));
    assert!(
        middle >= at_least,
        "{}: {middle:.3} at block 9",
        contrast.key()
    );
}

#[test]
fn irony_vector_separates_held_out_pairs() {
    assert_separates(ContrastType::Irony, 0.7);
}

#[test]
fn self_other_vector_separates_held_out_pairs() {
    assert_separates(ContrastType::SelfOther, 0.9);
}

#[test]
fn harmfulness_vector_separates_and_steers_held_out_pairs() {
    let Some(h) = held_out(ContrastType::Harmfulness, true) else {
        return;
    };
    middle_at_least(&h, ContrastType::Harmfulness, 0.9);
    // Steering with the vector moves the margin of the harmless (positive) continuation in
    // the multiplier's direction, on pairs it was not trained on.
    let held: Vec<TokenizedItem> = h.held[..12]
        .iter()
        .map(|p| TokenizedItem::split(&[p.positive.clone(), p.negative.clone()]))
        .collect();
    let scores = steered(
        h.model.model.as_ref(),
        &held,
        &h.vector,
        &[Setup::all(&h.vector)],
        &[-1.0, 0.0, 1.0],
        &ScoreOptions {
            max_batch_tokens: 4096,
        },
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    let all: Vec<f64> = scores[0]
        .iter()
        .map(|per_item| per_item.iter().map(|s| s[0] - s[1]).sum::<f64>() / per_item.len() as f64)
        .collect();
    eprintln!("harmfulness margins at -1, 0, 1 (all layers): {all:?}");
    assert!(all[0] < all[1] && all[1] < all[2], "{all:?}");
}
