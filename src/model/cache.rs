//! Keys and values of earlier positions, per block, so decoding feeds one token per row at a
//! time. Slotted batches ([`super::layout`]) also keep each cached column's slot, which later
//! queries' masks are built from.

use candle_core::Tensor;

use super::layout::Slot;
use crate::error::Result;

#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// The slot of every cached column, per row; empty for plain batches.
    slots: Vec<Vec<Slot>>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Columns (positions of a plain batch) already cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slots of the cached columns, per row (empty for plain batches).
    pub fn slots(&self) -> &[Vec<Slot>] {
        &self.slots
    }

    /// Records the slots of the columns one forward call added.
    pub(crate) fn push_slots(&mut self, added: &[Vec<Slot>]) {
        if self.slots.is_empty() {
            self.slots = vec![Vec::new(); added.len()];
        }
        for (row, new) in self.slots.iter_mut().zip(added) {
            row.extend_from_slice(new);
        }
    }

    /// Appends this step's keys and values for block `layer` and returns all of them.
    pub(crate) fn extend(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (
                Tensor::cat(&[&pk, &k], 2)?.contiguous()?,
                Tensor::cat(&[&pv, &v], 2)?.contiguous()?,
            ),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Keeps only rows `keep` (in that order), as when some rows of a batch finish.
    pub fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        if self.layers.iter().all(Option::is_none) {
            return Ok(());
        }
        let Some(device) = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
        else {
            return Ok(());
        };
        let idx = Tensor::new(keep.iter().map(|&i| i as u32).collect::<Vec<_>>(), &device)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        if !self.slots.is_empty() {
            self.slots = keep.iter().map(|&i| self.slots[i].clone()).collect();
        }
        Ok(())
    }

    /// The rows of `a` then the rows of `b`, both of slotted batches. The shorter cache is
    /// padded with zero keys and values in [`Slot::PAD`] columns, which no query sees.
    pub fn stack(a: KvCache, b: KvCache) -> Result<KvCache> {
        let (sa, sb) = (a.len(), b.len());
        let width = sa.max(sb);
        let pad = |t: &Tensor, cols: usize| -> Result<Tensor> {
            if cols == 0 {
                return Ok(t.clone());
            }
            let mut dims = t.dims().to_vec();
            dims[2] = cols;
            let zeros = Tensor::zeros(dims, t.dtype(), t.device())?;
            Ok(Tensor::cat(&[t, &zeros], 2)?)
        };
        let n = a.layers.len().max(b.layers.len());
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let (x, y) = (
                a.layers.get(i).cloned().flatten(),
                b.layers.get(i).cloned().flatten(),
            );
            layers.push(match (x, y) {
                (Some((ka, va)), Some((kb, vb))) => Some((
                    Tensor::cat(&[&pad(&ka, width - sa)?, &pad(&kb, width - sb)?], 0)?,
                    Tensor::cat(&[&pad(&va, width - sa)?, &pad(&vb, width - sb)?], 0)?,
                )),
                _ => None,
            });
        }
        let widen = |rows: Vec<Vec<Slot>>| -> Vec<Vec<Slot>> {
            rows.into_iter()
                .map(|mut r| {
                    r.resize(width, Slot::PAD);
                    r
                })
                .collect()
        };
        let mut slots = widen(a.slots);
        slots.extend(widen(b.slots));
        Ok(KvCache { layers, slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn cache(rows: usize, cols: usize, fill: f32) -> KvCache {
        let t = (Tensor::ones((rows, 1, cols, 2), DType::F32, &Device::Cpu).unwrap()
            * f64::from(fill))
        .unwrap();
        KvCache {
            layers: vec![Some((t.clone(), t))],
            slots: vec![(0..cols as u32).map(|pos| Slot { pos, seg: 0 }).collect(); rows],
        }
    }

    #[test]
    fn stacking_pads_the_shorter_cache_with_unseen_columns() {
        let c = KvCache::stack(cache(1, 3, 1.0), cache(2, 1, 2.0)).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.slots()[1],
            [Slot { pos: 0, seg: 0 }, Slot::PAD, Slot::PAD]
        );
        let (k, _) = c.layers[0].as_ref().unwrap();
        assert_eq!(k.dims(), [3, 1, 3, 2]);
        let row2: Vec<Vec<f32>> = k.get(2).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(row2, [[2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]);
    }

    #[test]
    fn retaining_rows_keeps_their_order() {
        let mut c = KvCache::stack(cache(1, 1, 1.0), cache(1, 1, 2.0)).unwrap();
        c.retain_rows(&[1]).unwrap();
        let (k, _) = c.layers[0].as_ref().unwrap();
        assert_eq!(
            k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [2.0, 2.0]
        );
        assert_eq!(c.slots().len(), 1);
    }
}
