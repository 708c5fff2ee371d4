//! `train-vector inspect FILE`: what a vector file holds.

use std::path::PathBuf;

use clap::Args;

use super::print_data;
use crate::error::Result;
use crate::vector::SteeringVector;

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The vector file (.safetensors, .pkl or llama.cpp .gguf)
    pub file: PathBuf,
}

pub fn run(a: &InspectArgs) -> Result<()> {
    let v = SteeringVector::load(&a.file)?;
    print_data(&format!("file: {}", a.file.display()));
    print_data(&format!("layer_type: {}", v.layer_type));
    print_data(&format!("hidden_size: {}", v.hidden_size().unwrap_or(0)));
    print_data("provenance:");
    for (k, val) in v.provenance.to_strings() {
        print_data(&format!("  {k}: {val}"));
    }
    print_data(&format!("layers: {}", v.layer_activations.len()));
    print_data(&format!("{:>6}  {:>12}", "layer", "L2 norm"));
    for (l, norm) in v.norms() {
        print_data(&format!("{l:>6}  {norm:>12.6}"));
    }
    Ok(())
}
