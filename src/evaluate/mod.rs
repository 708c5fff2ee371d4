//! Does a vector work? Judge-free evaluation from log-probabilities: every item's candidates
//! are scored unsteered and under each steering setup and multiplier ([`score`]), and the
//! choices are summarized with intervals and paired tests against the unsteered baseline
//! ([`metrics`]). On contrast pairs the unsteered pass also gives the vector's projection
//! separation per layer ([`separation`]).

pub mod metrics;
pub mod score;
pub mod separation;

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::benchmark::Item;
use crate::error::{Error, Result};
use crate::model::DecoderModel;
use crate::vector::SteeringVector;
use metrics::{
    argmax, bootstrap_mean, choice_probs, logit_difference, mcnemar_exact, mean, median, slope,
    wilson,
};
pub use score::{tokenize_items, ItemScores, ScoreOptions, Setup, TokenizedItem};
pub use separation::{best_layers, Separation};

/// Which steering setups to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setups {
    /// Contrast pairs: the three best-separating layers alone, and all layers together;
    /// benchmark items: all layers together.
    Default,
    /// Each layer alone, and all together.
    PerLayer,
}

#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Steering strengths to report; the unsteered baseline (0) is computed whatever they are.
    pub multipliers: Vec<f64>,
    pub setups: Setups,
    /// Group by this field instead of `category` and `metadata.difficulty`.
    pub group_by: Option<String>,
    /// Seeds every bootstrap interval.
    pub seed: u64,
    pub score: ScoreOptions,
    pub progress: bool,
    /// The items are contrast pairs: report separation and margins, and pick setups by
    /// separation.
    pub pairs: bool,
}

/// One setup at one multiplier.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    pub setup: String,
    pub multiplier: f64,
    pub n: usize,
    /// Fraction of items whose highest-scoring candidate is the correct one.
    pub accuracy: f64,
    /// Wilson 95% interval.
    pub accuracy_ci: [f64; 2],
    pub mean_p_correct: f64,
    /// Percentile-bootstrap 95% interval.
    pub mean_p_correct_ci: [f64; 2],
    /// Mean logit difference of the correct candidate (`log p - log(1 - p)`).
    pub mean_logit_difference: f64,
    /// Paired changes against the unsteered baseline, with bootstrap 95% intervals.
    pub delta_accuracy: f64,
    pub delta_accuracy_ci: [f64; 2],
    pub delta_p_correct: f64,
    pub delta_p_correct_ci: [f64; 2],
    /// Exact McNemar p-value of the change in which items are right.
    pub mcnemar_p: f64,
}

/// Tan et al. (2024): per item, the least-squares slope of the logit difference against the
/// multiplier.
#[derive(Debug, Clone, Serialize)]
pub struct Steerability {
    pub setup: String,
    pub mean_slope: f64,
    pub median_slope: f64,
    /// Fraction of items whose slope is negative: steering moves them the other way.
    pub anti_steerable: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub setup: String,
    pub multiplier: f64,
    pub n: usize,
    pub accuracy: f64,
    pub mean_p_correct: f64,
}

/// The old contrast-pair margin table: mean log-prob margin of the positive continuation.
#[derive(Debug, Clone, Serialize)]
pub struct Margin {
    pub steer: String,
    pub multiplier: f64,
    pub margin: f64,
}

/// Where the time went.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// The unsteered pass (with the separation reads).
    pub baseline_seconds: f64,
    /// All steered passes together.
    pub steered_seconds: f64,
    pub steered_passes: usize,
    /// Tokens of every candidate written out in full, and tokens a pass actually runs (shared
    /// prefixes once).
    pub candidate_tokens: usize,
    pub forward_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub items: usize,
    pub timing: Timing,
    pub setups: Vec<Setup>,
    pub results: Vec<ResultRow>,
    pub steerability: Vec<Steerability>,
    /// Field -> value -> rows.
    pub groups: BTreeMap<String, BTreeMap<String, Vec<GroupRow>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub separation: Option<Vec<Separation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margins: Option<Vec<Margin>>,
}

