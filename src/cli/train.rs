//! The bare `train-vector --contrast-type ...` command: the Python script's four stages.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use chrono::Local;
use clap::Args;
use indicatif::HumanBytes;

use super::args::{at_least_one, ModelArgs};
use crate::aggregate::Aggregator;
use crate::chat::ChatFormat;
use crate::data::{ContrastPair, ContrastSelection, DataSource, LoadedPairs, PairSet};
use crate::device::describe;
use crate::error::{Error, Result};
use crate::file_set::check_writable;
use crate::layers::LayerSpec;
use crate::memory::{self, working_bytes, ByteSize, MemoryPlan};
use crate::model::{load_model, LayerType, LoadOptions, LoadedModel};
use crate::naming::base_name;
use crate::resources::peak_rss_bytes;
use crate::train::{
    default_max_batch_tokens, template_tokens, tokenize_pairs, train, ReadAt, TrainOptions,
    TrainStats,
};
use crate::vector::{Provenance, SteeringVector, VectorFiles};

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Type of contrast pairs to use for training: tom, irony, self_other, harmfulness;
    /// a comma-separated list or `all` trains several with one model load
    #[arg(long, value_name = "TYPE", required_unless_present = "pairs")]
    pub contrast_type: Option<ContrastSelection>,

    /// Train on this pair file too (repeatable): a JSON list in a contrast type's schema or of
    /// `{"positive": ..., "negative": ...}` objects; the vector is named by the file's stem
    #[arg(long, value_name = "FILE")]
    pub pairs: Vec<PathBuf>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Comma-separated layer numbers (e.g. "10,20,30" or "-1,-2,-3") or "all"
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub layers: LayerSpec,

    /// Contrast pairs per forward batch [default: 2]. Results do not depend on it; when given,
    /// it caps the pairs per batch (to save memory), otherwise batches are sized by tokens
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub batch_size: Option<usize>,

    /// Padded tokens per forward batch [default: 1024 on CPU, 32768 on CUDA]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub max_batch_tokens: Option<usize>,

    /// Number of training samples to use, the first N in file order (default: all available)
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub num_samples: Option<usize>,

    /// Directory to save trained vectors (created with parents)
    #[arg(long, default_value = "./trained_vectors")]
    pub output_dir: PathBuf,

    /// Directory containing contrast pair JSON files (default: the copies built into the binary)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Disable progress bar during training
    #[arg(long)]
    pub no_progress: bool,

    /// Replace vector files that already exist instead of stopping
    #[arg(long)]
    pub overwrite: bool,

    /// Memory the run may use (e.g. `512MiB`, `16GiB`, `2GB`) [default: what the machine has
    /// free, on CPU]. When the needed blocks do not fit, they are read from the checkpoint one
    /// at a time as the pairs run block by block; the vector is the same
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<ByteSize>,

    /// Read blocks from the checkpoint one at a time as all pairs run through them (memory for
    /// about two blocks), even if they would all fit. `=false` holds every block when they fit
    /// the memory budget [default: true on CPU, where each block runs once either way at the
    /// same speed; on CUDA only when they do not fit]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub stream_weights: Option<bool>,

    /// Run both sides of every pair in full, even where they share a prefix (the vector is
    /// the same either way; for comparisons)
    #[arg(long, hide = true)]
    pub no_prefix_sharing: bool,

    /// Where in each block to read, and later steer (steering-vectors' layer types):
    /// decoder_block (the block's output), self_attn, mlp, input_layernorm,
    /// post_attention_layernorm. The vector records it
    #[arg(long, value_name = "TYPE", default_value = "decoder_block")]
    pub layer_type: LayerType,

    /// Read this token of each side: a negative index counts back from the last real token
    /// (-1, the default, is the last; -2 the one before), a non-negative one counts from the
    /// start (BOS is 0)
    #[arg(
        long,
        value_name = "N",
        allow_hyphen_values = true,
        conflicts_with = "read"
    )]
    pub read_token_index: Option<i64>,

    /// Read `last-content`: the last token that is not a special or template token (for
    /// chat-formatted pairs), or `suffix-mean`: the mean over the tokens after the prefix the
    /// two sides share (the answer)
    #[arg(long, value_name = "MODE", value_parser = read_mode, allow_hyphen_values = true)]
    pub read: Option<ReadAt>,

    /// Format each side through the model's chat template: as the model's answer to the
    /// entry's prompt field (a type's scenario or instruction, or `prompt`), else as a user
    /// turn. Implies `--read last-content` unless a read option is given
    #[arg(long)]
    pub chat: bool,

    /// Scale each layer's vector to unit length
    #[arg(long)]
    pub normalize: bool,

    /// How the per-pair differences become each layer's vector: mean (the mean difference),
    /// pca or logistic (steering-vectors' aggregators), pca-diff or pca-center (repeng's
    /// methods, exact and deterministic). All but mean give unit vectors and hold every
    /// pair's activations: 2 x pairs x layers x hidden x 4 bytes (e.g. 1000 pairs at 46
    /// layers of 4608: 1.7 GB)
    #[arg(long, value_name = "METHOD", default_value = "mean")]
    pub aggregator: Aggregator,
}

