//! The run config: TOML sections of every component, `--set` overrides and validation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ssgan_collective::DEFAULT_BUCKET_BYTES;
use ssgan_model::{LossConfig, ModelConfig, OptimConfig};

use crate::error::{Result, WorkerError};

/// A whole run: what to train, on which data, for how long, and how often to checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub collective: CollectiveSection,
    #[serde(default)]
    pub eval: EvalSection,
}

/// `[run]`: identity and randomness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Seed of the initial weights, the data order and every latent vector.
    pub seed: u64,
}

/// `[train]`: length and batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Number of generator steps; each follows `optim.n_dis` discriminator steps.
    pub steps: u64,
    /// Global batch: real images per discriminator step and fakes per step, over all ranks.
    pub batch_size: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 100_000,
            batch_size: 64,
        }
    }
}

/// Reads a config file and names its origin (the path and any overrides) for errors.
fn read_config(path: &Path, overrides: &[String]) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkerError::ConfigRead {
        path: path.display().to_string(),
        source,
    })?;
    let origin = if overrides.is_empty() {
        path.display().to_string()
    } else {
        // Command-line overrides: --set, and options such as --steps that stand for one.
        let sets = overrides.join(", ");
        format!("{} with the overrides {sets}", path.display())
    };
    Ok((text, origin))
}

/// Kind of training data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// CIFAR-10 binary files.
    Cifar10,
    /// PNG and JPEG files, center-cropped to a square and resized to the model's size.
    ImageFolder,
}

/// `[data]`: where the training images are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub kind: DataKind,
    /// For `cifar10`, a CIFAR-10 .bin file or a directory whose `data_batch_*.bin` files
    /// are read. For `image-folder`, a directory of PNG and JPEG files, subfolders included.
    /// A relative path is taken from the current directory.
    pub path: PathBuf,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            kind: DataKind::Cifar10,
            path: PathBuf::from("data/cifar10-sample"),
        }
    }
}

/// `[checkpoint]`: how often to commit and how many to keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Generator steps between committed checkpoints (and sample grids); the final step is
    /// always committed.
    pub every: u64,
    /// Number of newest committed checkpoints kept; older ones are deleted.
    pub keep: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every: 5_000,
            keep: 3,
        }
    }
}

/// `[eval]`: FID evaluation of committed checkpoints by an evaluator process.
///
/// A committed checkpoint is evaluated when its step is a multiple of `every`, and the
/// checkpoint of the final step (`train.steps`) is always evaluated while `every` is not 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Generator steps between evaluated checkpoints; 0 turns evaluation off.
    pub every: u64,
    /// Generated images per FID evaluation.
    pub samples: u64,
    /// Training images whose Inception statistics are the FID reference: the first ones of
    /// a CIFAR-10 `data.path`, or ones spread evenly over the sorted files of an image
    /// folder.
    ///
    /// NOTE: FID from a few thousand images or fewer is biased upwards, so compare only
    /// values computed with the same `samples` and `real_samples`.
    pub real_samples: u64,
    /// FID Inception weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth), a local
    /// path or a URL, for the evaluation that `ssgan train` runs; evaluator processes take
    /// theirs on the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inception_weights: Option<String>,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every: 0,
            samples: 10_000,
            real_samples: 10_000,
            inception_weights: None,
        }
    }
}

impl EvalSection {
    /// Returns whether the checkpoint of `step` is evaluated in a run of `final_step` steps.
    pub fn is_due(&self, step: u64, final_step: u64) -> bool {
        self.every != 0 && (step.is_multiple_of(self.every) || step == final_step)
    }

    fn validate(&self) -> Result<()> {
        check(
            self.samples >= 2,
            "eval.samples",
            self.samples,
            "at least 2 (a covariance needs two images)",
        )?;
        check(
            self.real_samples >= 2,
            "eval.real_samples",
            self.real_samples,
            "at least 2 (a covariance needs two images)",
        )
    }
}

/// `[collective]`: communication between the ranks of a distributed run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectiveSection {
    /// Maximum bytes of gradients summed by one all-reduce call (f32 values, 4 bytes each).
    pub bucket_bytes: usize,
    /// Generator steps between checks that all ranks hold bit-identical parameters; 0 turns
    /// the check off.
    pub checksum_every: u64,
    /// Maximum seconds one collective call, or joining the ring, may take before it fails.
    pub timeout_seconds: u64,
}

impl Default for CollectiveSection {
    fn default() -> Self {
        Self {
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            checksum_every: 100,
            timeout_seconds: 60,
        }
    }
}

impl CollectiveSection {
    /// Returns the maximum duration of one collective call.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    fn validate(&self) -> Result<()> {
        check(
            self.bucket_bytes >= 4,
            "collective.bucket_bytes",
            self.bucket_bytes,
            "at least 4 (one f32 value)",
        )?;
        check(
            self.timeout_seconds >= 1,
            "collective.timeout_seconds",
            self.timeout_seconds,
            "at least 1",
        )
    }
}

/// Keys that may change when a run is resumed; every other key must match its checkpoint.
pub const RESUMABLE_KEYS: [&str; 11] = [
    "train.steps",
    "checkpoint.every",
    "checkpoint.keep",
    "data.path",
    "collective.bucket_bytes",
    "collective.checksum_every",
    "collective.timeout_seconds",
    "eval.every",
    "eval.samples",
    "eval.real_samples",
    "eval.inception_weights",
];

