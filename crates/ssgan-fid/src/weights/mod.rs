//! Loading the FID InceptionV3 state_dict from PyTorch `.pth` files (zip and legacy
//! formats) and from `.safetensors` files.

mod legacy;
mod pickle;
mod zip_pth;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tracing::debug;

use crate::error::{FidError, Result, io_error};

/// First bytes of a zip archive, which is what `torch.save` writes since PyTorch 1.6.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Tensors of a state_dict by key, on the CPU, in the dtype they were stored in.
#[derive(Debug)]
pub struct InceptionWeights {
    tensors: HashMap<String, Tensor>,
    path: PathBuf,
}

/// Format of a weights file, recognised from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeightsFormat {
    ZipPth,
    LegacyPth,
    Safetensors,
}

impl InceptionWeights {
    /// Reads every tensor of the weights file at `path`.
    ///
    /// The format is recognised from the file's first bytes: a zip archive (PyTorch 1.6 and
    /// later), the legacy pickle stream (the format of pytorch-fid's
    /// `pt_inception-2015-12-05-6726825d.pth`), or otherwise safetensors. Strided and offset
    /// views of a storage are materialised as contiguous tensors.
    ///
    /// # Errors
    ///
    /// [`FidError::Io`] if the file cannot be read, [`FidError::WeightsFormat`] if it is not
    /// a well-formed file of one of these formats.
    pub fn load(path: &Path) -> Result<Self> {
        let format = detect_format(path)?;
        debug!(path = %path.display(), ?format, "loading weights");
        let tensors = match format {
            WeightsFormat::ZipPth => zip_pth::read(path)?,
            WeightsFormat::LegacyPth => legacy::read(path)?,
            WeightsFormat::Safetensors => read_safetensors(path)?,
        };
        debug!(path = %path.display(), tensors = tensors.len(), "loaded weights");
        Ok(Self::from_tensors(tensors, path))
    }

    /// Wraps tensors that are already in memory; `path` names them in error messages.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, path: &Path) -> Self {
        Self {
            tensors,
            path: path.to_path_buf(),
        }
    }

    /// Returns the tensor `key` after checking that its shape is `shape`.
    ///
    /// # Errors
    ///
    /// [`FidError::MissingWeight`] or [`FidError::WeightShape`], naming the key.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self
            .tensors
            .get(key)
            .ok_or_else(|| FidError::MissingWeight {
                key: key.to_string(),
                path: self.path.clone(),
            })?;
        if tensor.dims() != shape {
            return Err(FidError::WeightShape {
                key: key.to_string(),
                path: self.path.clone(),
                expected: shape.to_vec(),
                actual: tensor.dims().to_vec(),
            });
        }
        Ok(tensor.clone())
    }

    /// Returns the tensor `key` whatever its shape, or `None`.
    pub fn tensor(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }

    /// Returns the keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// Returns the number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Returns true if the file contained no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Returns the file that the weights were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn detect_format(path: &Path) -> Result<WeightsFormat> {
    let mut head = [0u8; 4];
    let mut file = File::open(path).map_err(io_error(path))?;
    let read = file.read(&mut head).map_err(io_error(path))?;
    let head = &head[..read];
    if head == ZIP_MAGIC {
        Ok(WeightsFormat::ZipPth)
    } else if head.starts_with(legacy::PICKLE_PROTOCOL_2) {
        Ok(WeightsFormat::LegacyPth)
    } else {
        Ok(WeightsFormat::Safetensors)
    }
}

fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|error| FidError::WeightsFormat {
        path: path.to_path_buf(),
        reason: format!("not a zip or legacy .pth, and not safetensors: {error}"),
    })
}

pub(crate) fn format_error(path: &Path, reason: impl Into<String>) -> FidError {
    FidError::WeightsFormat {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
