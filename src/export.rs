//! llama.cpp control vectors: a GGUF file with `general.architecture = controlvector`, a model
//! hint, the layer count, and one F32 tensor `direction.k` per layer. `k` is our 0-based block
//! index (the residual stream leaving block `k`), which llama.cpp cannot address for `k = 0`.

use crate::error::{Error, Result};
use crate::vector::SteeringVector;

const ALIGN: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_kv_str(out: &mut Vec<u8>, key: &str, value: &str) {
    put_str(out, key);
    out.extend(8u32.to_le_bytes()); // GGUF string
    put_str(out, value);
}

fn put_kv_i32(out: &mut Vec<u8>, key: &str, value: i32) {
    put_str(out, key);
    out.extend(5u32.to_le_bytes()); // GGUF int32
    out.extend(value.to_le_bytes());
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(ALIGN) {
        out.push(0);
    }
}

/// The GGUF bytes and the layers left out (block 0).
pub fn control_vector_gguf(
    v: &SteeringVector,
    model_hint: &str,
    layer_count: usize,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let kept: Vec<(usize, &Vec<f32>)> = v
        .layer_activations
        .iter()
        .filter(|(k, _)| **k >= 1)
        .map(|(k, d)| (*k, d))
        .collect();
    let dropped: Vec<usize> = v
        .layer_activations
        .keys()
        .copied()
        .filter(|k| *k == 0)
        .collect();
    if kept.is_empty() {
        return Err(Error::new(
            "the vector has no layer llama.cpp can address (layer 0 cannot be expressed)",
        ));
    }
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((kept.len() as u64).to_le_bytes());
    out.extend(3u64.to_le_bytes());
    put_kv_str(&mut out, "general.architecture", "controlvector");
    put_kv_str(&mut out, "controlvector.model_hint", model_hint);
    put_kv_i32(&mut out, "controlvector.layer_count", layer_count as i32);
    let mut offset = 0usize;
    for (k, d) in &kept {
        put_str(&mut out, &format!("direction.{k}"));
        out.extend(1u32.to_le_bytes());
        out.extend((d.len() as u64).to_le_bytes());
        out.extend(0u32.to_le_bytes()); // F32
        out.extend((offset as u64).to_le_bytes());
        offset += (d.len() * 4).div_ceil(ALIGN) * ALIGN;
    }
    pad(&mut out);
    for (_, d) in &kept {
        for x in d.iter() {
            out.extend(x.to_le_bytes());
        }
        pad(&mut out);
    }
    Ok((out, dropped))
}

/// Writes `bytes` to `path` so that a partial file never appears, even if the process is killed.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    crate::file_set::write_all_or_nothing(&[crate::file_set::Entry { dest: path, bytes }])
}
