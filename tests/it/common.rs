//! Helpers shared by the integration tests: the binary as a user runs it, the committed
//! fixtures, and error measures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use train_vector::model::{load_model, LoadOptions, LoadedModel, ModelSpec};

/// The binary, with the environment every test runs it in: no colour, and `HF_HUB_OFFLINE`
/// unset so a test that wants it sets it itself.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train-vector"));
    c.env_remove("HF_HUB_OFFLINE").env("NO_COLOR", "1");
    c
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Runs a command that must succeed and returns the path it printed ending in `ext`
/// (training prints its three saved files, one per line).
pub fn saved(args: &[&str], ext: &str) -> PathBuf {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let out = stdout(&o);
    let path = out.lines().find(|l| l.ends_with(ext));
    PathBuf::from(path.unwrap_or_else(|| panic!("no `{ext}` path in {out:?}")))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tiny_model_dir() -> PathBuf {
    fixtures().join("tiny-gemma2")
}

pub fn load(dir: &Path, dtype: DType, num_blocks: Option<usize>) -> LoadedModel {
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    load_model(
        spec,
        &LoadOptions::for_training(Device::Cpu, dtype, num_blocks),
    )
    .unwrap()
}

/// What the fixture script recorded from HF transformers and steering-vectors.
pub struct Golden {
    pub meta: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Golden {
    /// The Gemma-2 recordings, with the inputs every model's recordings share.
    pub fn load() -> Golden {
        Golden::named("golden")
    }

    /// `golden/<name>.json` and `golden/<name>.safetensors`.
    pub fn named(name: &str) -> Golden {
        let dir = fixtures().join("golden");
        let meta = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        Golden {
            meta: serde_json::from_str(&meta).unwrap(),
            tensors: candle_core::safetensors::load(
                dir.join(format!("{name}.safetensors")),
                &Device::Cpu,
            )
            .unwrap(),
        }
    }

    pub fn vec1(&self, name: &str) -> Vec<f32> {
        self.tensors[name].to_vec1().unwrap()
    }

    pub fn strings(&self, key: &str) -> Vec<String> {
        self.meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    pub fn pairs(&self) -> Vec<(String, String)> {
        self.meta["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn ids(&self, key: &str) -> Vec<Vec<u32>> {
        serde_json::from_value(self.meta[key].clone()).unwrap()
    }
}

/// ||a - b|| / ||b||
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (diff / norm).sqrt()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