/// Scores every item and summarizes. `tokens[i]` is `items[i]` tokenized.
pub fn evaluate(
    model: &dyn DecoderModel,
    items: &[Item],
    tokens: &[TokenizedItem],
    vector: &SteeringVector,
    opts: &EvaluateOptions,
) -> Result<Report> {
    if items.is_empty() {
        return Err(Error::new("no items to evaluate"));
    }
    let bar = progress_bar(items.len(), opts.progress);
    let read: Vec<usize> = match opts.pairs {
        true => vector.layer_activations.keys().copied().collect(),
        false => Vec::new(),
    };
    let started = std::time::Instant::now();
    let point = vector.layer_type.parse()?;
    let base = score::baseline(model, tokens, &read, point, &opts.score, &bar)?;
    let baseline_seconds = started.elapsed().as_secs_f64();
    let separation = match opts.pairs {
        true => Some(separation::separation(&base.reads, vector)?),
        false => None,
    };
    let setups = choose_setups(vector, opts.setups, separation.as_deref());
    let mut steered_mults: Vec<f64> = opts.multipliers.clone();
    steered_mults.retain(|m| *m != 0.0);
    steered_mults.sort_by(f64::total_cmp);
    steered_mults.dedup();
    let passes = 1 + setups.len() * steered_mults.len();
    bar.set_length((items.len() * passes) as u64);
    let started = std::time::Instant::now();
    let steered = score::steered(
        model,
        tokens,
        vector,
        &setups,
        &steered_mults,
        &opts.score,
        &bar,
    )?;
    let timing = Timing {
        baseline_seconds,
        steered_seconds: started.elapsed().as_secs_f64(),
        steered_passes: passes - 1,
        candidate_tokens: tokens
            .iter()
            .map(|t| {
                t.suffixes
                    .iter()
                    .map(|s| t.prefix.len() + s.len())
                    .sum::<usize>()
            })
            .sum(),
        forward_tokens: tokens
            .iter()
            .map(|t| t.prefix.len() + t.suffixes.iter().map(Vec::len).sum::<usize>())
            .sum(),
    };
    bar.finish_and_clear();
    // Scores by setup and multiplier, 0 being the baseline.
    let scores_at = |s: usize, m: f64| -> &ItemScores {
        match steered_mults.iter().position(|x| *x == m) {
            Some(i) => &steered[s][i],
            None => &base.scores,
        }
    };
    let mut report = Report {
        items: items.len(),
        timing,
        setups: setups.clone(),
        results: Vec::new(),
        steerability: Vec::new(),
        groups: BTreeMap::new(),
        separation,
        margins: None,
    };
    let baseline = Choices::new(&base.scores, items);
    for (s, setup) in setups.iter().enumerate() {
        for &m in &opts.multipliers {
            let c = Choices::new(scores_at(s, m), items);
            report.results.push(c.row(setup, m, &baseline, opts.seed));
        }
        let mut grid = opts.multipliers.clone();
        grid.push(0.0);
        grid.sort_by(f64::total_cmp);
        grid.dedup();
        let per_m: Vec<Choices> = grid
            .iter()
            .map(|&m| Choices::new(scores_at(s, m), items))
            .collect();
        report.steerability.push(steerability(setup, &grid, &per_m));
    }
    report.groups = groups(
        items,
        &setups,
        &opts.multipliers,
        opts.group_by.as_deref(),
        |s, m| Choices::new(scores_at(s, m), items),
    );
    if opts.pairs {
        report.margins = Some(
            report
                .results
                .iter()
                .map(|r| Margin {
                    steer: r.setup.clone(),
                    multiplier: r.multiplier,
                    margin: r.mean_logit_difference,
                })
                .collect(),
        );
    }
    Ok(report)
}

fn choose_setups(v: &SteeringVector, which: Setups, sep: Option<&[Separation]>) -> Vec<Setup> {
    let layers: Vec<usize> = v.layer_activations.keys().copied().collect();
    let alone: Vec<usize> = match (which, sep) {
        _ if layers.len() < 2 => Vec::new(),
        (Setups::PerLayer, _) => layers,
        (Setups::Default, Some(sep)) => best_layers(sep, 3),
        (Setups::Default, None) => Vec::new(),
    };
    alone
        .into_iter()
        .map(Setup::layer)
        .chain(std::iter::once(Setup::all(v)))
        .collect()
}

/// Per item: whether the choice is right, p(correct), and the logit difference.
struct Choices {
    right: Vec<bool>,
    p_correct: Vec<f64>,
    logit_diff: Vec<f64>,
}

impl Choices {
    fn new(scores: &ItemScores, items: &[Item]) -> Choices {
        let mut c = Choices {
            right: Vec::new(),
            p_correct: Vec::new(),
            logit_diff: Vec::new(),
        };
        for (s, item) in scores.iter().zip(items) {
            c.right.push(argmax(s) == item.correct);
            c.p_correct.push(choice_probs(s)[item.correct]);
            c.logit_diff.push(logit_difference(s, item.correct));
        }
        c
    }

