//! Text generation with a key/value cache and a layer hook (steering), greedy or sampled, one
//! prompt or a batch of them.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::SeedableRng;

use tokenizers::Tokenizer;

use crate::chat::ChatFormat;
use crate::error::{Error, Result};
use crate::model::{
    DecoderModel, KvCache, LayerHook, LogitPositions, Slot, SlottedRow, TokenBatch,
};

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

/// The next token from `logits`: greedy without `sampling`.
pub fn pick(logits: &[f32], sampling: Option<&Sampling>, rng: &mut StdRng) -> u32 {
    match sampling {
        None => argmax(logits),
        Some(s) => sample(logits, s, rng),
    }
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
    let mut out = generate_batch(model, &[prompt.to_vec()], hook, opts)?;
    Ok(out.remove(0))
}

/// Continues every prompt at once, one row each: the prompts run together (right-padded, each
/// from position 0), then every row decodes one token per step through one key/value cache,
/// its padding never attended to. Each row samples from its own generator seeded with the
/// same seed, so a row's text does not depend on the other rows. A row stops at a stop token,
/// after `max_new_tokens`, or at the end of the model's context.
pub fn generate_batch(
    model: &dyn DecoderModel,
    prompts: &[Vec<u32>],
    hook: &mut dyn LayerHook,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    if prompts.iter().any(Vec::is_empty) {
        return Err(Error::new("the prompt tokenizes to nothing"));
    }
    let n = prompts.len();
    let mut out = vec![Vec::new(); n];
    let max = model.max_positions().unwrap_or(usize::MAX);
    let mut live: Vec<bool> = prompts
        .iter()
        .map(|p| p.len() <= max && opts.max_new_tokens > 0)
        .collect();
    if n == 0 || !live.iter().any(|l| *l) {
        return Ok(out);
    }
    let seed = opts.sampling.map_or(0, |s| s.seed);
    let mut rngs: Vec<StdRng> = (0..n).map(|_| StdRng::seed_from_u64(seed)).collect();
    let pad = model.config().pad_token_id;
    let idle = || SlottedRow {
        tokens: vec![pad],
        slots: vec![Slot::PAD],
    };
    let rows: Vec<SlottedRow> = prompts
        .iter()
        .zip(&live)
        .map(|(p, &l)| match l {
            true => SlottedRow {
                tokens: p.clone(),
                slots: (0..p.len() as u32)
                    .map(|pos| Slot { pos, seg: 0 })
                    .collect(),
            },
            false => idle(),
        })
        .collect();
    let mut cache = KvCache::new();
    let mut next_pos: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut batch = TokenBatch::slotted(&rows, pad, model.device())?;
    loop {
        let logits: Vec<Vec<f32>> = model
            .forward_logits(&batch, Some(&mut cache), hook, LogitPositions::Last)?
            .to_vec2()?;
        let mut step = Vec::with_capacity(n);
        for (r, row) in logits.iter().enumerate() {
            if live[r] {
                let next = pick(row, opts.sampling.as_ref(), &mut rngs[r]);
                if !opts.stop.contains(&next) {
                    out[r].push(next);
                }
                live[r] = !opts.stop.contains(&next)
                    && out[r].len() < opts.max_new_tokens
                    && next_pos[r] < max;
                if live[r] {
                    step.push(SlottedRow {
                        tokens: vec![next],
                        slots: vec![Slot {
                            pos: next_pos[r] as u32,
                            seg: 0,
                        }],
                    });
                    next_pos[r] += 1;
                    continue;
                }
            }
            step.push(idle());
        }
        if !live.iter().any(|l| *l) {
            return Ok(out);
        }
        batch = TokenBatch::slotted(&step, pad, model.device())?;
    }
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
