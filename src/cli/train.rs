//! The bare `train-vector --contrast-type ...` command: the Python script's four stages.

use std::path::PathBuf;
use std::time::Instant;

use chrono::Local;
use serde_json::json;

use super::args::TrainArgs;
use crate::data::{load_pairs, parse_contrast_types, ContrastType, DataSource, LoadedPairs};
use crate::device::{describe, DTypeSpec, DeviceSpec};
use crate::error::{Error, Result};
use crate::file_set::check_writable;
use crate::layers::LayerSpec;
use crate::model::load::{inspect, locate};
use crate::model::{load_model, LoadOptions};
use crate::naming::base_name;
use crate::resources::{human_bytes, peak_rss_bytes};
use crate::train::{tokenize_pairs, train, TrainOptions};
use crate::vector::{SteeringVector, VectorFiles};

/// Flags checked and resolved, before anything is read.
pub struct TrainConfig {
    pub contrasts: Vec<ContrastType>,
    pub model: String,
    pub tokenizer: Option<PathBuf>,
    pub layers: LayerSpec,
    /// `--batch-size` as given: a cap on pairs per batch.
    pub batch_size: Option<usize>,
    pub max_batch_tokens: Option<usize>,
    pub num_samples: Option<usize>,
    pub output_dir: PathBuf,
    pub data: DataSource,
    pub progress: bool,
    pub device: DeviceSpec,
    pub dtype: DTypeSpec,
    pub overwrite: bool,
}

impl TrainConfig {
    pub fn from_args(a: &TrainArgs) -> Result<TrainConfig> {
        if a.batch_size == Some(0) {
            return Err(Error::new("`--batch-size` must be at least 1"));
        }
        if a.max_batch_tokens == Some(0) {
            return Err(Error::new("`--max-batch-tokens` must be at least 1"));
        }
        if a.num_samples == Some(0) {
            return Err(Error::new("`--num-samples` must be at least 1")
                .with_hint("leave it out to train on every pair"));
        }
        Ok(TrainConfig {
            contrasts: parse_contrast_types(a.contrast_type.as_deref().unwrap_or_default())?,
            model: a.model.clone(),
            tokenizer: a.tokenizer.clone(),
            layers: LayerSpec::parse(&a.layers)?,
            batch_size: a.batch_size,
            max_batch_tokens: a.max_batch_tokens,
            num_samples: a.num_samples,
            output_dir: a.output_dir.clone(),
            data: match &a.data_dir {
                Some(d) => DataSource::Dir(d.clone()),
                None => DataSource::Shipped,
            },
            progress: !a.no_progress,
            device: DeviceSpec::parse(&a.device)?,
            dtype: DTypeSpec::parse(&a.dtype)?,
            overwrite: a.overwrite,
        })
    }
}

