//! The training knobs against their references (recorded by
//! `tests/fixtures/make_knob_fixtures.py`): steering-vectors 0.12.2 at each layer type and
//! `read_token_index`, the suffix mean from HF's residual streams, and steering at each layer
//! type against steering-vectors' `apply`.

use std::collections::BTreeMap;

use crate::common::{cosine, fixtures, rel_l2, run, saved, stderr, Golden};
use candle_core::{DType, Device};
use train_vector::data::ContrastPair;
use train_vector::model::{
    load_model, LayerType, LoadOptions, LoadedModel, LogitPositions, ModelSpec, TokenBatch,
};
use train_vector::steer::Steering;
use train_vector::train::{tokenize_pairs, train, LayerVectors, ReadAt, TrainOptions};
use train_vector::vector::SteeringVector;

const VECTOR_COS: f64 = 0.99999;
const VECTOR_TOL: f64 = 1e-4;
const LOGIT_TOL: f64 = 1e-4;
const MODELS: [&str; 2] = ["tiny-gemma2", "tiny-llama"];

fn knobs() -> Golden {
    Golden::named("knobs")
}

fn open(name: &str) -> LoadedModel {
    let dir = fixtures().join(name);
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    load_model(spec, &LoadOptions::for_logits(Device::Cpu, DType::F32)).unwrap()
}

fn golden_layers(g: &Golden, prefix: &str) -> LayerVectors {
    (0..4)
        .map(|k| (k, g.vec1(&format!("{prefix}.layer{k}"))))
        .collect()
}

fn train_with(m: &LoadedModel, opts: TrainOptions) -> SteeringVector {
    let pairs: Vec<ContrastPair> = Golden::load()
        .pairs()
        .into_iter()
        .map(|(p, n)| ContrastPair::new(p, n))
        .collect();
    let tokens = tokenize_pairs(&m.tokenizer, &pairs, m.model.as_ref()).unwrap();
    let opts = TrainOptions {
        layers: (0..4).collect(),
        ..opts
    };
    train(m.model.as_ref(), &tokens, &opts).unwrap().0
}

/// Same direction and size as the reference; a reference of exactly zero (a read both sides
/// share) must come out exactly zero.
fn assert_matches(what: &str, got: &LayerVectors, want: &LayerVectors) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in want {
        let g = &got[k];
        if w.iter().all(|x| *x == 0.0) {
            assert!(g.iter().all(|x| *x == 0.0), "{what} layer {k}: not zero");
            continue;
        }
        let (cos, err) = (cosine(g, w), rel_l2(g, w));
        eprintln!("{what} layer {k}: cosine {cos:.9}, rel L2 {err:.2e}");
        assert!(
            cos >= VECTOR_COS && err <= VECTOR_TOL,
            "{what} layer {k}: cosine {cos}, rel L2 {err:e}"
        );
    }
}

#[test]
fn every_layer_type_matches_steering_vectors() {
    let g = knobs();
    for name in MODELS {
        let m = open(name);
        for point in LayerType::ALL {
            let opts = TrainOptions {
                layer_type: point,
                ..TrainOptions::default()
            };
            let v = train_with(&m, opts.clone());
            assert_eq!(v.layer_type, point.name());
            let want = golden_layers(&g, &format!("{name}.{point}"));
            assert_matches(&format!("{name} {point}"), &v.layer_activations, &want);
            // Block by block (as a streamed model runs) reads the same point.
            let layer_major = TrainOptions {
                layer_major: true,
                ..opts
            };
            let lm = train_with(&m, layer_major);
            assert_eq!(lm.layer_activations, v.layer_activations, "{name} {point}");
        }
    }
}

#[test]
fn read_token_indices_match_steering_vectors() {
    let g = knobs();
    for name in MODELS {
        let m = open(name);
        for i in [-2i64, 0] {
            for shared_prefix in [true, false] {
                let opts = TrainOptions {
                    read: ReadAt::Index(i),
                    shared_prefix,
                    ..TrainOptions::default()
                };
                let v = train_with(&m, opts);
                let want = golden_layers(&g, &format!("{name}.read{i}"));
                assert_matches(&format!("{name} index {i}"), &v.layer_activations, &want);
            }
        }
    }
}

#[test]
fn suffix_mean_matches_hf_residual_streams() {
    let g = knobs();
    for name in MODELS {
        let m = open(name);
        for shared_prefix in [true, false] {
            let opts = TrainOptions {
                read: ReadAt::SuffixMean,
                shared_prefix,
                max_batch_tokens: 48,
                ..TrainOptions::default()
            };
            let v = train_with(&m, opts);
            let want = golden_layers(&g, &format!("{name}.suffix_mean"));
            assert_matches(&format!("{name} suffix mean"), &v.layer_activations, &want);
        }
    }
}

