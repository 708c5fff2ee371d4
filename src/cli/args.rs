//! Flags, with the Python script's names, defaults and meanings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

  # Use a vector: steered generation, inspection, llama.cpp export
  train-vector generate --model google/gemma-2-9b-it --vector v.safetensors --prompt \"Hi\" --multipliers -1,0,1
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
    /// Measure a vector per layer: projection separation and the steering effect on log-probs
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The steering vector (.safetensors, .pkl or llama.cpp .gguf)
    #[arg(long, value_name = "FILE")]
    pub vector: PathBuf,

    /// Which pairs to evaluate on: tom, irony, self_other or harmfulness
    #[arg(long, value_name = "TYPE")]
    pub contrast_type: String,

    /// Directory with the contrast pair files (default: the built-in ones)
    #[arg(long, conflicts_with = "pairs")]
    pub data_dir: Option<PathBuf>,

    /// A contrast pair file with the type's schema
    #[arg(long, value_name = "FILE")]
    pub pairs: Option<PathBuf>,

    /// Use the first N pairs
    #[arg(long, value_name = "N")]
    pub num_samples: Option<usize>,

    /// Steering strengths for the log-probability margins (tom and harmfulness)
    #[arg(long, default_value = "-1,-0.5,0,0.5,1", allow_hyphen_values = true)]
    pub multipliers: String,

    /// Print the numbers as JSON on stdout instead of tables
    #[arg(long)]
    pub json: bool,

    /// Draw separation by layer and margin against multiplier into a .png or .svg file
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// Where the model comes from and how it runs.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// HF model id, local model directory or .gguf file
    #[arg(long, default_value = "google/gemma-2-27b-it")]
    pub model: String,

    /// tokenizer.json to use instead of the model's own
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,

    /// Where to run: auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Compute precision: auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The steering vector (.safetensors, .pkl or llama.cpp .gguf)
    #[arg(long, value_name = "FILE")]
    pub vector: PathBuf,

    /// Text to continue
    #[arg(long)]
    pub prompt: String,

    /// Strength of the steering; negative values suppress
    #[arg(
        long,
        default_value_t = 0.5,
        allow_hyphen_values = true,
        conflicts_with = "multipliers"
    )]
    pub multiplier: f64,

    /// Several strengths, comma-separated, each generated in turn next to the unsteered baseline
    #[arg(long, allow_hyphen_values = true, value_name = "LIST")]
    pub multipliers: Option<String>,

    /// Wrap the prompt in the model's chat format
    #[arg(long)]
    pub chat: bool,

    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,

    /// 0 is greedy decoding
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,

    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Steer only these of the vector's layers (comma-separated)
    #[arg(long, allow_hyphen_values = true)]
    pub layers: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The vector file (.safetensors, .pkl or llama.cpp .gguf)
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The vector file (.safetensors, .pkl or llama.cpp .gguf)
    #[arg(long, value_name = "FILE")]
    pub vector: PathBuf,

    /// Output format
    #[arg(long, value_parser = ["gguf"], default_value = "gguf")]
    pub format: String,

    /// Output file
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// llama.cpp model hint (default: from the vector's metadata)
    #[arg(long)]
    pub model_hint: Option<String>,

    /// Replace the output file if it exists
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Type of contrast pairs to use for training: tom, irony, self_other, harmfulness;
    /// a comma-separated list or `all` trains several with one model load
    #[arg(long, value_name = "TYPE", required = true)]
    pub contrast_type: Option<String>,

    /// HF model id or a local model directory
    #[arg(long, default_value = "google/gemma-2-27b-it")]
    pub model: String,

    /// tokenizer.json to use instead of the model's own (required for a GGUF file without one
    /// beside it)
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,

    /// Comma-separated layer numbers (e.g. "10,20,30" or "-1,-2,-3") or "all"
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub layers: String,

    /// Contrast pairs per forward batch [default: 2]. Results do not depend on it; when given,
    /// it caps the pairs per batch (to save memory), otherwise batches are sized by tokens
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Padded tokens per forward batch [default: 4096 on CPU, 32768 on CUDA]
    #[arg(long, value_name = "N")]
    pub max_batch_tokens: Option<usize>,

    /// Number of training samples to use, the first N in file order (default: all available)
    #[arg(long, value_name = "N")]
    pub num_samples: Option<usize>,

    /// Directory to save trained vectors (created with parents)
    #[arg(long, default_value = "./trained_vectors")]
    pub output_dir: PathBuf,

    /// Directory containing contrast pair JSON files (default: the copies built into the binary)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Disable progress bar during training
    #[arg(long)]
    pub no_progress: bool,

    /// Where to run: auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Compute precision: auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16
    #[arg(long, default_value = "auto")]
    pub dtype: String,

    /// Replace vector files that already exist instead of stopping
    #[arg(long)]
    pub overwrite: bool,
}
