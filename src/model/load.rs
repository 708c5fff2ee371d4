//! `--model` to a runnable model: a local directory, a GGUF file, or an HF repo id, then
//! config, tokenizer and weights (one safetensors file, the shards an index lists, or GGUF).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::config::{read_config, Architecture, ModelConfig};
use super::embedding::TokenEmbedding;
use super::gguf::GgufCheckpoint;
use super::hub::HubRepo;
use super::weights::SafetensorsFiles;
use super::{gemma, llama, DecoderModel, ModelParts};
use crate::error::{Error, Result};

/// Where a model's files are, before anything heavy is read.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// How the user named it: a directory, or an HF repo id.
    pub origin: String,
    /// `config.json`, or the GGUF file whose metadata stands in for it.
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: Vec<PathBuf>,
    pub gguf: bool,
}

/// What the config says, enough to resolve layers and name outputs.
#[derive(Clone)]
pub struct ModelSpec {
    pub files: ModelFiles,
    pub config: ModelConfig,
    gguf: Option<GgufCheckpoint>,
    pub num_layers: usize,
    pub hidden_size: usize,
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
        }
    }
}

pub struct LoadedModel {
    pub model: Box<dyn DecoderModel>,
    pub tokenizer: Tokenizer,
    pub pad_id: u32,
    pub spec: ModelSpec,
}

/// True when `--model` is meant as a path rather than an HF repo id.
fn looks_like_path(model: &str) -> bool {
    let p = Path::new(model);
    p.exists()
        || model.starts_with(['.', '/', '~'])
        || model.matches('/').count() > 1
        || model.contains('\\')
        || model.ends_with('/')
}

/// Finds config, tokenizer and weights for `--model`; `tokenizer` replaces the model's own.
pub fn locate(model: &str, tokenizer: Option<&Path>) -> Result<ModelFiles> {
    if model.trim().is_empty() {
        return Err(Error::new("`--model` is empty"));
    }
    let mut files = if let Some(gguf) = gguf_path(model)? {
        locate_gguf(model, gguf)?
    } else if looks_like_path(model) {
        locate_dir(model, tokenizer.is_some())?
    } else {
        locate_hub(model, tokenizer.is_some())?
    };
    if let Some(t) = tokenizer {
        if !t.is_file() {
            return Err(Error::new(format!(
                "`--tokenizer` file `{}` does not exist",
                t.display()
            )));
        }
        files.tokenizer = t.to_path_buf();
    }
    Ok(files)
}

/// A `.gguf` file, or a directory with no config.json holding exactly one.
fn gguf_path(model: &str) -> Result<Option<PathBuf>> {
    let p = Path::new(model);
    if p.is_file() && p.extension().is_some_and(|e| e == "gguf") {
        return Ok(Some(p.to_path_buf()));
    }
    if !p.is_dir() || p.join("config.json").exists() {
        return Ok(None);
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| Error::new(format!("cannot read model directory `{model}`: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.len() {
        0 => Ok(None),
        1 => Ok(ggufs.into_iter().next()),
        n => Err(
            Error::new(format!("model directory `{model}` holds {n} GGUF files"))
                .with_hint("pass the one to use as `--model DIR/NAME.gguf`"),
        ),
    }
}

/// A tokenizer.json beside the file wins; without one the GGUF's own vocabulary is used where
/// it rebuilds into HF's tokenizer (see [`GgufCheckpoint::tokenizer`]).
fn locate_gguf(model: &str, gguf: PathBuf) -> Result<ModelFiles> {
    let beside = gguf.with_file_name("tokenizer.json");
    Ok(ModelFiles {
        origin: model.to_string(),
        config: gguf.clone(),
        tokenizer: beside,
        weights: vec![gguf],
        gguf: true,
    })
}

fn locate_dir(model: &str, tokenizer_given: bool) -> Result<ModelFiles> {
    let dir = PathBuf::from(model);
    if !dir.is_dir() {
        return Err(Error::new(format!("model directory `{model}` does not exist"))
            .with_hint("`--model` takes a local directory with config.json, tokenizer.json and safetensors weights, or an HF repo id such as `google/gemma-2-9b-it`"));
    }
    let need = |name: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::new(format!(
                "model directory `{model}` has no `{name}`"
            )))
        }
    };
    let config = need("config.json")?;
    let tokenizer = if tokenizer_given {
        dir.join("tokenizer.json")
    } else {
        need("tokenizer.json")?
    };
    let index = dir.join("model.safetensors.index.json");
    let weights = if index.is_file() {
        shards_from_index(&index, &dir)?
    } else if dir.join("model.safetensors").is_file() {
        vec![dir.join("model.safetensors")]
    } else {
        return Err(Error::new(format!(
            "model directory `{model}` has no `model.safetensors` or `model.safetensors.index.json`"
        ))
        .with_hint("only safetensors weights are supported; convert `.bin` checkpoints with `save_pretrained(safe_serialization=True)`"));
    };
    Ok(ModelFiles {
        origin: model.to_string(),
        config,
        tokenizer,
        weights,
        gguf: false,
    })
}

