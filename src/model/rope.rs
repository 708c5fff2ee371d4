//! Rotary position embeddings as HF computes them: inverse frequencies and angles in f32
//! (bf16 angles drift badly past a few hundred positions), optional rope scaling, and the
//! `rotate_half` (non-interleaved) layout.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};

/// HF's `rope_scaling` entry of config.json.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeScalingConfig {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

/// Inverse frequencies for `dim` rotary dimensions at `base`, with HF's scaling applied.
pub fn inv_freq(dim: usize, base: f64, scaling: Option<&RopeScalingConfig>) -> Result<Vec<f32>> {
    let plain: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / (base as f32).powf(i as f32 / dim as f32))
        .collect();
    let Some(s) = scaling else {
        return Ok(plain);
    };
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| Error::new(format!("rope_scaling `{}` needs `{name}`", s.rope_type)))
    };
    match s.rope_type.as_str() {
        "default" => Ok(plain),
        "linear" => {
            let factor = need(s.factor, "factor")? as f32;
            Ok(plain.into_iter().map(|f| f / factor).collect())
        }
        "llama3" => {
            let factor = need(s.factor, "factor")?;
            let low = need(s.low_freq_factor, "low_freq_factor")?;
            let high = need(s.high_freq_factor, "high_freq_factor")?;
            let old = s.original_max_position_embeddings.ok_or_else(|| {
                Error::new("rope_scaling `llama3` needs `original_max_position_embeddings`")
            })? as f64;
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            Ok(plain
                .into_iter()
                .map(|f| {
                    let f = f64::from(f);
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                    if medium {
                        let smooth = (old / wavelen - low) / (high - low);
                        ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                    } else {
                        scaled as f32
                    }
                })
                .collect())
        }
        other => Err(
            Error::new(format!("unsupported rope_scaling type `{other}`"))
                .with_hint("supported: default, linear, llama3"),
        ),
    }
}

/// `cos`, `sin` of shape `[seq, dim / 2]` for positions `offset..offset + seq`, in `dtype`.
pub fn tables(
    inv_freq: &[f32],
    offset: usize,
    seq: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let mut angles = Vec::with_capacity(seq * half);
    for p in offset..offset + seq {
        angles.extend(inv_freq.iter().map(|f| p as f32 * f));
    }
    let angles = Tensor::from_vec(angles, (seq, half), device)?;
    Ok((
        angles.cos()?.to_dtype(dtype)?,
        angles.sin()?.to_dtype(dtype)?,
    ))
}

/// Rotates `[batch, heads, seq, dim]` queries or keys by the tables.
pub fn apply(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&xs.contiguous()?, cos, sin)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(json: &str) -> RopeScalingConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn linear_divides_every_frequency() {
        let plain = inv_freq(8, 10_000.0, None).unwrap();
        let s = scaling(r#"{"rope_type": "linear", "factor": 8.0}"#);
        let lin = inv_freq(8, 10_000.0, Some(&s)).unwrap();
        for (a, b) in plain.iter().zip(&lin) {
            assert!((a / 8.0 - b).abs() < 1e-9);
        }
        assert_eq!(plain[0], 1.0);
    }

    #[test]
    fn llama3_keeps_high_frequencies_and_scales_low_ones() {
        let s = scaling(
            r#"{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
        );
        let plain = inv_freq(128, 500_000.0, None).unwrap();
        let l3 = inv_freq(128, 500_000.0, Some(&s)).unwrap();
        assert_eq!(l3[0], plain[0]);
        let last = plain.len() - 1;
        assert!((l3[last] - plain[last] / 8.0).abs() < 1e-12);
    }

    #[test]
    fn unknown_scaling_is_an_error() {
        let s = scaling(r#"{"type": "yarn", "factor": 4.0}"#);
        assert!(inv_freq(8, 1e4, Some(&s)).is_err());
    }
}