/// `--read`: a named mode (an index goes through `--read-token-index`).
fn read_mode(s: &str) -> Result<ReadAt> {
    match s.parse::<ReadAt>() {
        Ok(ReadAt::Index(_)) => Err(Error::new(format!("`{s}` is a token index"))
            .with_hint(format!("use `--read-token-index {s}`"))),
        other => other,
    }
}

/// Flags resolved, before anything is read.
pub struct TrainConfig {
    /// The vectors to train, in order: the contrast types, then the pair files.
    pub sets: Vec<PairSet>,
    pub model: ModelArgs,
    pub layers: LayerSpec,
    /// `--batch-size` as given: a cap on pairs per batch.
    pub batch_size: Option<usize>,
    pub max_batch_tokens: Option<usize>,
    pub num_samples: Option<usize>,
    pub output_dir: PathBuf,
    pub data: DataSource,
    pub progress: bool,
    pub overwrite: bool,
    pub shared_prefix: bool,
    pub max_memory: Option<u64>,
    /// `--stream-weights` as given; unset picks by device.
    pub stream_weights: Option<bool>,
    pub layer_type: LayerType,
    pub read: ReadAt,
    pub chat: bool,
    pub normalize: bool,
    pub aggregator: Aggregator,
}

impl TrainConfig {
    pub fn from_args(a: &TrainArgs) -> TrainConfig {
        TrainConfig {
            sets: a
                .contrast_type
                .iter()
                .flat_map(|c| c.0.iter().copied().map(PairSet::Type))
                .chain(a.pairs.iter().cloned().map(PairSet::File))
                .collect(),
            model: a.model.clone(),
            layers: a.layers.clone(),
            batch_size: a.batch_size,
            max_batch_tokens: a.max_batch_tokens,
            num_samples: a.num_samples,
            output_dir: a.output_dir.clone(),
            data: DataSource::from_dir(a.data_dir.clone()),
            progress: !a.no_progress,
            overwrite: a.overwrite,
            shared_prefix: !a.no_prefix_sharing,
            max_memory: a.max_memory.map(|b| b.0),
            stream_weights: a.stream_weights,
            layer_type: a.layer_type,
            read: match (a.read_token_index, a.read, a.chat) {
                (Some(i), _, _) => ReadAt::Index(i),
                (None, Some(mode), _) => mode,
                (None, None, true) => ReadAt::LastContent,
                (None, None, false) => ReadAt::default(),
            },
            chat: a.chat,
            normalize: a.normalize,
            aggregator: a.aggregator,
        }
    }

