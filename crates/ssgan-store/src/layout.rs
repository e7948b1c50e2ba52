//! Object paths under a store's root, and the naming rules for run ids and checkpoint files.
//!
//! ```text
//! runs/<run_id>/run.json
//! runs/<run_id>/checkpoints/<step:010>/<file>
//! runs/<run_id>/checkpoints/<step:010>/MANIFEST.json
//! runs/<run_id>/checkpoints/<step:010>/eval.json
//! runs/<run_id>/samples/<step:010>.png
//! runs/<run_id>/<file>                      run-level files such as cached FID statistics
//! ```

use object_store::path::Path;

use crate::StoreError;

/// Name of the manifest object that marks a checkpoint directory as committed.
pub(crate) const MANIFEST_FILE_NAME: &str = "MANIFEST.json";

/// Name of the evaluator's result object inside a checkpoint directory.
pub(crate) const EVAL_RESULT_FILE_NAME: &str = "eval.json";

const RUNS_DIR: &str = "runs";
pub(crate) const RUN_RECORD_FILE_NAME: &str = "run.json";
pub(crate) const CHECKPOINTS_DIR: &str = "checkpoints";
pub(crate) const SAMPLES_DIR: &str = "samples";

/// Number of digits in a step directory name. Shorter steps are zero-padded so that
/// lexicographic listings sort by step.
const STEP_DIGITS: usize = 10;

const MAX_RUN_ID_LEN: usize = 64;

/// Maximum length of a checkpoint file name, the NAME_MAX of common Linux filesystems such as
/// ext4.
const MAX_FILE_NAME_LEN: usize = 255;

/// Validates a run id: 1 to 64 characters of `[A-Za-z0-9._-]`, not starting with `.`.
///
/// The error names the id and the rule it breaks.
pub fn validate_run_id(id: &str) -> Result<(), StoreError> {
    let reason = match name_rule_violation(id) {
        Some(reason) => reason,
        None if id.len() > MAX_RUN_ID_LEN => format!("is {} characters long", id.len()),
        None => return Ok(()),
    };
    Err(StoreError::InvalidRunId {
        id: id.to_owned(),
        reason,
    })
}

/// Validates a checkpoint file name.
///
/// Names follow the run id character rule, so that every backend stores the object under
/// exactly that name, and may be up to 255 characters long. `MANIFEST.json` is reserved.
pub(crate) fn validate_file_name(name: &str) -> Result<(), StoreError> {
    let reason = match name_rule_violation(name) {
        Some(reason) => format!(
            "it {reason}, but a file name must be 1 to {MAX_FILE_NAME_LEN} characters \
             from A-Z, a-z, 0-9, '.', '_' and '-', and must not start with '.'"
        ),
        None if name.len() > MAX_FILE_NAME_LEN => format!(
            "it is {} characters long, but at most {MAX_FILE_NAME_LEN} are allowed",
            name.len()
        ),
        None if name == MANIFEST_FILE_NAME => format!(
            "{MANIFEST_FILE_NAME} is reserved for the checkpoint manifest, so rename the file"
        ),
        None => return Ok(()),
    };
    Err(StoreError::InvalidFileName {
        name: name.to_owned(),
        reason,
    })
}

/// Returns how `name` breaks the shared character rule, or `None` when it follows it.
fn name_rule_violation(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if name.starts_with('.') {
        return Some("starts with '.'".to_owned());
    }
    let invalid = name.chars().find(|&c| !is_name_char(c))?;
    Some(format!("contains the character {invalid:?}"))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Formats a step as its zero-padded directory name, such as `0000000100`.
pub(crate) fn step_dir_name(step: u64) -> String {
    format!("{step:0width$}", width = STEP_DIGITS)
}

/// Parses a step directory name, accepting only the exact form that [`step_dir_name`] writes.
pub(crate) fn parse_step_dir_name(name: &str) -> Option<u64> {
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = name.parse().ok()?;
    (step_dir_name(step) == name).then_some(step)
}

/// Object paths of one store root. Callers validate run ids and file names first.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    root: Path,
}

