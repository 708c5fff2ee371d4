//! The files of a steering vector: `.safetensors` (one F32 tensor `layer_{k}` per layer,
//! provenance in `__metadata__`), `.json` (the Python script's metadata sidecar), `.pkl` (a
//! bincode stand-in for the pickled `steering_vectors.SteeringVector`), and llama.cpp control
//! vectors (`.gguf`, read here, written by [`crate::export`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::{Provenance, SteeringVector, DECODER_BLOCK};
use crate::error::{Error, Result};
use crate::file_set::{write_all_or_nothing, Entry};
use crate::gguf_header::GgufHeader;

/// The metadata key of the layer type, beside the provenance.
const LAYER_TYPE: &str = "layer_type";
/// What identifies a `.pkl` written by this tool.
const PKL_FORMAT: &str = "train-vector/SteeringVector";
const PKL_VERSION: u32 = 1;
/// Upper bound on what a `.pkl` may make the decoder allocate.
const PKL_LIMIT: usize = 1 << 30;

#[derive(Serialize)]
struct PklVector {
    format: String,
    version: u32,
    layer_type: String,
    layer_activations: Vec<(u32, Vec<f32>)>,
    metadata: Vec<(String, String)>,
}

/// [`PklVector`] read in place: strings borrow from the file, so no length in the file can
/// make the reader allocate more than the file holds.
#[derive(Deserialize)]
struct PklVectorRef<'a> {
    format: &'a str,
    version: u32,
    layer_type: &'a str,
    layer_activations: Vec<(u32, Vec<f32>)>,
    #[serde(borrow)]
    metadata: Vec<(&'a str, &'a str)>,
}

impl SteeringVector {
    /// One F32 tensor `layer_{k}` per layer, provenance in `__metadata__`.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<u8>)> = self
            .layer_activations
            .iter()
            .map(|(l, v)| {
                let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (format!("layer_{l}"), raw)
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, raw)| {
                let view = TensorView::new(Dtype::F32, vec![raw.len() / 4], raw)
                    .map_err(|e| Error::new(format!("cannot build tensor `{name}`: {e}")))?;
                Ok((name.clone(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut meta: HashMap<String, String> = self.provenance.to_strings().into_iter().collect();
        meta.insert(LAYER_TYPE.to_string(), self.layer_type.clone());
        safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| Error::new(format!("cannot serialize vector: {e}")))
    }

    pub fn from_safetensors(bytes: &[u8], origin: &str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::new(format!("`{origin}` is not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::new(format!("`{origin}` has an invalid header: {e}")))?;
        let mut metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let layer_type = metadata
            .remove(LAYER_TYPE)
            .unwrap_or_else(|| DECODER_BLOCK.to_string());
        let mut layers = BTreeMap::new();
        for (name, view) in st.tensors() {
            let layer = name
                .strip_prefix("layer_")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::new(format!(
                        "`{origin}` has tensor `{name}`, expected `layer_<k>` names"
                    ))
                })?;
            if view.dtype() != Dtype::F32 || view.shape().len() != 1 {
                return Err(Error::new(format!(
                    "`{origin}` tensor `{name}` is {:?} {:?}, expected a 1-D F32 vector",
                    view.dtype(),
                    view.shape()
                )));
            }
            let v = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            layers.insert(layer, v);
        }
        SteeringVector {
            layer_activations: layers,
            layer_type,
            provenance: Provenance::from_strings(&metadata),
        }
        .check(origin)
    }

    pub fn to_pkl(&self) -> Result<Vec<u8>> {
        let v = PklVector {
            format: PKL_FORMAT.to_string(),
            version: PKL_VERSION,
            layer_type: self.layer_type.clone(),
            layer_activations: self
                .layer_activations
                .iter()
                .map(|(l, v)| (*l as u32, v.clone()))
                .collect(),
            metadata: self.provenance.to_strings().into_iter().collect(),
        };
        bincode::serde::encode_to_vec(&v, bincode::config::standard())
            .map_err(|e| Error::new(format!("cannot encode vector: {e}")))
    }

    pub fn from_pkl(bytes: &[u8], origin: &str) -> Result<Self> {
        let config = bincode::config::standard().with_limit::<PKL_LIMIT>();
        let (v, used): (PklVectorRef, usize) =
            bincode::serde::borrow_decode_from_slice(bytes, config).map_err(|e| {
                Error::new(format!("`{origin}` is not a train-vector .pkl file: {e}"))
            })?;
        if v.format != PKL_FORMAT || v.version != PKL_VERSION {
            return Err(Error::new(format!(
                "`{origin}` is not a train-vector .pkl file (format `{}` version {})",
                v.format, v.version
            )));
        }
        if used != bytes.len() {
            return Err(Error::new(format!(
                "`{origin}` has {} trailing bytes",
                bytes.len() - used
            )));
        }
        SteeringVector {
            layer_activations: v
                .layer_activations
                .into_iter()
                .map(|(l, v)| (l as usize, v))
                .collect(),
            layer_type: v.layer_type.to_string(),
            provenance: Provenance::from_strings(
                &v.metadata
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
        .check(origin)
    }

    /// A llama.cpp control vector: F32 tensors `direction.k` for layer `k`, the model hint and
    /// layer count kept as `model_type` and `num_layers`.
    pub fn from_gguf(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |what: String| Error::new(format!("`{origin}` {what}"));
        let header = GgufHeader::parse(bytes).map_err(|e| bad(e.message().to_string()))?;
        let arch = header.get("general.architecture").and_then(|v| v.as_str());
        if arch != Some("controlvector") {
            return Err(bad(format!(
                "is a GGUF file of architecture `{}`, not a control vector",
                arch.unwrap_or("none")
            )));
        }
        let provenance = Provenance {
            model_type: header
                .get("controlvector.model_hint")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            num_layers: header
                .get("controlvector.layer_count")
                .and_then(|v| v.as_u64())
                .map(|n| n as usize),
            ..Provenance::default()
        };
        let mut layers = BTreeMap::new();
        for t in &header.tensors {
            let layer = t
                .name
                .strip_prefix("direction.")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "has tensor `{}`, expected `direction.<k>` names",
                        t.name
                    ))
                })?;
            if t.ggml_type != 0 || t.dims.len() != 1 {
                return Err(bad(format!("tensor `{}` is not a 1-D F32 vector", t.name)));
            }
            // The header check guarantees the tensor lies inside the file.
            let start = (header.data_offset + t.offset) as usize;
            let v = bytes[start..start + t.size as usize]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if layers.insert(layer, v).is_some() {
                return Err(bad(format!("has `{}` twice", t.name)));
            }
        }
        SteeringVector {
            layer_activations: layers,
            layer_type: DECODER_BLOCK.to_string(),
            provenance,
        }
        .check(origin)
    }
}

/// The three files of one trained vector, all or none.
pub struct VectorFiles {
    pub safetensors: PathBuf,
    pub json: PathBuf,
    pub pkl: PathBuf,
}

impl VectorFiles {
    pub fn new(dir: &Path, base: &str) -> Self {
        Self {
            safetensors: dir.join(format!("{base}.safetensors")),
            json: dir.join(format!("{base}.json")),
            pkl: dir.join(format!("{base}.pkl")),
        }
    }

