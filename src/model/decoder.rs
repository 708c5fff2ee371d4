//! The decoder every architecture shares: token embeddings, the list of blocks with the hook
//! after each (through a key/value cache when decoding), the final norm and LM head, and the
//! per-forward RoPE tables and masks. An architecture file supplies only its [`Block`].

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::embedding::TokenEmbedding;
use super::head::LmHead;
use super::layout::{slot_mask, slot_tables, Slot};
use super::mask::causal_mask;
use super::norm::RmsNorm;
use super::Start;
use super::TokenBatch;
use super::{rope, DecoderModel, KvCache, LayerHook, LayerType, LoadOptions, LogitPositions};
use super::{TextConfig, WeightSource};
use crate::error::{Error, Result};

/// One architecture's decoder block, named after the checkpoint's `layers.{i}`.
pub trait Block: Sized + Send + Sync {
    fn new(cfg: &TextConfig, index: usize, vb: VarBuilder) -> Result<Self>;
    /// The residual stream after the block; `cache` holds this block's keys and values. The
    /// block passes the outputs of its modules through `tap` (the residual stream leaving the
    /// block is tapped by the decoder).
    fn forward(
        &self,
        xs: &Tensor,
        ctx: &ForwardContext,
        cache: Option<(&mut KvCache, usize)>,
        tap: &mut Tap,
    ) -> Result<Tensor>;
}

/// A hook at one block: where a block hands the output of each module.
pub struct Tap<'a> {
    pub layer: usize,
    pub hook: &'a mut dyn LayerHook,
}

impl Tap<'_> {
    /// The hook's replacement for `xs`, the output of `point`, or `xs` itself.
    pub fn apply(&mut self, point: LayerType, xs: Tensor) -> Result<Tensor> {
        Ok(self.hook.at(self.layer, point, &xs)?.unwrap_or(xs))
    }
}

/// A per-batch view of a layer-major visitor, as a hook.
struct Visit<'a> {
    batch: usize,
    visit: &'a mut dyn FnMut(usize, usize, LayerType, &Tensor) -> Result<()>,
}

impl LayerHook for Visit<'_> {
    fn at(&mut self, layer: usize, point: LayerType, xs: &Tensor) -> Result<Option<Tensor>> {
        (self.visit)(layer, self.batch, point, xs)?;
        Ok(None)
    }
}

/// Per-forward state every block reads: RoPE tables and additive masks.
pub struct ForwardContext {
    global_rope: (Tensor, Tensor),
    /// The sliding blocks' tables, when their RoPE differs from the global one.
    sliding_rope: Option<(Tensor, Tensor)>,
    full_mask: Tensor,
    /// Present when the window is shorter than the positions in play.
    sliding_mask: Option<Tensor>,
}

impl ForwardContext {
    /// The RoPE tables and mask of a global or a sliding block.
    pub fn for_block(&self, sliding: bool) -> (&(Tensor, Tensor), &Tensor) {
        if !sliding {
            return (&self.global_rope, &self.full_mask);
        }
        (
            self.sliding_rope.as_ref().unwrap_or(&self.global_rope),
            self.sliding_mask.as_ref().unwrap_or(&self.full_mask),
        )
    }
}

pub struct Decoder<B> {
    embed_tokens: TokenEmbedding,
    /// `sqrt(hidden_size)` rounded to the model dtype, as HF does, where the architecture
    /// scales embeddings.
    embed_scale: Option<Tensor>,
    /// The loaded blocks; empty when they stream.
    layers: Vec<B>,
    /// When blocks are read from the checkpoint one at a time instead: the text model's
    /// tensors and how many blocks can run.
    streamed: Option<(VarBuilder<'static>, usize)>,
    head: Option<LmHead>,
    global_inv_freq: Vec<f32>,
    sliding_inv_freq: Option<Vec<f32>>,
    /// The window, when a loaded block slides.
    window: Option<usize>,
    cfg: TextConfig,
    dtype: DType,
    device: Device,
}

/// [`super::Architecture::build`] for an architecture whose block is `B`.
pub fn build<B: Block + 'static>(
    cfg: &TextConfig,
    weights: &WeightSource,
    opts: &LoadOptions,
) -> Result<Box<dyn DecoderModel>> {
    Ok(Box::new(Decoder::<B>::load(cfg, weights, opts)?))
}