    fn subset(&self, keep: &[usize]) -> Choices {
        Choices {
            right: keep.iter().map(|&i| self.right[i]).collect(),
            p_correct: keep.iter().map(|&i| self.p_correct[i]).collect(),
            logit_diff: keep.iter().map(|&i| self.logit_diff[i]).collect(),
        }
    }

    fn accuracy(&self) -> f64 {
        self.right.iter().filter(|r| **r).count() as f64 / self.right.len().max(1) as f64
    }

    fn row(&self, setup: &Setup, m: f64, base: &Choices, seed: u64) -> ResultRow {
        let n = self.right.len();
        let k = self.right.iter().filter(|r| **r).count();
        let indicator =
            |r: &[bool]| -> Vec<f64> { r.iter().map(|&x| f64::from(u8::from(x))).collect() };
        let d_acc: Vec<f64> = indicator(&self.right)
            .iter()
            .zip(indicator(&base.right))
            .map(|(a, b)| a - b)
            .collect();
        let d_p: Vec<f64> = self
            .p_correct
            .iter()
            .zip(&base.p_correct)
            .map(|(a, b)| a - b)
            .collect();
        let lost = base
            .right
            .iter()
            .zip(&self.right)
            .filter(|(b, s)| **b && !**s)
            .count();
        let won = base
            .right
            .iter()
            .zip(&self.right)
            .filter(|(b, s)| !**b && **s)
            .count();
        let pair = |(a, b): (f64, f64)| [a, b];
        let (lo, hi) = wilson(k, n);
        ResultRow {
            setup: setup.name.clone(),
            multiplier: m,
            n,
            accuracy: k as f64 / n.max(1) as f64,
            accuracy_ci: [lo, hi],
            mean_p_correct: mean(&self.p_correct),
            mean_p_correct_ci: pair(bootstrap_mean(&self.p_correct, seed)),
            mean_logit_difference: mean(&self.logit_diff),
            delta_accuracy: mean(&d_acc),
            delta_accuracy_ci: pair(bootstrap_mean(&d_acc, seed)),
            delta_p_correct: mean(&d_p),
            delta_p_correct_ci: pair(bootstrap_mean(&d_p, seed)),
            mcnemar_p: mcnemar_exact(lost, won),
        }
    }
}

fn steerability(setup: &Setup, grid: &[f64], per_m: &[Choices]) -> Steerability {
    let n = per_m.first().map_or(0, |c| c.logit_diff.len());
    let slopes: Vec<f64> = (0..n)
        .filter_map(|i| {
            let ys: Vec<f64> = per_m.iter().map(|c| c.logit_diff[i]).collect();
            slope(grid, &ys)
        })
        .collect();
    Steerability {
        setup: setup.name.clone(),
        mean_slope: mean(&slopes),
        median_slope: median(&slopes),
        anti_steerable: slopes.iter().filter(|s| **s < 0.0).count() as f64
            / slopes.len().max(1) as f64,
    }
}

/// Accuracy and mean p(correct) per value of each grouping field: `--group-by`, else
/// `category` and `metadata.difficulty` where the items have them.
fn groups(
    items: &[Item],
    setups: &[Setup],
    multipliers: &[f64],
    group_by: Option<&str>,
    choices: impl Fn(usize, f64) -> Choices,
) -> BTreeMap<String, BTreeMap<String, Vec<GroupRow>>> {
    let fields: Vec<&str> = match group_by {
        Some(f) => vec![f],
        None => ["category", "metadata.difficulty"]
            .into_iter()
            .filter(|f| items.iter().any(|i| i.fields.contains_key(*f)))
            .collect(),
    };
    let mut out = BTreeMap::new();
    for field in fields {
        let mut by_value: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let v = item
                .fields
                .get(field)
                .cloned()
                .unwrap_or_else(|| "(none)".into());
            by_value.entry(v).or_default().push(i);
        }
        let mut table = BTreeMap::new();
        for (value, members) in by_value {
            let mut rows = Vec::new();
            for (s, setup) in setups.iter().enumerate() {
                for &m in multipliers {
                    let c = choices(s, m).subset(&members);
                    rows.push(GroupRow {
                        setup: setup.name.clone(),
                        multiplier: m,
                        n: members.len(),
                        accuracy: c.accuracy(),
                        mean_p_correct: mean(&c.p_correct),
                    });
                }
            }
            table.insert(value, rows);
        }
        out.insert(field.to_string(), table);
    }
    out
}

fn progress_bar(items: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(items as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "  {bar:40} {pos}/{len} item passes [{elapsed_precise}<{eta_precise}]",
    ) {
        bar.set_style(style);
    }
    bar
}
