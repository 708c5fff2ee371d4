//! Parity with the reference: HF transformers (eager attention) residual streams and
//! steering-vectors 0.12.2 trained vectors, recorded by `tests/fixtures/make_fixtures.py`.

use std::collections::BTreeMap;

use crate::common::{cosine, load, rel_l2, tiny_model_dir, Golden};
use candle_core::{DType, Device, Tensor};
use train_vector::data::ContrastPair;
use train_vector::layers::LayerSpec;
use train_vector::model::{
    load_model, DecoderModel, LayerHook, LayerType, LoadOptions, ModelSpec, TokenBatch,
};
use train_vector::train::{tokenize_pairs, train, LayerVectors, TrainOptions};

/// Residual tolerance per prompt and layer in f32 (relative L2).
const RESIDUAL_TOL: f64 = 1e-4;
/// Trained-vector tolerances against steering-vectors.
const VECTOR_COS: f64 = 0.99999;
const VECTOR_TOL: f64 = 1e-4;
/// Batch sizes may only move results by float noise.
const BATCH_TOL: f64 = 1e-5;

/// Records the full residual stream leaving every block.
struct RecordAll(BTreeMap<usize, Tensor>);

impl LayerHook for RecordAll {
    fn at(
        &mut self,
        layer: usize,
        point: LayerType,
        residual: &Tensor,
    ) -> train_vector::Result<Option<Tensor>> {
        if point != LayerType::DecoderBlock {
            return Ok(None);
        }
        self.0.insert(layer, residual.clone());
        Ok(None)
    }
}

fn residuals(model: &dyn DecoderModel, seqs: &[&[u32]]) -> (BTreeMap<usize, Tensor>, TokenBatch) {
    let batch = TokenBatch::new(seqs, 0, model.device()).unwrap();
    let mut rec = RecordAll(BTreeMap::new());
    model
        .forward_blocks(&batch, model.loaded_layers() - 1, &mut rec)
        .unwrap();
    (rec.0, batch)
}

fn golden_pairs(g: &Golden) -> Vec<ContrastPair> {
    g.pairs()
        .into_iter()
        .map(|(positive, negative)| ContrastPair::new(positive, negative))
        .collect()
}

fn train_golden_pairs(dtype: DType, layers: &[usize], batch_size: usize) -> LayerVectors {
    train_golden_batched(dtype, layers, Some(batch_size), 4096)
}

fn train_golden_batched(
    dtype: DType,
    layers: &[usize],
    max_pairs: Option<usize>,
    max_tokens: usize,
) -> LayerVectors {
    let g = Golden::load();
    let m = load(&tiny_model_dir(), dtype, None);
    let tokens = tokenize_pairs(&m.tokenizer, &golden_pairs(&g), m.model.as_ref()).unwrap();
    let opts = TrainOptions {
        layers: layers.to_vec(),
        max_pairs_per_batch: max_pairs,
        max_batch_tokens: max_tokens,
        progress: false,
        shared_prefix: true,
        ..Default::default()
    };
    train(m.model.as_ref(), &tokens, &opts)
        .unwrap()
        .0
        .layer_activations
}

#[test]
fn tokenizer_matches_hf() {
    let g = Golden::load();
    let m = load(&tiny_model_dir(), DType::F32, Some(1));
    for (text, want) in g.strings("prompts").iter().zip(g.ids("prompt_ids")) {
        let got = m.tokenizer.encode(text.as_str(), true).unwrap();
        assert_eq!(got.get_ids(), want.as_slice(), "{text}");
    }
    let tokens = tokenize_pairs(&m.tokenizer, &golden_pairs(&g), m.model.as_ref()).unwrap();
    let want: Vec<[Vec<u32>; 2]> = serde_json::from_value(g.meta["pair_ids"].clone()).unwrap();
    assert_eq!(tokens.len(), want.len());
    for (t, [pos, neg]) in tokens.iter().zip(want) {
        assert_eq!(t.positive, pos);
        assert_eq!(t.negative, neg);
    }
}

