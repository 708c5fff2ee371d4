//! `train-vector generate`: continue a prompt (or every item of a prompts file) with a
//! steering vector applied, at one or several strengths, next to the unsteered baseline.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{at_least_one, multiplier, ModelArgs};
use super::print_data;
use crate::chat::stop_ids;
use crate::completions::{degenerate, load_prompts, Completion, Output};
use crate::error::{Error, Result};
use crate::generate::{generate_batch, prompt_ids, GenerateOptions, Sampling};
use crate::layers::LayerSpec;
use crate::model::{load_model, LoadOptions, LoadedModel};
use crate::steer::Steering;
use crate::vector::SteeringVector;

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "prompts"])))]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The steering vector (.safetensors, .pkl or llama.cpp .gguf)
    #[arg(long, value_name = "FILE")]
    pub vector: PathBuf,

    /// Text to continue
    #[arg(long)]
    pub prompt: Option<String>,

    /// A JSON list of items to continue, each at every multiplier, batched (needs `--output`)
    #[arg(long, value_name = "FILE", requires = "output")]
    pub prompts: Option<PathBuf>,

    /// Where `--prompts` writes each item with its completions (JSON), rewritten after every
    /// batch so a stopped run keeps what it finished
    #[arg(long, short, value_name = "FILE", requires = "prompts")]
    pub output: Option<PathBuf>,

    /// The items' prompt field (default: `prompt`, else `question`)
    #[arg(long, value_name = "NAME", requires = "prompts")]
    pub field: Option<String>,

    /// Continue an `--output` an earlier run left, after its last finished item
    #[arg(long, requires = "prompts")]
    pub resume: bool,

    /// Prompts generated together in one batch
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = at_least_one)]
    pub batch_size: usize,

    /// No progress bar
    #[arg(long)]
    pub no_progress: bool,

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

/// What to continue.
pub enum Input {
    One(String),
    Dataset {
        prompts: PathBuf,
        output: PathBuf,
        field: Option<String>,
        resume: bool,
    },
}

