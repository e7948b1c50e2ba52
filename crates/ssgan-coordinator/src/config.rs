//! Checks of a run config's TOML text.
//!
//! The coordinator does not know the full config schema, which the worker owns. It checks only
//! what scheduling needs: the text is TOML, `train.steps` is positive and `train.batch_size`
//! splits evenly across the workers.

use tonic::Status;

/// Validates a run config for `workers` ranks and returns its `train.steps`.
pub(crate) fn validate(config_toml: &str, workers: u32) -> Result<u64, Status> {
    let table = parse(config_toml)?;
    let steps = positive_integer(&table, "steps")?;
    let batch_size = positive_integer(&table, "batch_size")?;
    if batch_size % u64::from(workers) != 0 {
        return Err(Status::invalid_argument(format!(
            "workers: train.batch_size {batch_size} is not divisible by {workers} workers"
        )));
    }
    Ok(steps)
}

/// Returns the config with `train.steps` set to `steps`.
///
/// NOTE: the text is re-serialised, so comments and key order of the original are lost.
pub(crate) fn with_target_steps(config_toml: &str, steps: u64) -> Result<String, Status> {
    let mut table = parse(config_toml)?;
    let value = i64::try_from(steps)
        .map_err(|_| Status::invalid_argument(format!("target_steps: {steps} is too large")))?;
    let train = table
        .entry("train")
        .or_insert(toml::Value::Table(toml::Table::new()));
    let Some(train) = train.as_table_mut() else {
        return Err(Status::invalid_argument(
            "config_toml: train is not a table",
        ));
    };
    train.insert("steps".to_owned(), toml::Value::Integer(value));
    toml::to_string(&table)
        .map_err(|error| Status::internal(format!("failed to write the run config: {error}")))
}

/// Number of newest checkpoints that retention keeps when `checkpoint.keep` is not set; the
/// worker's config has the same default.
const DEFAULT_CHECKPOINT_KEEP: usize = 3;

/// Returns `checkpoint.keep` of a run config, or its default when the key is absent or the
/// text is not valid TOML.
pub(crate) fn checkpoint_keep(config_toml: &str) -> usize {
    let Ok(table) = parse(config_toml) else {
        return DEFAULT_CHECKPOINT_KEEP;
    };
    let keep = table
        .get("checkpoint")
        .and_then(|section| section.get("keep"))
        .and_then(toml::Value::as_integer);
    match keep {
        Some(keep) if keep >= 1 => keep as usize,
        _ => DEFAULT_CHECKPOINT_KEEP,
    }
}

/// The `[eval]` settings of a run config that scheduling evaluations needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EvalSettings {
    /// `eval.every`: generator steps between evaluated checkpoints.
    pub every: u64,
    /// `eval.samples`, default 10000.
    pub samples: u64,
    /// `eval.real_samples`, default 10000.
    pub real_samples: u64,
    /// `run.seed`, default 0.
    pub seed: u64,
    /// `train.steps`, whose checkpoint is always evaluated.
    pub steps: u64,
}

impl EvalSettings {
    /// Returns whether the committed checkpoint of `step` is evaluated: a multiple of
    /// `every`, or the final step.
    pub fn is_due(&self, step: u64) -> bool {
        step.is_multiple_of(self.every) || step == self.steps
    }
}

/// Reads the `[eval]` settings of a config; `None` when evaluation is off (`eval.every`
/// missing or 0) or the text is not TOML. The worker validates the values.
pub(crate) fn eval_settings(config_toml: &str) -> Option<EvalSettings> {
    let table = parse(config_toml).ok()?;
    let integer = |section: &str, key: &str, default: u64| {
        table
            .get(section)
            .and_then(|section| section.get(key))
            .and_then(toml::Value::as_integer)
            .and_then(|value| u64::try_from(value).ok())
            .unwrap_or(default)
    };
    let every = integer("eval", "every", 0);
    if every == 0 {
        return None;
    }
    Some(EvalSettings {
        every,
        samples: integer("eval", "samples", 10_000),
        real_samples: integer("eval", "real_samples", 10_000),
        seed: integer("run", "seed", 0),
        steps: integer("train", "steps", 0),
    })
}

fn parse(config_toml: &str) -> Result<toml::Table, Status> {
    config_toml
        .parse::<toml::Table>()
        .map_err(|error| Status::invalid_argument(format!("config_toml: invalid TOML: {error}")))
}

/// Reads `train.<key>` as an integer greater than 0.
fn positive_integer(table: &toml::Table, key: &str) -> Result<u64, Status> {
    let invalid =
        |reason: &str| Status::invalid_argument(format!("config_toml: train.{key} {reason}"));
    let value = table
        .get("train")
        .and_then(|train| train.get(key))
        .ok_or_else(|| invalid("is missing"))?;
    let Some(integer) = value.as_integer() else {
        return Err(invalid(&format!("must be an integer, not {value}")));
    };
    match u64::try_from(integer) {
        Ok(positive) if positive > 0 => Ok(positive),
        _ => Err(invalid(&format!("must be greater than 0, not {integer}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# demo\n[train]\nsteps = 10\nbatch_size = 8\n[model]\nch = 4\n";

    #[test]
    fn validate_returns_steps() {
        assert_eq!(validate(CONFIG, 2).unwrap(), 10);
    }

    #[test]
    fn validate_rejects_uneven_batch() {
        let status = validate(CONFIG, 3).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("workers:"), "{status}");
    }

    #[test]
    fn validate_rejects_zero_steps() {
        let status = validate("[train]\nsteps = 0\nbatch_size = 8\n", 1).unwrap_err();
        assert!(status.message().contains("train.steps"), "{status}");
    }

    #[test]
    fn validate_rejects_missing_batch_size() {
        let status = validate("[train]\nsteps = 3\n", 1).unwrap_err();
        assert!(
            status.message().contains("train.batch_size is missing"),
            "{status}"
        );
    }

    #[test]
    fn eval_settings_off_without_every() {
        assert_eq!(eval_settings(CONFIG), None);
        assert_eq!(eval_settings("[eval]\nevery = 0\n"), None);
    }

    #[test]
    fn eval_settings_due_on_multiples_and_final_step() {
        let text = "[run]\nseed = 4\n[train]\nsteps = 25\n[eval]\nevery = 10\nsamples = 16\n";
        let settings = eval_settings(text).unwrap();
        assert_eq!(settings.samples, 16);
        assert_eq!(settings.real_samples, 10_000);
        assert_eq!(settings.seed, 4);
        let due: Vec<u64> = (1..=25).filter(|step| settings.is_due(*step)).collect();
        assert_eq!(due, [10, 20, 25]);
    }

    #[test]
    fn target_steps_rewrites_train_steps() {
        let rewritten = with_target_steps(CONFIG, 25).unwrap();
        assert_eq!(validate(&rewritten, 2).unwrap(), 25);
        assert!(rewritten.contains("ch = 4"), "{rewritten}");
    }
}
