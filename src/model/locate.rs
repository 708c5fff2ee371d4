//! `--model` to files: a local directory, a GGUF file (or a directory holding one), or an HF
//! repo id read from (and downloaded into) the HF cache. Nothing heavy is read here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::hub::HubRepo;
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