impl<B: Block> Decoder<B> {
    /// Loads the embedding, the blocks `opts` asks for and, only when asked, the final norm and
    /// LM head.
    pub fn load(cfg: &TextConfig, weights: &WeightSource, opts: &LoadOptions) -> Result<Self> {
        let root = weights.root();
        let vb = text_model(root, cfg)?;
        let shape = (cfg.vocab_size, cfg.hidden_size);
        let lm_head = match (opts.with_head, cfg.tie_word_embeddings) {
            (true, false) => Some(root.get(shape, "lm_head.weight").map_err(|e| {
                Error::from(e).with_hint(
                    "config.json says the LM head is not tied, so the checkpoint needs `lm_head.weight`",
                )
            })?),
            _ => None,
        };
        // A tied head is the embedding table itself, so it is then loaded whole.
        let whole = opts.full_embedding || (opts.with_head && lm_head.is_none());
        let name = format!("{}.embed_tokens.weight", vb.prefix());
        let embed_tokens = weights.embedding(&name, shape, whole)?;
        let n = opts
            .num_blocks
            .unwrap_or(cfg.num_hidden_layers)
            .min(cfg.num_hidden_layers);
        let (layers, streamed) = match opts.stream_blocks {
            // The first block is built once up front, so a checkpoint that cannot load fails here.
            true => {
                B::new(cfg, 0, vb.pp("layers").pp(0))?;
                (Vec::new(), Some((vb.clone(), n)))
            }
            false => {
                let layers = (0..n)
                    .map(|i| B::new(cfg, i, vb.pp("layers").pp(i)))
                    .collect::<Result<Vec<_>>>()?;
                (layers, None)
            }
        };
        let head = if opts.with_head {
            let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, cfg.norm, vb.pp("norm"))?;
            let weight = match (lm_head, &embed_tokens) {
                (Some(w), _) => w,
                (None, TokenEmbedding::Full(table)) => table.clone(),
                (None, TokenEmbedding::Rows { .. }) => {
                    return Err(Error::new("the tied LM head needs the whole embedding"))
                }
            };
            Some(LmHead::new(norm, weight, cfg.final_logit_softcapping))
        } else {
            None
        };
        let embed_scale = match cfg.scale_embeddings {
            true => Some(
                Tensor::new(&[(cfg.hidden_size as f32).sqrt()], root.device())?
                    .to_dtype(root.dtype())?,
            ),
            false => None,
        };
        let (global_inv_freq, sliding_inv_freq) = cfg.inv_freqs()?;
        let any_sliding = cfg.sliding[..n].iter().any(|&s| s);
        Ok(Self {
            embed_tokens,
            embed_scale,
            layers,
            streamed,
            head,
            global_inv_freq,
            sliding_inv_freq,
            window: cfg.sliding_window.filter(|_| any_sliding),
            cfg: cfg.clone(),
            dtype: root.dtype(),
            device: root.device().clone(),
        })
    }

    /// RoPE tables and masks for `batch`, after what `cache` holds.
    fn context(&self, batch: &TokenBatch, cache: Option<&KvCache>) -> Result<ForwardContext> {
        let (dt, dev) = (self.dtype, &self.device);
        let Some(slots) = &batch.slots else {
            let (t, offset) = (batch.max_len(), cache.map_or(0, |c| c.len()));
            let tables = |f: &[f32]| rope::tables(f, offset, t, dt, dev);
            let sliding_mask = match self.window.filter(|&w| w < offset + t) {
                Some(w) => Some(causal_mask(t, offset, Some(w), dt, dev)?),
                None => None,
            };
            return Ok(ForwardContext {
                global_rope: tables(&self.global_inv_freq)?,
                sliding_rope: self.sliding_inv_freq.as_deref().map(tables).transpose()?,
                full_mask: causal_mask(t, offset, None, dt, dev)?,
                sliding_mask,
            });
        };
        let keys: Vec<Vec<Slot>> = match cache.map(KvCache::slots).filter(|c| !c.is_empty()) {
            Some(cached) => cached
                .iter()
                .zip(slots)
                .map(|(c, new)| c.iter().chain(new).copied().collect())
                .collect(),
            None => slots.clone(),
        };
        let tables = |f: &[f32]| slot_tables(f, slots, dt, dev);
        let sliding_mask = match self.window {
            Some(w) => Some(slot_mask(&keys, slots, Some(w), dt, dev)?),
            None => None,
        };
        Ok(ForwardContext {
            global_rope: tables(&self.global_inv_freq)?,
            sliding_rope: self.sliding_inv_freq.as_deref().map(tables).transpose()?,
            full_mask: slot_mask(&keys, slots, None, dt, dev)?,
            sliding_mask,
        })
    }

    /// Blocks `blocks` from the embeddings (or from `input`, the residual stream entering the
    /// first of them), with the hook after each.
    fn run(
        &self,
        batch: &TokenBatch,
        blocks: std::ops::Range<usize>,
        input: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        hook: &mut dyn LayerHook,
    ) -> Result<Tensor> {
        let ctx = self.context(batch, cache.as_deref())?;
        let mut xs = match input {
            Some(xs) => xs.clone(),
            None => self.embed(batch)?,
        };
        for i in blocks {
            let block = self.block(i)?;
            let mut tap = Tap { layer: i, hook };
            xs = block.forward(&xs, &ctx, cache.as_deref_mut().map(|c| (c, i)), &mut tap)?;
            xs = tap.apply(LayerType::DecoderBlock, xs)?;
        }
        if let (Some(c), Some(slots)) = (cache, &batch.slots) {
            c.push_slots(slots);
        }
        Ok(xs)
    }

    /// Token embeddings, scaled where the architecture scales them.
    fn embed(&self, batch: &TokenBatch) -> Result<Tensor> {
        let xs = self.embed_tokens.forward(&batch.input_ids)?;
        Ok(match &self.embed_scale {
            Some(scale) => xs.broadcast_mul(scale)?,
            None => xs,
        })
    }

    /// Block `i`: the loaded one, or read from the checkpoint now.
    fn block(&self, i: usize) -> Result<Held<'_, B>> {
        match &self.streamed {
            None => Ok(Held::Loaded(&self.layers[i])),
            Some((vb, _)) => Ok(Held::Read(B::new(&self.cfg, i, vb.pp("layers").pp(i))?)),
        }
    }

    fn blocks(&self) -> usize {
        self.streamed
            .as_ref()
            .map_or(self.layers.len(), |(_, n)| *n)
    }

    fn head(&self) -> Result<&LmHead> {
        if self.blocks() < self.cfg.num_hidden_layers {
            return Err(Error::new("logits need every block loaded"));
        }
        self.head
            .as_ref()
            .ok_or_else(|| Error::new("the model was loaded without its LM head"))
    }
}

