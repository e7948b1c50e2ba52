//! Parts common to both `.pth` formats: the pickled state_dict, whose values name a storage
//! and a strided view of it, and the copy of such a view into a contiguous tensor.

use std::io::BufRead;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use super::format_error;
use crate::error::Result;

/// Prefix that candle puts before a storage key in [`candle_core::pickle::TensorInfo::path`].
const STORAGE_PREFIX: &str = "storage";

/// One state_dict entry: a view (shape, strides and offset, in elements) of a storage.
#[derive(Clone, Debug)]
pub struct TensorRecord {
    pub name: String,
    pub storage_key: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

/// Reads one pickle from `reader`, leaving the reader just after its STOP opcode.
pub fn read_pickle<R: BufRead>(reader: &mut R, path: &Path) -> Result<Object> {
    let mut stack = Stack::empty();
    stack
        .read_loop(reader)
        .map_err(|error| format_error(path, format!("invalid pickle: {error}")))?;
    stack
        .finalize()
        .map_err(|error| format_error(path, format!("empty pickle: {error}")))
}

/// Lists the tensors of a pickled state_dict (a dict or an OrderedDict of tensors).
///
/// Entries that are not tensors are skipped.
pub fn tensor_records(state_dict: Object, path: &Path) -> Result<Vec<TensorRecord>> {
    let Object::Dict(entries) = state_dict else {
        return Err(format_error(
            path,
            "the pickled object is not a dict of tensors (a state_dict)",
        ));
    };
    let storage_dir = Path::new(STORAGE_PREFIX);
    let mut records = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let info = value
            .into_tensor_info(name, storage_dir)
            .map_err(|error| format_error(path, format!("invalid tensor entry: {error}")))?;
        if let Some(info) = info {
            records.push(record_from_info(info, path)?);
        }
    }
    Ok(records)
}

fn record_from_info(info: candle_core::pickle::TensorInfo, path: &Path) -> Result<TensorRecord> {
    let storage_key = info
        .path
        .strip_prefix(STORAGE_PREFIX)
        .and_then(|key| key.strip_prefix('/'))
        .ok_or_else(|| format_error(path, format!("unexpected storage path {}", info.path)))?;
    Ok(TensorRecord {
        storage_key: storage_key.to_string(),
        dtype: info.dtype,
        shape: info.layout.dims().to_vec(),
        strides: info.layout.stride().to_vec(),
        offset: info.layout.start_offset() / info.dtype.size_in_bytes(),
        name: info.name,
    })
}

/// Copies the view `record` of the little-endian `storage` bytes into a contiguous tensor.
///
/// # Errors
///
/// [`crate::FidError::WeightsFormat`] if the view reaches past the end of the storage.
pub fn materialize(record: &TensorRecord, storage: &[u8], path: &Path) -> Result<Tensor> {
    let element = record.dtype.size_in_bytes();
    let count: usize = record.shape.iter().product();
    let last = last_element(record);
    if count > 0 && (last + 1) * element > storage.len() {
        return Err(format_error(
            path,
            format!(
                "tensor {:?} reads element {last} of storage {:?}, which has {} elements",
                record.name,
                record.storage_key,
                storage.len() / element
            ),
        ));
    }

    let mut bytes = Vec::with_capacity(count * element);
    let mut index = vec![0usize; record.shape.len()];
    for _ in 0..count {
        let start = (record.offset + dot(&index, &record.strides)) * element;
        bytes.extend_from_slice(&storage[start..start + element]);
        increment(&mut index, &record.shape);
    }
    Ok(Tensor::from_raw_buffer(
        &bytes,
        record.dtype,
        &record.shape,
        &Device::Cpu,
    )?)
}

/// Index in the storage of the view's last element.
fn last_element(record: &TensorRecord) -> usize {
    let extent: usize = record
        .shape
        .iter()
        .zip(&record.strides)
        .map(|(&size, &stride)| size.saturating_sub(1) * stride)
        .sum();
    record.offset + extent
}

fn dot(index: &[usize], strides: &[usize]) -> usize {
    index.iter().zip(strides).map(|(&i, &s)| i * s).sum()
}

/// Advances a row-major multi-index by one element.
fn increment(index: &mut [usize], shape: &[usize]) {
    for dim in (0..index.len()).rev() {
        index[dim] += 1;
        if index[dim] < shape[dim] {
            return;
        }
        index[dim] = 0;
    }
}
