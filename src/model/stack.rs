//! The forward path every architecture shares: embeddings, then the blocks with the hook after
//! each (through a key/value cache when decoding), then, for logits, the LM head. An
//! architecture file supplies only its pieces through [`Stack`].

use candle_core::Tensor;

use super::head::LmHead;
use super::{KvCache, LayerHook, LogitPositions, TokenBatch};
use crate::error::{Error, Result};

pub(crate) trait Stack {
    /// Per-forward state shared by the blocks (RoPE tables, masks).
    type Context;
    /// State for `t` new positions after `offset` cached ones.
    fn context(&self, t: usize, offset: usize) -> Result<Self::Context>;
    fn embed(&self, ids: &Tensor) -> Result<Tensor>;
    /// Blocks loaded, and blocks in the checkpoint.
    fn loaded_blocks(&self) -> usize;
    fn total_blocks(&self) -> usize;
    fn block(
        &self,
        i: usize,
        xs: &Tensor,
        ctx: &Self::Context,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor>;
    fn head(&self) -> Option<&LmHead>;
}

fn run<S: Stack>(
    s: &S,
    batch: &TokenBatch,
    blocks: usize,
    mut cache: Option<&mut KvCache>,
    hook: &mut dyn LayerHook,
) -> Result<Tensor> {
    let offset = cache.as_ref().map_or(0, |c| c.len());
    let ctx = s.context(batch.max_len(), offset)?;
    let mut xs = s.embed(&batch.input_ids)?;
    for i in 0..blocks {
        xs = s.block(i, &xs, &ctx, cache.as_deref_mut().map(|c| (c, i)))?;
        if let Some(replaced) = hook.after_block(i, &xs, batch)? {
            xs = replaced;
        }
    }
    Ok(xs)
}

/// Blocks `0..=last_layer`: the residual stream leaving `last_layer`.
pub(crate) fn forward_blocks<S: Stack>(
    s: &S,
    batch: &TokenBatch,
    last_layer: usize,
    hook: &mut dyn LayerHook,
) -> Result<Tensor> {
    if last_layer >= s.loaded_blocks() {
        return Err(Error::new(format!(
            "layer {last_layer} was not loaded ({} blocks loaded)",
            s.loaded_blocks()
        )));
    }
    run(s, batch, last_layer + 1, None, hook)
}

/// Every block, then the final norm and LM head.
pub(crate) fn forward_logits<S: Stack>(
    s: &S,
    batch: &TokenBatch,
    cache: Option<&mut KvCache>,
    hook: &mut dyn LayerHook,
    positions: LogitPositions,
) -> Result<Tensor> {
    let head = s
        .head()
        .ok_or_else(|| Error::new("the model was loaded without its LM head"))?;
    if s.loaded_blocks() < s.total_blocks() {
        return Err(Error::new("logits need every block loaded"));
    }
    if cache.is_some() && batch.lengths.len() != 1 {
        return Err(Error::new("a key/value cache holds one sequence"));
    }
    let xs = run(s, batch, s.total_blocks(), cache, hook)?;
    head.forward(&xs, batch, positions)
}
