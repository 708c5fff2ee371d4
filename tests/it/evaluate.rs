//! `evaluate` against a direct computation: projections read with a hook of our own, and
//! log-probabilities taken token by token from last-position logits.

use std::collections::BTreeMap;

use crate::common::{bin, tiny_model_dir, Golden};
use candle_core::{DType, Device, Tensor};
use train_vector::data::{load_pairs, ContrastType, DataSource};
use train_vector::model::ModelSpec;
use train_vector::model::{
    load_model, LayerHook, LayerType, LoadOptions, LogitPositions, NoHook, TokenBatch,
};
use train_vector::steer::Steering;
use train_vector::train::tokenize_pairs;
use train_vector::vector::SteeringVector;

struct LastToken(BTreeMap<usize, Vec<f32>>);

impl LayerHook for LastToken {
    fn at(
        &mut self,
        layer: usize,
        point: LayerType,
        residual: &Tensor,
    ) -> train_vector::Result<Option<Tensor>> {
        if point != LayerType::DecoderBlock {
            return Ok(None);
        }
        let t = residual.dim(1)?;
        let last: Vec<f32> = residual.get(0)?.get(t - 1)?.to_vec1()?;
        self.0.insert(layer, last);
        Ok(None)
    }
}

fn reference_vector() -> SteeringVector {
    let g = Golden::load();
    SteeringVector::new(
        (0..4)
            .map(|k| (k, g.vec1(&format!("vector_all.layer{k}"))))
            .collect(),
    )
}

#[test]
fn evaluate_json_matches_a_direct_computation() {
    let tmp = tempfile::tempdir().unwrap();
    let v = reference_vector();
    let vfile = tmp.path().join("v.pkl");
    std::fs::write(&vfile, v.to_pkl().unwrap()).unwrap();
    let n = 4;
    let out = bin()
        .args(["evaluate", "--model"])
        .arg(tiny_model_dir())
        .args(["--vector"])
        .arg(&vfile)
        .args([
            "--contrast-type",
            "tom",
            "--num-samples",
            "4",
            "--json",
            "--per-layer",
        ])
        .args(["--multipliers=-1,0.5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let dir = tiny_model_dir();
    let spec = ModelSpec::open(dir.to_str().unwrap(), None).unwrap();
    let m = load_model(spec, &LoadOptions::for_logits(Device::Cpu, DType::F32)).unwrap();
    let pairs = load_pairs(&DataSource::Shipped, ContrastType::Tom, Some(n))
        .unwrap()
        .pairs;
    let tokens = tokenize_pairs(&m.tokenizer, &pairs, m.model.as_ref()).unwrap();

    // Separation: unit-vector projections of each side's last token, one sequence at a time.
    let read = |ids: &[u32]| {
        let batch = TokenBatch::new(&[ids], 0, &Device::Cpu).unwrap();
        let mut hook = LastToken(BTreeMap::new());
        m.model.forward_blocks(&batch, 3, &mut hook).unwrap();
        hook.0
    };
    let acts: Vec<_> = tokens
        .iter()
        .map(|p| (read(&p.positive), read(&p.negative)))
        .collect();
    for (k, dir) in &v.layer_activations {
        let norm: f64 = dir
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        let proj = |a: &[f32]| {
            a.iter()
                .zip(dir)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum::<f64>()
                / norm
        };
        let pos: Vec<f64> = acts.iter().map(|(p, _)| proj(&p[k])).collect();
        let neg: Vec<f64> = acts.iter().map(|(_, q)| proj(&q[k])).collect();
        let accuracy = pos.iter().zip(&neg).filter(|(p, q)| p > q).count() as f64 / n as f64;
        let gap = pos.iter().zip(&neg).map(|(p, q)| p - q).sum::<f64>() / n as f64;
        let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let sd = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
        let row = &report["separation"][*k];
        assert_eq!(row["layer"], *k);
        assert_eq!(row["accuracy"].as_f64().unwrap(), accuracy, "layer {k}");
        let got = row["gap_sd"].as_f64().unwrap();
        assert!(
            (got - gap / sd).abs() < 1e-4,
            "layer {k}: {got} vs {}",
            gap / sd
        );
    }

    // Margins: log p of each token after the shared prefix, from last-position logits.
    let logprob = |ids: &[u32], from: usize, hook: &mut dyn LayerHook| -> f64 {
        (from.max(1)..ids.len())
            .map(|t| {
                let batch = TokenBatch::new(&[&ids[..t]], 0, &Device::Cpu).unwrap();
                let logits = m
                    .model
                    .forward_logits(&batch, None, hook, LogitPositions::Last)
                    .unwrap();
                let lp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
                let row: Vec<f32> = lp.squeeze(0).unwrap().to_vec1().unwrap();
                f64::from(row[ids[t] as usize])
            })
            .sum()
    };
    let margin = |hook: &mut dyn LayerHook| -> f64 {
        tokens
            .iter()
            .map(|p| {
                let c = p
                    .positive
                    .iter()
                    .zip(&p.negative)
                    .take_while(|(a, b)| a == b)
                    .count();
                logprob(&p.positive, c, hook) - logprob(&p.negative, c, hook)
            })
            .sum::<f64>()
            / n as f64
    };
    let find = |steer: &str, mult: f64| {
        report["margins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["steer"] == steer && r["multiplier"].as_f64() == Some(mult))
            .unwrap()["margin"]
            .as_f64()
            .unwrap()
    };
    let all = margin(&mut Steering::new(&v, 0.5, None, &Device::Cpu).unwrap());
    assert!(
        (find("all", 0.5) - all).abs() < 1e-3,
        "{} vs {all}",
        find("all", 0.5)
    );
    let l2 = margin(&mut Steering::new(&v, -1.0, Some(&[2]), &Device::Cpu).unwrap());
    assert!((find("layer 2", -1.0) - l2).abs() < 1e-3);
    // The multipliers asked for, plus nothing else; zero steering is the plain model.
    assert_eq!(report["margins"].as_array().unwrap().len(), 5 * 2);
    let plain = margin(&mut NoHook);
    let zero = margin(&mut Steering::new(&v, 0.0, None, &Device::Cpu).unwrap());
    assert_eq!(plain, zero);
}

#[test]
fn evaluate_draws_svg_and_png_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let vfile = tmp.path().join("v.safetensors");
    std::fs::write(&vfile, reference_vector().to_safetensors().unwrap()).unwrap();
    let plot = tmp.path().join("eval.svg");
    let out = bin()
        .args(["evaluate", "--model"])
        .arg(tiny_model_dir())
        .arg("--vector")
        .arg(&vfile)
        .args([
            "--contrast-type",
            "harmfulness",
            "--num-samples",
            "2",
            "--plot",
        ])
        .arg(&plot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("Projection separation")
            && svg.contains("Log-prob margin")
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("Projection separation on 2 pairs"));

    let png = tmp.path().join("eval.png");
    let out = bin()
        .args(["evaluate", "--model"])
        .arg(tiny_model_dir())
        .arg("--vector")
        .arg(&vfile)
        .args(["--contrast-type", "irony", "--num-samples", "2", "--plot"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}
