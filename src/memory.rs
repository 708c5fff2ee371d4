//! Memory budgets: `--max-memory` sizes, and what the machine has free.

use std::str::FromStr;

use crate::error::{Error, Result};

/// A size in bytes, written `512MiB`, `16GiB`, `2GB`, `1.5G` or plain bytes. `KB`, `MB`, `GB`
/// and `TB` are powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` and the bare letters powers of 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let bad = || {
            Error::new(format!("`{s}` is not a size"))
                .with_hint("write it like `512MiB`, `16GiB` or `2GB`")
        };
        let n: f64 = number.parse().map_err(|_| bad())?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            "k" | "kib" => 1024.0,
            "m" | "mib" => 1024f64.powi(2),
            "g" | "gib" => 1024f64.powi(3),
            "t" | "tib" => 1024f64.powi(4),
            _ => return Err(bad()),
        };
        let bytes = n * scale;
        if !(1.0..1e18).contains(&bytes) {
            return Err(Error::new(format!("`{s}` is not a usable size"))
                .with_hint("it must be at least 1 byte"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

/// Memory the system could give this process now (Linux `MemAvailable`).
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How a training run fits its memory budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Read blocks from the checkpoint as they run (layer-major) instead of holding them.
    pub stream: bool,
    /// Bytes the residual streams of one group of batches may take, when streaming.
    pub activation_budget: Option<u64>,
    /// Weights held at once: every needed block, or two (one running, the next loading).
    pub resident: u64,
}

/// What a forward over `batch_tokens` tokens holds besides weights and residual streams: the
/// MLP's and attention's intermediate tensors, an estimate on the generous side.
pub fn working_bytes(batch_tokens: usize, hidden: usize, intermediate: usize) -> u64 {
    (batch_tokens * (3 * intermediate + 8 * hidden) * 4) as u64
}

/// Holds every needed block when they fit `budget` with the forward's working memory, else
/// streams them; `force` streams anyway. Streaming needs two blocks and the working memory;
/// less is an error naming the sizes.
pub fn plan(blocks: &[u64], working: u64, budget: Option<u64>, force: bool) -> Result<MemoryPlan> {
    let all: u64 = blocks.iter().sum();
    let largest = blocks.iter().copied().max().unwrap_or(0);
    let fits = budget.is_none_or(|b| all + working <= b);
    if fits && !force {
        return Ok(MemoryPlan {
            stream: false,
            activation_budget: None,
            resident: all,
        });
    }
    let need = 2 * largest + working;
    let show = |b: u64| indicatif::HumanBytes(b).to_string();
    if let Some(b) = budget.filter(|&b| b < need + working) {
        return Err(Error::new(format!(
            "`--max-memory` {} is too little: streaming needs two blocks of {} (one running, the next loading) and about {} for the forward",
            show(b),
            show(largest),
            show(working)
        ))
        .with_hint(format!("allow at least {}, or lower `--max-batch-tokens`", show(need + working))));
    }
    Ok(MemoryPlan {
        stream: true,
        activation_budget: budget.map(|b| b - need),
        resident: 2 * largest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_hold_what_fits_and_stream_the_rest() {
        let blocks = [100, 100, 120];
        assert!(!plan(&blocks, 10, Some(1000), false).unwrap().stream);
        assert!(!plan(&blocks, 10, None, false).unwrap().stream);
        let p = plan(&blocks, 10, Some(300), false).unwrap();
        assert_eq!(
            (p.stream, p.resident, p.activation_budget),
            (true, 240, Some(50))
        );
        assert!(plan(&blocks, 10, None, true).unwrap().stream);
        let err = plan(&blocks, 10, Some(200), false).unwrap_err();
        assert!(
            err.message().contains("two blocks of 120 B"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn sizes_in_both_units() {
        let b = |s: &str| s.parse::<ByteSize>().map(|x| x.0);
        assert_eq!(b("512MiB").unwrap(), 512 << 20);
        assert_eq!(b("16GiB").unwrap(), 16 << 30);
        assert_eq!(b("2GB").unwrap(), 2_000_000_000);
        assert_eq!(b("1.5g").unwrap(), 3 << 29);
        assert_eq!(b("4096").unwrap(), 4096);
        for bad in ["", "GB", "-1GB", "0", "1.2.3GB", "10QB", "1e9", "nan"] {
            assert!(b(bad).is_err(), "{bad}");
        }
    }
}
