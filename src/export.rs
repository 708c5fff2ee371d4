//! llama.cpp control vectors: a GGUF file with `general.architecture = controlvector`, a model
//! hint, the layer count, and one F32 tensor `direction.k` per layer, written with candle's
//! GGUF writer. `k` is our 0-based block index (the residual stream leaving block `k`), which
//! llama.cpp cannot address for `k = 0`.

use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::vector::SteeringVector;

/// The GGUF bytes and the layers left out (block 0).
pub fn control_vector_gguf(
    v: &SteeringVector,
    model_hint: &str,
    layer_count: usize,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let (kept, dropped): (Vec<_>, Vec<_>) = v.layer_activations.iter().partition(|(k, _)| **k >= 1);
    if kept.is_empty() {
        return Err(Error::new(
            "the vector has no layer llama.cpp can address (layer 0 cannot be expressed)",
        ));
    }
    let tensors = kept
        .iter()
        .map(|(k, d)| {
            let t = Tensor::from_slice(d.as_slice(), d.len(), &Device::Cpu)?;
            Ok((
                format!("direction.{k}"),
                QTensor::quantize(&t, GgmlDType::F32)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let layer_count = i32::try_from(layer_count).map_err(|_| {
        Error::new(format!(
            "layer count {layer_count} does not fit GGUF's int32"
        ))
    })?;
    let arch = Value::String("controlvector".to_string());
    let hint = Value::String(model_hint.to_string());
    let count = Value::I32(layer_count);
    let metadata = [
        ("general.architecture", &arch),
        ("controlvector.model_hint", &hint),
        ("controlvector.layer_count", &count),
    ];
    let named: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &named)
        .map_err(|e| Error::new(format!("cannot encode the control vector: {e}")))?;
    Ok((out.into_inner(), dropped.iter().map(|(k, _)| **k).collect()))
}

/// Writes `bytes` to `path` so that a partial file never appears, even if the process is killed.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    crate::file_set::write_all_or_nothing(&[crate::file_set::Entry { dest: path, bytes }])
}