#[test]
fn residual_stream_matches_hf_every_layer() {
    let g = Golden::load();
    let m = load(&tiny_model_dir(), DType::F32, None);
    let mut worst: f64 = 0.0;
    for (p, ids) in g.ids("prompt_ids").iter().enumerate() {
        let (res, _) = residuals(m.model.as_ref(), &[ids.as_slice()]);
        for (k, t) in res {
            let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let want = g.tensors[&format!("prompt{p}.layer{k}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let err = rel_l2(&got, &want);
            worst = worst.max(err);
            assert!(err <= RESIDUAL_TOL, "prompt {p} layer {k}: rel L2 {err:e}");
        }
    }
    eprintln!("worst residual rel L2: {worst:e}");
}

#[test]
fn padding_does_not_leak_into_real_tokens() {
    // All prompts in one right-padded batch: every real token must match its solo run.
    let g = Golden::load();
    let m = load(&tiny_model_dir(), DType::F32, None);
    let ids = g.ids("prompt_ids");
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let (res, batch) = residuals(m.model.as_ref(), &seqs);
    for (k, t) in res {
        for (p, &len) in batch.lengths.iter().enumerate() {
            let got: Vec<f32> = t
                .get(p)
                .unwrap()
                .narrow(0, 0, len)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = g.tensors[&format!("prompt{p}.layer{k}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let err = rel_l2(&got, &want);
            assert!(err <= RESIDUAL_TOL, "prompt {p} layer {k} batched: {err:e}");
        }
    }
}

#[test]
fn sharded_checkpoint_loads_the_same_weights() {
    let g = Golden::load();
    let single = load(&tiny_model_dir(), DType::F32, None);
    let sharded = load(
        &crate::common::fixtures().join("tiny-gemma2-sharded"),
        DType::F32,
        None,
    );
    let ids = &g.ids("prompt_ids")[3];
    let (a, _) = residuals(single.model.as_ref(), &[ids.as_slice()]);
    let (b, _) = residuals(sharded.model.as_ref(), &[ids.as_slice()]);
    for k in a.keys() {
        let x: Vec<f32> = a[k].flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(x, y, "layer {k}");
    }
}

fn assert_matches_reference(got: &LayerVectors, g: &Golden, tag: &str) {
    let want_layers: Vec<usize> =
        serde_json::from_value(g.meta["vector_layers"][tag].clone()).unwrap();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), want_layers);
    for (k, v) in got {
        let want = g.vec1(&format!("vector_{tag}.layer{k}"));
        let (cos, err) = (cosine(v, &want), rel_l2(v, &want));
        eprintln!("{tag} layer {k}: cosine {cos:.9}, rel L2 {err:e}");
        assert!(cos >= VECTOR_COS, "{tag} layer {k}: cosine {cos}");
        assert!(err <= VECTOR_TOL, "{tag} layer {k}: rel L2 {err:e}");
    }
}

#[test]
fn vectors_match_steering_vectors_all_layers() {
    let g = Golden::load();
    let got = train_golden_pairs(DType::F32, &[0, 1, 2, 3], 1);
    assert_matches_reference(&got, &g, "all");
}

#[test]
fn vectors_match_steering_vectors_negative_layers() {
    let g = Golden::load();
    let negative: Vec<i64> = serde_json::from_value(g.meta["negative_layers"].clone()).unwrap();
    let layers = LayerSpec::List(negative).resolve(4).unwrap();
    let got = train_golden_pairs(DType::F32, &layers, 2);
    assert_matches_reference(&got, &g, "negative");
}

#[test]
fn batch_size_does_not_change_the_vector() {
    let n = Golden::load().pairs().len();
    let one = train_golden_pairs(DType::F32, &[0, 1, 2, 3], 1);
    // pair caps, then token budgets from one sequence per batch to everything at once
    let runs = [
        (Some(2), 4096),
        (Some(4), 4096),
        (Some(n), 4096),
        (None, 1),
        (None, 40),
        (None, 100_000),
    ];
    for (max_pairs, max_tokens) in runs {
        let other = train_golden_batched(DType::F32, &[0, 1, 2, 3], max_pairs, max_tokens);
        for (k, v) in &one {
            let err = rel_l2(&other[k], v);
            assert!(
                err <= BATCH_TOL,
                "{max_pairs:?} pairs, {max_tokens} tokens, layer {k}: {err:e}"
            );
        }
    }
}

#[test]
fn loading_fewer_blocks_gives_the_same_vector() {
    let g = Golden::load();
    let m = load(&tiny_model_dir(), DType::F32, Some(2));
    assert_eq!(m.model.loaded_layers(), 2);
    let tokens = tokenize_pairs(&m.tokenizer, &golden_pairs(&g), m.model.as_ref()).unwrap();
    let opts = TrainOptions {
        layers: vec![1],
        max_pairs_per_batch: Some(3),
        max_batch_tokens: 4096,
        progress: false,
        shared_prefix: true,
        ..Default::default()
    };
    let got = train(m.model.as_ref(), &tokens, &opts)
        .unwrap()
        .0
        .layer_activations;
    let full = train_golden_pairs(DType::F32, &[0, 1, 2, 3], 3);
    let err = rel_l2(&got[&1], &full[&1]);
    assert!(err <= BATCH_TOL, "{err:e}");
}

#[test]
fn bf16_stays_close_to_the_f32_reference() {
    // Reduced precision on random weights: a loose bound that still catches a broken path.
    let g = Golden::load();
    let got = train_golden_pairs(DType::BF16, &[0, 1, 2, 3], 2);
    for (k, v) in &got {
        let cos = cosine(v, &g.vec1(&format!("vector_all.layer{k}")));
        eprintln!("bf16 layer {k}: cosine {cos:.5}");
        assert!(cos >= 0.98, "layer {k}: cosine {cos}");
    }
}

/// Residuals, token ids and trained vectors of another architecture's fixture against its
/// HF / steering-vectors recordings (same prompts and pairs as the Gemma-2 fixture).
fn assert_architecture_parity(model_dir: &str, golden: &str) {
    let shared = Golden::load();
    let g = Golden::named(golden);
    let m = load(&crate::common::fixtures().join(model_dir), DType::F32, None);
    let prompts = shared.strings("prompts");
    let ids = g.ids("prompt_ids");
    let mut worst: f64 = 0.0;
    for (p, (text, want_ids)) in prompts.iter().zip(&ids).enumerate() {
        let got = m.tokenizer.encode(text.as_str(), true).unwrap();
        assert_eq!(got.get_ids(), want_ids.as_slice());
        let (res, _) = residuals(m.model.as_ref(), &[want_ids.as_slice()]);
        for (k, t) in res {
            let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let want = g.tensors[&format!("prompt{p}.layer{k}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let err = rel_l2(&got, &want);
            worst = worst.max(err);
            assert!(
                err <= RESIDUAL_TOL,
                "{model_dir} prompt {p} layer {k}: {err:e}"
            );
        }
    }
    eprintln!("{model_dir}: worst residual rel L2 {worst:e}");
    let tokens = tokenize_pairs(&m.tokenizer, &golden_pairs(&shared), m.model.as_ref()).unwrap();
    let opts = TrainOptions {
        layers: (0..m.model.num_layers()).collect(),
        max_pairs_per_batch: None,
        max_batch_tokens: 4096,
        progress: false,
        shared_prefix: true,
        ..Default::default()
    };
    let got = train(m.model.as_ref(), &tokens, &opts)
        .unwrap()
        .0
        .layer_activations;
    assert_matches_reference(&got, &g, "all");
}

#[test]
fn gemma3_matches_hf() {
    assert_architecture_parity("tiny-gemma3", "tiny-gemma3");
}

#[test]
fn gemma3_multimodal_checkpoint_runs_its_text_model() {
    assert_architecture_parity("tiny-gemma3-multimodal", "tiny-gemma3");
}

#[test]
fn llama_matches_hf() {
    assert_architecture_parity("tiny-llama", "tiny-llama");
}

#[test]
fn qwen2_matches_hf() {
    assert_architecture_parity("tiny-qwen2", "tiny-qwen2");
}

#[test]
fn mistral_matches_hf() {
    assert_architecture_parity("tiny-mistral", "tiny-mistral");
}

/// Running each pair's shared prefix once gives the vector of running both sides in full, on
/// every fixture architecture (Gemma-2's sliding window and soft-cap included), with the
/// shipped ToM pairs (long shared scenarios) and the golden pairs; fewer tokens are run.
#[test]
fn shared_prefixes_do_not_change_the_vector() {
    let golden = Golden::load();
    for dir in [
        "tiny-gemma2",
        "tiny-gemma3",
        "tiny-llama",
        "tiny-mistral",
        "tiny-qwen2",
    ] {
        let m = load(&crate::common::fixtures().join(dir), DType::F32, None);
        let tom = train_vector::data::load_pairs(
            &train_vector::data::DataSource::Shipped,
            train_vector::data::ContrastType::Tom,
            Some(12),
        )
        .unwrap()
        .pairs;
        for (what, pairs) in [("tom", tom), ("golden", golden_pairs(&golden))] {
            let tokens = tokenize_pairs(&m.tokenizer, &pairs, m.model.as_ref()).unwrap();
            let run = |shared_prefix: bool, max_batch_tokens: usize| {
                let opts = TrainOptions {
                    layers: (0..m.model.num_layers()).collect(),
                    max_pairs_per_batch: None,
                    max_batch_tokens,
                    progress: false,
                    shared_prefix,
                    ..Default::default()
                };
                train(m.model.as_ref(), &tokens, &opts).unwrap()
            };
            let (full, full_stats) = run(false, 4096);
            for budget in [4096, 300] {
                let (shared, stats) = run(true, budget);
                assert_eq!(stats.tokens, full_stats.tokens);
                for (k, v) in &full.layer_activations {
                    let err = rel_l2(&shared.layer_activations[k], v);
                    assert!(
                        err <= BATCH_TOL,
                        "{dir} {what} layer {k} budget {budget}: {err:e}"
                    );
                }
                if what == "tom" {
                    assert!(stats.forward_tokens < full_stats.forward_tokens, "{dir}");
                }
            }
        }
    }
}

/// Block by block (layer-major), and with blocks read from the checkpoint as they run
/// (streaming), the vector is the one of the usual batch-by-batch run: bit for bit, since every
/// batch meets the same operations; also in small groups of batches, and from sharded weights.
#[test]
fn layer_major_and_streamed_runs_give_the_same_vector() {
    let golden = Golden::load();
    for dir in [
        "tiny-gemma2",
        "tiny-gemma2-sharded",
        "tiny-gemma3",
        "tiny-llama",
        "tiny-mistral",
        "tiny-qwen2",
    ] {
        let path = crate::common::fixtures().join(dir);
        let pairs = golden_pairs(&golden);
        let run = |stream: bool, layer_major: bool, activation_budget: Option<u64>| {
            let spec = ModelSpec::open(path.to_str().unwrap(), None).unwrap();
            let mut load = LoadOptions::for_training(Device::Cpu, DType::F32, None);
            load.stream_blocks = stream;
            let m = load_model(spec, &load).unwrap();
            assert_eq!(m.model.streams_blocks(), stream);
            let tokens = tokenize_pairs(&m.tokenizer, &pairs, m.model.as_ref()).unwrap();
            let opts = TrainOptions {
                layers: vec![0, 2, 3],
                max_batch_tokens: 128,
                layer_major,
                activation_budget,
                ..Default::default()
            };
            train(m.model.as_ref(), &tokens, &opts).unwrap().0
        };
        let plain = run(false, false, None);
        for (stream, layer_major, budget) in [
            (false, true, None),
            (true, false, None),
            (true, true, Some(40_000)),
        ] {
            let got = run(stream, layer_major, budget);
            assert_eq!(
                got.layer_activations, plain.layer_activations,
                "{dir} {stream} {budget:?}"
            );
        }
    }
}