    pub fn all(&self) -> [&Path; 3] {
        [&self.safetensors, &self.json, &self.pkl]
    }

    /// The first of the three that already exists.
    pub fn existing(&self) -> Option<&Path> {
        self.all().into_iter().find(|p| p.exists())
    }

    /// Writes the three files so that they appear together or not at all, even if the process
    /// is killed (see [`crate::file_set`]).
    pub fn write(&self, vector: &SteeringVector) -> Result<()> {
        let json = vector.provenance.to_json(&vector.layer_type);
        let mut json_bytes = serde_json::to_vec_pretty(&json)
            .map_err(|e| Error::new(format!("cannot encode metadata: {e}")))?;
        json_bytes.push(b'\n');
        let contents = [vector.to_safetensors()?, json_bytes, vector.to_pkl()?];
        let entries: Vec<Entry> = self
            .all()
            .into_iter()
            .zip(&contents)
            .map(|(dest, bytes)| Entry { dest, bytes })
            .collect();
        write_all_or_nothing(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SteeringVector {
        let mut v = SteeringVector::new(BTreeMap::from([
            (0, vec![1.0, -2.5, 3.25]),
            (7, vec![0.0, 1e-8, -1e8]),
        ]));
        v.provenance.model = Some("m".into());
        v.provenance.num_layers = Some(8);
        v
    }

    #[test]
    fn safetensors_round_trip() {
        let v = sample();
        let back = SteeringVector::from_safetensors(&v.to_safetensors().unwrap(), "x").unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn pkl_round_trip() {
        let v = sample();
        let back = SteeringVector::from_pkl(&v.to_pkl().unwrap(), "x").unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_pkl_claiming_a_huge_length_is_an_error() {
        // The format string's length as a bincode varint u64: 2^40 bytes, with 3 present.
        let mut b = vec![253u8];
        b.extend((1u64 << 40).to_le_bytes());
        b.extend(b"abc");
        let e = SteeringVector::from_pkl(&b, "x").unwrap_err().to_string();
        assert!(e.contains("not a train-vector .pkl"), "{e}");
    }

    #[test]
    fn a_gguf_control_vector_reads_back() {
        let v = sample();
        let (bytes, dropped) = crate::export::control_vector_gguf(&v, "gemma2", 8).unwrap();
        assert_eq!(dropped, vec![0]);
        let back = SteeringVector::from_gguf(&bytes, "x").unwrap();
        assert_eq!(back.layer_activations.len(), 1);
        assert_eq!(back.layer_activations[&7], v.layer_activations[&7]);
        assert_eq!(back.provenance.model_type.as_deref(), Some("gemma2"));
        assert_eq!(back.provenance.num_layers, Some(8));
        // The last 20 bytes are alignment padding after the 12 bytes of data.
        for cut in [0, 4, 24, bytes.len() / 2, bytes.len() - 21] {
            assert!(
                SteeringVector::from_gguf(&bytes[..cut], "x").is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn truncated_files_are_errors() {
        let v = sample();
        let st = v.to_safetensors().unwrap();
        assert!(SteeringVector::from_safetensors(&st[..st.len() - 3], "x").is_err());
        let pkl = v.to_pkl().unwrap();
        for cut in [0, 1, pkl.len() / 2, pkl.len() - 1] {
            assert!(
                SteeringVector::from_pkl(&pkl[..cut], "x").is_err(),
                "cut {cut}"
            );
        }
    }
}
