//! The gated MLP every supported architecture uses: `down(act(gate(x)) * up(x))`.

use candle_core::{Module, Tensor};
use candle_nn::{linear_b, Linear, VarBuilder};

use super::config::{Activation, TextConfig};
use crate::error::Result;

pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl Mlp {
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: linear_b(h, i, b, vb.pp("gate_proj"))?,
            up_proj: linear_b(h, i, b, vb.pp("up_proj"))?,
            down_proj: linear_b(i, h, b, vb.pp("down_proj"))?,
            act: cfg.activation,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(xs)?;
        let gate = match self.act {
            Activation::GeluTanh => gate.gelu()?,
            Activation::GeluErf => gate.gelu_erf()?,
            Activation::Silu => candle_nn::ops::silu(&gate)?,
        };
        let up = self.up_proj.forward(xs)?;
        Ok(self.down_proj.forward(&(gate * up)?)?)
    }
}
