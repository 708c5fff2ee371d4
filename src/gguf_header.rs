//! A GGUF file's header (metadata, tensor table, start of the tensor data), read with every
//! count, length, dimension and offset checked against the file's size before anything is
//! allocated, so a corrupt or hostile file is an error, never a huge allocation or a panic.
//! Model checkpoints are walked with it before candle's reader sees them; control vectors are
//! read with it alone.

use std::io::Read;

use crate::error::{Error, Result};

/// Deepest nesting of arrays inside arrays that a header may use.
const MAX_DEPTH: usize = 8;
/// GGML tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    UInt(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::UInt(v) => Some(*v),
            MetaValue::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// One row of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// GGUF order: the innermost (contiguous) dimension first.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// From the start of the tensor data.
    pub offset: u64,
    /// Bytes the tensor occupies, checked to lie inside the file.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorEntry>,
    /// Absolute file offset where tensor data begins.
    pub data_offset: u64,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Reads the header of a whole file held in memory.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader> {
        read_header(bytes, bytes.len() as u64)
    }

    /// Reads the header of the file at `path` without reading its tensor data. Messages do not
    /// repeat the path: the caller names the file.
    pub fn read_file(path: &std::path::Path) -> Result<GgufHeader> {
        let file =
            std::fs::File::open(path).map_err(|e| Error::new(format!("cannot be opened: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| Error::new(format!("cannot be read: {e}")))?
            .len();
        read_header(std::io::BufReader::new(file), size)
    }
}

/// (elements per block, bytes per block) of the GGML types candle can read.
fn block_layout(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),     // F32
        1 => (1, 2),     // F16
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292), // Q8_K
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
    /// GGUF v1 stores lengths and counts as u32, later versions as u64.
    wide: bool,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::new(format!("is not a valid GGUF file: {what}"))
}

