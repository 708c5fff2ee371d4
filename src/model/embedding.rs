//! Token embeddings, whole or row by row. Training touches a few thousand rows of a vocabulary
//! of up to 262k (the largest tensor of a Gemma checkpoint), so by default only the rows a
//! batch needs are read from the checkpoint, as it needs them.

use candle_core::{DType, Device, Tensor};

use super::gguf::GgufCheckpoint;
use super::weights::SafetensorsFiles;
use crate::error::{Error, Result};

/// A checkpoint that can read single rows of a tensor.
#[derive(Clone)]
pub enum RowSource {
    Safetensors(SafetensorsFiles),
    /// Rows of quantized blocks, dequantized as they are read.
    Gguf(GgufCheckpoint),
}

impl RowSource {
    fn read_rows(&self, name: &str, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            RowSource::Safetensors(f) => f.read_rows(name, ids, device),
            RowSource::Gguf(g) => g.read_rows(name, ids, device),
        }
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            RowSource::Safetensors(f) => f.shape(name).map(<[usize]>::to_vec),
            RowSource::Gguf(g) => g.shape(name),
        }
    }
}

pub enum TokenEmbedding {
    /// The whole `[vocab, hidden]` table in memory.
    Full(Tensor),
    /// Rows read on demand from the checkpoint tensor `name`.
    Rows {
        files: RowSource,
        name: String,
        dtype: DType,
        device: Device,
    },
}

impl TokenEmbedding {
    /// Row-wise access to `name`, checking its shape first.
    pub fn rows(
        files: &RowSource,
        name: &str,
        (vocab, hidden): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<TokenEmbedding> {
        match files.shape(name) {
            Some(s) if s[..] == [vocab, hidden] => Ok(TokenEmbedding::Rows {
                files: files.clone(),
                name: name.to_string(),
                dtype,
                device: device.clone(),
            }),
            Some(s) => Err(Error::new(format!(
                "tensor `{name}` has shape {s:?}, expected {:?}",
                [vocab, hidden]
            ))),
            None => Err(Error::new(format!("checkpoint has no tensor `{name}`"))),
        }
    }

    /// `[batch, seq]` ids -> `[batch, seq, hidden]` embeddings in the model dtype.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        match self {
            TokenEmbedding::Full(table) => {
                let h = table.dim(1)?;
                Ok(table
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, t, h))?)
            }
            TokenEmbedding::Rows {
                files,
                name,
                dtype,
                device,
            } => {
                let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                let mut unique = flat.clone();
                unique.sort_unstable();
                unique.dedup();
                let rows = files.read_rows(name, &unique, device)?.to_dtype(*dtype)?;
                let local: Vec<u32> = flat
                    .iter()
                    .map(|id| unique.binary_search(id).unwrap_or(0) as u32)
                    .collect();
                let local = Tensor::from_vec(local, b * t, device)?;
                let h = rows.dim(1)?;
                Ok(rows.index_select(&local, 0)?.reshape((b, t, h))?)
            }
        }
    }
}