fn locate_hub(id: &str, tokenizer_given: bool) -> Result<ModelFiles> {
    let repo = HubRepo::new(id)?;
    let config = repo.get("config.json")?;
    let tokenizer = if tokenizer_given {
        PathBuf::new()
    } else {
        repo.get("tokenizer.json")?
    };
    let weights = match repo.try_get("model.safetensors.index.json")? {
        Some(index) => {
            let names = shard_names(&index)?;
            names
                .iter()
                .map(|n| repo.get(n))
                .collect::<Result<Vec<_>>>()?
        }
        None => vec![repo
            .try_get("model.safetensors")?
            .ok_or_else(|| repo.missing("model.safetensors"))?],
    };
    Ok(ModelFiles {
        origin: repo.id().to_string(),
        config,
        tokenizer,
        weights,
        gguf: false,
    })
}

/// The distinct shard file names an index maps tensors to, in a stable order.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| Error::new(format!("cannot read `{}`: {e}", index.display())))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("`{}` is not valid JSON: {e}", index.display())))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::new(format!("`{}` has no `weight_map`", index.display())))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::new(format!(
                "`{}` maps `{tensor}` to a non-string",
                index.display()
            ))
        })?;
        names.insert(file.to_string());
    }
    Ok(names.into_iter().collect())
}

fn shards_from_index(index: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    shard_names(index)?
        .into_iter()
        .map(|name| {
            let p = dir.join(&name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::new(format!(
                    "shard `{name}` listed in `{}` is missing",
                    index.display()
                )))
            }
        })
        .collect()
}

/// Reads the config of located files.
pub fn inspect(files: ModelFiles) -> Result<ModelSpec> {
    let (config, gguf) = if files.gguf {
        let (ckpt, config) = GgufCheckpoint::open(&files.config)?;
        (config, Some(ckpt))
    } else {
        (read_config(&files.config)?, None)
    };
    let (num_layers, hidden_size) = (config.num_layers(), config.hidden_size());
    if num_layers == 0 || hidden_size == 0 {
        return Err(Error::new(format!(
            "`{}` has no usable `num_hidden_layers` and `hidden_size`",
            files.config.display()
        )));
    }
    Ok(ModelSpec {
        files,
        config,
        gguf,
        num_layers,
        hidden_size,
    })
}

fn parse_text_config<T: serde::de::DeserializeOwned>(spec: &ModelSpec) -> Result<T> {
    serde_json::from_value(spec.config.text.clone()).map_err(|e| {
        Error::new(format!(
            "`{}` is not a valid {:?} config: {e}",
            spec.files.config.display(),
            spec.config.architecture
        ))
    })
}

/// Where the text model's tensors live: `model.` in causal-LM checkpoints; multimodal
/// Gemma-3 checkpoints use `language_model.model.` (older) or `model.language_model.`.
fn text_prefix<'a>(vb: &VarBuilder<'a>, arch: Architecture) -> VarBuilder<'a> {
    if arch == Architecture::Gemma3Multimodal {
        if vb.contains_tensor("language_model.model.embed_tokens.weight") {
            return vb.pp("language_model").pp("model");
        }
        return vb.pp("model").pp("language_model");
    }
    vb.pp("model")
}

