//! Criterion benchmarks of the forward pass and the trainer on a synthetic Gemma-2 with random
//! weights built in-process (no files): a small shape that runs anywhere.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use train_vector::model::config::parse_config;
use train_vector::model::{
    DecoderModel, LoadOptions, NoHook, TextConfig, TokenBatch, WeightSource,
};
use train_vector::train::{train, TokenPair, TrainOptions};

const LAYERS: usize = 6;

fn config() -> TextConfig {
    parse_config(&serde_json::json!({
        "model_type": "gemma2", "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 1024,
        "num_hidden_layers": LAYERS, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 64,
        "attn_logit_softcapping": 50.0, "max_position_embeddings": 4096
    })
    .to_string())
    .expect("valid config")
}

fn random_model(cfg: &TextConfig) -> Box<dyn DecoderModel> {
    let dev = Device::Cpu;
    let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: (usize, usize), std: f64| {
        let w = Tensor::randn(0f32, std as f32, shape, &dev).expect("randn");
        t.insert(name, w);
    };
    put(
        "model.embed_tokens.weight".into(),
        (cfg.vocab_size, h),
        0.05,
    );
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let s = 1.0 / (h as f64).sqrt();
        put(format!("{p}.self_attn.q_proj.weight"), (nh * d, h), s);
        put(format!("{p}.self_attn.k_proj.weight"), (nkv * d, h), s);
        put(format!("{p}.self_attn.v_proj.weight"), (nkv * d, h), s);
        put(format!("{p}.self_attn.o_proj.weight"), (h, nh * d), s);
        put(format!("{p}.mlp.gate_proj.weight"), (i, h), s);
        put(format!("{p}.mlp.up_proj.weight"), (i, h), s);
        put(
            format!("{p}.mlp.down_proj.weight"),
            (h, i),
            1.0 / (i as f64).sqrt(),
        );
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            put(format!("{p}.{n}.weight"), (1, h), 0.1);
        }
    }
    // norms are 1-D in the checkpoint
    for (name, w) in t.iter_mut() {
        if name.ends_with("norm.weight") {
            *w = w.squeeze(0).expect("squeeze");
        }
    }
    let weights = WeightSource::tensors(t, DType::F32, &dev);
    let opts = LoadOptions::for_training(dev, DType::F32, None);
    (cfg.architecture.build)(cfg, &weights, &opts).expect("model")
}

fn sequences(n: usize, len: usize, vocab: u32) -> Vec<Vec<u32>> {
    (0..n)
        .map(|s| {
            (0..len - s % 7)
                .map(|i| ((i * 31 + s * 17) as u32) % vocab)
                .collect()
        })
        .collect()
}

fn forward(c: &mut Criterion) {
    let cfg = config();
    let model = random_model(&cfg);
    let mut group = c.benchmark_group("forward");
    group.sample_size(10);
    for len in [32usize, 128] {
        let seqs = sequences(4, len, cfg.vocab_size as u32);
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let batch = TokenBatch::new(&refs, 0, &Device::Cpu).expect("batch");
        group.throughput(Throughput::Elements(batch.real_tokens() as u64));
        for last in [LAYERS / 2 - 1, LAYERS - 1] {
            let id = BenchmarkId::new(format!("len{len}"), format!("to_layer{last}"));
            group.bench_with_input(id, &last, |b, &last| {
                b.iter(|| {
                    model
                        .forward_blocks(&batch, last, &mut NoHook)
                        .expect("forward")
                })
            });
        }
    }
    group.finish();
}

fn trainer(c: &mut Criterion) {
    let cfg = config();
    let model = random_model(&cfg);
    let seqs = sequences(16, 96, cfg.vocab_size as u32);
    let pairs: Vec<TokenPair> = seqs
        .chunks(2)
        .map(|p| TokenPair {
            positive: p[0].clone(),
            negative: p[1].clone(),
        })
        .collect();
    let tokens: usize = seqs.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    group.throughput(Throughput::Elements(tokens as u64));
    for batch_size in [1usize, 4] {
        let opts = TrainOptions {
            layers: (0..LAYERS).collect(),
            max_pairs_per_batch: Some(batch_size),
            max_batch_tokens: 4096,
            progress: false,
            shared_prefix: true,
            ..Default::default()
        };
        group.bench_with_input(BenchmarkId::new("batch", batch_size), &opts, |b, o| {
            b.iter(|| train(model.as_ref(), &pairs, o).expect("train"))
        });
    }
    group.finish();
}

criterion_group!(benches, forward, trainer);
criterion_main!(benches);
