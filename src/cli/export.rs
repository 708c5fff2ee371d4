//! `train-vector export`: a vector as a llama.cpp control vector.

use super::args::ExportArgs;
use crate::error::{Error, Result};
use crate::export::{control_vector_gguf, write_atomic};
use crate::vector::SteeringVector;

pub fn run(a: &ExportArgs) -> Result<()> {
    let v = SteeringVector::load(&a.vector)?;
    if a.output.exists() && !a.overwrite {
        return Err(
            Error::new(format!("`{}` already exists", a.output.display()))
                .with_hint("pass `--overwrite` to replace it"),
        );
    }
    let hint = a
        .model_hint
        .clone()
        .or_else(|| v.metadata.get("model_type").cloned())
        .or_else(|| v.metadata.get("model").cloned())
        .unwrap_or_default();
    let layer_count = v
        .metadata
        .get("num_layers")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| v.layer_activations.keys().max().map_or(0, |m| m + 1));
    let (bytes, dropped) = control_vector_gguf(&v, &hint, layer_count)?;
    if !dropped.is_empty() {
        eprintln!("warning: layer 0 cannot be expressed as a llama.cpp control vector; left out");
    }
    write_atomic(&a.output, &bytes)?;
    println!("{}", a.output.display());
    crate::interrupt::stop_if_requested();
    Ok(())
}
