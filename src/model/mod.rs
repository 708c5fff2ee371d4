//! The model seen by the trainer and by steering: one forward path with a hook after each block.
//!
//! A [`LayerHook`] sees the residual stream leaving every decoder block that runs and may
//! replace it: capturing activations for training and adding a steering vector are the same
//! hook point, so a vector is always applied exactly where it was read.

pub mod attention;
pub mod config;
pub mod embedding;
pub mod gemma;
pub mod gguf;
pub mod head;
pub mod hub;
pub mod llama;
pub mod load;
pub mod mask;
pub mod norm;
pub mod rope;
mod stack;
pub mod weights;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use embedding::TokenEmbedding;

pub use load::{load_model, LoadOptions, LoadedModel};

/// What a model file is built from besides its config.
pub struct ModelParts<'a> {
    /// Points at the text model (`model.` in a causal-LM checkpoint).
    pub vb: VarBuilder<'a>,
    pub embed_tokens: TokenEmbedding,
    /// Blocks to load, from block 0.
    pub num_blocks: usize,
    /// The LM head: `Some(weight)` when untied, `None` to reuse the (full) embedding table.
    /// Only loaded when `with_head` is set.
    pub lm_head: Option<Tensor>,
    pub with_head: bool,
}

impl ModelParts<'_> {
    /// The LM head's `[vocab, hidden]` weight: its own, or the tied embedding table.
    pub(crate) fn head_weight(&self) -> Result<Tensor> {
        match (&self.lm_head, &self.embed_tokens) {
            (Some(w), _) => Ok(w.clone()),
            (None, TokenEmbedding::Full(table)) => Ok(table.clone()),
            (None, TokenEmbedding::Rows { .. }) => Err(Error::new(
                "the LM head is tied to the embedding, which was not loaded whole",
            )),
        }
    }
}

/// Token sequences of one forward call, right-padded to a common length.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[batch, max_len]` token ids, padding after each sequence's real tokens.
    pub input_ids: Tensor,
    /// Real (non-pad) tokens per sequence; every sequence has at least one.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// Packs sequences into one right-padded batch on `device`.
    pub fn new(seqs: &[&[u32]], pad_id: u32, device: &Device) -> Result<TokenBatch> {
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::new("a forward batch needs non-empty sequences"));
        }
        let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(seqs.len() * max_len);
        for s in seqs {
            flat.extend_from_slice(s);
            flat.extend(std::iter::repeat_n(pad_id, max_len - s.len()));
        }
        let input_ids = Tensor::from_vec(flat, (seqs.len(), max_len), device)?;
        Ok(TokenBatch {
            input_ids,
            lengths: seqs.iter().map(|s| s.len()).collect(),
        })
    }

    pub fn max_len(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    pub fn real_tokens(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// Called with the residual stream leaving block `layer`, `[batch, seq, hidden]`.
pub trait LayerHook {
    /// Returns a replacement residual stream, or `None` to leave it unchanged.
    fn after_block(
        &mut self,
        layer: usize,
        residual: &Tensor,
        batch: &TokenBatch,
    ) -> Result<Option<Tensor>>;
}

/// A hook that does nothing: the plain forward pass.
pub struct NoHook;

impl LayerHook for NoHook {
    fn after_block(&mut self, _: usize, _: &Tensor, _: &TokenBatch) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Keys and values of earlier positions, per block, so decoding feeds one token at a time.
/// Holds one sequence.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's keys and values for block `layer` and returns all of them.
    pub(crate) fn extend(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (
                Tensor::cat(&[&pk, &k], 2)?.contiguous()?,
                Tensor::cat(&[&pv, &v], 2)?.contiguous()?,
            ),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// Which positions [`DecoderModel::forward_logits`] computes logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitPositions {
    /// Each sequence's last real token: `[batch, vocab]`.
    Last,
    /// Every position: `[batch, seq, vocab]`.
    All,
}

/// A decoder-only transformer whose blocks the hooks can see.
pub trait DecoderModel {
    /// Decoder blocks in the checkpoint.
    fn num_layers(&self) -> usize;
    /// Blocks whose weights are loaded: the forward can run through `0..loaded_layers()`.
    fn loaded_layers(&self) -> usize;
    fn hidden_size(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model was trained for, when the config says.
    fn max_positions(&self) -> Option<usize>;
    fn device(&self) -> &Device;
    /// Runs blocks `0..=last_layer` and returns the residual stream leaving `last_layer`.
    fn forward_blocks(
        &self,
        batch: &TokenBatch,
        last_layer: usize,
        hook: &mut dyn LayerHook,
    ) -> Result<Tensor>;

    /// Runs every block (continuing `cache` when given; the batch must then hold one
    /// sequence), then the final norm and LM head: f32 logits at `positions`. Needs a model
    /// loaded with its head.
    fn forward_logits(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
        hook: &mut dyn LayerHook,
        positions: LogitPositions,
    ) -> Result<Tensor>;
}