    /// The batch size the metadata records: as given, or the Python default of 2.
    pub fn batch_size_value(&self) -> usize {
        self.batch_size.unwrap_or(2)
    }
}

/// The loaded model and what was resolved against it.
struct Session {
    loaded: LoadedModel,
    layers: Vec<usize>,
    device: Device,
    dtype: DType,
    max_batch_tokens: usize,
    memory: MemoryPlan,
}

/// One vector's output files and base name.
struct Output {
    base: String,
    files: VectorFiles,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = TrainConfig::from_args(args);
    // Checked before any work, without creating anything: the directory itself is made only
    // when the first vector's files are named.
    check_writable(&cfg.output_dir).map_err(|e| {
        Error::new(format!(
            "`--output-dir` `{}` is not writable: {e}",
            cfg.output_dir.display()
        ))
    })?;
    let started = Instant::now();
    log_configuration(&cfg);
    let sets = load_sets(&cfg)?;
    let outputs = plan_outputs(&cfg, &sets)?;
    let session = open_model(&cfg)?;
    let mut total = TrainStats::default();
    for (set, out) in sets.iter().zip(&outputs) {
        let (vector, stats) = train_set(&cfg, &session, set)?;
        total.tokens += stats.tokens;
        total.forward_tokens += stats.forward_tokens;
        total.seconds += stats.seconds;
        save(&cfg, &session, set, out, vector, &stats)?;
        crate::interrupt::stop_if_requested();
    }
    summary(&outputs, &total, started, cfg.layer_type);
    Ok(())
}

fn log_configuration(cfg: &TrainConfig) {
    let rule = "=".repeat(70);
    log!("{rule}\nSteering Vector Training Pipeline\n{rule}");
    log!("\nConfiguration:");
    let names: Vec<String> = cfg.sets.iter().map(PairSet::name).collect();
    log!("  Contrast type: {}", names.join(", "));
    log!("  Model: {}", cfg.model.model);
    log!("  Layers: {}", cfg.layers);
    log!("  Batch size: {}", cfg.batch_size_value());
    log!(
        "  Read: token {} at {}, {} aggregator{}{}",
        cfg.read,
        cfg.layer_type,
        cfg.aggregator,
        if cfg.chat { ", chat-formatted" } else { "" },
        if cfg.normalize { ", unit norm" } else { "" }
    );
    log!("  Data: {}", cfg.data);
    log!("  Output directory: {}", cfg.output_dir.display());
}

/// [1/4]: every contrast type's pairs, validated before the model is touched.
fn load_sets(cfg: &TrainConfig) -> Result<Vec<LoadedPairs>> {
    log!("\n[1/4] Loading contrast pairs...");
    let mut sets = Vec::new();
    for set in &cfg.sets {
        let loaded = set.load(&cfg.data, cfg.num_samples)?;
        log!(
            "  ✓ Loaded {} pairs for '{}' from {}",
            loaded.pairs.len(),
            loaded.display_name,
            loaded.source
        );
        if let Some(n) = cfg.num_samples.filter(|&n| n > loaded.available) {
            log!(
                "  note: `--num-samples {n}` exceeds the {} pairs available; using all of them",
                loaded.available
            );
        }
        sets.push(loaded);
    }
    Ok(sets)
}

/// Names every output up front and refuses a clash before any training starts.
fn plan_outputs(cfg: &TrainConfig, sets: &[LoadedPairs]) -> Result<Vec<Output>> {
    let date = Local::now().format("%Y%m%d").to_string();
    let outputs: Vec<Output> = sets
        .iter()
        .map(|s| {
            let base = base_name(&s.key, &cfg.model.model, &cfg.layers, &date);
            let files = VectorFiles::new(&cfg.output_dir, &base);
            Output { base, files }
        })
        .collect();
    for (i, o) in outputs.iter().enumerate() {
        if outputs[..i].iter().any(|earlier| earlier.base == o.base) {
            return Err(Error::new(format!(
                "two of the sets to train would both be saved as `{}`",
                o.base
            ))
            .with_hint("rename one of the `--pairs` files, or train them in separate runs"));
        }
    }
    if !cfg.overwrite {
        if let Some(p) = outputs.iter().find_map(|o| o.files.existing()) {
            return Err(Error::new(format!("`{}` already exists", p.display()))
                .with_hint("pass `--overwrite` to replace it, or choose another `--output-dir`"));
        }
    }
    Ok(outputs)
}

