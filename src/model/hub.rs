//! HF repo ids through the HF cache, laid out as Python's `huggingface_hub` lays it out, so
//! models Python already downloaded are reused.
//!
//! hf-hub reads only `HF_HOME`; `HF_HUB_CACHE`, `HF_TOKEN` and `HF_HUB_OFFLINE` are handled
//! here with Python's meanings.

use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Repo, RepoType};

use crate::error::{Error, Result};

/// One model repository, read from the cache and downloaded into it when allowed.
pub struct HubRepo {
    id: String,
    cache_dir: PathBuf,
    offline: bool,
    api: Option<ApiRepo>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn hf_home() -> Option<PathBuf> {
    env("HF_HOME").map(PathBuf::from).or_else(|| {
        let base = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("huggingface"))
    })
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> Option<PathBuf> {
    env("HF_HUB_CACHE")
        .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
        .map(PathBuf::from)
        .or_else(|| hf_home().map(|h| h.join("hub")))
}

/// Python's truthy spellings of `HF_HUB_OFFLINE`.
pub fn offline() -> bool {
    env("HF_HUB_OFFLINE")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true"))
}

fn token() -> Option<String> {
    env("HF_TOKEN").or_else(|| {
        let path = env("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .or_else(|| hf_home().map(|h| h.join("token")))?;
        let t = std::fs::read_to_string(path).ok()?;
        Some(t.trim().to_string()).filter(|t| !t.is_empty())
    })
}

impl HubRepo {
    pub fn new(id: &str) -> Result<HubRepo> {
        let cache_dir = cache_dir().ok_or_else(|| {
            Error::new("cannot find the HF cache directory")
                .with_hint("set `HF_HOME` or `HF_HUB_CACHE`")
        })?;
        let offline = offline();
        let api = if offline {
            None
        } else {
            let api = ApiBuilder::from_cache(hf_hub::Cache::new(cache_dir.clone()))
                .with_token(token())
                .with_progress(false)
                .build()
                .map_err(|e| Error::new(format!("cannot set up the HF hub client: {e}")))?;
            Some(api.repo(Repo::new(id.to_string(), RepoType::Model)))
        };
        Ok(HubRepo {
            id: id.to_string(),
            cache_dir,
            offline,
            api,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `file` from the cache, or downloaded into it; `None` when the repo does not have it.
    pub fn try_get(&self, file: &str) -> Result<Option<PathBuf>> {
        let cached = hf_hub::Cache::new(self.cache_dir.clone())
            .model(self.id.clone())
            .get(file);
        if let Some(p) = cached {
            return Ok(Some(p));
        }
        match &self.api {
            None => Ok(None),
            Some(api) => match api.get(file) {
                Ok(p) => Ok(Some(p)),
                Err(e) if e.to_string().contains("404") => Ok(None),
                Err(e) => Err(Error::new(format!(
                    "cannot download `{file}` of `{}`: {e}",
                    self.id
                ))
                .with_hint("check the network and `HF_TOKEN` for gated models, or set `HF_HUB_OFFLINE=1` to use the cache only")),
            },
        }
    }

    /// Like [`HubRepo::try_get`], but a missing file is an error.
    pub fn get(&self, file: &str) -> Result<PathBuf> {
        self.try_get(file)?.ok_or_else(|| self.missing(file))
    }

    pub fn missing(&self, file: &str) -> Error {
        let err = Error::new(format!("model `{}` has no `{file}`", self.id));
        if self.offline {
            err.with_hint(format!(
                "`HF_HUB_OFFLINE` is set and the HF cache at `{}` does not hold it; download it first or pass a local directory to `--model`",
                self.cache_dir.display()
            ))
        } else {
            err
        }
    }
}
