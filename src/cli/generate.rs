//! `train-vector generate`: continue a prompt with a steering vector applied, at one or several
//! strengths, next to the unsteered baseline.

use super::args::GenerateArgs;
use crate::chat::{stop_ids, ChatFormat};
use crate::device::{DTypeSpec, DeviceSpec};
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateOptions, Sampling};
use crate::layers::LayerSpec;
use crate::model::load::{inspect, locate};
use crate::model::{load_model, LoadOptions};
use crate::steer::Steering;
use crate::vector::SteeringVector;

pub(crate) fn parse_multipliers(list: &str) -> Result<Vec<f64>> {
    list.split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|m| m.is_finite())
                .ok_or_else(|| {
                    Error::new(format!("invalid `--multipliers` entry `{}`", p.trim()))
                        .with_hint("use comma-separated numbers, e.g. `--multipliers=-1,0,0.5,1`")
                })
        })
        .collect()
}

pub fn run(a: &GenerateArgs) -> Result<()> {
    let mut multipliers = match &a.multipliers {
        Some(list) => parse_multipliers(list)?,
        None => vec![a.multiplier],
    };
    if a.multipliers.is_some() && !multipliers.contains(&0.0) {
        multipliers.insert(0, 0.0);
    }
    if !a.multiplier.is_finite() {
        return Err(Error::new("`--multiplier` must be a finite number"));
    }
    if a.temperature < 0.0 || !(a.top_p > 0.0 && a.top_p <= 1.0) {
        return Err(Error::new(
            "`--temperature` must be >= 0 and `--top-p` in (0, 1]",
        ));
    }
    let device_spec = DeviceSpec::parse(&a.model.device)?;
    let dtype_spec = DTypeSpec::parse(&a.model.dtype)?;
    let vector = SteeringVector::load(&a.vector)?;

    let spec = inspect(locate(&a.model.model, a.model.tokenizer.as_deref())?)?;
    check_vector_fits(
        &vector,
        &a.vector.display().to_string(),
        &a.model.model,
        spec.num_layers,
        spec.hidden_size,
    )?;
    let layers = match &a.layers {
        Some(l) => Some(LayerSpec::parse(l)?.resolve(spec.num_layers)?),
        None => None,
    };
    let device = device_spec.open()?;
    let dtype = dtype_spec.resolve(&device);
    let eos = spec
        .config
        .text
        .get("eos_token_id")
        .cloned()
        .unwrap_or_default();
    let loaded = load_model(spec, &LoadOptions::for_logits(device.clone(), dtype))?;
    let text = if a.chat {
        ChatFormat::detect(&loaded.tokenizer).wrap(&a.prompt)
    } else {
        a.prompt.clone()
    };
    let prompt = loaded
        .tokenizer
        .encode(text.as_str(), true)
        .map_err(|e| Error::new(format!("cannot tokenize `--prompt`: {e}")))?
        .get_ids()
        .to_vec();
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: (a.temperature > 0.0).then_some(Sampling {
            temperature: a.temperature,
            top_p: a.top_p,
            seed: a.seed,
        }),
        stop: stop_ids(&loaded.tokenizer, &eos),
    };
    let several = multipliers.len() > 1;
    for m in multipliers {
        let mut hook = Steering::new(&vector, m, layers.as_deref(), &device)?;
        let ids = generate(loaded.model.as_ref(), &prompt, &mut hook, &opts)?;
        let out = loaded
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| Error::new(format!("cannot decode the output: {e}")))?;
        if several {
            let label = if m == 0.0 { " (baseline)" } else { "" };
            println!("=== multiplier {m}{label} ===\n{out}\n");
        } else {
            println!("{out}");
        }
    }
    Ok(())
}

/// A vector trained on another model: a size or depth mismatch is an error, a different model
/// name only a warning.
pub(crate) fn check_vector_fits(
    v: &SteeringVector,
    origin: &str,
    model: &str,
    num_layers: usize,
    hidden: usize,
) -> Result<()> {
    let vh = v.hidden_size().unwrap_or(0);
    if vh != hidden {
        return Err(Error::new(format!(
            "vector `{origin}` has hidden size {vh}, the model {hidden}"
        ))
        .with_hint("the vector was trained on another model"));
    }
    if let Some(&deepest) = v.layer_activations.keys().max() {
        if deepest >= num_layers {
            return Err(Error::new(format!(
                "vector `{origin}` has layer {deepest}, the model only {num_layers} layers"
            ))
            .with_hint("the vector was trained on another model"));
        }
    }
    if let Some(trained_on) = v.metadata.get("model") {
        if trained_on != model {
            eprintln!("warning: vector `{origin}` was trained on `{trained_on}`, not `{model}`");
        }
    }
    Ok(())
}
