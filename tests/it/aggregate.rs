//! The aggregators against their references on the tiny Gemma-2, recorded by
//! `tests/fixtures/make_fixtures.py aggregators`: steering-vectors 0.12.2's mean, pca and
//! logistic (and the optimum its logistic approximates), repeng's pca_diff and pca_center
//! (restated there with numpy's exact SVD); and determinism, over repeated runs and over the
//! batchings that produce the activations.

use std::collections::BTreeMap;

use crate::common::{cosine, load, rel_l2, tiny_model_dir, Golden};
use candle_core::DType;
use train_vector::aggregate::{aggregate, Aggregator};
use train_vector::data::ContrastPair;
use train_vector::train::{pair_activations, tokenize_pairs, train, PairActivations, TrainOptions};

const LAYERS: [usize; 4] = [0, 1, 2, 3];
/// Our activations against HF's, per pair and side (relative L2), as in `parity.rs`.
const ACTIVATION_TOL: f64 = 1e-4;
/// Cosine to the reference from our activations; steering-vectors' logistic stops its
/// L-BFGS short of the optimum (about 1 - 1e-7 away on these pairs).
const COS: f64 = 0.99999;
const LOGISTIC_COS: f64 = 0.9999;
/// From the recorded activations themselves, where only the arithmetic differs: f64 against
/// numpy's f64 SVD and sklearn's tightly converged Newton.
const EXACT_COS: f64 = 1.0 - 1e-9;
/// Other batchings move the activations themselves by float noise (up to about 2e-6
/// relative L2 here: candle's batched matmuls round differently), so the vectors cannot be
/// bit-equal; they may move this much (relative L2), as the mean vector may in `parity.rs`.
const BATCH_TOL: f64 = 1e-5;

fn golden() -> Golden {
    Golden::named("aggregators")
}

fn pairs(g: &Golden) -> Vec<ContrastPair> {
    g.pairs()
        .into_iter()
        .map(|(positive, negative)| ContrastPair::new(positive, negative))
        .collect()
}

fn options(max_pairs: Option<usize>, max_tokens: usize) -> TrainOptions {
    TrainOptions {
        layers: LAYERS.to_vec(),
        max_pairs_per_batch: max_pairs,
        max_batch_tokens: max_tokens,
        ..TrainOptions::default()
    }
}

fn activations(max_pairs: Option<usize>, max_tokens: usize) -> BTreeMap<usize, PairActivations> {
    let g = golden();
    let m = load(&tiny_model_dir(), DType::F32, None);
    let tokens = tokenize_pairs(&m.tokenizer, &pairs(&g), m.model.as_ref()).unwrap();
    pair_activations(m.model.as_ref(), &tokens, &options(max_pairs, max_tokens)).unwrap()
}

fn recorded(g: &Golden, side: &str, k: usize) -> Vec<Vec<f32>> {
    g.tensors[&format!("{side}.layer{k}")].to_vec2().unwrap()
}

