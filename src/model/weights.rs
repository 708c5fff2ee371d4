//! Safetensors weights read on demand: each tensor is read from its file when a block asks for
//! it, so the blocks a run does not need are never read, nothing is memory-mapped (mapped
//! pages would count twice towards resident memory while tensors are copied out), and sizes
//! in the file are checked before anything is allocated.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use safetensors::tensor::Metadata;

use super::embedding::{RowSource, TokenEmbedding};
use super::gguf::GgufCheckpoint;

use crate::error::{Error, Result};

/// Headers above this size are refused rather than allocated.
const MAX_HEADER: u64 = 100 << 20;

#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in its file.
    offset: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }
}

/// Every tensor of one checkpoint (one file or all shards), by name. Clones share the files.
#[derive(Clone)]
pub struct SafetensorsFiles {
    files: Arc<Vec<(PathBuf, File)>>,
    entries: Arc<HashMap<String, Entry>>,
}

impl SafetensorsFiles {
    pub fn open(paths: &[PathBuf]) -> Result<SafetensorsFiles> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let file = File::open(path)
                .map_err(|e| Error::new(format!("cannot open `{}`: {e}", path.display())))?;
            for (name, entry) in read_header(&file, path, index)? {
                entries.insert(name, entry);
            }
            files.push((path.clone(), file));
        }
        Ok(SafetensorsFiles {
            files: Arc::new(files),
            entries: Arc::new(entries),
        })
    }

    fn path(&self, e: &Entry) -> &Path {
        &self.files[e.file].0
    }

    /// Reads `name` as stored, checking its shape when one is expected.
    fn read(&self, name: &str, expected: Option<&Shape>, dev: &Device) -> Result<Tensor> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::new(format!("checkpoint has no tensor `{name}`")))?;
        if !e.dtype.is_float() {
            return Err(Error::new(format!(
                "tensor `{name}` in `{}` has dtype {:?}, expected floating point weights",
                self.path(e).display(),
                e.dtype
            )));
        }
        if let Some(s) = expected {
            if s.dims() != e.shape.as_slice() {
                return Err(Error::new(format!(
                    "tensor `{name}` in `{}` has shape {:?}, expected {:?}",
                    self.path(e).display(),
                    e.shape,
                    s.dims()
                )));
            }
        }
        let mut buf = vec![0u8; e.bytes()];
        self.files[e.file]
            .1
            .read_exact_at(&mut buf, e.offset)
            .map_err(|err| {
                Error::new(format!(
                    "cannot read tensor `{name}` from `{}`: {err}",
                    self.path(e).display()
                ))
            })?;
        Ok(Tensor::from_raw_buffer(&buf, e.dtype, &e.shape, dev)?)
    }

    /// Reads rows `ids` of the 2-D tensor `name` (an embedding), as `[ids.len(), cols]`.
    pub fn read_rows(&self, name: &str, ids: &[u32], dev: &Device) -> Result<Tensor> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::new(format!("checkpoint has no tensor `{name}`")))?;
        let [rows, cols] = e.shape[..] else {
            return Err(Error::new(format!("tensor `{name}` is not 2-D")));
        };
        let row_bytes = cols * e.dtype.size_in_bytes();
        let mut buf = vec![0u8; ids.len() * row_bytes];
        for (chunk, &id) in buf.chunks_exact_mut(row_bytes).zip(ids) {
            if id as usize >= rows {
                return Err(Error::new(format!(
                    "token id {id} is outside `{name}` ({rows} rows)"
                )));
            }
            let at = e.offset + (id as u64) * row_bytes as u64;
            self.files[e.file]
                .1
                .read_exact_at(chunk, at)
                .map_err(|err| Error::new(format!("cannot read `{name}` rows: {err}")))?;
        }
        Ok(Tensor::from_raw_buffer(
            &buf,
            e.dtype,
            &[ids.len(), cols],
            dev,
        )?)
    }

    /// Elements of every tensor whose name starts with `prefix`.
    pub fn elements_with_prefix(&self, prefix: &str) -> u64 {
        self.entries
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, e)| e.shape.iter().product::<usize>() as u64)
            .sum()
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }
}

/// Parses and checks one file's header with the safetensors crate (offsets contiguous, sizes
/// matching shapes and dtypes), then checks that the data lies inside the file.
fn read_header(file: &File, path: &Path, index: usize) -> Result<Vec<(String, Entry)>> {
    let bad = |what: String| {
        Error::new(format!(
            "`{}` is not a valid safetensors file: {what}",
            path.display()
        ))
    };
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0)
        .map_err(|_| bad("shorter than its 8-byte header length".to_string()))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n + 8 > len {
        return Err(bad(format!(
            "header length {n} does not fit the file ({len} bytes)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| bad(e.to_string()))?;
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("{e}")))?;
    let data_start = 8 + n;
    if data_start + meta.data_len() as u64 > len {
        return Err(bad(format!(
            "its tensors need {} bytes of data, the file has {}",
            meta.data_len(),
            len - data_start
        ))
        .with_hint("the file may be truncated or still downloading"));
    }
    meta.tensors()
        .into_iter()
        .map(|(name, info)| {
            let dtype = DType::try_from(info.dtype).map_err(|_| {
                bad(format!(
                    "tensor `{name}` has unsupported dtype `{:?}`",
                    info.dtype
                ))
            })?;
            let entry = Entry {
                file: index,
                dtype,
                shape: info.shape.clone(),
                offset: data_start + info.data_offsets.0 as u64,
            };
            Ok((name, entry))
        })
        .collect()
}

impl SimpleBackend for SafetensorsFiles {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.read(name, Some(&s), dev)
            .and_then(|t| Ok(t.to_dtype(dtype)?))
            .map_err(Into::into)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, None, dev)
            .and_then(|t| Ok(t.to_dtype(dtype)?))
            .map_err(Into::into)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

/// A checkpoint's tensors as blocks load them, plus row-wise reads of the embedding where the
/// format allows them (safetensors).
pub struct WeightSource {
    root: VarBuilder<'static>,
    rows: Option<RowSource>,
}

impl WeightSource {
    pub fn safetensors(files: SafetensorsFiles, dtype: DType, device: &Device) -> Self {
        let root = VarBuilder::from_backend(Box::new(files.clone()), dtype, device.clone());
        Self {
            root,
            rows: Some(RowSource::Safetensors(files)),
        }
    }

    pub fn gguf(ckpt: GgufCheckpoint, dtype: DType, device: &Device) -> Self {
        let root = VarBuilder::from_backend(Box::new(ckpt.clone()), dtype, device.clone());
        Self {
            root,
            rows: Some(RowSource::Gguf(ckpt)),
        }
    }

    /// Tensors already in memory, by checkpoint name.
    pub fn tensors(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Self {
        let root = VarBuilder::from_tensors(tensors, dtype, device);
        Self { root, rows: None }
    }

    /// Every tensor, under its checkpoint name, in the model dtype on the model device.
    pub fn root(&self) -> &VarBuilder<'static> {
        &self.root
    }

    /// The `[vocab, hidden]` embedding `name`: whole, or read row by row as batches need it
    /// when the format allows and `whole` is not asked for.
    pub fn embedding(
        &self,
        name: &str,
        shape: (usize, usize),
        whole: bool,
    ) -> Result<TokenEmbedding> {
        match (&self.rows, whole) {
            (Some(files), false) => {
                TokenEmbedding::rows(files, name, shape, self.root.dtype(), self.root.device())
            }
            _ => Ok(TokenEmbedding::Full(self.root.get(shape, name)?)),
        }
    }
}
