//! The generation worker: one thread owns the model and decodes every running request
//! together, one token per row per step. Requests join between steps (their prompts run as one
//! batch, then their key/value cache is merged into the running one) and leave as soon as they
//! finish or their client goes away; rows carry their own steering, sampler and limits, so a
//! row's text is what it would be alone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::generate::{pick, Sampling};
use crate::model::{
    DecoderModel, KvCache, LayerHook, LayerType, LogitPositions, Slot, SlottedRow, TokenBatch,
};

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token (end of text or of the turn).
    Stop,
    /// `max_tokens` generated, or the end of the model's context.
    Length,
}

/// What a request's client receives, in order: tokens, then one `Done` (or an `Error`).
#[derive(Debug, Clone)]
pub enum Event {
    Token(u32),
    Done(Finish),
    Error(String),
}

/// One request, resolved: prompt tokens, the steering to add per layer, limits, sampler.
pub struct Job {
    pub prompt: Vec<u32>,
    /// `multiplier * vector` summed over the request's steering entries, per block and point,
    /// in f32.
    pub steering: BTreeMap<(usize, LayerType), Vec<f32>>,
    pub max_tokens: usize,
    /// `None`: greedy.
    pub sampling: Option<Sampling>,
    pub stop: Arc<Vec<u32>>,
    /// Where tokens go; when the receiver is gone the row is dropped.
    pub events: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// A running row.
struct Row {
    job: Job,
    rng: StdRng,
    next_pos: usize,
    generated: usize,
    /// The token to feed at the next step.
    last: u32,
}

/// Adds each row's own steering at every position of that row.
struct RowSteering {
    /// Per block and point, `[rows, 1, hidden]` in f32.
    adds: BTreeMap<(usize, LayerType), Tensor>,
}

impl RowSteering {
    fn new(rows: &[&Job], hidden: usize, device: &candle_core::Device) -> Result<RowSteering> {
        let layers: std::collections::BTreeSet<(usize, LayerType)> = rows
            .iter()
            .flat_map(|j| j.steering.keys().copied())
            .collect();
        let mut adds = BTreeMap::new();
        for layer in layers {
            let mut data = Vec::with_capacity(rows.len() * hidden);
            for job in rows {
                match job.steering.get(&layer) {
                    Some(v) => data.extend_from_slice(v),
                    None => data.extend(std::iter::repeat_n(0f32, hidden)),
                }
            }
            adds.insert(
                layer,
                Tensor::from_vec(data, (rows.len(), 1, hidden), device)?,
            );
        }
        Ok(RowSteering { adds })
    }
}

impl LayerHook for RowSteering {
    fn at(&mut self, layer: usize, point: LayerType, residual: &Tensor) -> Result<Option<Tensor>> {
        let Some(add) = self.adds.get(&(layer, point)) else {
            return Ok(None);
        };
        // As `Steering` does: add in f32, round once to the model dtype.
        let dtype = residual.dtype();
        let steered = residual.to_dtype(DType::F32)?.broadcast_add(add)?;
        Ok(Some(steered.to_dtype(dtype)?))
    }
}

/// Limits of the worker.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Rows decoded together at most; later requests wait their turn, first come first served.
    pub max_rows: usize,
}