fn min_cosine(
    method: Aggregator,
    want: &str,
    acts: impl Fn(usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>),
) -> f64 {
    let g = golden();
    LAYERS
        .iter()
        .map(|&k| {
            let (pos, neg) = acts(k);
            let got = aggregate(method, &pos, &neg).unwrap();
            cosine(&got, &g.vec1(&format!("{want}.layer{k}")))
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn the_golden_pairs_are_the_shared_fixture_pairs() {
    assert_eq!(golden().pairs(), Golden::load().pairs());
}

#[test]
fn our_activations_match_the_recorded_ones() {
    let g = golden();
    let ours = activations(Some(1), 4096);
    let mut worst: f64 = 0.0;
    for k in LAYERS {
        for (side, got) in [("pos", &ours[&k].positive), ("neg", &ours[&k].negative)] {
            let want = recorded(&g, side, k);
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let err = rel_l2(a, b);
                worst = worst.max(err);
                assert!(err <= ACTIVATION_TOL, "{side} {i} layer {k}: {err:e}");
            }
        }
    }
    eprintln!("worst activation rel L2: {worst:e}");
}

#[test]
fn aggregators_match_their_references() {
    let ours = activations(None, 4096);
    let from_ours = |k: usize| (ours[&k].positive.clone(), ours[&k].negative.clone());
    for method in Aggregator::ALL {
        let cos = min_cosine(method, method.name(), from_ours);
        let bound = if method == Aggregator::Logistic {
            LOGISTIC_COS
        } else {
            COS
        };
        eprintln!("{method}: worst cosine {cos:.12}");
        assert!(cos >= bound, "{method}: cosine {cos}");
    }
    let cos = min_cosine(Aggregator::Logistic, "logistic-converged", from_ours);
    eprintln!("logistic vs the converged optimum: worst cosine {cos:.12}");
    assert!(cos >= COS, "{cos}");
}

#[test]
fn aggregators_match_exactly_on_the_recorded_activations() {
    let g = golden();
    let recorded = |k: usize| (recorded(&g, "pos", k), recorded(&g, "neg", k));
    let exact = [
        (Aggregator::PcaDiff, "pca-diff"),
        (Aggregator::PcaCenter, "pca-center"),
        (Aggregator::Logistic, "logistic-converged"),
        (Aggregator::Mean, "mean"),
    ];
    for (method, want) in exact {
        let cos = min_cosine(method, want, recorded);
        eprintln!("{method} on the recorded activations vs `{want}`: worst cosine {cos:.15}");
        assert!(cos >= EXACT_COS, "{method}: cosine {cos}");
    }
    // torch's float32 SVD and sklearn's L-BFGS carry their own error.
    let pca = min_cosine(Aggregator::Pca, "pca", recorded);
    let logistic = min_cosine(Aggregator::Logistic, "logistic", recorded);
    eprintln!("pca {pca:.12}, logistic {logistic:.12} on the recorded activations");
    assert!(pca >= COS && logistic >= LOGISTIC_COS);
}

#[test]
fn mean_aggregator_is_the_trainer_bit_for_bit() {
    let g = golden();
    let m = load(&tiny_model_dir(), DType::F32, None);
    let tokens = tokenize_pairs(&m.tokenizer, &pairs(&g), m.model.as_ref()).unwrap();
    for (max_pairs, max_tokens) in [(Some(1), 4096), (None, 40)] {
        let opts = options(max_pairs, max_tokens);
        let trained = train(m.model.as_ref(), &tokens, &opts).unwrap().0;
        let acts = pair_activations(m.model.as_ref(), &tokens, &opts).unwrap();
        for k in LAYERS {
            let got = aggregate(Aggregator::Mean, &acts[&k].positive, &acts[&k].negative);
            assert_eq!(got.unwrap(), trained.layer_activations[&k], "layer {k}");
        }
    }
}

#[test]
fn aggregators_are_deterministic_across_runs_and_batchings() {
    let base = activations(Some(1), 4096);
    let runs = [(None, 1), (Some(2), 4096), (None, 40), (None, 100_000)];
    let others: Vec<_> = runs.iter().map(|&(p, t)| activations(p, t)).collect();
    let mut moved: f64 = 0.0;
    for (other, k) in others.iter().flat_map(|o| LAYERS.map(|k| (o, k))) {
        let (a, b) = (&other[&k], &base[&k]);
        let sides = a.positive.iter().zip(&b.positive);
        for (x, y) in sides.chain(a.negative.iter().zip(&b.negative)) {
            moved = moved.max(rel_l2(x, y));
        }
    }
    eprintln!("activations across batchings: worst rel L2 {moved:e}");
    for method in Aggregator::ALL {
        let mut worst: f64 = 0.0;
        for k in LAYERS {
            let (pos, neg) = (&base[&k].positive, &base[&k].negative);
            let want = aggregate(method, pos, neg).unwrap();
            let again = aggregate(method, pos, neg).unwrap();
            assert_eq!(again, want, "{method} layer {k}");
            for (other, run) in others.iter().zip(&runs) {
                let got = aggregate(method, &other[&k].positive, &other[&k].negative).unwrap();
                let err = rel_l2(&got, &want);
                worst = worst.max(err);
                assert!(err <= BATCH_TOL, "{method} layer {k} {run:?}: {err:e}");
            }
        }
        eprintln!("{method} across batchings: worst rel L2 {worst:e}");
    }
}
