//! PyTorch's zip format (`torch.save` since 1.6): `<dir>/data.pkl` is the pickled
//! state_dict and `<dir>/data/<key>` contains the raw bytes of storage `<key>`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::Tensor;
use zip::ZipArchive;

use super::format_error;
use super::pickle::{materialize, read_pickle, tensor_records};
use crate::error::{Result, io_error};

type Archive = ZipArchive<BufReader<File>>;

/// Reads every tensor of the state_dict in the zip-format `.pth` file at `path`.
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut archive = ZipArchive::new(BufReader::new(file))
        .map_err(|error| format_error(path, format!("invalid zip archive: {error}")))?;
    let pickle_name = find_pickle(&archive, path)?;
    let storage_dir = pickle_name.trim_end_matches(".pkl").to_string();

    let pickle_bytes = read_entry(&mut archive, &pickle_name, path)?;
    let state_dict = read_pickle(&mut pickle_bytes.as_slice(), path)?;
    let records = tensor_records(state_dict, path)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = HashMap::with_capacity(records.len());
    for record in &records {
        if !storages.contains_key(&record.storage_key) {
            let entry = format!("{storage_dir}/{}", record.storage_key);
            let bytes = read_entry(&mut archive, &entry, path)?;
            storages.insert(record.storage_key.clone(), bytes);
        }
        let tensor = materialize(record, &storages[&record.storage_key], path)?;
        tensors.insert(record.name.clone(), tensor);
    }
    Ok(tensors)
}

fn find_pickle(archive: &Archive, path: &Path) -> Result<String> {
    for name in archive.file_names() {
        let name =
            name.map_err(|error| format_error(path, format!("invalid entry name: {error}")))?;
        if name.ends_with("/data.pkl") || name == "data.pkl" {
            return Ok(name.into_owned());
        }
    }
    Err(format_error(path, "the zip archive has no data.pkl entry"))
}

fn read_entry(archive: &mut Archive, name: &str, path: &Path) -> Result<Vec<u8>> {
    let mut entry = archive
        .by_name(name)
        .map_err(|error| format_error(path, format!("missing zip entry {name}: {error}")))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(io_error(path))?;
    Ok(bytes)
}
