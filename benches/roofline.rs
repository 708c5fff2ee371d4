//! The forward's FLOP rate next to the machine's f32 GEMM rate, measured in the same run: a
//! random Gemma-2 of the gemma-2-2b shape (hidden 2304, MLP 9216, 8 heads of 256, 4 key/value
//! heads) cut to two blocks, f32 on the CPU, and a GEMM of the MLP's shape.
//!
//! `cargo bench --bench roofline` measures; under `cargo test` it runs a small smoke version.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use train_vector::model::config::parse_config;
use train_vector::model::{
    DecoderModel, LoadOptions, NoHook, TextConfig, TokenBatch, WeightSource,
};

fn config(
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv: usize,
    head_dim: usize,
) -> TextConfig {
    parse_config(
        &serde_json::json!({
            "model_type": "gemma2", "vocab_size": 4096, "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": 2,
            "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim, "sliding_window": 4096,
            "max_position_embeddings": 8192
        })
        .to_string(),
    )
    .expect("config")
}

fn model(cfg: &TextConfig) -> Box<dyn DecoderModel> {
    let dev = Device::Cpu;
    let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f32| {
        t.insert(name, Tensor::randn(0f32, std, shape, &dev).expect("randn"));
    };
    put(
        "model.embed_tokens.weight".into(),
        &[cfg.vocab_size, h],
        0.02,
    );
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let s = 1.0 / (h as f32).sqrt();
        put(format!("{p}.self_attn.q_proj.weight"), &[nh * d, h], s);
        put(format!("{p}.self_attn.k_proj.weight"), &[nkv * d, h], s);
        put(format!("{p}.self_attn.v_proj.weight"), &[nkv * d, h], s);
        put(format!("{p}.self_attn.o_proj.weight"), &[h, nh * d], s);
        put(format!("{p}.mlp.gate_proj.weight"), &[i, h], s);
        put(format!("{p}.mlp.up_proj.weight"), &[i, h], s);
        put(
            format!("{p}.mlp.down_proj.weight"),
            &[h, i],
            1.0 / (i as f32).sqrt(),
        );
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            put(format!("{p}.{n}.weight"), &[h], 0.1);
        }
    }
    let weights = WeightSource::tensors(t, DType::F32, &dev);
    (cfg.architecture.build)(
        cfg,
        &weights,
        &LoadOptions::for_training(dev, DType::F32, None),
    )
    .expect("model")
}

/// Best of `runs` timings of `f`, in seconds.
fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (cfg, rows, len, runs) = match full {
        true => (config(2304, 9216, 8, 4, 256), 8, 256, 5),
        false => (config(128, 256, 2, 1, 64), 2, 32, 1),
    };
    let tokens = rows * len;
    // The machine's GEMM rate on the MLP's shape: [tokens, hidden] x [hidden, intermediate].
    let a = Tensor::randn(0f32, 1.0, (tokens, cfg.hidden_size), &Device::Cpu).expect("a");
    let b = Tensor::randn(
        0f32,
        1.0,
        (cfg.intermediate_size, cfg.hidden_size),
        &Device::Cpu,
    )
    .expect("b");
    let bt = b.t().expect("t");
    let gemm_s = best(runs, || {
        a.matmul(&bt).expect("matmul");
    });
    let gemm_flops = 2.0 * (tokens * cfg.hidden_size * cfg.intermediate_size) as f64;

    let m = model(&cfg);
    let seqs: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..len)
                .map(|i| ((i * 31 + r * 17) % cfg.vocab_size) as u32)
                .collect()
        })
        .collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let batch = TokenBatch::new(&refs, 0, &Device::Cpu).expect("batch");
    let last = cfg.num_hidden_layers - 1;
    let fwd_s = best(runs, || {
        m.forward_blocks(&batch, last, &mut NoHook)
            .expect("forward");
    });
    // 2 x parameters x tokens for the projections, plus the attention products (q.k and p.v,
    // causal: half of the t x t scores).
    let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let params = h * nh * d * 2 + h * nkv * d * 2 + 3 * h * i;
    let attention = 2 * 2 * nh * d * len * len / 2 * rows;
    let fwd_flops = (2 * params * tokens + attention) as f64 * cfg.num_hidden_layers as f64;
    let (g, f) = (gemm_flops / gemm_s / 1e9, fwd_flops / fwd_s / 1e9);
    println!("f32 GEMM [{tokens} x {h}] x [{h} x {i}]: {g:.1} GFLOP/s");
    println!(
        "forward, {} blocks, {rows} x {len} tokens: {f:.1} GFLOP/s ({:.0}% of the GEMM rate), {:.0} tokens/s",
        cfg.num_hidden_layers,
        100.0 * f / g,
        tokens as f64 / fwd_s
    );
}
