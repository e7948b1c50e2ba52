//! Versions of the GPU software stack that a worker reports when it joins the coordinator.

/// A GPU worker's device name and the versions of its CUDA driver, CUDA libraries and NCCL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuInfo {
    /// Device name, such as "NVIDIA H200".
    pub name: String,
    /// CUDA version that the driver supports (cuDriverGetVersion): 1000 * major + 10 * minor.
    pub cuda_driver_version: u32,
    /// NVIDIA kernel driver version, such as "580.95.05"; empty when unknown.
    pub driver_version: String,
    /// Version of the loaded NVRTC library, encoded like `cuda_driver_version`.
    pub cuda_runtime_version: u32,
    /// Version code of the loaded NCCL library (ncclGetVersion), such as 23003 for 2.30.3.
    pub nccl_version: u32,
}

/// Extracts the kernel module version from the text of `/proc/driver/nvidia/version`, whose
/// first line reads like "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  <date>"
/// or, for the open modules, "... Open Kernel Module for x86_64  570.86.15  <build>".
pub fn parse_kernel_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|line| line.starts_with("NVRM version"))?;
    let (_, rest) = line.split_once("Kernel Module")?;
    let is_version =
        |word: &&str| word.contains('.') && word.chars().all(|c| c.is_ascii_digit() || c == '.');
    rest.split_whitespace().find(is_version).map(str::to_owned)
}

#[cfg(feature = "cuda")]
mod detect {
    use candle_core::CudaDevice;
    use candle_core::cuda::cudarc::{driver, nvrtc};

    use super::{GpuInfo, parse_kernel_driver_version};
    use crate::CollectiveError;

    /// Reads the device name and library versions of the process's CUDA device.
    pub fn gpu_info(device: &CudaDevice) -> Result<GpuInfo, CollectiveError> {
        let library_error =
            |operation, reason: String| CollectiveError::Library { operation, reason };
        let context = device.cuda_stream().context().clone();
        let name = context
            .name()
            .map_err(|error| library_error("cuDeviceGetName", format!("{error:?}")))?;
        let mut driver_version = 0;
        // SAFETY: cuDriverGetVersion only writes the given integer.
        let result = unsafe { driver::sys::cuDriverGetVersion(&mut driver_version) };
        if result != driver::sys::CUresult::CUDA_SUCCESS {
            return Err(library_error("cuDriverGetVersion", format!("{result:?}")));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion only writes the two given integers.
        let result = unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        if result != nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(library_error("nvrtcVersion", format!("{result:?}")));
        }
        let kernel_driver = std::fs::read_to_string("/proc/driver/nvidia/version")
            .ok()
            .and_then(|text| parse_kernel_driver_version(&text))
            .unwrap_or_default();
        Ok(GpuInfo {
            name,
            cuda_driver_version: driver_version as u32,
            driver_version: kernel_driver,
            cuda_runtime_version: (1000 * major + 10 * minor) as u32,
            nccl_version: crate::nccl_version()?,
        })
    }
}

#[cfg(feature = "cuda")]
pub use detect::gpu_info;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_driver_version_parsed() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 23 09:55:41 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(
            parse_kernel_driver_version(text).as_deref(),
            Some("580.95.05")
        );
    }

    #[test]
    fn open_kernel_module_version_parsed() {
        let text =
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n";
        assert_eq!(
            parse_kernel_driver_version(text).as_deref(),
            Some("570.86.15")
        );
    }

    #[test]
    fn missing_version_line() {
        assert_eq!(parse_kernel_driver_version("GCC version: 12\n"), None);
    }
}