/// Runs until every sender of `jobs` is gone.
pub fn run(model: Arc<dyn DecoderModel + Send + Sync>, jobs: Receiver<Job>, opts: EngineOptions) {
    let mut running: Vec<Row> = Vec::new();
    let mut cache = KvCache::new();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        // Wait for work when idle; otherwise take what has arrived since the last step.
        if running.is_empty() && waiting.is_empty() {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        loop {
            match jobs.recv_timeout(Duration::ZERO) {
                Ok(job) => waiting.push_back(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) if running.is_empty() && waiting.is_empty() => {
                    return
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let room = opts.max_rows.saturating_sub(running.len());
        let joining: Vec<Job> = waiting.drain(..room.min(waiting.len())).collect();
        if !joining.is_empty() {
            match admit(model.as_ref(), joining) {
                Ok((rows, new_cache)) => {
                    let merged = match running.is_empty() {
                        true => Ok(new_cache),
                        false => KvCache::stack(std::mem::take(&mut cache), new_cache),
                    };
                    running.extend(rows);
                    match merged {
                        Ok(c) => cache = c,
                        Err(e) => fail_all(&mut running, &mut cache, &e),
                    }
                }
                Err((jobs, e)) => {
                    for j in jobs {
                        let _ = j.events.send(Event::Error(e.to_string()));
                    }
                }
            }
        }
        if running.is_empty() {
            continue;
        }
        if let Err(e) = step(model.as_ref(), &mut running, &mut cache) {
            fail_all(&mut running, &mut cache, &e);
        }
    }
}

/// Runs the joining prompts as one batch: each row's first token, and their cache.
#[allow(clippy::type_complexity)]
fn admit(
    model: &dyn DecoderModel,
    jobs: Vec<Job>,
) -> std::result::Result<(Vec<Row>, KvCache), (Vec<Job>, Error)> {
    let pad = model.config().pad_token_id;
    let rows: Vec<SlottedRow> = jobs
        .iter()
        .map(|j| SlottedRow {
            tokens: j.prompt.clone(),
            slots: (0..j.prompt.len() as u32)
                .map(|pos| Slot { pos, seg: 0 })
                .collect(),
        })
        .collect();
    let mut cache = KvCache::new();
    let logits = (|| -> Result<Vec<Vec<f32>>> {
        let batch = TokenBatch::slotted(&rows, pad, model.device())?;
        let refs: Vec<&Job> = jobs.iter().collect();
        let mut hook = RowSteering::new(&refs, model.hidden_size(), model.device())?;
        Ok(model
            .forward_logits(&batch, Some(&mut cache), &mut hook, LogitPositions::Last)?
            .to_vec2()?)
    })();
    let logits = match logits {
        Ok(l) => l,
        Err(e) => return Err((jobs, e)),
    };
    let rows = jobs
        .into_iter()
        .zip(logits)
        .map(|(job, logits)| {
            let seed = job.sampling.map_or(0, |s| s.seed);
            let mut row = Row {
                next_pos: job.prompt.len(),
                rng: StdRng::seed_from_u64(seed),
                generated: 0,
                last: 0,
                job,
            };
            row.last = pick(&logits, row.job.sampling.as_ref(), &mut row.rng);
            row
        })
        .collect();
    Ok((rows, cache))
}

/// Emits each row's pending token, drops the rows that are done (or whose client left), and
/// feeds the rest one step.
fn step(model: &dyn DecoderModel, running: &mut Vec<Row>, cache: &mut KvCache) -> Result<()> {
    let max = model.max_positions().unwrap_or(usize::MAX);
    let mut keep = Vec::with_capacity(running.len());
    for (i, row) in running.iter_mut().enumerate() {
        let token = row.last;
        let finish = if row.job.stop.contains(&token) {
            Some(Finish::Stop)
        } else if row.job.events.send(Event::Token(token)).is_err() {
            continue;
        } else {
            row.generated += 1;
            (row.generated >= row.job.max_tokens || row.next_pos >= max).then_some(Finish::Length)
        };
        match finish {
            Some(f) => {
                let _ = row.job.events.send(Event::Done(f));
            }
            None => keep.push(i),
        }
    }
    if keep.len() < running.len() {
        let mut rows: Vec<Option<Row>> = running.drain(..).map(Some).collect();
        *running = keep.iter().filter_map(|&i| rows[i].take()).collect();
        cache.retain_rows(&keep)?;
    }
    if running.is_empty() {
        *cache = KvCache::new();
        return Ok(());
    }
    let pad = model.config().pad_token_id;
    let feed: Vec<SlottedRow> = running
        .iter()
        .map(|r| SlottedRow {
            tokens: vec![r.last],
            slots: vec![Slot {
                pos: r.next_pos as u32,
                seg: 0,
            }],
        })
        .collect();
    let batch = TokenBatch::slotted(&feed, pad, model.device())?;
    let jobs: Vec<&Job> = running.iter().map(|r| &r.job).collect();
    let mut hook = RowSteering::new(&jobs, model.hidden_size(), model.device())?;
    let logits: Vec<Vec<f32>> = model
        .forward_logits(&batch, Some(cache), &mut hook, LogitPositions::Last)?
        .to_vec2()?;
    for (row, logits) in running.iter_mut().zip(logits) {
        row.next_pos += 1;
        row.last = pick(&logits, row.job.sampling.as_ref(), &mut row.rng);
    }
    Ok(())
}

/// Ends every running row with the error.
fn fail_all(running: &mut Vec<Row>, cache: &mut KvCache, e: &Error) {
    for r in running.drain(..) {
        let _ = r.job.events.send(Event::Error(e.to_string()));
    }
    *cache = KvCache::new();
}