impl<R: Read> Reader<R> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.remaining() {
            return Err(bad(format!(
                "{n} bytes needed at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| bad(format!("read failed at offset {}: {e}", self.pos)))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let v = self.bytes(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn length(&mut self) -> Result<u64> {
        if self.wide {
            self.u64()
        } else {
            Ok(u64::from(self.u32()?))
        }
    }

    fn string(&mut self) -> Result<String> {
        let n = self.length()?;
        let mut v = self.bytes(n)?;
        // Some writers add a trailing NUL; GGUF strings are not NUL-terminated.
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// The fewest bytes a value of `kind` can occupy.
    fn min_size(&self, kind: u32) -> u64 {
        let len = if self.wide { 8 } else { 4 };
        match kind {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => len,
            9 => 4 + len,
            _ => 8,
        }
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<MetaValue> {
        Ok(match kind {
            0 => MetaValue::UInt(u64::from(self.array::<1>()?[0])),
            1 => MetaValue::Int(i64::from(self.array::<1>()?[0] as i8)),
            2 => MetaValue::UInt(u64::from(u16::from_le_bytes(self.array()?))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => MetaValue::UInt(u64::from(self.u32()?)),
            5 => MetaValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => match self.array::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(bad(format!("boolean byte {b}"))),
            },
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(bad(format!("arrays nested deeper than {MAX_DEPTH}")));
                }
                let inner = self.u32()?;
                if inner > 12 {
                    return Err(bad(format!("unknown value type {inner}")));
                }
                let n = self.length()?;
                if n.saturating_mul(self.min_size(inner)) > self.remaining() {
                    return Err(bad(format!("array of {n} values overruns the file")));
                }
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::UInt(self.u64()?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            k => return Err(bad(format!("unknown value type {k}"))),
        })
    }
}

fn read_header<R: Read>(inner: R, size: u64) -> Result<GgufHeader> {
    let mut r = Reader {
        inner,
        pos: 0,
        size,
        wide: true,
    };
    let magic = r.array::<4>().map_err(|_| bad("too short for a header"))?;
    if &magic != b"GGUF" {
        return Err(bad("no GGUF magic"));
    }
    let version = r.u32()?;
    if !(1..=3).contains(&version) {
        return Err(bad(format!("unsupported version {version}")));
    }
    r.wide = version >= 2;
    let tensor_count = r.length()?;
    let kv_count = r.length()?;
    let len = if r.wide { 8 } else { 4 };
    // Each key/value takes at least a key length, a type and one byte; each tensor row a name
    // length, a dimension count, a type and an offset.
    let least = kv_count
        .saturating_mul(len + 5)
        .saturating_add(tensor_count.saturating_mul(len + 16));
    if least > r.remaining() {
        return Err(bad(format!(
            "{kv_count} metadata entries and {tensor_count} tensors cannot fit in {size} bytes"
        )));
    }
    let mut metadata = Vec::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let kind = r.u32()?;
        let value = r.value(kind, 0)?;
        metadata.push((key, value));
    }
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            dims.push(r.length()?);
        }
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        let (block, bytes) = block_layout(ggml_type)
            .ok_or_else(|| bad(format!("tensor `{name}` has unknown type {ggml_type}")))?;
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor `{name}` is too large")))?;
        if elements % block != 0 {
            return Err(bad(format!(
                "tensor `{name}` has {elements} elements, not whole blocks of {block}"
            )));
        }
        let size = (elements / block)
            .checked_mul(bytes)
            .ok_or_else(|| bad(format!("tensor `{name}` is too large")))?;
        tensors.push(TensorEntry {
            name,
            dims,
            ggml_type,
            offset,
            size,
        });
    }
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .map_or(Some(DEFAULT_ALIGNMENT), |(_, v)| v.as_u64())
        .filter(|a| a.is_power_of_two())
        .ok_or_else(|| bad("`general.alignment` is not a power of two"))?;
    let data_offset = r.pos.div_ceil(alignment).saturating_mul(alignment);
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.size));
        if end.is_none_or(|e| e > size) {
            return Err(bad(format!(
                "tensor `{}` ({} bytes at data offset {}) lies past the end of the file",
                t.name, t.size, t.offset
            )));
        }
    }
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(kvs.to_le_bytes());
        b
    }

    fn kv(b: &mut Vec<u8>, key: &str, kind: u32, value: &[u8]) {
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(kind.to_le_bytes());
        b.extend(value);
    }

    #[test]
    fn huge_counts_and_lengths_are_errors_not_allocations() {
        assert!(GgufHeader::parse(&header(3, u64::MAX, u64::MAX)).is_err());
        let mut b = header(3, 0, 1);
        b.extend(u64::MAX.to_le_bytes()); // key length
        assert!(GgufHeader::parse(&b).is_err());
        let mut b = header(3, 0, 1);
        let mut arr = 4u32.to_le_bytes().to_vec();
        arr.extend((1u64 << 60).to_le_bytes());
        kv(&mut b, "a", 9, &arr);
        assert!(GgufHeader::parse(&b).is_err());
    }

    #[test]
    fn zero_alignment_is_an_error() {
        let mut b = header(3, 0, 1);
        kv(&mut b, "general.alignment", 4, &0u32.to_le_bytes());
        let e = GgufHeader::parse(&b).unwrap_err().to_string();
        assert!(e.contains("alignment"), "{e}");
    }

    #[test]
    fn a_tensor_past_the_end_is_an_error() {
        let mut b = header(3, 1, 0);
        b.extend(1u64.to_le_bytes());
        b.extend(b"t");
        b.extend(1u32.to_le_bytes());
        b.extend(1000u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let e = GgufHeader::parse(&b).unwrap_err().to_string();
        assert!(e.contains("past the end"), "{e}");
        b.resize(64 + 4000, 0);
        assert_eq!(GgufHeader::parse(&b).unwrap().tensors[0].size, 4000);
    }
}
