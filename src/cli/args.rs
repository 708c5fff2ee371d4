//! The command line's shape: the bare training form with the Python script's flags, the
//! subcommands, the model flags they share, and the value parsers clap runs on each flag.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

use super::evaluate::EvaluateArgs;
use super::export::ExportArgs;
use super::generate::GenerateArgs;
use super::inspect::InspectArgs;
use super::serve::ServeArgs;
use super::train::TrainArgs;
use crate::device::{DTypeSpec, DeviceSpec};
use crate::error::{Error, Result};
use crate::model::ModelSpec;

const EXAMPLES: &str = "\
Examples:
  # Train ToM vector with default settings (all layers)
  train-vector --contrast-type tom

  # Train on specific layers
  train-vector --contrast-type irony --layers 10,20,30

  # Use different model
  train-vector --contrast-type self_other --model google/gemma-2-9b-it

  # Limit training samples and specify output directory
  train-vector --contrast-type harmfulness --num-samples 100 --output-dir ./my_vectors/

  # Use negative layer indices (count from end)
  train-vector --contrast-type tom --layers=-1,-2,-3

  # Train every contrast type with one model load
  train-vector --contrast-type all --model ./models/gemma-2-2b-it

  # Use a vector: steered generation, evaluation, inspection, llama.cpp export
  train-vector generate --model google/gemma-2-9b-it --vector v.safetensors --prompt \"Hi\" --multipliers=-1,0,1
  train-vector evaluate --model google/gemma-2-9b-it --vector v.safetensors --contrast-type tom
  train-vector inspect v.safetensors
  train-vector export --vector v.safetensors --format gguf -o v.gguf";

#[derive(Debug, Parser)]
#[command(
    name = "train-vector",
    version,
    about = "Train steering vectors for contrastive pairs",
    after_help = EXAMPLES,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub train: TrainArgs,
}

/// Commands beyond training; without one, `train-vector` trains.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text with a steering vector added to the residual stream
    Generate(GenerateArgs),
    /// Print a vector file's metadata, layers and norms
    Inspect(InspectArgs),
    /// Convert a vector to another tool's format (llama.cpp control vector GGUF)
    Export(ExportArgs),
    /// Does a vector work? Choices on a benchmark or contrast pairs, steered and not, with intervals
    Evaluate(EvaluateArgs),
    /// Try vectors in the browser and from any OpenAI client: one model, every vector of a directory
    Serve(ServeArgs),
}

/// Where the model comes from and how it runs.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// HF repo id, local model directory (config.json, tokenizer.json, safetensors weights)
    /// or .gguf file
    #[arg(long, default_value = "google/gemma-2-27b-it")]
    pub model: String,

    /// tokenizer.json to use instead of the model's own (for a GGUF file without one beside it
    /// whose vocabulary does not rebuild)
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,

    /// Where to run: auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto", value_name = "DEV")]
    pub device: DeviceSpec,

    /// Compute precision: auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16
    #[arg(long, default_value = "auto", value_name = "T")]
    pub dtype: DTypeSpec,
}

impl ModelArgs {
    /// Locates the model and reads its config.
    pub fn spec(&self) -> Result<ModelSpec> {
        ModelSpec::open(&self.model, self.tokenizer.as_deref())
    }
}

/// A count that must be at least 1.
pub fn at_least_one(s: &str) -> Result<usize> {
    match usize::from_str(s.trim()) {
        Ok(0) => Err(Error::new("it must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(Error::new("not a whole number")),
    }
}

/// A steering strength: any finite number.
pub fn multiplier(s: &str) -> Result<f64> {
    f64::from_str(s.trim())
        .ok()
        .filter(|m| m.is_finite())
        .ok_or_else(|| {
            Error::new("not a finite number")
                .with_hint("use comma-separated numbers, e.g. `--multipliers=-1,0,0.5,1`")
        })
}

/// A plot file: `.png` or `.svg`.
pub fn plot_path(s: &str) -> Result<PathBuf> {
    let p = PathBuf::from(s);
    match p.extension().and_then(|e| e.to_str()) {
        Some("png" | "svg") => Ok(p),
        _ => Err(Error::new("it must end in .png or .svg")),
    }
}
