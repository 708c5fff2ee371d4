//! `train-vector evaluate`: a vector's separation and steering effect per layer, as tables,
//! JSON, or a plot.

use serde_json::json;

use super::args::EvaluateArgs;
use super::generate::{check_vector_fits, parse_multipliers};
use crate::data::{load_pairs, parse_pairs, ContrastType, DataSource};
use crate::device::{DTypeSpec, DeviceSpec};
use crate::error::{Error, Result};
use crate::evaluate::{behaviour, separation, Margin, Separation};
use crate::model::load::{inspect, locate};
use crate::model::{load_model, LoadOptions};
use crate::plot::plot;
use crate::train::{tokenize_pairs, TrainOptions};
use crate::vector::SteeringVector;

pub fn run(a: &EvaluateArgs) -> Result<()> {
    let contrast = ContrastType::parse(&a.contrast_type).ok_or_else(|| {
        Error::new(format!(
            "invalid value `{}` for `--contrast-type`",
            a.contrast_type
        ))
        .with_hint("valid types: tom, irony, self_other, harmfulness")
    })?;
    let multipliers = parse_multipliers(&a.multipliers)?;
    if a.num_samples == Some(0) {
        return Err(Error::new("`--num-samples` must be at least 1"));
    }
    if let Some(p) = &a.plot {
        if p.extension().is_none_or(|e| e != "svg" && e != "png") {
            return Err(Error::new(format!(
                "`--plot` `{}` must end in .png or .svg",
                p.display()
            )));
        }
    }
    let device_spec = DeviceSpec::parse(&a.model.device)?;
    let dtype_spec = DTypeSpec::parse(&a.model.dtype)?;
    let vector = SteeringVector::load(&a.vector)?;
    let pairs = match &a.pairs {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::new(format!("cannot read `--pairs` `{}`: {e}", file.display()))
            })?;
            let mut p = parse_pairs(&text, contrast)
                .map_err(|e| e.context(format!("`{}`", file.display())))?;
            p.truncate(a.num_samples.unwrap_or(usize::MAX));
            p
        }
        None => {
            let source = match &a.data_dir {
                Some(d) => DataSource::Dir(d.clone()),
                None => DataSource::Shipped,
            };
            load_pairs(&source, contrast, a.num_samples)?.pairs
        }
    };

    let spec = inspect(locate(&a.model.model, a.model.tokenizer.as_deref())?)?;
    let origin = a.vector.display().to_string();
    check_vector_fits(
        &vector,
        &origin,
        &a.model.model,
        spec.num_layers,
        spec.hidden_size,
    )?;
    let device = device_spec.open()?;
    let dtype = dtype_spec.resolve(&device);
    let loaded = load_model(spec, &LoadOptions::for_logits(device.clone(), dtype))?;
    let tokens = tokenize_pairs(&loaded.tokenizer, &pairs, loaded.model.as_ref())?;
    let opts = TrainOptions {
        layers: vector.layer_activations.keys().copied().collect(),
        max_pairs_per_batch: None,
        max_batch_tokens: if device.is_cuda() { 32768 } else { 4096 },
        progress: false,
        pad_id: loaded.pad_id,
    };
    let sep = separation(loaded.model.as_ref(), &tokens, &vector, &opts)?;
    let shared_prefix = matches!(contrast, ContrastType::Tom | ContrastType::Harmfulness);
    let margins = if shared_prefix {
        behaviour(loaded.model.as_ref(), &tokens, &vector, &multipliers)?
    } else {
        Vec::new()
    };

    if let Some(p) = &a.plot {
        plot(p, &sep, &margins)?;
        eprintln!("plot: {}", p.display());
    }
    if a.json {
        let out = json!({
            "vector": origin,
            "contrast_type": contrast.key(),
            "pairs": pairs.len(),
            "separation": sep,
            "margins": margins,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_tables(&sep, &margins, &multipliers, pairs.len());
    }
    Ok(())
}

fn print_tables(sep: &[Separation], margins: &[Margin], multipliers: &[f64], n: usize) {
    println!("Projection separation on {n} pairs");
    println!("{:>6}  {:>9}  {:>7}", "layer", "accuracy", "gap_sd");
    for s in sep {
        println!("{:>6}  {:>9.3}  {:>7.3}", s.layer, s.accuracy, s.gap_sd);
    }
    if margins.is_empty() {
        return;
    }
    println!("\nMean log-prob margin of the positive continuation, by steering multiplier");
    let header: Vec<String> = multipliers.iter().map(|m| format!("{m:>8}")).collect();
    println!("{:>9}  {}", "steer", header.join(" "));
    let mut rows: Vec<&str> = margins.iter().map(|m| m.steer.as_str()).collect();
    rows.dedup();
    for r in rows {
        let cells: Vec<String> = margins
            .iter()
            .filter(|m| m.steer == r)
            .map(|m| format!("{:>8.3}", m.margin))
            .collect();
        println!("{r:>9}  {}", cells.join(" "));
    }
}
