//! Helpers shared by the worker's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ssgan_worker::RunConfig;

/// Returns the path of the bundled CIFAR-10 sample, which every checkout has.
pub fn sample_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar10-sample")
}

/// Returns a config small enough for a debug build: width 2, batch 8, 2 steps.
pub fn tiny_config_text() -> String {
    format!(
        r#"
[run]
seed = 3
[train]
steps = 2
batch_size = 8
[data]
path = "{}"
[model]
ch = 2
z_dim = 16
sbn_hidden = 4
[loss]
rotated_batch_size = 8
[optim]
n_dis = 1
[checkpoint]
every = 1
keep = 10
"#,
        sample_data().display()
    )
}

pub fn tiny_config(overrides: &[&str]) -> RunConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    RunConfig::from_toml(&tiny_config_text(), "tiny test config", &overrides)
        .expect("tiny config is valid")
}
