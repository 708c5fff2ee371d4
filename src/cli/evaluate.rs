//! `train-vector evaluate`: does steering with a vector change the model's choices? Candidate
//! log-probabilities on a benchmark file or on contrast pairs, unsteered and steered, as
//! tables, JSON or a plot.

use std::path::PathBuf;

use clap::{ArgGroup, Args};
use serde_json::json;

use super::args::{at_least_one, multiplier, plot_path, ModelArgs};
use super::print_data;
use crate::benchmark::{items_from_pairs, load_benchmark, Item, Prompting, Shape, DEFAULT_CUE};
use crate::chat::ChatFormat;
use crate::data::{load_pairs, ContrastType, DataSource};
use crate::error::Result;
use crate::evaluate::{evaluate, tokenize_items, EvaluateOptions, Report, ScoreOptions, Setups};
use crate::model::{load_model, LoadOptions};
use crate::plot::plot;
use crate::train::default_max_batch_tokens;
use crate::vector::SteeringVector;

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("items").required(true).args(["benchmark", "contrast_type"])))]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The steering vector (.safetensors, .pkl or llama.cpp .gguf)
    #[arg(long, value_name = "FILE")]
    pub vector: PathBuf,

    /// A benchmark file: choice items, A/B behaviour items or contrast pairs (JSON list)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["contrast_type", "data_dir", "pairs"])]
    pub benchmark: Option<PathBuf>,

    /// Evaluate on contrast pairs of this type: tom, irony, self_other or harmfulness
    #[arg(long, value_name = "TYPE")]
    pub contrast_type: Option<ContrastType>,

    /// Directory with the contrast pair files (default: the built-in ones)
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "pairs",
        requires = "contrast_type"
    )]
    pub data_dir: Option<PathBuf>,

    /// A contrast pair file with the type's schema
    #[arg(long, value_name = "FILE", requires = "contrast_type")]
    pub pairs: Option<PathBuf>,

    /// Use the first N items
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub num_samples: Option<usize>,

    /// Steering strengths to report; the unsteered baseline is computed in any case
    #[arg(
        long,
        default_value = "-1,-0.5,0,0.5,1",
        allow_hyphen_values = true,
        value_delimiter = ',',
        value_parser = multiplier
    )]
    pub multipliers: Vec<f64>,

    /// Also steer at each of the vector's layers alone. Without it: all layers together, plus
    /// (on contrast pairs) the three layers that separate the pairs best, each alone
    #[arg(long)]
    pub per_layer: bool,

    /// Text between a benchmark item's prompt and its answer label
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_CUE, allow_hyphen_values = true)]
    pub answer_cue: String,

    /// Put benchmark prompts in the model's chat format (user turn, reply to follow) before
    /// the cue; contrast pairs are scored as written
    #[arg(long)]
    pub chat: bool,

    /// Break results down by this item field (`category`, `metadata.<key>`, ...) instead of
    /// `category` and `metadata.difficulty`
    #[arg(long, value_name = "FIELD")]
    pub group_by: Option<String>,

    /// Seed of the bootstrap intervals: the same seed gives the same intervals
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Padded tokens per forward batch [default: 1024 on CPU, 32768 on CUDA]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub max_batch_tokens: Option<usize>,

    /// Print the numbers as JSON on stdout instead of tables
    #[arg(long)]
    pub json: bool,

    /// Draw accuracy and mean p(correct) against the multiplier (and, on contrast pairs,
    /// separation by layer and the margin) into a .png or .svg file
    #[arg(long, value_name = "FILE", value_parser = plot_path)]
    pub plot: Option<PathBuf>,

    /// No progress bar
    #[arg(long)]
    pub no_progress: bool,
}

/// Where the items come from.
pub enum ItemSource {
    Benchmark(PathBuf),
    Pairs(ContrastType, DataSource),
}

/// Flags resolved.
pub struct EvaluateConfig {
    pub model: ModelArgs,
    pub vector: PathBuf,
    pub items: ItemSource,
    pub num_samples: Option<usize>,
    pub multipliers: Vec<f64>,
    pub setups: Setups,
    pub cue: String,
    pub chat: bool,
    pub group_by: Option<String>,
    pub seed: u64,
    pub max_batch_tokens: Option<usize>,
    pub json: bool,
    pub plot: Option<PathBuf>,
    pub progress: bool,
}