impl TrainConfig {
    /// The batch size the metadata records: as given, or the Python default of 2.
    pub fn batch_size_value(&self) -> usize {
        self.batch_size.unwrap_or(2)
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = TrainConfig::from_args(args)?;
    // Checked before any work, without creating anything: the directory itself is made only
    // when the first vector's files are named.
    check_writable(&cfg.output_dir).map_err(|e| {
        Error::new(format!(
            "`--output-dir` `{}` is not writable: {e}",
            cfg.output_dir.display()
        ))
    })?;
    train_all(&cfg, args)
}

macro_rules! log {
    ($($t:tt)*) => { eprintln!($($t)*) };
}

fn train_all(cfg: &TrainConfig, args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let rule = "=".repeat(70);
    log!("{rule}\nSteering Vector Training Pipeline\n{rule}");
    log!("\nConfiguration:");
    let names: Vec<_> = cfg.contrasts.iter().map(|c| c.key()).collect();
    log!("  Contrast type: {}", names.join(", "));
    log!("  Model: {}", cfg.model);
    log!("  Layers: {}", args.layers);
    log!("  Batch size: {}", cfg.batch_size_value());
    log!(
        "  Data: {}",
        match &cfg.data {
            DataSource::Shipped => "built-in contrast pairs".to_string(),
            DataSource::Dir(d) => d.display().to_string(),
        }
    );
    log!("  Output directory: {}", cfg.output_dir.display());

    log!("\n[1/4] Loading contrast pairs...");
    let mut sets: Vec<LoadedPairs> = Vec::new();
    for &t in &cfg.contrasts {
        let loaded = load_pairs(&cfg.data, t, cfg.num_samples)?;
        log!(
            "  ✓ Loaded {} pairs for '{}' from {}",
            loaded.pairs.len(),
            t.display_name(),
            cfg.data.describe(t)
        );
        if let Some(n) = cfg.num_samples {
            if n > loaded.available {
                log!(
                    "  note: `--num-samples {n}` exceeds the {} pairs available; using all of them",
                    loaded.available
                );
            }
        }
        sets.push(loaded);
    }

    let date = Local::now().format("%Y%m%d").to_string();
    let outputs: Vec<(String, VectorFiles)> = sets
        .iter()
        .map(|s| {
            let base = base_name(s.contrast.key(), &cfg.model, &cfg.layers, &date);
            let files = VectorFiles::new(&cfg.output_dir, &base);
            (base, files)
        })
        .collect();
    if !cfg.overwrite {
        for (_, files) in &outputs {
            if let Some(p) = files.existing() {
                return Err(
                    Error::new(format!("`{}` already exists", p.display())).with_hint(
                        "pass `--overwrite` to replace it, or choose another `--output-dir`",
                    ),
                );
            }
        }
    }

    log!("\n[2/4] Loading model: {}", cfg.model);
    let spec = inspect(locate(&cfg.model, cfg.tokenizer.as_deref())?)?;
    let num_layers = spec.num_layers;
    let model_type = spec
        .config
        .text
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let layers = cfg.layers.resolve(num_layers)?;
    let device = cfg.device.open()?;
    let dtype = cfg.dtype.resolve(&device);
    let deepest = layers.last().copied().unwrap_or(0);
    let max_batch_tokens =
        cfg.max_batch_tokens
            .unwrap_or(if device.is_cuda() { 32768 } else { 4096 });
    let loaded = load_model(
        spec,
        &LoadOptions {
            device: device.clone(),
            dtype,
            num_blocks: Some(deepest + 1),
            full_embedding: false,
            with_head: false,
        },
    )?;
    log!("  ✓ Model loaded ({:?} on {})", dtype, describe(&device));
    log!("  Model has {num_layers} layers");
    match &cfg.layers {
        LayerSpec::All => log!("  Training on ALL {num_layers} layers"),
        LayerSpec::List(l) => log!("  Training on layers: {l:?} (absolute: {layers:?})"),
    }

    let mut total_tokens = 0;
    let mut train_seconds = 0.0;
    for (set, (base, files)) in sets.iter().zip(&outputs) {
        log!(
            "\n[3/4] Training steering vector: {}...",
            set.contrast.display_name()
        );
        log!(
            "  Processing {} contrast pairs ({} sequences, at most {} padded tokens per batch{})",
            set.pairs.len(),
            2 * set.pairs.len(),
            max_batch_tokens,
            match cfg.batch_size {
                Some(n) => format!(", at most {n} pairs"),
                None => String::new(),
            }
        );
        let tokens = tokenize_pairs(&loaded.tokenizer, &set.pairs, loaded.model.as_ref())
            .map_err(|e| e.context(cfg.data.describe(set.contrast)))?;
        let (vectors, stats) = train(
            loaded.model.as_ref(),
            &tokens,
            &TrainOptions {
                layers: layers.clone(),
                max_pairs_per_batch: cfg.batch_size,
                max_batch_tokens,
                progress: cfg.progress,
                pad_id: loaded.pad_id,
            },
        )?;
        total_tokens += stats.tokens;
        train_seconds += stats.seconds;
        log!(
            "  ✓ Training complete! ({} tokens in {} batches, {:.2}s)",
            stats.tokens,
            stats.batches,
            stats.seconds
        );

        log!("\n[4/4] Saving steering vector...");
        let now = Local::now();
        let timestamp = now.format("%Y%m%d_%H%M%S").to_string();
        let date_trained = now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        let mut vector = SteeringVector::new(vectors);
        let provenance = [
            ("contrast_type", set.contrast.key().to_string()),
            ("contrast_name", set.contrast.display_name().to_string()),
            ("model", cfg.model.clone()),
            ("num_samples", set.pairs.len().to_string()),
            ("num_layers", num_layers.to_string()),
            ("model_type", model_type.clone()),
            ("date_trained", date_trained.clone()),
            (
                "tool",
                format!("train-vector {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        for (k, v) in provenance {
            vector.metadata.insert(k.to_string(), v);
        }
        let meta = json!({
            "contrast_type": set.contrast.key(),
            "contrast_name": set.contrast.display_name(),
            "model": cfg.model,
            "num_layers": num_layers,
            "layers": cfg.layers.to_json(),
            "num_samples": set.pairs.len(),
            "batch_size": cfg.batch_size_value(),
            "timestamp": timestamp,
            "date_trained": date_trained,
            "filename": base,
            "layers_resolved": layers,
            "hidden_size": loaded.model.hidden_size(),
            "layer_type": vector.layer_type,
            "dtype": format!("{dtype:?}").to_lowercase(),
            "device": describe(&device),
            "data_source": cfg.data.describe(set.contrast),
            "tokens": stats.tokens,
            "seconds": stats.seconds,
            "tool_version": env!("CARGO_PKG_VERSION"),
        });
        files.write(&vector, &meta)?;
        for p in files.all() {
            log!("  Saved: {}", p.display());
            println!("{}", p.display());
        }
        crate::interrupt::stop_if_requested();
    }

    let rule_line = "=".repeat(70);
    log!("\n{rule_line}\n✓ Training complete!\n{rule_line}");
    if let Some((_, files)) = outputs.first() {
        log!("\nTo use this vector in Python:");
        log!("  from safetensors.torch import load_file");
        log!("  from steering_vectors import SteeringVector");
        log!("  tensors = load_file('{}')", files.safetensors.display());
        log!("  vec = SteeringVector({{int(k.split('_')[1]): v for k, v in tensors.items()}}, 'decoder_block')");
        log!("  with vec.apply(model, multiplier=0.3):");
        log!("      # generate text here");
    }
    let rate = if train_seconds > 0.0 {
        total_tokens as f64 / train_seconds
    } else {
        0.0
    };
    log!(
        "\nTokens processed: {total_tokens} ({rate:.0} tokens/s); total time {:.2}s; peak memory {}",
        started.elapsed().as_secs_f64(),
        peak_rss_bytes()
            .map(human_bytes)
            .unwrap_or_else(|| "unknown".to_string())
    );
    Ok(())
}