/// Flags resolved.
pub struct GenerateConfig {
    pub model: ModelArgs,
    pub vector: PathBuf,
    pub input: Input,
    pub batch_size: usize,
    pub progress: bool,
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
        let input = match (&a.prompts, &a.output) {
            (Some(prompts), Some(output)) => Input::Dataset {
                prompts: prompts.clone(),
                output: output.clone(),
                field: a.field.clone(),
                resume: a.resume,
            },
            _ => Input::One(a.prompt.clone().unwrap_or_default()),
        };
        GenerateConfig {
            model: a.model.clone(),
            vector: a.vector.clone(),
            input,
            batch_size: a.batch_size,
            progress: !a.no_progress,
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

/// The model, the vector and how to steer it, ready to generate.
struct Ready {
    loaded: LoadedModel,
    vector: SteeringVector,
    layers: Option<Vec<usize>>,
    opts: GenerateOptions,
}

impl Ready {
    fn open(cfg: &GenerateConfig) -> Result<Ready> {
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
        let loaded = load_model(spec, &LoadOptions::for_logits(device, dtype))?;
        let opts = GenerateOptions {
            max_new_tokens: cfg.max_new_tokens,
            sampling: cfg.sampling,
            stop: stop_ids(&loaded.tokenizer, &loaded.model.config().eos_token_id),
        };
        Ok(Ready {
            loaded,
            vector,
            layers,
            opts,
        })
    }

    /// Continues `prompts` (token ids) at multiplier `m`, as text.
    fn continue_at(&self, prompts: &[Vec<u32>], m: f64) -> Result<Vec<(String, usize)>> {
        let model = self.loaded.model.as_ref();
        let mut hook = Steering::new(&self.vector, m, self.layers.as_deref(), model.device())?;
        generate_batch(model, prompts, &mut hook, &self.opts)?
            .into_iter()
            .map(|ids| {
                let text = self
                    .loaded
                    .tokenizer
                    .decode(&ids, true)
                    .map_err(|e| Error::new(format!("cannot decode the output: {e}")))?;
                Ok((text, ids.len()))
            })
            .collect()
    }
}

pub fn run(a: &GenerateArgs) -> Result<()> {
    let cfg = GenerateConfig::from_args(a);
    match &cfg.input {
        Input::One(prompt) => run_one(&cfg, prompt),
        Input::Dataset {
            prompts,
            output,
            field,
            resume,
        } => run_dataset(&cfg, prompts, output, field.as_deref(), *resume),
    }
}

fn run_one(cfg: &GenerateConfig, prompt: &str) -> Result<()> {
    let ready = Ready::open(cfg)?;
    let ids = prompt_ids(&ready.loaded.tokenizer, prompt, cfg.chat)
        .map_err(|e| e.context("`--prompt`"))?;
    let several = cfg.multipliers.len() > 1;
    for &m in &cfg.multipliers {
        let (out, _) = ready.continue_at(std::slice::from_ref(&ids), m)?.remove(0);
        if several {
            let label = if m == 0.0 { " (baseline)" } else { "" };
            print_data(&format!("=== multiplier {m}{label} ===\n{out}\n"));
        } else {
            print_data(&out);
        }
    }
    Ok(())
}

/// Every item at every multiplier, a batch of items at a time, the output saved after each.
fn run_dataset(
    cfg: &GenerateConfig,
    prompts: &Path,
    output: &Path,
    field: Option<&str>,
    resume: bool,
) -> Result<()> {
    let items = load_prompts(prompts, field)?;
    let mut out = Output::open(output, resume, &items, &cfg.multipliers)?;
    let ready = Ready::open(cfg)?;
    let tok = &ready.loaded.tokenizer;
    let model = ready.loaded.model.as_ref();
    let ids = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let ids = prompt_ids(tok, &item.prompt, cfg.chat)?;
            match model.max_positions().filter(|&m| ids.len() >= m) {
                Some(max) => Err(Error::new(format!(
                    "item {i} is {} tokens long, more than the model's context of {max} allows",
                    ids.len()
                ))),
                None => Ok(ids),
            }
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|e| e.context(format!("`{}`", prompts.display())))?;
    let start = out.finished();
    if start > 0 {
        log!(
            "resuming `{}` after {start} finished items",
            output.display()
        );
    }
    let bar = progress_bar(items.len(), start, cfg.progress);
    for first in (start..items.len()).step_by(cfg.batch_size) {
        let end = (first + cfg.batch_size).min(items.len());
        let mut per_item: Vec<Vec<Completion>> = vec![Vec::new(); end - first];
        for &m in &cfg.multipliers {
            for (slot, (completion, tokens)) in per_item
                .iter_mut()
                .zip(ready.continue_at(&ids[first..end], m)?)
            {
                slot.push(Completion {
                    multiplier: m,
                    degenerate: degenerate(&completion),
                    completion,
                    tokens,
                });
            }
        }
        for (item, completions) in items[first..end].iter().zip(&per_item) {
            out.push(item, completions);
        }
        out.save()?;
        bar.set_position(end as u64);
        crate::interrupt::stop_if_requested();
    }
    bar.finish_and_clear();
    summarize(&out, &cfg.multipliers);
    print_data(&output.display().to_string());
    Ok(())
}

/// Degenerate completions per multiplier, on stderr.
fn summarize(out: &Output, multipliers: &[f64]) {
    let all = out.completions();
    for (i, m) in multipliers.iter().enumerate() {
        let n = all.len();
        let bad = all
            .iter()
            .filter(|c| c.get(i).is_some_and(|c| c.degenerate))
            .count();
        let tokens: usize = all.iter().filter_map(|c| c.get(i)).map(|c| c.tokens).sum();
        log!(
            "multiplier {m}: {n} completions, {bad} degenerate, {:.1} tokens on average",
            tokens as f64 / n.max(1) as f64
        );
    }
}

fn progress_bar(len: usize, done: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "  {bar:40} {pos}/{len} items [{elapsed_precise}<{eta_precise}]",
    ) {
        bar.set_style(style);
    }
    bar.set_position(done as u64);
    bar
}
