//! PyTorch's legacy serialization (`torch.save(..., _use_new_zipfile_serialization=False)`,
//! and every `torch.save` before 1.6), the format of pytorch-fid's FID Inception weights.
//!
//! The file is five pickles in a row, then raw data:
//! 1. the magic number 0x1950a86a20f9469cfc6c,
//! 2. the protocol version 1001,
//! 3. a dict of system information (`little_endian`, type sizes),
//! 4. the state_dict, whose tensors refer to storages by key,
//! 5. the list of storage keys,
//!
//! and then, for each key of that list in order, the storage: its element count as a
//! little-endian i64, followed by its elements.

use std::collections::HashMap;
use std::path::Path;

use candle_core::pickle::Object;
use candle_core::{DType, Tensor};

use super::format_error;
use super::pickle::{TensorRecord, materialize, read_pickle, tensor_records};
use crate::error::{Result, io_error};

/// Opening bytes of a pickle written with protocol 2.
pub const PICKLE_PROTOCOL_2: &[u8] = b"\x80\x02";

/// The magic-number pickle: PROTO 2, LONG1 of 10 bytes 0x1950a86a20f9469cfc6c, STOP.
///
/// It is compared byte for byte, because candle's unpickler cannot hold a 10-byte long.
const MAGIC_PICKLE: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";

const PROTOCOL_VERSION: i64 = 1001;

/// Reads every tensor of the state_dict in the legacy-format `.pth` file at `path`.
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let Some(mut rest) = bytes.strip_prefix(MAGIC_PICKLE) else {
        return Err(format_error(
            path,
            "a pickle file without the magic number of legacy torch.save",
        ));
    };
    check_protocol(read_pickle(&mut rest, path)?, path)?;
    check_little_endian(read_pickle(&mut rest, path)?, path)?;
    let records = tensor_records(read_pickle(&mut rest, path)?, path)?;
    let keys = storage_keys(read_pickle(&mut rest, path)?, path)?;
    let storages = split_storages(rest, &keys, &storage_dtypes(&records), path)?;

    let mut tensors = HashMap::with_capacity(records.len());
    for record in &records {
        let storage = storages.get(record.storage_key.as_str()).ok_or_else(|| {
            format_error(
                path,
                format!(
                    "tensor {:?} refers to storage {:?}, which is not in the file",
                    record.name, record.storage_key
                ),
            )
        })?;
        tensors.insert(record.name.clone(), materialize(record, storage, path)?);
    }
    Ok(tensors)
}

fn check_protocol(version: Object, path: &Path) -> Result<()> {
    match version.int_or_long() {
        Ok(PROTOCOL_VERSION) => Ok(()),
        Ok(other) => Err(format_error(
            path,
            format!("legacy protocol version {other}, expected {PROTOCOL_VERSION}"),
        )),
        Err(other) => Err(format_error(
            path,
            format!("protocol version is {other:?}, expected the integer {PROTOCOL_VERSION}"),
        )),
    }
}

fn check_little_endian(sys_info: Object, path: &Path) -> Result<()> {
    let Object::Dict(entries) = sys_info else {
        return Err(format_error(
            path,
            "the system-information pickle is not a dict",
        ));
    };
    let key = Object::Unicode("little_endian".to_string());
    match entries.into_iter().find(|(name, _)| *name == key) {
        Some((_, Object::Bool(true))) => Ok(()),
        Some((_, value)) => Err(format_error(
            path,
            format!("written on a big-endian machine (little_endian = {value:?})"),
        )),
        None => Err(format_error(path, "system information lacks little_endian")),
    }
}

fn storage_keys(keys: Object, path: &Path) -> Result<Vec<String>> {
    let Object::List(keys) = keys else {
        return Err(format_error(path, "the storage-key pickle is not a list"));
    };
    keys.into_iter()
        .map(|key| {
            key.unicode().map_err(|other| {
                format_error(path, format!("storage key {other:?} is not a string"))
            })
        })
        .collect()
}

fn storage_dtypes(records: &[TensorRecord]) -> HashMap<&str, DType> {
    records
        .iter()
        .map(|record| (record.storage_key.as_str(), record.dtype))
        .collect()
}

/// Splits the data after the pickles into one byte slice per storage key.
fn split_storages<'a>(
    mut data: &'a [u8],
    keys: &'a [String],
    dtypes: &HashMap<&str, DType>,
    path: &Path,
) -> Result<HashMap<&'a str, &'a [u8]>> {
    let mut storages = HashMap::with_capacity(keys.len());
    for key in keys {
        let dtype = dtypes.get(key.as_str()).ok_or_else(|| {
            format_error(
                path,
                format!("storage {key:?} is used by no tensor, so its dtype is unknown"),
            )
        })?;
        let (count, rest) = split_count(data, key, path)?;
        let bytes = count * dtype.size_in_bytes();
        if rest.len() < bytes {
            return Err(format_error(
                path,
                format!(
                    "storage {key:?} needs {bytes} bytes but only {} remain: the file is truncated",
                    rest.len()
                ),
            ));
        }
        let (storage, rest) = rest.split_at(bytes);
        storages.insert(key.as_str(), storage);
        data = rest;
    }
    Ok(storages)
}

fn split_count<'a>(data: &'a [u8], key: &str, path: &Path) -> Result<(usize, &'a [u8])> {
    let Some((count, rest)) = data.split_first_chunk::<8>() else {
        return Err(format_error(
            path,
            format!("the file ends before the element count of storage {key:?}"),
        ));
    };
    let count = u64::from_le_bytes(*count);
    let count = usize::try_from(count)
        .map_err(|_| format_error(path, format!("storage {key:?} has {count} elements")))?;
    Ok((count, rest))
}