/// [2/4]: the config, the layers it resolves, and the blocks up to the deepest of them.
fn open_model(cfg: &TrainConfig) -> Result<Session> {
    log!("\n[2/4] Loading model: {}", cfg.model.model);
    let spec = cfg.model.spec()?;
    let num_layers = spec.num_layers();
    let layers = cfg.layers.resolve(num_layers)?;
    let device = cfg.model.device.open()?;
    let dtype = cfg.model.dtype.resolve(&device);
    let deepest = layers.last().copied().unwrap_or(0);
    let max_batch_tokens = cfg
        .max_batch_tokens
        .unwrap_or_else(|| default_max_batch_tokens(&device));
    let blocks = spec.block_bytes(deepest + 1, dtype)?;
    let working = working_bytes(
        max_batch_tokens,
        spec.hidden_size(),
        spec.config.intermediate_size,
    );
    let budget = cfg
        .max_memory
        .or_else(|| (!device.is_cuda()).then(memory::available).flatten());
    let always_stream = cfg.stream_weights.unwrap_or(!device.is_cuda());
    let plan = memory::plan(&blocks, working, budget, always_stream)?;
    let mut opts = LoadOptions::for_training(device.clone(), dtype, Some(deepest + 1));
    opts.stream_blocks = plan.stream;
    let loaded = load_model(spec, &opts)?;
    log!("  ✓ Model loaded ({:?} on {})", dtype, describe(&device));
    if plan.stream {
        log!(
            "  Blocks are read one at a time as they run ({} held at most{})",
            HumanBytes(plan.resident),
            budget.map_or(String::new(), |b| format!(", within {}", HumanBytes(b)))
        );
    }
    log!("  Model has {num_layers} layers");
    match &cfg.layers {
        LayerSpec::All => log!("  Training on ALL {num_layers} layers"),
        LayerSpec::List(l) => log!("  Training on layers: {l:?} (absolute: {layers:?})"),
    }
    Ok(Session {
        loaded,
        layers,
        max_batch_tokens,
        device,
        dtype,
        memory: plan,
    })
}

/// [3/4]: one contrast type's vector.
fn train_set(
    cfg: &TrainConfig,
    s: &Session,
    set: &LoadedPairs,
) -> Result<(SteeringVector, TrainStats)> {
    log!("\n[3/4] Training steering vector: {}...", set.display_name);
    let cap = match cfg.batch_size {
        Some(n) => format!(", at most {n} pairs"),
        None => String::new(),
    };
    log!(
        "  Processing {} contrast pairs ({} sequences, at most {} padded tokens per batch{cap})",
        set.pairs.len(),
        2 * set.pairs.len(),
        s.max_batch_tokens,
    );
    let model = s.loaded.model.as_ref();
    let tokenizer = &s.loaded.tokenizer;
    let pairs: Vec<ContrastPair> = match cfg.chat {
        true => {
            let format = ChatFormat::detect(tokenizer);
            set.pairs.iter().map(|p| p.in_chat(format)).collect()
        }
        false => set.pairs.clone(),
    };
    let tokens = tokenize_pairs(tokenizer, &pairs, model).map_err(|e| e.context(&set.source))?;
    let opts = TrainOptions {
        layers: s.layers.clone(),
        max_pairs_per_batch: cfg.batch_size,
        max_batch_tokens: s.max_batch_tokens,
        progress: cfg.progress,
        shared_prefix: cfg.shared_prefix,
        layer_major: s.memory.stream,
        activation_budget: s.memory.activation_budget,
        layer_type: cfg.layer_type,
        read: cfg.read,
        template_tokens: match cfg.read {
            ReadAt::LastContent => template_tokens(tokenizer, &tokens),
            _ => Vec::new(),
        },
        normalize: cfg.normalize,
        aggregator: cfg.aggregator,
    };
    let (vector, stats) = train(model, &tokens, &opts).map_err(|e| e.context(&set.source))?;
    log!(
        "  ✓ Training complete! ({} tokens, {} of them run with shared prefixes once, in {} batches, {:.2}s)",
        stats.tokens,
        stats.forward_tokens,
        stats.batches,
        stats.seconds
    );
    Ok((vector, stats))
}

