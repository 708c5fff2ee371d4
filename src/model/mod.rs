//! The model seen by the trainer and by steering: one forward path with a hook after each block.
//!
//! A [`LayerHook`] sees the residual stream leaving every decoder block that runs and may
//! replace it: capturing activations for training and adding a steering vector are the same
//! hook point, so a vector is always applied exactly where it was read.
//!
//! Each architecture file ([`gemma`], [`llama`]) holds every fact about its architectures in
//! an [`Architecture`] descriptor and supplies its decoder block; [`decoder`] owns the rest.
//! [`ARCHITECTURES`] is the one list that loading dispatches through.

pub mod attention;
pub mod batch;
pub mod cache;
pub mod config;
pub mod decoder;
pub mod embedding;
pub mod gemma;
pub mod gguf;
pub mod head;
pub mod hub;
pub mod layout;
pub mod llama;
pub mod load;
pub mod locate;
pub mod mask;
pub mod mlp;
pub mod norm;
pub mod rope;
pub mod weights;

use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use crate::error::Result;

pub use batch::{SlottedRow, TokenBatch};
pub use cache::KvCache;
pub use config::{HfConfig, TextConfig};
pub use layout::Slot;
pub use load::{load_model, LoadOptions, LoadedModel, ModelSpec};
pub use weights::WeightSource;

/// Every architecture this build runs.
pub const ARCHITECTURES: &[&Architecture] = &[
    &gemma::GEMMA2,
    &gemma::GEMMA3,
    &gemma::GEMMA3_MULTIMODAL,
    &llama::LLAMA,
    &llama::MISTRAL,
    &llama::QWEN2,
];

/// Every fact about one architecture that is not its forward code.
#[derive(Debug)]
pub struct Architecture {
    /// For messages: `Gemma-2`.
    pub name: &'static str,
    /// config.json `architectures` entries that mean this architecture.
    pub hf_classes: &'static [&'static str],
    /// config.json `model_type`s that mean it, when there is no `architectures` list; the
    /// first is the text model's own.
    pub model_types: &'static [&'static str],
    /// The config.json key holding the text model's settings (vision-language checkpoints).
    pub text_config: Option<&'static str>,
    /// Where the text model's tensors live, tried in order.
    pub text_prefixes: &'static [&'static str],
    /// HF's config-class defaults, as JSON with HF's key names.
    pub defaults: &'static str,
    /// What the architecture decides rather than the file: which blocks slide, the attention
    /// scale and soft-cap, norms, biases, the activation.
    pub resolve: fn(&HfConfig, &mut TextConfig) -> Result<()>,
    /// Builds the model from its weights.
    pub build: fn(&TextConfig, &WeightSource, &LoadOptions) -> Result<Box<dyn DecoderModel>>,
    /// How llama.cpp stores it, when it does.
    pub gguf: Option<GgufFacts>,
}

/// How llama.cpp's conversion stores an architecture.
#[derive(Debug)]
pub struct GgufFacts {
    /// `general.architecture`.
    pub arch: &'static str,
    /// Norm weights are stored as `1 + w`.
    pub norms_plus_one: bool,
    /// q/k projection rows are permuted for llama.cpp's RoPE layout.
    pub permuted_qk: bool,
    /// The GGUF tensor of HF's `post_attention_layernorm`.
    pub post_attention_norm: &'static str,
    /// Adds the config keys llama.cpp does not store to those it does.
    pub complete_config: fn(&mut Map<String, Value>),
}

/// Where in a block a hook sees the stream: steering-vectors' layer types. `DecoderBlock` is
/// the residual stream leaving the block; the others are the outputs of the block's modules of
/// those names (see each architecture file for what they are there).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    DecoderBlock,
    SelfAttn,
    Mlp,
    InputLayernorm,
    PostAttentionLayernorm,
}

impl LayerType {
    pub const ALL: [LayerType; 5] = [
        LayerType::DecoderBlock,
        LayerType::SelfAttn,
        LayerType::Mlp,
        LayerType::InputLayernorm,
        LayerType::PostAttentionLayernorm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LayerType::DecoderBlock => "decoder_block",
            LayerType::SelfAttn => "self_attn",
            LayerType::Mlp => "mlp",
            LayerType::InputLayernorm => "input_layernorm",
            LayerType::PostAttentionLayernorm => "post_attention_layernorm",
        }
    }
}

