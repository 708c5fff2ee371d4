//! `--device` and `--dtype`: where the model runs and in what precision.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeSpec {
    Auto,
    F32,
    Bf16,
    F16,
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Result<DeviceSpec> {
        let bad = || {
            Error::new(format!("invalid `--device` value `{s}`"))
                .with_hint("use `auto`, `cpu`, `cuda` or `cuda:N`")
        };
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
            }
        }
    }

    /// Opens the device: `auto` prefers the first CUDA device when this build has CUDA.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::new(format!(
                        "`--device cuda:{n}` requested but this build has no CUDA support"
                    ))
                    .with_hint("rebuild with `cargo build --release --features cuda`, or use `--device cpu`"));
                }
                Device::new_cuda(n)
                    .map_err(|e| Error::new(format!("cannot open `--device cuda:{n}`: {e}")))
            }
        }
    }
}

impl DTypeSpec {
    pub fn parse(s: &str) -> Result<DTypeSpec> {
        match s.trim() {
            "auto" => Ok(DTypeSpec::Auto),
            "f32" | "float32" => Ok(DTypeSpec::F32),
            "bf16" | "bfloat16" => Ok(DTypeSpec::Bf16),
            "f16" | "float16" => Ok(DTypeSpec::F16),
            _ => Err(Error::new(format!("invalid `--dtype` value `{s}`"))
                .with_hint("use `auto`, `f32`, `bf16` or `f16`")),
        }
    }

    /// `auto` is bf16 on CUDA and f32 on the CPU.
    pub fn resolve(self, device: &Device) -> DType {
        match self {
            DTypeSpec::F32 => DType::F32,
            DTypeSpec::Bf16 => DType::BF16,
            DTypeSpec::F16 => DType::F16,
            DTypeSpec::Auto if device.is_cuda() => DType::BF16,
            DTypeSpec::Auto => DType::F32,
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceSpec::parse(s)
    }
}

impl std::str::FromStr for DTypeSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DTypeSpec::parse(s)
    }
}

pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!(DeviceSpec::parse("cuda:1").unwrap(), DeviceSpec::Cuda(1));
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert!(DeviceSpec::parse("gpu").is_err());
        assert!(DeviceSpec::parse("cuda:x").is_err());
        assert_eq!(DTypeSpec::Auto.resolve(&Device::Cpu), DType::F32);
        assert_eq!(
            DTypeSpec::parse("bf16").unwrap().resolve(&Device::Cpu),
            DType::BF16
        );
        assert!(DTypeSpec::parse("int8").is_err());
    }
}