impl Layout {
    pub(crate) fn new(root: Path) -> Self {
        Self { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn runs(&self) -> Path {
        self.root.clone().join(RUNS_DIR)
    }

    pub(crate) fn run_record(&self, run_id: &str) -> Path {
        self.runs().join(run_id).join(RUN_RECORD_FILE_NAME)
    }

    pub(crate) fn checkpoints(&self, run_id: &str) -> Path {
        self.runs().join(run_id).join(CHECKPOINTS_DIR)
    }

    pub(crate) fn checkpoint_dir(&self, run_id: &str, step: u64) -> Path {
        self.checkpoints(run_id).join(step_dir_name(step).as_str())
    }

    pub(crate) fn manifest(&self, run_id: &str, step: u64) -> Path {
        self.checkpoint_file(run_id, step, MANIFEST_FILE_NAME)
    }

    pub(crate) fn checkpoint_file(&self, run_id: &str, step: u64, name: &str) -> Path {
        self.checkpoint_dir(run_id, step).join(name)
    }

    pub(crate) fn eval_result(&self, run_id: &str, step: u64) -> Path {
        self.checkpoint_file(run_id, step, EVAL_RESULT_FILE_NAME)
    }

    pub(crate) fn run_file(&self, run_id: &str, name: &str) -> Path {
        self.runs().join(run_id).join(name)
    }

    pub(crate) fn sample(&self, run_id: &str, step: u64) -> Path {
        let file_name = format!("{}.png", step_dir_name(step));
        self.runs()
            .join(run_id)
            .join(SAMPLES_DIR)
            .join(file_name.as_str())
    }

    /// Returns the step of a manifest path directly under `checkpoints`, such as
    /// `<checkpoints>/0000000100/MANIFEST.json`.
    pub(crate) fn manifest_step(checkpoints: &Path, location: &Path) -> Option<u64> {
        let mut parts = location.prefix_match(checkpoints)?;
        let step_dir = parts.next()?;
        let file_name = parts.next()?;
        if parts.next().is_some() || file_name.as_ref() != MANIFEST_FILE_NAME {
            return None;
        }
        parse_step_dir_name(step_dir.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_run_id_accepts_valid_ids() {
        let max_len = "a".repeat(64);
        for id in ["a", "run-1", "Run_2.b", "0", "a.", "-x", max_len.as_str()] {
            assert!(validate_run_id(id).is_ok(), "{id:?} should be valid");
        }
    }

    #[test]
    fn validate_run_id_rejects_invalid_ids() {
        let too_long = "a".repeat(65);
        let cases = [
            ("", "is empty"),
            (".hidden", "starts with '.'"),
            ("..", "starts with '.'"),
            ("a/b", "contains the character '/'"),
            ("a b", "contains the character ' '"),
            ("ümlaut", "contains the character 'ü'"),
            ("a#1", "contains the character '#'"),
            (too_long.as_str(), "is 65 characters long"),
        ];
        for (id, expected_reason) in cases {
            let error = validate_run_id(id).expect_err(id);
            let StoreError::InvalidRunId { id: named, reason } = &error else {
                panic!("expected InvalidRunId for {id:?}, got {error:?}");
            };
            assert_eq!(named, id);
            assert_eq!(reason, expected_reason, "reason for {id:?}");
            let message = error.to_string();
            assert!(message.contains(&format!("{id:?}")), "{message}");
            assert!(message.contains("1 to 64 characters"), "{message}");
        }
    }

    #[test]
    fn validate_file_name_rejects_reserved_and_paths() {
        let too_long = "f".repeat(256);
        for name in ["MANIFEST.json", "a/b", "", ".x", "x#1", too_long.as_str()] {
            let error = validate_file_name(name).expect_err(name);
            assert!(
                matches!(&error, StoreError::InvalidFileName { name: named, .. } if named == name),
                "unexpected error for {name:?}: {error:?}"
            );
        }
        assert!(validate_file_name("generator.safetensors").is_ok());
        assert!(validate_file_name(&"f".repeat(255)).is_ok());
    }

    #[test]
    fn step_dir_name_pads_to_ten_digits() {
        assert_eq!(step_dir_name(0), "0000000000");
        assert_eq!(step_dir_name(100), "0000000100");
        assert_eq!(step_dir_name(12_345_678_901), "12345678901");
    }

    #[test]
    fn parse_step_dir_name_accepts_only_padded_form() {
        assert_eq!(parse_step_dir_name("0000000100"), Some(100));
        assert_eq!(parse_step_dir_name("12345678901"), Some(12_345_678_901));
        assert_eq!(parse_step_dir_name("100"), None);
        assert_eq!(parse_step_dir_name("00000000100"), None);
        assert_eq!(parse_step_dir_name("+000000100"), None);
        assert_eq!(parse_step_dir_name("000000010x"), None);
        assert_eq!(parse_step_dir_name(""), None);
    }

    #[test]
    fn layout_paths_match_documented_layout() {
        let layout = Layout::new(Path::from("prefix/dir"));
        assert_eq!(
            layout.run_record("r1").as_ref(),
            "prefix/dir/runs/r1/run.json"
        );
        assert_eq!(
            layout.checkpoint_file("r1", 100, "g.bin").as_ref(),
            "prefix/dir/runs/r1/checkpoints/0000000100/g.bin"
        );
        assert_eq!(
            layout.manifest("r1", 7).as_ref(),
            "prefix/dir/runs/r1/checkpoints/0000000007/MANIFEST.json"
        );
        assert_eq!(
            layout.eval_result("r1", 7).as_ref(),
            "prefix/dir/runs/r1/checkpoints/0000000007/eval.json"
        );
        assert_eq!(
            layout.run_file("r1", "fid_real_stats.npz").as_ref(),
            "prefix/dir/runs/r1/fid_real_stats.npz"
        );
        assert_eq!(
            layout.sample("r1", 100).as_ref(),
            "prefix/dir/runs/r1/samples/0000000100.png"
        );
    }

    #[test]
    fn manifest_step_matches_only_direct_manifests() {
        let layout = Layout::new(Path::default());
        let checkpoints = layout.checkpoints("r");
        let step = |location: &str| Layout::manifest_step(&checkpoints, &Path::from(location));
        assert_eq!(
            step("runs/r/checkpoints/0000000100/MANIFEST.json"),
            Some(100)
        );
        assert_eq!(step("runs/r/checkpoints/0000000100/g.bin"), None);
        assert_eq!(step("runs/r/checkpoints/100/MANIFEST.json"), None);
        assert_eq!(step("runs/r/checkpoints/0000000100/x/MANIFEST.json"), None);
        assert_eq!(
            step("runs/other/checkpoints/0000000100/MANIFEST.json"),
            None
        );
    }
}
