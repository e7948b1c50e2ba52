//! The device that a worker trains on, as `--device` names it: `cpu` or `cuda:N`.

use std::fmt;

use candle_core::Device;

use crate::error::{Result, WorkerError};

/// A training device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// The CUDA device with this ordinal among the visible ones (after CUDA_VISIBLE_DEVICES).
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `cpu` or `cuda:N`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        if text == "cpu" {
            return Ok(Self::Cpu);
        }
        let ordinal = text.strip_prefix("cuda:").and_then(|n| n.parse().ok());
        match ordinal {
            Some(ordinal) => Ok(Self::Cuda(ordinal)),
            None => Err(format!(
                "invalid device {text:?}: expected \"cpu\" or \"cuda:N\" with N a GPU ordinal"
            )),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Self::Cuda(_))
    }

    /// Opens the candle device. A CUDA device fails in a build without the `cuda` feature.
    pub fn open(&self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => open_cuda(*ordinal),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Ok(Device::new_cuda(ordinal)?)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Err(WorkerError::InvalidValue {
        key: "device",
        value: format!("cuda:{ordinal}"),
        expected: "\"cpu\": this ssgan binary was built without the `cuda` feature \
                   (build with `cargo build --release --features cuda`)"
            .to_owned(),
    })
}

/// Returns the number of visible CUDA devices.
#[cfg(feature = "cuda")]
pub fn cuda_device_count() -> Result<usize> {
    use candle_core::cuda::cudarc::driver::CudaContext;
    let count = CudaContext::device_count().map_err(|error| WorkerError::InvalidValue {
        key: "gpus",
        value: "all".to_owned(),
        expected: format!("visible CUDA devices, but the CUDA driver failed: {error:?}"),
    })?;
    Ok(count as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda:0"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:7"), Ok(DeviceSpec::Cuda(7)));
    }

    #[test]
    fn rejects_malformed_devices() {
        for text in ["", "gpu", "cuda", "cuda:", "cuda:-1", "cuda:x", "CPU"] {
            assert!(DeviceSpec::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [DeviceSpec::Cpu, DeviceSpec::Cuda(3)] {
            assert_eq!(DeviceSpec::parse(&spec.to_string()), Ok(spec));
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_needs_feature() {
        let error = DeviceSpec::Cuda(0).open().unwrap_err();
        assert!(error.to_string().contains("--features cuda"), "{error}");
    }
}
