//! The checkpoint manifest: the list of files with their sizes and SHA-256 digests.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StoreError;
use crate::layout::validate_file_name;

/// Manifest format version written by this crate.
pub const MANIFEST_FORMAT: u32 = 1;

/// Contents of a checkpoint's `MANIFEST.json`. Its presence marks the checkpoint as committed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Format version, currently [`MANIFEST_FORMAT`].
    pub format: u32,
    pub run_id: String,
    pub step: u64,
    /// Files in the order the caller passed them to `commit_checkpoint`.
    pub files: Vec<ManifestEntry>,
    /// Commit time in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Name, size in bytes and lowercase hex SHA-256 digest of one checkpoint file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ManifestEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One file to store in a checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointFile {
    /// File name inside the checkpoint directory: 1 to 255 characters of `[A-Za-z0-9._-]`,
    /// not starting with `.`, and not `MANIFEST.json`.
    pub name: String,
    pub bytes: Bytes,
}

impl ManifestEntry {
    /// Describes `bytes` stored under `name`.
    pub(crate) fn describe(name: &str, bytes: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

impl Manifest {
    pub(crate) fn new(run_id: &str, step: u64, files: Vec<ManifestEntry>) -> Self {
        Self {
            format: MANIFEST_FORMAT,
            run_id: run_id.to_owned(),
            step,
            files,
            created_unix_ms: unix_millis_now(),
        }
    }

    pub(crate) fn to_json(&self) -> Result<Bytes, StoreError> {
        serde_json::to_vec_pretty(self)
            .map(Bytes::from)
            .map_err(|source| StoreError::Encode {
                document: "checkpoint manifest",
                source,
            })
    }

    /// Parses a manifest read from `url` and checks it against the run and step it was
    /// read for.
    pub(crate) fn from_json(
        json: &[u8],
        run_id: &str,
        step: u64,
        url: &str,
    ) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidManifest {
            url: url.to_owned(),
            reason,
        };
        let manifest: Self =
            serde_json::from_slice(json).map_err(|error| invalid(error.to_string()))?;
        manifest.check(run_id, step).map_err(invalid)?;
        Ok(manifest)
    }

    fn check(&self, run_id: &str, step: u64) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "format is {}, but this version reads only format {MANIFEST_FORMAT}",
                self.format
            ));
        }
        if self.run_id != run_id || self.step != step {
            return Err(format!(
                "it describes run {:?} step {}, but is stored under run {run_id:?} step {step}",
                self.run_id, self.step
            ));
        }
        check_entries(&self.files)
    }
}

/// Checks that entry names are valid and unique and that digests are well-formed.
fn check_entries(entries: &[ManifestEntry]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for entry in entries {
        validate_file_name(&entry.name).map_err(|error| error.to_string())?;
        if !seen.insert(entry.name.as_str()) {
            return Err(format!("file {:?} is listed twice", entry.name));
        }
        if !is_sha256_hex(&entry.sha256) {
            return Err(format!(
                "file {:?} has sha256 {:?}, expected 64 lowercase hex digits",
                entry.name, entry.sha256
            ));
        }
    }
    Ok(())
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Returns the current time in milliseconds since the Unix epoch, or 0 if the clock is set
/// before 1970.
pub(crate) fn unix_millis_now() -> u64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(run_id: &str, step: u64, entries: Vec<ManifestEntry>) -> Bytes {
        Manifest::new(run_id, step, entries).to_json().unwrap()
    }

    #[test]
    fn describe_computes_size_and_sha256() {
        let entry = ManifestEntry::describe("a.bin", b"abc");
        assert_eq!(entry.size, 3);
        assert_eq!(
            entry.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn from_json_round_trips() {
        let manifest = Manifest::new("r", 5, vec![ManifestEntry::describe("a.bin", b"x")]);
        let json = manifest.to_json().unwrap();
        let parsed = Manifest::from_json(&json, "r", 5, "u").unwrap();
        assert_eq!(parsed, manifest);
    }

    #[test]
    fn from_json_rejects_other_run_or_step() {
        let json = manifest_json("r", 5, vec![]);
        let error = Manifest::from_json(&json, "r", 6, "u").unwrap_err();
        assert!(error.to_string().contains("step 5"), "{error}");
        let error = Manifest::from_json(&json, "other", 5, "u").unwrap_err();
        assert!(error.to_string().contains("\"other\""), "{error}");
    }

    #[test]
    fn from_json_rejects_bad_entries() {
        let good = ManifestEntry::describe("a.bin", b"x");
        let mut bad_digest = good.clone();
        bad_digest.sha256 = "ABC".to_owned();
        let mut bad_name = good.clone();
        bad_name.name = "../x".to_owned();
        let cases = [
            (vec![good.clone(), good.clone()], "listed twice"),
            (vec![bad_digest], "64 lowercase hex digits"),
            (vec![bad_name], "invalid checkpoint file name"),
        ];
        for (entries, expected) in cases {
            let json = manifest_json("r", 1, entries);
            let error = Manifest::from_json(&json, "r", 1, "u").unwrap_err();
            assert!(matches!(error, StoreError::InvalidManifest { .. }));
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn from_json_rejects_unknown_format_and_garbage() {
        let mut manifest = Manifest::new("r", 1, vec![]);
        manifest.format = 2;
        let json = serde_json::to_vec(&manifest).unwrap();
        let error = Manifest::from_json(&json, "r", 1, "u").unwrap_err();
        assert!(error.to_string().contains("format is 2"), "{error}");

        let error = Manifest::from_json(b"{not json", "r", 1, "u").unwrap_err();
        assert!(matches!(error, StoreError::InvalidManifest { .. }));
    }
}