#[test]
fn steering_at_each_layer_type_matches_steering_vectors_apply() {
    let g = knobs();
    let prompt = g.meta["steer_prompt"].as_u64().unwrap() as usize;
    let ids = Golden::load().ids("prompt_ids")[prompt].clone();
    let multiplier = g.meta["multiplier"].as_f64().unwrap();
    for name in MODELS {
        let m = open(name);
        let batch = TokenBatch::new(&[&ids], 0, &Device::Cpu).unwrap();
        let mut moved = BTreeMap::new();
        for point in LayerType::ALL {
            let mut v = SteeringVector::new(golden_layers(&g, &format!("{name}.{point}")));
            v.layer_type = point.name().to_string();
            let mut hook = Steering::new(&v, multiplier, None, &Device::Cpu).unwrap();
            let logits: Vec<f32> = m
                .model
                .forward_logits(&batch, None, &mut hook, LogitPositions::Last)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = g.vec1(&format!("{name}.{point}.logits_steered"));
            let err = rel_l2(&logits, &want);
            eprintln!("{name} steered at {point}: rel L2 {err:.2e}");
            assert!(err <= LOGIT_TOL, "{name} {point}: {err:e}");
            moved.insert(point, logits);
        }
        // Each point steers differently: a hook firing at the wrong place would collide.
        let all: Vec<&Vec<f32>> = moved.values().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(rel_l2(a, b) > 1e-3, "{name}: two layer types steer alike");
            }
        }
    }
}

/// Trains the first 40 ToM pairs with `extra` flags; the vector and its sidecar.
fn cli_train(out: &std::path::Path, extra: &[&str]) -> (SteeringVector, serde_json::Value) {
    let model = fixtures().join("tiny-gemma2");
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "--num-samples",
        "40",
        "--no-progress",
        "--overwrite",
        "--output-dir",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--pairs") {
        args.extend(["--contrast-type", "tom"]);
    }
    args.extend_from_slice(extra);
    let file = saved(&args, ".safetensors");
    let json = file.with_extension("json");
    let meta = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (SteeringVector::load(&file).unwrap(), meta)
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn knobs_are_recorded_and_every_aggregator_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    for method in ["mean", "pca", "logistic", "pca-diff", "pca-center"] {
        let flags = [
            "--aggregator",
            method,
            "--layer-type",
            "mlp",
            "--read",
            "suffix-mean",
        ];
        let (a, meta) = cli_train(&tmp.path().join("a"), &flags);
        assert_eq!(meta["aggregator"], method);
        assert_eq!(meta["layer_type"], "mlp");
        assert_eq!(meta["read_token"], "suffix-mean");
        assert_eq!(meta["normalized"], false);
        assert_eq!(a.layer_type, "mlp");
        // The same command again: the same bits.
        let (again, _) = cli_train(&tmp.path().join("b"), &flags);
        assert_eq!(again.layer_activations, a.layer_activations, "{method}");
        // Other batchings: the same vector up to float noise in the activations.
        let batched = [
            &flags[..],
            &["--batch-size", "3", "--max-batch-tokens", "300"],
        ]
        .concat();
        let (other, _) = cli_train(&tmp.path().join("c"), &batched);
        for (k, v) in &a.layer_activations {
            let err = rel_l2(&other.layer_activations[k], v);
            assert!(err <= 1e-5, "{method} layer {k}: {err:e}");
            if method != "mean" {
                assert!((norm(v) - 1.0).abs() < 1e-5, "{method} layer {k}: not unit");
            }
        }
    }
}

#[test]
fn normalize_and_read_index_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, _) = cli_train(&tmp.path().join("a"), &["--read-token-index", "-2"]);
    let (unit, meta) = cli_train(
        &tmp.path().join("b"),
        &["--read-token-index", "-2", "--normalize"],
    );
    assert_eq!(meta["read_token"], "-2");
    assert_eq!(meta["normalized"], true);
    for (k, v) in &unit.layer_activations {
        assert!((norm(v) - 1.0).abs() < 1e-6, "layer {k}");
        assert!(
            cosine(v, &plain.layer_activations[k]) > 0.999999,
            "layer {k}"
        );
    }
}

#[test]
fn export_refuses_vectors_read_inside_the_block() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, meta) = cli_train(&tmp.path().join("a"), &["--layer-type", "self_attn"]);
    let file = tmp.path().join("a").join(format!(
        "{}.safetensors",
        meta["filename"].as_str().unwrap()
    ));
    let gguf = tmp.path().join("v.gguf");
    for extra in [&[][..], &["--layer-type", "mlp"][..]] {
        let mut args = vec!["export", "--vector", file.to_str().unwrap(), "-o"];
        args.push(gguf.to_str().unwrap());
        args.extend_from_slice(extra);
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("GGUF export is decoder_block only"), "{err}");
        assert!(!gguf.exists());
    }
}

#[test]
fn pair_files_with_prompts_train_in_chat_format() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("kindness.json");
    std::fs::write(
        &pairs,
        r#"[{"prompt": "How was the trip?", "positive": "Lovely, thank you.", "negative": "Awful.", "id": 1},
            {"prompt": "Any advice?", "positive": "Take your time.", "negative": "Give up.", "id": 2}]"#,
    )
    .unwrap();
    let p = pairs.to_str().unwrap();
    let (plain, meta) = cli_train(&tmp.path().join("a"), &["--pairs", p]);
    assert_eq!(meta["contrast_type"], "kindness");
    assert_eq!(meta["chat"], false);
    assert_eq!(meta["read_token"], "-1");
    let (chat, meta) = cli_train(&tmp.path().join("b"), &["--pairs", p, "--chat"]);
    assert_eq!(meta["chat"], true);
    assert_eq!(meta["read_token"], "last-content");
    assert!(meta["filename"].as_str().unwrap().starts_with("kindness_"));
    assert!(rel_l2(&chat.layer_activations[&3], &plain.layer_activations[&3]) > 1e-2);
}