impl EvaluateConfig {
    pub fn from_args(a: &EvaluateArgs) -> EvaluateConfig {
        let items = match (&a.benchmark, a.contrast_type) {
            (Some(file), _) => ItemSource::Benchmark(file.clone()),
            (None, t) => ItemSource::Pairs(
                t.unwrap_or(ContrastType::Tom),
                match &a.pairs {
                    Some(file) => DataSource::File(file.clone()),
                    None => DataSource::from_dir(a.data_dir.clone()),
                },
            ),
        };
        EvaluateConfig {
            model: a.model.clone(),
            vector: a.vector.clone(),
            items,
            num_samples: a.num_samples,
            multipliers: a.multipliers.clone(),
            setups: if a.per_layer {
                Setups::PerLayer
            } else {
                Setups::Default
            },
            cue: a.answer_cue.clone(),
            chat: a.chat,
            group_by: a.group_by.clone(),
            seed: a.seed,
            max_batch_tokens: a.max_batch_tokens,
            json: a.json,
            plot: a.plot.clone(),
            progress: !a.no_progress,
        }
    }
}

pub fn run(a: &EvaluateArgs) -> Result<()> {
    let cfg = EvaluateConfig::from_args(a);
    let vector = SteeringVector::load(&cfg.vector)?;
    let spec = cfg.model.spec()?;
    let origin = cfg.vector.display().to_string();
    if let Some(w) = vector.check_fits(&origin, &spec.config, &cfg.model.model)? {
        log!("warning: {w}");
    }
    let device = cfg.model.device.open()?;
    let dtype = cfg.model.dtype.resolve(&device);
    let loaded = load_model(spec, &LoadOptions::for_logits(device.clone(), dtype))?;
    let model = loaded.model.as_ref();
    let (what, shape, mut items) = load_items(&cfg, &loaded.tokenizer)?;
    items.truncate(cfg.num_samples.unwrap_or(usize::MAX));
    let tokens = tokenize_items(&loaded.tokenizer, &items, model).map_err(|e| e.context(&what))?;
    let opts = EvaluateOptions {
        multipliers: cfg.multipliers.clone(),
        setups: cfg.setups,
        group_by: cfg.group_by.clone(),
        seed: cfg.seed,
        score: ScoreOptions {
            max_batch_tokens: cfg
                .max_batch_tokens
                .unwrap_or_else(|| default_max_batch_tokens(&device)),
        },
        progress: cfg.progress,
        pairs: matches!(shape, Shape::Pairs(_)),
    };
    let report = evaluate(model, &items, &tokens, &vector, &opts)?;
    let t = &report.timing;
    log!(
        "{} candidate tokens, {} run (shared prefixes once); unsteered pass {:.2}s, {} steered passes {:.2}s ({:.2}s each)",
        t.candidate_tokens,
        t.forward_tokens,
        t.baseline_seconds,
        t.steered_passes,
        t.steered_seconds,
        t.steered_seconds / t.steered_passes.max(1) as f64
    );
    if let Some(p) = &cfg.plot {
        plot(p, &report)?;
        log!("plot: {}", p.display());
    }
    if cfg.json {
        let mut out = json!({
            "vector": origin,
            "items_from": what,
            "shape": shape.describe(),
        });
        if let ItemSource::Pairs(t, _) = &cfg.items {
            out["contrast_type"] = json!(t.key());
            out["pairs"] = json!(items.len());
        }
        if let (Some(o), Ok(serde_json::Value::Object(r))) =
            (out.as_object_mut(), serde_json::to_value(&report))
        {
            o.extend(r);
        }
        print_data(&serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_tables(&what, shape, &report);
    }
    Ok(())
}

/// The items and a description of where they came from.
fn load_items(
    cfg: &EvaluateConfig,
    tokenizer: &tokenizers::Tokenizer,
) -> Result<(String, Shape, Vec<Item>)> {
    match &cfg.items {
        ItemSource::Benchmark(file) => {
            let prompting = Prompting {
                cue: cfg.cue.clone(),
                chat: cfg.chat.then(|| ChatFormat::detect(tokenizer)),
            };
            let (shape, items) = load_benchmark(file, &prompting)?;
            Ok((format!("`{}`", file.display()), shape, items))
        }
        ItemSource::Pairs(t, source) => {
            let pairs = load_pairs(source, *t, None)?.pairs;
            Ok((
                source.describe(*t),
                Shape::Pairs(Some(*t)),
                items_from_pairs(&pairs),
            ))
        }
    }
}

fn ci(c: [f64; 2]) -> String {
    format!("[{:.3}, {:.3}]", c[0], c[1])
}

fn p_value(p: f64) -> String {
    match p < 0.001 {
        true => "<0.001".to_string(),
        false => format!("{p:.3}"),
    }
}

fn print_tables(what: &str, shape: Shape, r: &Report) {
    if let Some(sep) = &r.separation {
        print_data(&format!("Projection separation on {} pairs", r.items));
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
        print_data("");
    }
    print_data(&format!(
        "Choices on {} ({}, {} items); changes are against the unsteered model",
        what,
        shape.describe(),
        r.items
    ));
    print_data(&format!(
        "{:>9} {:>6}  {:>24}  {:>24}  {:>25}  {:>25}  {:>9}",
        "steer",
        "mult",
        "accuracy [95% CI]",
        "p(correct) [95% CI]",
        "change in acc. [95% CI]",
        "change in p [95% CI]",
        "McNemar p"
    ));
    for row in &r.results {
        print_data(&format!(
            "{:>9} {:>6}  {:>6.3} {:>17}  {:>6.3} {:>17}  {:>+7.3} {:>17}  {:>+7.3} {:>17}  {:>9}",
            row.setup,
            row.multiplier,
            row.accuracy,
            ci(row.accuracy_ci),
            row.mean_p_correct,
            ci(row.mean_p_correct_ci),
            row.delta_accuracy,
            ci(row.delta_accuracy_ci),
            row.delta_p_correct,
            ci(row.delta_p_correct_ci),
            p_value(row.mcnemar_p)
        ));
    }
    print_data("\nSteerability: slope of each item's logit difference against the multiplier");
    print_data(&format!(
        "{:>9}  {:>10}  {:>12}  {:>14}",
        "steer", "mean", "median", "anti-steerable"
    ));
    for s in &r.steerability {
        print_data(&format!(
            "{:>9}  {:>10.4}  {:>12.4}  {:>14.3}",
            s.setup, s.mean_slope, s.median_slope, s.anti_steerable
        ));
    }
    if let Some(margins) = &r.margins {
        print_data("\nMean log-prob margin of the positive continuation, by steering multiplier");
        let first = r.setups.first().map(|s| s.name.as_str());
        let mults: Vec<f64> = margins
            .iter()
            .filter(|m| Some(m.steer.as_str()) == first)
            .map(|m| m.multiplier)
            .collect();
        let header: Vec<String> = mults.iter().map(|m| format!("{m:>8}")).collect();
        print_data(&format!("{:>9}  {}", "steer", header.join(" ")));
        for s in &r.setups {
            let cells: Vec<String> = margins
                .iter()
                .filter(|m| m.steer == s.name)
                .map(|m| format!("{:>8.3}", m.margin))
                .collect();
            print_data(&format!("{:>9}  {}", s.name, cells.join(" ")));
        }
    }
    for (field, values) in &r.groups {
        print_data(&format!(
            "\nBy {field}: accuracy / mean p(correct) at each multiplier"
        ));
        let mults: Vec<String> = r
            .results
            .iter()
            .filter(|x| Some(&x.setup) == r.setups.first().map(|s| &s.name))
            .map(|x| format!("{:>13}", x.multiplier))
            .collect();
        print_data(&format!("{:>24} {:>9}  {}", "", "steer", mults.join(" ")));
        for (value, rows) in values {
            let n = rows.first().map_or(0, |g| g.n);
            for setup in &r.setups {
                let cells: Vec<String> = rows
                    .iter()
                    .filter(|g| g.setup == setup.name)
                    .map(|g| {
                        format!(
                            "{:>13}",
                            format!("{:.3}/{:.3}", g.accuracy, g.mean_p_correct)
                        )
                    })
                    .collect();
                let label = format!("{value} (n={n})");
                print_data(&format!(
                    "{label:>24} {:>9}  {}",
                    setup.name,
                    cells.join(" ")
                ));
            }
        }
    }
}
