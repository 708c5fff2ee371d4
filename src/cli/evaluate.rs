//! `train-vector evaluate`: a vector's separation and steering effect per layer, as tables,
//! JSON, or a plot.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::args::{at_least_one, multiplier, plot_path, ModelArgs};
use super::print_data;
use crate::data::{load_pairs, ContrastType, DataSource};
use crate::error::Result;
use crate::evaluate::{behaviour, separation, Margin, Separation};
use crate::model::{load_model, LoadOptions};
use crate::plot::plot;
use crate::train::{default_max_batch_tokens, tokenize_pairs, TrainOptions};
use crate::vector::SteeringVector;

#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The steering vector (.safetensors, .pkl or llama.cpp .gguf)
    #[arg(long, value_name = "FILE")]
    pub vector: PathBuf,

    /// Which pairs to evaluate on: tom, irony, self_other or harmfulness
    #[arg(long, value_name = "TYPE")]
    pub contrast_type: ContrastType,

    /// Directory with the contrast pair files (default: the built-in ones)
    #[arg(long, value_name = "DIR", conflicts_with = "pairs")]
    pub data_dir: Option<PathBuf>,

    /// A contrast pair file with the type's schema
    #[arg(long, value_name = "FILE")]
    pub pairs: Option<PathBuf>,

    /// Use the first N pairs
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub num_samples: Option<usize>,

    /// Steering strengths for the log-probability margins (tom and harmfulness)
    #[arg(
        long,
        default_value = "-1,-0.5,0,0.5,1",
        allow_hyphen_values = true,
        value_delimiter = ',',
        value_parser = multiplier
    )]
    pub multipliers: Vec<f64>,

    /// Print the numbers as JSON on stdout instead of tables
    #[arg(long)]
    pub json: bool,

    /// Draw separation by layer and margin against multiplier into a .png or .svg file
    #[arg(long, value_name = "FILE", value_parser = plot_path)]
    pub plot: Option<PathBuf>,
}

/// Flags resolved.
pub struct EvaluateConfig {
    pub model: ModelArgs,
    pub vector: PathBuf,
    pub contrast: ContrastType,
    pub data: DataSource,
    pub num_samples: Option<usize>,
    pub multipliers: Vec<f64>,
    pub json: bool,
    pub plot: Option<PathBuf>,
}

impl EvaluateConfig {
    pub fn from_args(a: &EvaluateArgs) -> EvaluateConfig {
        EvaluateConfig {
            model: a.model.clone(),
            vector: a.vector.clone(),
            contrast: a.contrast_type,
            data: match &a.pairs {
                Some(file) => DataSource::File(file.clone()),
                None => DataSource::from_dir(a.data_dir.clone()),
            },
            num_samples: a.num_samples,
            multipliers: a.multipliers.clone(),
            json: a.json,
            plot: a.plot.clone(),
        }
    }
}

pub fn run(a: &EvaluateArgs) -> Result<()> {
    let cfg = EvaluateConfig::from_args(a);
    let vector = SteeringVector::load(&cfg.vector)?;
    let pairs = load_pairs(&cfg.data, cfg.contrast, cfg.num_samples)?.pairs;
    let spec = cfg.model.spec()?;
    let origin = cfg.vector.display().to_string();
    if let Some(w) = vector.check_fits(&origin, &spec.config, &cfg.model.model)? {
        log!("warning: {w}");
    }
    let device = cfg.model.device.open()?;
    let dtype = cfg.model.dtype.resolve(&device);
    let loaded = load_model(spec, &LoadOptions::for_logits(device.clone(), dtype))?;
    let model = loaded.model.as_ref();
    let tokens = tokenize_pairs(&loaded.tokenizer, &pairs, model)?;
    let opts = TrainOptions {
        layers: vector.layer_activations.keys().copied().collect(),
        max_pairs_per_batch: None,
        max_batch_tokens: default_max_batch_tokens(&device),
        progress: false,
    };
    let sep = separation(model, &tokens, &vector, &opts)?;
    let shared_prefix = matches!(cfg.contrast, ContrastType::Tom | ContrastType::Harmfulness);
    let margins = if shared_prefix {
        behaviour(model, &tokens, &vector, &cfg.multipliers)?
    } else {
        Vec::new()
    };

    if let Some(p) = &cfg.plot {
        plot(p, &sep, &margins)?;
        log!("plot: {}", p.display());
    }
    if cfg.json {
        let out = json!({
            "vector": origin,
            "contrast_type": cfg.contrast.key(),
            "pairs": pairs.len(),
            "separation": sep,
            "margins": margins,
        });
        print_data(&serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_tables(&sep, &margins, &cfg.multipliers, pairs.len());
    }
    Ok(())
}

fn print_tables(sep: &[Separation], margins: &[Margin], multipliers: &[f64], n: usize) {
    print_data(&format!("Projection separation on {n} pairs"));
    print_data(&format!(
        "{:>6}  {:>9}  {:>7}",
        "layer", "accuracy", "gap_sd"
    ));
    for s in sep {
        print_data(&format!(
            "{:>6}  {:>9.3}  {:>7.3}",
            s.layer, s.accuracy, s.gap_sd
        ));
    }
    if margins.is_empty() {
        return;
    }
    print_data("\nMean log-prob margin of the positive continuation, by steering multiplier");
    let header: Vec<String> = multipliers.iter().map(|m| format!("{m:>8}")).collect();
    print_data(&format!("{:>9}  {}", "steer", header.join(" ")));
    let mut rows: Vec<&str> = margins.iter().map(|m| m.steer.as_str()).collect();
    rows.dedup();
    for r in rows {
        let cells: Vec<String> = margins
            .iter()
            .filter(|m| m.steer == r)
            .map(|m| format!("{:>8.3}", m.margin))
            .collect();
        print_data(&format!("{r:>9}  {}", cells.join(" ")));
    }
}