/// Loads the tokenizer and the weights of the blocks `opts` asks for.
pub fn load_model(spec: ModelSpec, opts: &LoadOptions) -> Result<LoadedModel> {
    let tokenizer = match &spec.gguf {
        Some(ckpt) if !spec.files.tokenizer.is_file() => {
            plain(ckpt.tokenizer()?, &spec.files.config)?
        }
        _ => load_tokenizer(&spec.files.tokenizer)?,
    };
    let safetensors = match &spec.gguf {
        Some(_) => None,
        None => Some(SafetensorsFiles::open(&spec.files.weights)?),
    };
    let backend: Box<dyn candle_nn::var_builder::SimpleBackend> = match (&spec.gguf, &safetensors) {
        (Some(g), _) => Box::new(g.clone()),
        (None, Some(f)) => Box::new(f.clone()),
        (None, None) => return Err(Error::new("no weights to load")),
    };
    let root = VarBuilder::from_backend(backend, opts.dtype, opts.device.clone());
    let arch = spec.config.architecture;
    let vb = text_prefix(&root, arch);
    let blocks = opts.num_blocks.unwrap_or(spec.num_layers);
    let context = |e: Error| e.context(format!("cannot load weights of `{}`", spec.files.origin));
    let vocab = spec
        .config
        .text
        .get("vocab_size")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as usize;
    let shape = (vocab, spec.hidden_size);
    let arch_ties = matches!(
        arch,
        Architecture::Gemma2 | Architecture::Gemma3 | Architecture::Gemma3Multimodal
    );
    let tied = spec
        .config
        .text
        .get("tie_word_embeddings")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(arch_ties);
    let lm_head = if opts.with_head && !tied {
        let w = root.get(shape, "lm_head.weight").map_err(|e| {
            context(Error::from(e)).with_hint("config.json says the LM head is not tied, so the checkpoint needs `lm_head.weight`")
        })?;
        Some(w)
    } else {
        None
    };
    let whole = opts.full_embedding || (opts.with_head && lm_head.is_none());
    let embed = match (&safetensors, whole) {
        (Some(files), false) => {
            let name = format!("{}.embed_tokens.weight", vb.prefix());
            TokenEmbedding::rows(files, &name, shape, opts.dtype, &opts.device).map_err(context)?
        }
        _ => TokenEmbedding::Full(
            vb.get(shape, "embed_tokens.weight")
                .map_err(|e| context(e.into()))?,
        ),
    };
    let parts = ModelParts {
        vb,
        embed_tokens: embed,
        num_blocks: blocks,
        lm_head,
        with_head: opts.with_head,
    };
    let model: Box<dyn DecoderModel> = match arch {
        Architecture::Gemma2 | Architecture::Gemma3 | Architecture::Gemma3Multimodal => {
            let cfg: gemma::Config = parse_text_config(&spec)?;
            let gen = if arch == Architecture::Gemma2 {
                gemma::Generation::Gemma2
            } else {
                gemma::Generation::Gemma3
            };
            Box::new(gemma::Model::new(&cfg, gen, parts).map_err(context)?)
        }
        Architecture::Llama | Architecture::Mistral | Architecture::Qwen2 => {
            let cfg: llama::Config = parse_text_config(&spec)?;
            let flavor = match arch {
                Architecture::Mistral => llama::Flavor::Mistral,
                Architecture::Qwen2 => llama::Flavor::Qwen2,
                _ => llama::Flavor::Llama,
            };
            Box::new(llama::Model::new(&cfg, flavor, parts).map_err(context)?)
        }
    };
    let pad_id = spec
        .config
        .text
        .get("pad_token_id")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as u32;
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
        pad_id,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_not_paths() {
        assert!(!looks_like_path("google/gemma-2-27b-it"));
        assert!(!looks_like_path("gpt2"));
        assert!(looks_like_path("./model"));
        assert!(looks_like_path("tests/fixtures/x/y"));
        assert!(looks_like_path("/abs/model"));
    }
}