/// [4/4]: the three files, all or none, and their paths on stdout.
fn save(
    cfg: &TrainConfig,
    s: &Session,
    set: &LoadedPairs,
    out: &Output,
    mut vector: SteeringVector,
    stats: &TrainStats,
) -> Result<()> {
    log!("\n[4/4] Saving steering vector...");
    let now = Local::now();
    let model_cfg = s.loaded.model.config();
    vector.provenance = Provenance {
        contrast_type: Some(set.key.clone()),
        contrast_name: Some(set.display_name.clone()),
        model: Some(cfg.model.model.clone()),
        num_layers: Some(model_cfg.num_hidden_layers),
        layers: Some(cfg.layers.clone()),
        num_samples: Some(set.pairs.len()),
        batch_size: Some(cfg.batch_size_value()),
        timestamp: Some(now.format("%Y%m%d_%H%M%S").to_string()),
        date_trained: Some(now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
        filename: Some(out.base.clone()),
        layers_resolved: Some(s.layers.clone()),
        hidden_size: Some(model_cfg.hidden_size),
        model_type: Some(model_cfg.model_type.clone()),
        dtype: Some(format!("{:?}", s.dtype).to_lowercase()),
        device: Some(describe(&s.device)),
        data_source: Some(set.source.clone()),
        tokens: Some(stats.tokens),
        seconds: Some(stats.seconds),
        tool_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        aggregator: Some(cfg.aggregator.to_string()),
        read_token: Some(cfg.read.to_string()),
        normalized: Some(cfg.normalize),
        chat: Some(cfg.chat),
        extra: Default::default(),
    };
    out.files.write(&vector)?;
    for p in out.files.all() {
        log!("  Saved: {}", p.display());
        super::print_data(&p.display().to_string());
    }
    Ok(())
}

fn summary(outputs: &[Output], total: &TrainStats, started: Instant, layer_type: LayerType) {
    let rule = "=".repeat(70);
    log!("\n{rule}\n✓ Training complete!\n{rule}");
    if let Some(out) = outputs.first() {
        log!("\nTo use this vector in Python:");
        log!("  from safetensors.torch import load_file");
        log!("  from steering_vectors import SteeringVector");
        log!(
            "  tensors = load_file('{}')",
            out.files.safetensors.display()
        );
        log!(
            "  vec = SteeringVector({{int(k.split('_')[1]): v for k, v in tensors.items()}}, '{}')",
            layer_type
        );
        log!("  with vec.apply(model, multiplier=0.3):");
        log!("      # generate text here");
    }
    let rate = if total.seconds > 0.0 {
        total.tokens as f64 / total.seconds
    } else {
        0.0
    };
    let peak = peak_rss_bytes().map_or("unknown".to_string(), |b| HumanBytes(b).to_string());
    log!(
        "\nTokens processed: {} ({} run, {rate:.0} tokens/s); total time {:.2}s; peak memory {peak}",
        total.tokens,
        total.forward_tokens,
        started.elapsed().as_secs_f64(),
    );
}