/// A block borrowed from the loaded ones, or read for this use only.
enum Held<'a, B> {
    Loaded(&'a B),
    Read(B),
}

impl<B> std::ops::Deref for Held<'_, B> {
    type Target = B;
    fn deref(&self) -> &B {
        match self {
            Held::Loaded(b) => b,
            Held::Read(b) => b,
        }
    }
}

/// The text model's tensors: the first of the architecture's prefixes that holds an embedding.
fn text_model<'a>(root: &VarBuilder<'a>, cfg: &TextConfig) -> Result<VarBuilder<'a>> {
    let prefixes = cfg.architecture.text_prefixes;
    prefixes
        .iter()
        .map(|p| p.split('.').fold(root.clone(), |vb, part| vb.pp(part)))
        .find(|vb| vb.contains_tensor("embed_tokens.weight"))
        .ok_or_else(|| {
            let names: Vec<String> = prefixes
                .iter()
                .map(|p| format!("`{p}.embed_tokens.weight`"))
                .collect();
            Error::new(format!("checkpoint has no {}", names.join(" or ")))
        })
}

impl<B: Block> DecoderModel for Decoder<B> {
    fn config(&self) -> &TextConfig {
        &self.cfg
    }

    fn loaded_layers(&self) -> usize {
        self.blocks()
    }

