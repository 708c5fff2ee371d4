//! Which knobs work: 5-fold held-out projection accuracy per aggregator and read mode, for the
//! four shipped contrast types on the demo model (Gemma-3 270M from `scripts/demo-model.sh`),
//! at each type's best layer. A vector trained on four folds scores the fraction of the fifth
//! fold's pairs whose positive side projects further along it than the negative side; the
//! five folds' scores are pooled.
//!
//! `cargo bench --bench held_out` measures (prints a Markdown table to stdout); under
//! `cargo test` it runs a small smoke version on the fixture model.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use candle_core::{DType, Device};
use train_vector::aggregate::{aggregate, Aggregator};
use train_vector::chat::ChatFormat;
use train_vector::data::{load_pairs, ContrastPair, ContrastType, DataSource};
use train_vector::model::{load_model, LoadOptions, ModelSpec};
use train_vector::train::{
    pair_activations, projection_accuracy, template_tokens, tokenize_pairs, PairActivations,
    ReadAt, TrainOptions,
};

const FOLDS: usize = 5;

/// How each side is read: a token position, optionally after chat formatting.
struct ReadMode {
    name: &'static str,
    read: ReadAt,
    chat: bool,
}

const READS: [ReadMode; 4] = [
    ReadMode {
        name: "-1 (last token)",
        read: ReadAt::Index(-1),
        chat: false,
    },
    ReadMode {
        name: "-2",
        read: ReadAt::Index(-2),
        chat: false,
    },
    ReadMode {
        name: "suffix-mean",
        read: ReadAt::SuffixMean,
        chat: false,
    },
    ReadMode {
        name: "--chat (last-content)",
        read: ReadAt::LastContent,
        chat: true,
    },
];

fn subset(a: &PairActivations, keep: impl Fn(usize) -> bool) -> PairActivations {
    let pick = |side: &[Vec<f32>]| {
        side.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, v)| v.clone())
            .collect()
    };
    PairActivations {
        positive: pick(&a.positive),
        negative: pick(&a.negative),
    }
}

/// Pooled held-out accuracy over the folds (pair `i` is in fold `i % FOLDS`).
fn held_out_accuracy(a: &PairActivations, method: Aggregator) -> f64 {
    let n = a.positive.len();
    let mut right = 0.0;
    for fold in 0..FOLDS {
        let train = subset(a, |i| i % FOLDS != fold);
        let test = subset(a, |i| i % FOLDS == fold);
        let v = aggregate(method, &train.positive, &train.negative).expect("aggregate");
        right += projection_accuracy(&test, &v) * test.positive.len() as f64;
    }
    right / n as f64
}

fn demo_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("TRAIN_VECTOR_DEMO") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/train-vector/demo"),
    };
    Some(cache.join("gemma-3-270m")).filter(|d| d.join("model.gguf").is_file())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2");
    let (dir, types, limit) = match full {
        true => match demo_dir() {
            Some(d) => (d, ContrastType::ALL.to_vec(), None),
            None => {
                eprintln!("demo model not found: run scripts/demo-model.sh first");
                std::process::exit(1);
            }
        },
        false => (fixture, vec![ContrastType::Irony], Some(20)),
    };
    let spec = ModelSpec::open(dir.to_str().expect("path"), None).expect("model");
    let m = load_model(
        spec,
        &LoadOptions::for_training(Device::Cpu, DType::F32, None),
    )
    .expect("load");
    let model = m.model.as_ref();
    let names: Vec<&str> = Aggregator::ALL.iter().map(|a| a.name()).collect();
    println!("| type | read | {} |", names.join(" | "));
    println!("| --- | --- |{}", " --- |".repeat(names.len()));
    for t in types {
        let pairs = load_pairs(&DataSource::Shipped, t, limit)
            .expect("pairs")
            .pairs;
        for mode in &READS {
            let texts: Vec<ContrastPair> = match mode.chat {
                true => {
                    let format = ChatFormat::detect(&m.tokenizer);
                    pairs.iter().map(|p| p.in_chat(format)).collect()
                }
                false => pairs.clone(),
            };
            let tokens = tokenize_pairs(&m.tokenizer, &texts, model).expect("tokenize");
            let opts = TrainOptions {
                layers: (0..model.num_layers()).collect(),
                read: mode.read,
                template_tokens: template_tokens(&m.tokenizer, &tokens),
                ..TrainOptions::default()
            };
            let acts = pair_activations(model, &tokens, &opts).expect("activations");
            let cells: Vec<String> = Aggregator::ALL
                .iter()
                .map(|&method| {
                    let (layer, acc) = acts
                        .iter()
                        .map(|(&k, a)| (k, held_out_accuracy(a, method)))
                        .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best });
                    format!("{acc:.3} (L{layer})")
                })
                .collect();
            println!(
                "| {} ({} pairs) | {} | {} |",
                t.key(),
                pairs.len(),
                mode.name,
                cells.join(" | ")
            );
        }
    }
}
