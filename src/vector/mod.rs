//! A steering vector: layer -> direction, its layer type and its [`Provenance`], with the
//! arithmetic steering relies on (`v * m`, `-v`, `v + w`) and the check that it fits a model.
//! [`files`] reads and writes it as `.safetensors`, `.pkl` and llama.cpp `.gguf`.

pub mod files;
pub mod provenance;

use std::collections::BTreeMap;
use std::ops::{Mul, Neg};
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::TextConfig;

pub use files::VectorFiles;
pub use provenance::Provenance;

/// steering-vectors' layer type for the residual stream leaving a decoder block.
pub const DECODER_BLOCK: &str = "decoder_block";

#[derive(Debug, Clone, PartialEq)]
pub struct SteeringVector {
    /// Absolute 0-based block index -> direction, all of one length.
    pub layer_activations: BTreeMap<usize, Vec<f32>>,
    pub layer_type: String,
    pub provenance: Provenance,
}

impl SteeringVector {
    pub fn new(layer_activations: BTreeMap<usize, Vec<f32>>) -> Self {
        Self {
            layer_activations,
            layer_type: DECODER_BLOCK.to_string(),
            provenance: Provenance::default(),
        }
    }

    /// `self + other` on the layers both have; other layers keep their own direction. The
    /// result keeps `self`'s layer type and provenance.
    pub fn checked_add(&self, other: &SteeringVector) -> Result<SteeringVector> {
        if let (Some(a), Some(b)) = (self.hidden_size(), other.hidden_size()) {
            if a != b {
                return Err(Error::new(format!(
                    "cannot add vectors of hidden sizes {a} and {b}"
                )));
            }
        }
        let mut out = self.clone();
        for (l, v) in &other.layer_activations {
            match out.layer_activations.get_mut(l) {
                Some(mine) => mine.iter_mut().zip(v).for_each(|(x, y)| *x += y),
                None => {
                    out.layer_activations.insert(*l, v.clone());
                }
            }
        }
        Ok(out)
    }

    pub fn hidden_size(&self) -> Option<usize> {
        self.layer_activations.values().next().map(Vec::len)
    }

    /// L2 norm of each layer's direction.
    pub fn norms(&self) -> BTreeMap<usize, f64> {
        self.layer_activations
            .iter()
            .map(|(&l, d)| {
                (
                    l,
                    d.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt(),
                )
            })
            .collect()
    }

    /// Whether the vector can steer a model with config `cfg`: hidden size and depth must
    /// match (an error naming `origin`). A vector trained on a model of another name only
    /// earns a warning, returned for the caller to show.
    pub fn check_fits(
        &self,
        origin: &str,
        cfg: &TextConfig,
        model: &str,
    ) -> Result<Option<String>> {
        let (vh, hidden) = (self.hidden_size().unwrap_or(0), cfg.hidden_size);
        if vh != hidden {
            return Err(Error::new(format!(
                "vector `{origin}` has hidden size {vh}, the model {hidden}"
            ))
            .with_hint("the vector was trained on another model"));
        }
        if let Some(&deepest) = self.layer_activations.keys().max() {
            if deepest >= cfg.num_hidden_layers {
                return Err(Error::new(format!(
                    "vector `{origin}` has layer {deepest}, the model only {} layers",
                    cfg.num_hidden_layers
                ))
                .with_hint("the vector was trained on another model"));
            }
        }
        Ok(self
            .provenance
            .model
            .as_deref()
            .filter(|trained_on| *trained_on != model)
            .map(|trained_on| {
                format!("vector `{origin}` was trained on `{trained_on}`, not `{model}`")
            }))
    }

    /// Every layer non-empty, of one length, and finite.
    fn check(self, origin: &str) -> Result<Self> {
        let bad = |what: String| Err(Error::new(format!("`{origin}` {what}")));
        let Some(h) = self.hidden_size() else {
            return bad("holds no layers".to_string());
        };
        if h == 0 {
            return bad("holds empty vectors".to_string());
        }
        for (l, v) in &self.layer_activations {
            if v.len() != h {
                return bad(format!(
                    "has layer {l} of length {}, others of {h}",
                    v.len()
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return bad(format!("has non-finite values at layer {l}"));
            }
        }
        Ok(self)
    }

    /// Reads a `.safetensors`, `.pkl` or `.gguf` (llama.cpp control vector) file, chosen by
    /// extension.
    pub fn load(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        // A steering vector is layers x hidden floats: megabytes. Refuse to read anything huge.
        const MAX_VECTOR_FILE: u64 = 1 << 30;
        let len = std::fs::metadata(path)
            .map_err(|e| Error::new(format!("cannot read vector `{origin}`: {e}")))?
            .len();
        if len > MAX_VECTOR_FILE {
            return Err(Error::new(format!(
                "vector `{origin}` is {len} bytes, too large to be a steering vector"
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| Error::new(format!("cannot read vector `{origin}`: {e}")))?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Self::from_safetensors(&bytes, &origin),
            Some("pkl") => Self::from_pkl(&bytes, &origin),
            Some("gguf") => Self::from_gguf(&bytes, &origin),
            _ => Err(
                Error::new(format!("cannot tell the format of vector `{origin}`"))
                    .with_hint("vector files end in `.safetensors`, `.pkl` or `.gguf`"),
            ),
        }
    }
}

/// `m * v` on every layer, keeping the layer type and provenance.
impl Mul<f32> for &SteeringVector {
    type Output = SteeringVector;
    fn mul(self, m: f32) -> SteeringVector {
        let mut out = self.clone();
        for v in out.layer_activations.values_mut() {
            v.iter_mut().for_each(|x| *x *= m);
        }
        out
    }
}

impl Mul<f32> for SteeringVector {
    type Output = SteeringVector;
    fn mul(self, m: f32) -> SteeringVector {
        &self * m
    }
}

impl Neg for &SteeringVector {
    type Output = SteeringVector;
    fn neg(self) -> SteeringVector {
        self * -1.0
    }
}

impl Neg for SteeringVector {
    type Output = SteeringVector;
    fn neg(self) -> SteeringVector {
        &self * -1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SteeringVector {
        SteeringVector::new(BTreeMap::from([(0, vec![1.0, -2.5]), (7, vec![0.0, 4.0])]))
    }

    #[test]
    fn arithmetic_identities() {
        let v = sample();
        let zero = v.checked_add(&-&v).unwrap();
        assert!(zero.layer_activations.values().flatten().all(|x| *x == 0.0));
        assert_eq!((&v * 2.0).layer_activations[&0], vec![2.0, -5.0]);
        assert_eq!(v.norms()[&7], 4.0);
        let other = SteeringVector::new(BTreeMap::from([(1, vec![1.0, 2.0, 3.0])]));
        assert!(v.checked_add(&other).is_err());
    }
}
