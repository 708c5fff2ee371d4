//! Steering through the shared hook point, against steering-vectors' `apply` on HF
//! transformers (recorded by the fixture script), and the identities a steering hook must keep.

use std::collections::BTreeMap;

use crate::common::{rel_l2, tiny_model_dir, Golden};
use candle_core::{DType, Device};
use train_vector::generate::{generate, GenerateOptions};
use train_vector::model::{
    load_model, KvCache, LayerHook, LoadOptions, LoadedModel, LogitPositions, ModelSpec, NoHook,
    TokenBatch,
};
use train_vector::steer::Steering;
use train_vector::vector::SteeringVector;

const LOGIT_TOL: f64 = 1e-4;

fn model_with_head() -> LoadedModel {
    let dir = tiny_model_dir();
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    load_model(spec, &LoadOptions::for_logits(Device::Cpu, DType::F32)).unwrap()
}

/// The reference vector steering-vectors trained on the fixture pairs.
fn reference_vector(g: &Golden) -> SteeringVector {
    let layers: BTreeMap<usize, Vec<f32>> = (0..4)
        .map(|k| (k, g.vec1(&format!("vector_all.layer{k}"))))
        .collect();
    SteeringVector::new(layers)
}

fn last_logits(m: &LoadedModel, ids: &[u32], steering: &mut dyn LayerHook) -> Vec<f32> {
    let batch = TokenBatch::new(&[ids], 0, &Device::Cpu).unwrap();
    m.model
        .forward_logits(&batch, None, steering, LogitPositions::Last)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn steer_setup() -> (Golden, Vec<u32>, f64) {
    let g = Golden::load();
    let p = g.meta["steer_prompt"].as_u64().unwrap() as usize;
    let ids = g.ids("prompt_ids")[p].clone();
    let m = g.meta["steer_multiplier"].as_f64().unwrap();
    (g, ids, m)
}

#[test]
fn steered_and_unsteered_logits_match_steering_vectors() {
    let (g, ids, mult) = steer_setup();
    let m = model_with_head();
    let plain = last_logits(&m, &ids, &mut NoHook);
    let err = rel_l2(&plain, &g.vec1("logits_unsteered"));
    assert!(err <= LOGIT_TOL, "unsteered: {err:e}");
    let v = reference_vector(&g);
    let steered = last_logits(
        &m,
        &ids,
        &mut Steering::new(&v, mult, None, &Device::Cpu).unwrap(),
    );
    let err = rel_l2(&steered, &g.vec1("logits_steered"));
    assert!(err <= LOGIT_TOL, "steered: {err:e}");
    // and the steering visibly moved them
    assert!(rel_l2(&steered, &plain) > 1e-2);
}

#[test]
fn zero_multiplier_and_v_minus_v_are_no_steering() {
    let (g, ids, _) = steer_setup();
    let m = model_with_head();
    let plain = last_logits(&m, &ids, &mut NoHook);
    let v = reference_vector(&g);
    let zero = last_logits(
        &m,
        &ids,
        &mut Steering::new(&v, 0.0, None, &Device::Cpu).unwrap(),
    );
    assert_eq!(zero, plain);
    let cancelled = v.checked_add(&(&v * -1.0)).unwrap();
    let none = last_logits(
        &m,
        &ids,
        &mut Steering::new(&cancelled, 3.0, None, &Device::Cpu).unwrap(),
    );
    assert_eq!(none, plain);
}

#[test]
fn cached_steered_generation_matches_hf_and_uncached_recomputation() {
    let (g, ids, mult) = steer_setup();
    let m = model_with_head();
    let v = reference_vector(&g);
    let want: Vec<u32> = serde_json::from_value(g.meta["steered_greedy_ids"].clone()).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: want.len(),
        sampling: None,
        stop: vec![],
    };
    let mut hook = Steering::new(&v, mult, None, &Device::Cpu).unwrap();
    let got = generate(m.model.as_ref(), &ids, &mut hook, &opts).unwrap();
    assert_eq!(got, want);

    // Token by token: the cached step's logits equal a full recomputation of the sequence.
    let mut cache = KvCache::new();
    let mut seq = ids.clone();
    let mut input = ids.clone();
    for step in 0..6 {
        let batch = TokenBatch::new(&[input.as_slice()], 0, &Device::Cpu).unwrap();
        let cached: Vec<f32> = m
            .model
            .forward_logits(&batch, Some(&mut cache), &mut hook, LogitPositions::Last)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let full = last_logits(&m, &seq, &mut hook);
        let err = rel_l2(&cached, &full);
        assert!(err <= 1e-5, "step {step}: {err:e}");
        let next = train_vector::generate::argmax(&cached);
        seq.push(next);
        input = vec![next];
    }
}

#[test]
fn steering_layers_must_exist_in_the_vector() {
    let (g, _, _) = steer_setup();
    let v = reference_vector(&g);
    assert!(Steering::new(&v, 1.0, Some(&[1, 2]), &Device::Cpu).is_ok());
    let err = Steering::new(&v, 1.0, Some(&[9]), &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.message().contains("no layer 9"));
}