impl RunConfig {
    /// Reads a TOML file, applies `KEY=VALUE` overrides in order, and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let (text, origin) = read_config(path, overrides)?;
        Self::from_toml(&text, &origin, overrides)
    }

    /// Reads a config as [`RunConfig::load`] does but leaves the `[data]` section unchecked,
    /// for benchmarks that feed the step noise images of the model's size.
    pub fn load_without_data(path: &Path, overrides: &[String]) -> Result<Self> {
        let (text, origin) = read_config(path, overrides)?;
        let config = Self::parse(&text, &origin, overrides)?;
        config.validate_training(1)?;
        Ok(config)
    }

    /// Parses TOML text (`origin` names it in errors), applies overrides, validates.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let config = Self::parse(text, origin, overrides)?;
        config.validate(1)?;
        Ok(config)
    }

    fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let parse_error = |message: String| WorkerError::ConfigParse {
            origin: origin.to_string(),
            message: message.trim().replace('\n', " "),
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        for text in overrides {
            apply_override(&mut table, text)?;
        }
        table
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))
    }

    /// Checks every section for a run of `world_size` ranks.
    pub fn validate(&self, world_size: usize) -> Result<()> {
        self.validate_training(world_size)?;
        self.validate_data()
    }

    /// Checks every section but `[data]`.
    fn validate_training(&self, world_size: usize) -> Result<()> {
        let batch = self.train.batch_size;
        let batch_ok = batch >= 1 && batch.is_multiple_of(world_size);
        check(
            batch_ok,
            "train.batch_size",
            batch,
            &format!("a positive multiple of the world size {world_size}"),
        )?;
        self.model.validate()?;
        self.optim.validate()?;
        self.loss.validate(batch, world_size)?;
        check(
            self.train.steps >= 1,
            "train.steps",
            self.train.steps,
            "at least 1",
        )?;
        check(
            self.checkpoint.every >= 1,
            "checkpoint.every",
            self.checkpoint.every,
            "at least 1",
        )?;
        check(
            self.checkpoint.keep >= 1,
            "checkpoint.keep",
            self.checkpoint.keep,
            "at least 1",
        )?;
        self.collective.validate()?;
        self.eval.validate()
    }

    /// Checks that the data kind can provide images of the model's size.
    fn validate_data(&self) -> Result<()> {
        if self.data.path.as_os_str().is_empty() {
            return Err(WorkerError::InvalidValue {
                key: "data.path",
                value: "\"\"".into(),
                expected: "the path of the training data (a CIFAR-10 file or folder, or an image \
                           folder)"
                    .into(),
            });
        }
        let size = self.model.image_size();
        if self.data.kind == DataKind::Cifar10 && size != 32 {
            let arch = self.model.arch.name();
            return Err(WorkerError::InvalidValue {
                key: "model.arch",
                value: format!("{arch:?} ({size}x{size} images) with data.kind = \"cifar10\""),
                expected: "\"resnet32\" for CIFAR-10's 32x32 images, or data.kind = \
                           \"image-folder\" with a folder of images for 128x128 models"
                    .into(),
            });
        }
        Ok(())
    }

    /// Serialises the config to TOML, with every default filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serialises")
    }

    /// SHA-256 of [`RunConfig::to_toml`], hex.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_toml().as_bytes()))
    }

    /// Dotted keys whose values differ between two configs, except [`RESUMABLE_KEYS`].
    pub fn incompatible_keys(&self, other: &RunConfig) -> Vec<String> {
        let (a, b) = (toml::Value::try_from(self), toml::Value::try_from(other));
        let (Ok(a), Ok(b)) = (a, b) else {
            return vec!["<config>".into()];
        };
        let mut keys = Vec::new();
        diff_values("", &a, &b, &mut keys);
        keys.retain(|k| !RESUMABLE_KEYS.contains(&k.as_str()));
        keys
    }
}

fn check(ok: bool, key: &'static str, value: impl ToString, expected: &str) -> Result<()> {
    if ok {
        return Ok(());
    }
    Err(WorkerError::InvalidValue {
        key,
        value: value.to_string(),
        expected: expected.to_string(),
    })
}

fn diff_values(prefix: &str, a: &toml::Value, b: &toml::Value, keys: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut names: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match (ta.get(name), tb.get(name)) {
                    (Some(x), Some(y)) => diff_values(&path, x, y, keys),
                    _ => keys.push(path),
                }
            }
        }
        _ if a != b => keys.push(prefix.to_string()),
        _ => {}
    }
}

/// Applies one `KEY=VALUE` override: KEY is a dotted path such as `model.ch`; VALUE is a TOML
/// value (`32`, `0.5`, `true`, `"text"`), and anything that does not parse as one is a string.
pub fn apply_override(table: &mut toml::Table, text: &str) -> Result<()> {
    let override_error = |reason: &str| WorkerError::Override {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let (key, raw) = text
        .split_once('=')
        .ok_or_else(|| override_error("expected KEY=VALUE, such as model.ch=32"))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(override_error(
            "the key must be a dotted path such as train.steps",
        ));
    }
    let value = parse_value(raw.trim());
    let (last, sections) = parts.split_last().expect("split yields at least one part");
    let mut current = table;
    for section in sections {
        let entry = current
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| override_error(&format!("{section} is not a section")))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let wrapped = format!("value = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut table) => table.remove("value").expect("the key was just written"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
