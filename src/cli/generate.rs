//! `train-vector generate`: continue a prompt with a steering vector applied, at one or several
//! strengths, next to the unsteered baseline.

use std::path::PathBuf;

use clap::Args;

use super::args::{multiplier, ModelArgs};
use super::print_data;
use crate::chat::stop_ids;
use crate::error::{Error, Result};
use crate::generate::{generate, prompt_ids, GenerateOptions, Sampling};
use crate::layers::LayerSpec;
use crate::model::{load_model, LoadOptions};
use crate::steer::Steering;
use crate::vector::SteeringVector;

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
        conflicts_with = "multipliers",
        value_parser = multiplier
    )]
    pub multiplier: f64,

    /// Several strengths, comma-separated, each generated in turn next to the unsteered baseline
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "LIST",
        value_delimiter = ',',
        value_parser = multiplier
    )]
    pub multipliers: Option<Vec<f64>>,

    /// Wrap the prompt in the model's chat format
    #[arg(long)]
    pub chat: bool,

    /// Most tokens to generate; generation also ends at an end-of-text or end-of-turn token
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_new_tokens: usize,

    /// Sampling temperature (>= 0); 0 is greedy decoding
    #[arg(long, default_value_t = 0.0, value_parser = temperature)]
    pub temperature: f64,

    /// Nucleus sampling: draw among the most likely tokens whose probabilities reach P (0 < P <= 1)
    #[arg(long, default_value_t = 1.0, value_name = "P", value_parser = top_p)]
    pub top_p: f64,

    /// Seed of the sampler: the same seed gives the same text
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Steer only these of the vector's layers (comma-separated)
    #[arg(long, allow_hyphen_values = true)]
    pub layers: Option<LayerSpec>,
}

fn temperature(s: &str) -> Result<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| Error::new("it must be a number >= 0"))
}

fn top_p(s: &str) -> Result<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|p| *p > 0.0 && *p <= 1.0)
        .ok_or_else(|| Error::new("it must be a number in (0, 1]"))
}

/// Flags resolved.
pub struct GenerateConfig {
    pub model: ModelArgs,
    pub vector: PathBuf,
    pub prompt: String,
    /// Strengths in the order they run; with `--multipliers`, the baseline 0 comes first.
    pub multipliers: Vec<f64>,
    pub chat: bool,
    pub max_new_tokens: usize,
    pub sampling: Option<Sampling>,
    pub layers: Option<LayerSpec>,
}

impl GenerateConfig {
    pub fn from_args(a: &GenerateArgs) -> GenerateConfig {
        let multipliers = match &a.multipliers {
            Some(list) if !list.contains(&0.0) => {
                std::iter::once(0.0).chain(list.clone()).collect()
            }
            Some(list) => list.clone(),
            None => vec![a.multiplier],
        };
        GenerateConfig {
            model: a.model.clone(),
            vector: a.vector.clone(),
            prompt: a.prompt.clone(),
            multipliers,
            chat: a.chat,
            max_new_tokens: a.max_new_tokens,
            sampling: (a.temperature > 0.0).then_some(Sampling {
                temperature: a.temperature,
                top_p: a.top_p,
                seed: a.seed,
            }),
            layers: a.layers.clone(),
        }
    }
}

pub fn run(a: &GenerateArgs) -> Result<()> {
    let cfg = GenerateConfig::from_args(a);
    let vector = SteeringVector::load(&cfg.vector)?;
    let spec = cfg.model.spec()?;
    let origin = cfg.vector.display().to_string();
    if let Some(w) = vector.check_fits(&origin, &spec.config, &cfg.model.model)? {
        log!("warning: {w}");
    }
    let layers = match &cfg.layers {
        Some(l) => Some(l.resolve(spec.num_layers())?),
        None => None,
    };
    let device = cfg.model.device.open()?;
    let dtype = cfg.model.dtype.resolve(&device);
    let loaded = load_model(spec, &LoadOptions::for_logits(device.clone(), dtype))?;
    let prompt = prompt_ids(&loaded.tokenizer, &cfg.prompt, cfg.chat)
        .map_err(|e| e.context("`--prompt`"))?;
    let opts = GenerateOptions {
        max_new_tokens: cfg.max_new_tokens,
        sampling: cfg.sampling,
        stop: stop_ids(&loaded.tokenizer, &loaded.model.config().eos_token_id),
    };
    let several = cfg.multipliers.len() > 1;
    for &m in &cfg.multipliers {
        let mut hook = Steering::new(&vector, m, layers.as_deref(), &device)?;
        let ids = generate(loaded.model.as_ref(), &prompt, &mut hook, &opts)?;
        let out = loaded
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| Error::new(format!("cannot decode the output: {e}")))?;
        if several {
            let label = if m == 0.0 { " (baseline)" } else { "" };
            print_data(&format!("=== multiplier {m}{label} ===\n{out}\n"));
        } else {
            print_data(&out);
        }
    }
    Ok(())
}