    fn streams_blocks(&self) -> bool {
        self.streamed.is_some()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward_blocks(
        &self,
        batch: &TokenBatch,
        last_layer: usize,
        hook: &mut dyn LayerHook,
    ) -> Result<Tensor> {
        if last_layer >= self.blocks() {
            return Err(Error::new(format!(
                "layer {last_layer} was not loaded ({} blocks loaded)",
                self.blocks()
            )));
        }
        self.run(batch, 0..last_layer + 1, None, None, hook)
    }

    fn forward_layer_major(
        &self,
        batches: &[TokenBatch],
        last_layer: usize,
        visit: &mut dyn FnMut(usize, usize, LayerType, &Tensor) -> Result<()>,
    ) -> Result<()> {
        if last_layer >= self.blocks() {
            return Err(Error::new(format!(
                "layer {last_layer} was not loaded ({} blocks loaded)",
                self.blocks()
            )));
        }
        let mut states = batches
            .iter()
            .map(|b| self.embed(b))
            .collect::<Result<Vec<_>>>()?;
        let contexts = batches
            .iter()
            .map(|b| self.context(b, None))
            .collect::<Result<Vec<_>>>()?;
        let mut run = |k: usize, block: &B| -> Result<()> {
            for (i, (xs, ctx)) in states.iter_mut().zip(&contexts).enumerate() {
                let mut hook = Visit {
                    batch: i,
                    visit: &mut *visit,
                };
                let mut tap = Tap {
                    layer: k,
                    hook: &mut hook,
                };
                *xs = block.forward(xs, ctx, None, &mut tap)?;
                visit(k, i, LayerType::DecoderBlock, xs)?;
            }
            Ok(())
        };
        let Some((vb, _)) = &self.streamed else {
            for k in 0..=last_layer {
                run(k, &self.layers[k])?;
            }
            return Ok(());
        };
        // One block runs while the next is read; at most two are held.
        let cfg = &self.cfg;
        let load = |k: usize| B::new(cfg, k, vb.pp("layers").pp(k));
        std::thread::scope(|scope| -> Result<()> {
            let mut next = Some(scope.spawn(move || load(0)));
            for k in 0..=last_layer {
                let block = next
                    .take()
                    .ok_or_else(|| Error::new("no block was read"))?
                    .join()
                    .map_err(|_| Error::new(format!("reading block {k} failed")))??;
                if k < last_layer {
                    next = Some(scope.spawn(move || load(k + 1)));
                }
                run(k, &block)?;
            }
            Ok(())
        })
    }

    fn forward_logits(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
        hook: &mut dyn LayerHook,
        positions: LogitPositions,
    ) -> Result<Tensor> {
        let head = self.head()?;
        if cache.is_some() && batch.slots.is_none() && batch.lengths.len() != 1 {
            return Err(Error::new(
                "a key/value cache holds one plain sequence, or slotted rows",
            ));
        }
        let xs = self.run(batch, 0..self.layers.len(), None, cache, hook)?;
        head.forward(&xs, batch, positions)
    }

    fn target_logprobs(
        &self,
        batch: &TokenBatch,
        start: Start,
        hook: &mut dyn LayerHook,
        targets: &[(u32, u32)],
    ) -> Result<Vec<f32>> {
        let head = self.head()?;
        let n = self.layers.len();
        let xs = match start {
            Start::Embeddings => self.run(batch, 0..n, None, None, hook)?,
            Start::Block(from, residual) => self.run(batch, from..n, Some(residual), None, hook)?,
        };
        head.target_logprobs(&xs, targets)
    }
}
