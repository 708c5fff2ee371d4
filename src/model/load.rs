//! Located files to a runnable model: the config (config.json or GGUF metadata), then the
//! tokenizer and the weights of the blocks a run needs, built by the architecture's descriptor.

use std::path::Path;

use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use super::config::read_config;
use super::gguf::GgufCheckpoint;
use super::locate::{locate, ModelFiles};
use super::weights::SafetensorsFiles;
use super::{DecoderModel, TextConfig, WeightSource};
use crate::error::{Error, Result};

/// What the config says, enough to resolve layers and name outputs, before weights are read.
#[derive(Clone)]
pub struct ModelSpec {
    pub files: ModelFiles,
    pub config: TextConfig,
    gguf: Option<GgufCheckpoint>,
}

impl ModelSpec {
    /// Locates `model` (see [`locate`]) and reads its config.
    pub fn open(model: &str, tokenizer: Option<&Path>) -> Result<ModelSpec> {
        inspect(locate(model, tokenizer)?)
    }

    pub fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Bytes the weights of blocks `0..n` take in memory as `dtype`, per block.
    pub fn block_bytes(&self, n: usize, dtype: DType) -> Result<Vec<u64>> {
        let size = dtype.size_in_bytes() as u64;
        let files = match &self.gguf {
            Some(ckpt) => return Ok((0..n).map(|k| ckpt.block_elements(k) * size).collect()),
            None => SafetensorsFiles::open(&self.files.weights)?,
        };
        let prefixes = self.config.architecture.text_prefixes;
        Ok((0..n)
            .map(|k| {
                let elements = prefixes
                    .iter()
                    .map(|p| files.elements_with_prefix(&format!("{p}.layers.{k}.")))
                    .max()
                    .unwrap_or(0);
                elements * size
            })
            .collect())
    }
}

pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    /// Blocks to load, from block 0; `None` loads all of them.
    pub num_blocks: Option<usize>,
    /// Keep the whole embedding table in memory; otherwise rows are read from the checkpoint
    /// as batches need them (a tied LM head loads it whole anyway).
    pub full_embedding: bool,
    /// Load the final norm and LM head, for logits (generation, evaluation).
    pub with_head: bool,
    /// Read each block from the checkpoint when it runs instead of holding them all: memory
    /// for about two blocks, whatever the model's size (layer-major passes read each once).
    pub stream_blocks: bool,
}

impl LoadOptions {
    /// What training needs: `num_blocks` blocks, no head, embedding rows on demand.
    pub fn for_training(device: Device, dtype: DType, num_blocks: Option<usize>) -> Self {
        Self {
            device,
            dtype,
            num_blocks,
            full_embedding: false,
            with_head: false,
            stream_blocks: false,
        }
    }

    /// What logits need: every block and the head.
    pub fn for_logits(device: Device, dtype: DType) -> Self {
        Self {
            device,
            dtype,
            num_blocks: None,
            full_embedding: false,
            with_head: true,
            stream_blocks: false,
        }
    }
}

pub struct LoadedModel {
    pub model: Box<dyn DecoderModel>,
    pub tokenizer: Tokenizer,
    pub spec: ModelSpec,
}

impl LoadedModel {
    /// The id that pads batches.
    pub fn pad_id(&self) -> u32 {
        self.spec.config.pad_token_id
    }
}

/// Reads the config of located files.
pub fn inspect(files: ModelFiles) -> Result<ModelSpec> {
    let (config, gguf) = if files.gguf {
        let (ckpt, config) = GgufCheckpoint::open(&files.config)?;
        (config, Some(ckpt))
    } else {
        (read_config(&files.config)?, None)
    };
    Ok(ModelSpec {
        files,
        config,
        gguf,
    })
}

/// Loads the tokenizer and the weights of the blocks `opts` asks for.
pub fn load_model(spec: ModelSpec, opts: &LoadOptions) -> Result<LoadedModel> {
    let tokenizer = match &spec.gguf {
        Some(ckpt) if !spec.files.tokenizer.is_file() => {
            plain(ckpt.tokenizer()?, &spec.files.config)?
        }
        _ => load_tokenizer(&spec.files.tokenizer)?,
    };
    let weights = match &spec.gguf {
        Some(ckpt) => WeightSource::gguf(ckpt.clone(), opts.dtype, &opts.device),
        None => {
            let files = SafetensorsFiles::open(&spec.files.weights)?;
            WeightSource::safetensors(files, opts.dtype, &opts.device)
        }
    };
    let cfg = &spec.config;
    let model = (cfg.architecture.build)(cfg, &weights, opts)
        .map_err(|e| e.context(format!("cannot load weights of `{}`", spec.files.origin)))?;
    // Added tokens past the embedding (Gemma-3 lists an image token there) are refused only
    // if a text actually produces one; the base vocabulary must fit.
    let tok_vocab = tokenizer.get_vocab_size(false);
    if tok_vocab > model.vocab_size() {
        return Err(Error::new(format!(
            "tokenizer `{}` has {tok_vocab} tokens but the model's embedding has only {}",
            spec.files.tokenizer.display(),
            model.vocab_size()
        ))
        .with_hint("the tokenizer belongs to another model"));
    }
    Ok(LoadedModel {
        model,
        tokenizer,
        spec,
    })
}

/// A tokenizer that encodes like HF's `tokenizer(text)`: special tokens, no truncation.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let tok = Tokenizer::from_file(path)
        .map_err(|e| Error::new(format!("cannot load tokenizer `{}`: {e}", path.display())))?;
    plain(tok, path)
}

fn plain(mut tok: Tokenizer, origin: &Path) -> Result<Tokenizer> {
    tok.with_truncation(None)
        .map_err(|e| Error::new(format!("tokenizer `{}`: {e}", origin.display())))?;
    tok.with_padding(None);
    Ok(tok)
}
