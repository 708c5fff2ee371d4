//! `train-vector export`: a vector as a llama.cpp control vector.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::print_data;
use crate::error::{Error, Result};
use crate::export::{control_vector_gguf, write_atomic};
use crate::model::LayerType;
use crate::vector::SteeringVector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// llama.cpp control vector (`--control-vector`)
    Gguf,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The vector file (.safetensors, .pkl or llama.cpp .gguf)
    #[arg(long, value_name = "FILE")]
    pub vector: PathBuf,

    /// Output format
    #[arg(long, value_enum, default_value_t = ExportFormat::Gguf)]
    pub format: ExportFormat,

    /// Output file
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// llama.cpp model hint (default: the vector's model type, else its model)
    #[arg(long)]
    pub model_hint: Option<String>,

    /// Replace the output file if it exists
    #[arg(long)]
    pub overwrite: bool,

    /// Only `decoder_block`: llama.cpp adds a control vector to each block's output, so a
    /// vector read elsewhere in the block cannot be exported
    #[arg(long, value_name = "TYPE", default_value = "decoder_block")]
    pub layer_type: LayerType,
}

const BLOCK_OUTPUT_ONLY: &str =
    "llama.cpp adds control vectors at each block's output; train with `--layer-type decoder_block` to export";

pub fn run(a: &ExportArgs) -> Result<()> {
    if a.layer_type != LayerType::DecoderBlock {
        return Err(Error::new(format!(
            "`--layer-type {}`: GGUF export is decoder_block only",
            a.layer_type
        ))
        .with_hint(BLOCK_OUTPUT_ONLY));
    }
    let v = SteeringVector::load(&a.vector)?;
    if v.layer_type != LayerType::DecoderBlock.name() {
        return Err(Error::new(format!(
            "`{}` was trained at layer type `{}`; GGUF export is decoder_block only",
            a.vector.display(),
            v.layer_type
        ))
        .with_hint(BLOCK_OUTPUT_ONLY));
    }
    if a.output.exists() && !a.overwrite {
        return Err(
            Error::new(format!("`{}` already exists", a.output.display()))
                .with_hint("pass `--overwrite` to replace it"),
        );
    }
    let p = &v.provenance;
    let hint = a
        .model_hint
        .clone()
        .or_else(|| p.model_type.clone())
        .or_else(|| p.model.clone())
        .unwrap_or_default();
    let layer_count = p
        .num_layers
        .unwrap_or_else(|| v.layer_activations.keys().max().map_or(0, |m| m + 1));
    let (bytes, dropped) = match a.format {
        ExportFormat::Gguf => control_vector_gguf(&v, &hint, layer_count)?,
    };
    if !dropped.is_empty() {
        log!("warning: layer 0 cannot be expressed as a llama.cpp control vector; left out");
    }
    write_atomic(&a.output, &bytes)?;
    print_data(&a.output.display().to_string());
    crate::interrupt::stop_if_requested();
    Ok(())
}