impl std::fmt::Display for LayerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LayerType {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self> {
        LayerType::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = LayerType::ALL.iter().map(|t| t.name()).collect();
                crate::error::Error::new(format!("unknown layer type `{s}`"))
                    .with_hint(format!("layer types: {}", names.join(", ")))
            })
    }
}

/// Sees the stream at every point of every block that runs, `[batch, seq, hidden]`, and may
/// replace it: the same points serve reading (training) and adding (steering).
pub trait LayerHook {
    /// Returns a replacement for the output of `point` in block `layer`, or `None`.
    fn at(&mut self, layer: usize, point: LayerType, xs: &Tensor) -> Result<Option<Tensor>>;
}

/// A hook that does nothing: the plain forward pass.
pub struct NoHook;

impl LayerHook for NoHook {
    fn at(&mut self, _: usize, _: LayerType, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Which positions [`DecoderModel::forward_logits`] computes logits for.
#[derive(Debug, Clone, Copy)]
pub enum LogitPositions<'a> {
    /// Each row's last token: `[batch, vocab]`.
    Last,
    /// Every position: `[batch, len, vocab]`.
    All,
    /// These rows of the flattened `[batch * len]` positions (u32): `[rows, vocab]`.
    Rows(&'a Tensor),
}

/// Where a forward pass starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// At the token embeddings.
    Embeddings,
    /// At block `.0`, with `.1` the residual stream entering it (read from an earlier pass over
    /// the same batch): the blocks before it are not run again.
    Block(usize, &'a Tensor),
}

/// A decoder-only transformer whose blocks the hooks can see.
pub trait DecoderModel: Send + Sync {
    fn config(&self) -> &TextConfig;
    /// Blocks whose weights are loaded: the forward can run through `0..loaded_layers()`.
    fn loaded_layers(&self) -> usize;
    fn device(&self) -> &Device;
    /// Whether blocks are read from the checkpoint as they run rather than held.
    fn streams_blocks(&self) -> bool;

    /// Decoder blocks in the checkpoint.
    fn num_layers(&self) -> usize {
        self.config().num_hidden_layers
    }
    fn hidden_size(&self) -> usize {
        self.config().hidden_size
    }
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    /// The longest sequence the model was trained for, when the config says.
    fn max_positions(&self) -> Option<usize> {
        self.config().max_position_embeddings
    }

    /// Runs blocks `0..=last_layer` and returns the residual stream leaving `last_layer`.
    fn forward_blocks(
        &self,
        batch: &TokenBatch,
        last_layer: usize,
        hook: &mut dyn LayerHook,
    ) -> Result<Tensor>;

    /// Runs every batch through blocks `0..=last_layer` block by block: each block runs over
    /// all batches before the next starts, so a streaming model reads each block once (the next
    /// while this one runs). `visit(layer, batch, point, xs)` sees every point of every block.
    fn forward_layer_major(
        &self,
        batches: &[TokenBatch],
        last_layer: usize,
        visit: &mut dyn FnMut(usize, usize, LayerType, &Tensor) -> Result<()>,
    ) -> Result<()>;

    /// Runs every block (continuing `cache` when given: one plain sequence, or slotted rows),
    /// then the final norm and LM head: f32 logits at `positions`. Needs a model loaded with
    /// its head.
    fn forward_logits(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
        hook: &mut dyn LayerHook,
        positions: LogitPositions,
    ) -> Result<Tensor>;

    /// `log p(token)` for each `(row, token)` target, `row` indexing the flattened
    /// `[batch * len]` positions: a forward from `start` (no cache), then the final norm and
    /// head on those rows only, in chunks, so the whole vocabulary is never held for every row.
    fn target_logprobs(
        &self,
        batch: &TokenBatch,
        start: Start,
        hook: &mut dyn LayerHook,
        targets: &[(u32, u32)],
    ) -> Result<Vec<f32>>;
}
