//! Steering: adding `multiplier * v[k]` to the residual stream leaving block `k`, through the
//! same hook point training reads from, so a vector acts exactly where it was measured.
//! Like steering-vectors, every position is steered, prompt and generated tokens alike.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::LayerHook;
use crate::vector::SteeringVector;

pub struct Steering {
    /// `multiplier * v[k]` per block, in f32.
    adds: BTreeMap<usize, Tensor>,
}

impl Steering {
    /// Steers with `multiplier * vector` on `layers` (all of the vector's layers when `None`).
    pub fn new(
        vector: &SteeringVector,
        multiplier: f64,
        layers: Option<&[usize]>,
        device: &Device,
    ) -> Result<Steering> {
        let mut adds = BTreeMap::new();
        for (&layer, v) in &vector.layer_activations {
            if layers.is_some_and(|l| !l.contains(&layer)) {
                continue;
            }
            let t = Tensor::new(v.as_slice(), device)?;
            adds.insert(layer, (t * multiplier)?);
        }
        if let Some(wanted) = layers {
            if let Some(missing) = wanted
                .iter()
                .find(|l| !vector.layer_activations.contains_key(l))
            {
                return Err(Error::new(format!("the vector has no layer {missing}")));
            }
        }
        Ok(Steering { adds })
    }
}

impl LayerHook for Steering {
    fn after_block(&mut self, layer: usize, residual: &Tensor) -> Result<Option<Tensor>> {
        let Some(add) = self.adds.get(&layer) else {
            return Ok(None);
        };
        // Add in f32 and round once to the model dtype.
        let dtype = residual.dtype();
        let steered = residual.to_dtype(DType::F32)?.broadcast_add(add)?;
        Ok(Some(steered.to_dtype(dtype)?))
    }
}
