//! Steering: adding `multiplier * v[k]` at the point of block `k` the vector was read from (its
//! layer type: the residual stream leaving the block, or a module's output), through the same
//! hook point training reads from, so a vector acts exactly where it was measured. Like
//! steering-vectors, every position is steered, prompt and generated tokens alike.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::{LayerHook, LayerType};
use crate::vector::SteeringVector;

pub struct Steering {
    /// `multiplier * v[k]` per block, in f32.
    adds: BTreeMap<usize, Tensor>,
    /// Where in each block.
    point: LayerType,
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
        let point = vector.layer_type.parse().map_err(|e: Error| {
            Error::new(format!("the vector's {}", e.message()))
                .with_hint(e.hint().unwrap_or_default())
        })?;
        Ok(Steering { adds, point })
    }

    /// Where in each block it adds.
    pub fn point(&self) -> LayerType {
        self.point
    }
}

impl LayerHook for Steering {
    fn at(&mut self, layer: usize, point: LayerType, residual: &Tensor) -> Result<Option<Tensor>> {
        let Some(add) = self.adds.get(&layer).filter(|_| point == self.point) else {
            return Ok(None);
        };
        // Add in f32 and round once to the model dtype.
        let dtype = residual.dtype();
        let steered = residual.to_dtype(DType::F32)?.broadcast_add(add)?;
        Ok(Some(steered.to_dtype(dtype)?))
    }
}
