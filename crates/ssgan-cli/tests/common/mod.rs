//! Helpers shared by the CLI test binaries: the `ssgan` command and the repository root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns an `ssgan` command that runs in the repository root and logs info lines of the
/// binary and warnings of the libraries.
pub fn ssgan() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssgan"));
    command
        .env("RUST_LOG", "warn,ssgan=info")
        .current_dir(repo());
    command
}

/// Returns the repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
