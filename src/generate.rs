//! Text generation with a key/value cache and a layer hook (steering), greedy or sampled.

use candle_core::{Device, Tensor};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::SeedableRng;

use tokenizers::Tokenizer;

use crate::chat::ChatFormat;
use crate::error::{Error, Result};
use crate::model::{DecoderModel, KvCache, LayerHook, LogitPositions, TokenBatch};

/// Temperature and nucleus sampling from a seeded generator: the same seed gives the same text.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// `None` is greedy decoding.
    pub sampling: Option<Sampling>,
    /// Token ids that end the generation (not included in the output).
    pub stop: Vec<u32>,
}

/// A prompt as `generate --prompt` runs it: through the model's chat format when `chat` is
/// set, then tokenized as HF's `tokenizer(text)` does (special tokens added).
pub fn prompt_ids(tokenizer: &Tokenizer, prompt: &str, chat: bool) -> Result<Vec<u32>> {
    let text = match chat {
        true => ChatFormat::detect(tokenizer).wrap(prompt),
        false => prompt.to_string(),
    };
    Ok(tokenizer
        .encode(text.as_str(), true)
        .map_err(|e| Error::new(format!("cannot tokenize the prompt: {e}")))?
        .get_ids()
        .to_vec())
}

/// The highest logit, lowest id on ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws from the temperature-scaled distribution restricted to its nucleus: the most likely
/// tokens whose probabilities first reach `top_p` (ties broken by lower id).
fn sample(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> u32 {
    if s.temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let p = ((f64::from(x) - f64::from(max)) / s.temperature).exp();
            (i as u32, p)
        })
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut mass = 0.0;
    let kept = probs
        .iter()
        .position(|&(_, p)| {
            mass += p / total;
            mass >= s.top_p
        })
        .map_or(probs.len(), |i| i + 1);
    let nucleus = &probs[..kept];
    match WeightedIndex::new(nucleus.iter().map(|p| p.1)) {
        Ok(dist) => nucleus[dist.sample(rng)].0,
        Err(_) => nucleus[0].0,
    }
}

/// Continues `prompt`, feeding one token at a time through the cache, with `hook` applied at
/// every step. Returns the new tokens.
pub fn generate(
    model: &dyn DecoderModel,
    prompt: &[u32],
    hook: &mut dyn LayerHook,
    opts: &GenerateOptions,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::new("the prompt tokenizes to nothing"));
    }
    let device: &Device = model.device();
    let mut cache = KvCache::new();
    let mut rng = StdRng::seed_from_u64(opts.sampling.map_or(0, |s| s.seed));
    let mut out = Vec::new();
    let mut input = prompt.to_vec();
    for _ in 0..opts.max_new_tokens {
        if let Some(max) = model.max_positions() {
            if cache.len() + input.len() > max {
                break;
            }
        }
        let batch = TokenBatch::new(&[input.as_slice()], model.config().pad_token_id, device)?;
        let logits: Tensor =
            model.forward_logits(&batch, Some(&mut cache), hook, LogitPositions::Last)?;
        let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let next = match &opts.sampling {
            None => argmax(&row),
            Some(s) => sample(&row, s, &mut rng),
        };
        if opts.stop.contains(&next) {
            break;
        }
        out.push(next);
        input = vec![next];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_p() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
        };
        let mut rng = StdRng::seed_from_u64(7);
        // top_p 0.5 keeps only the most likely token
        for _ in 0..20 {
            assert_eq!(sample(&logits, &s, &mut rng), 1);
        }
        let wide = Sampling { top_p: 1.0, ..s };
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample(&logits, &wide, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(draw(3).contains(&2));
    }
}
