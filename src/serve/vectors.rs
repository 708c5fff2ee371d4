//! The vectors a server offers: every vector file in its directory that fits the model, named
//! by file stem (a `.safetensors` wins over a `.pkl` or `.gguf` of the same name), rescanned
//! when the directory changes. Requests name vectors; they never give paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::api::{ApiError, SteeringEntry};
use super::Limits;
use crate::layers::LayerSpec;
use crate::model::{LayerType, TextConfig};
use crate::vector::SteeringVector;

/// Formats in order of preference for one stem.
const EXTENSIONS: [&str; 3] = ["safetensors", "pkl", "gguf"];

enum Entry {
    Usable(Arc<SteeringVector>),
    Unusable(String),
}

pub struct Registry {
    dir: PathBuf,
    config: TextConfig,
    model_name: String,
    seen: Option<SystemTime>,
    entries: BTreeMap<String, (PathBuf, Entry)>,
}

impl Registry {
    pub fn new(dir: &Path, config: TextConfig, model_name: &str) -> Registry {
        let mut r = Registry {
            dir: dir.to_path_buf(),
            config,
            model_name: model_name.to_string(),
            seen: None,
            entries: BTreeMap::new(),
        };
        r.rescan();
        r
    }

    /// Reads the directory again if it changed since the last scan.
    pub fn rescan(&mut self) {
        let modified = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.seen {
            return;
        }
        self.seen = modified;
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let listing = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        for path in listing.map(|e| e.path()) {
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|e| e.to_str()),
            ) else {
                continue;
            };
            let Some(rank) = EXTENSIONS.iter().position(|e| *e == ext) else {
                continue;
            };
            let better = files.get(stem).is_none_or(|p| {
                let current = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                EXTENSIONS
                    .iter()
                    .position(|e| *e == current)
                    .unwrap_or(usize::MAX)
                    > rank
            });
            if better && !stem.starts_with('.') {
                files.insert(stem.to_string(), path);
            }
        }
        let entries = files
            .into_iter()
            .map(|(name, path)| {
                let entry = match SteeringVector::load(&path) {
                    Err(e) => Entry::Unusable(e.to_string()),
                    Ok(v) => match v.check_fits(
                        &path.display().to_string(),
                        &self.config,
                        &self.model_name,
                    ) {
                        Err(e) => Entry::Unusable(e.to_string()),
                        Ok(_) => Entry::Usable(Arc::new(v)),
                    },
                };
                (name, (path, entry))
            })
            .collect();
        self.entries = entries;
    }

    /// Every vector with what the page shows, and the files that cannot be used, with why.
    pub fn describe(&self) -> Value {
        let (mut usable, mut unusable) = (Vec::new(), Vec::new());
        for (name, (path, entry)) in &self.entries {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
            match entry {
                Entry::Usable(v) => usable.push(json!({
                    "name": name,
                    "file": file,
                    "layer_type": v.layer_type,
                    "layers": v.layer_activations.keys().collect::<Vec<_>>(),
                    "norms": v.norms(),
                    "metadata": v.provenance.to_strings(),
                })),
                Entry::Unusable(reason) => {
                    unusable.push(json!({"name": name, "file": file, "reason": reason}))
                }
            }
        }
        json!({"vectors": usable, "unusable": unusable})
    }

    /// The request's steering as one addition per layer: `sum(multiplier * v[k])` over its
    /// entries, on the layers each entry names (all of the vector's by default).
    pub fn steering(
        &mut self,
        entries: &[SteeringEntry],
        limits: &Limits,
    ) -> Result<BTreeMap<(usize, LayerType), Vec<f32>>, ApiError> {
        if entries.len() > limits.max_steering {
            return Err(ApiError::bad(
                "steering",
                format!(
                    "at most {} steering entries are accepted",
                    limits.max_steering
                ),
            ));
        }
        if entries
            .iter()
            .any(|e| !self.entries.contains_key(&e.vector))
        {
            self.rescan();
        }
        let mut sum: BTreeMap<(usize, LayerType), Vec<f32>> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            let param = format!("steering[{i}]");
            let v = match self.entries.get(&e.vector) {
                Some((_, Entry::Usable(v))) => v.clone(),
                Some((_, Entry::Unusable(why))) => {
                    return Err(ApiError::bad(
                        &format!("{param}.vector"),
                        format!(
                            "`{param}.vector` `{}` cannot steer this model: {why}",
                            e.vector
                        ),
                    ))
                }
                None => {
                    return Err(ApiError::bad(
                        &format!("{param}.vector"),
                        format!(
                            "`{param}.vector`: no vector named `{}`; see /api/vectors",
                            e.vector
                        ),
                    )
                    .status(axum::http::StatusCode::NOT_FOUND))
                }
            };
            if !e.multiplier.is_finite() || e.multiplier.abs() > limits.max_multiplier {
                return Err(ApiError::bad(
                    &format!("{param}.multiplier"),
                    format!(
                        "`{param}.multiplier` must be a finite number of at most {} in size",
                        limits.max_multiplier
                    ),
                ));
            }
            let layers: Vec<usize> = match &e.layers {
                None => v.layer_activations.keys().copied().collect(),
                Some(list) => LayerSpec::List(list.clone())
                    .resolve(self.config.num_hidden_layers)
                    .map_err(|err| {
                        ApiError::bad(
                            &format!("{param}.layers"),
                            format!("`{param}.layers`: {}", err.message()),
                        )
                    })?,
            };
            let point: LayerType = v.layer_type.parse().map_err(|err: crate::error::Error| {
                ApiError::bad(
                    &format!("{param}.vector"),
                    format!("`{param}.vector`: {}", err.message()),
                )
            })?;
            for k in layers {
                let Some(dir) = v.layer_activations.get(&k) else {
                    return Err(ApiError::bad(
                        &format!("{param}.layers"),
                        format!("`{param}.layers`: vector `{}` has no layer {k}", e.vector),
                    ));
                };
                let add = sum
                    .entry((k, point))
                    .or_insert_with(|| vec![0.0; dir.len()]);
                // As `Steering` forms it: the f32 vector times the multiplier, in f32.
                for (a, x) in add.iter_mut().zip(dir) {
                    *a += x * e.multiplier as f32;
                }
            }
        }
        Ok(sum)
    }
}
