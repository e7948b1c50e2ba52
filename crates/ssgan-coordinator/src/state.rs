//! The run state machine: which state changes are legal.
//!
//! ```text
//! PENDING -> RUNNING -> SUCCEEDED | FAILED
//! RUNNING -> STOPPING -> STOPPED | SUCCEEDED | FAILED
//! RUNNING -> STOPPED                    (the workers stopped on their own)
//! RUNNING -> RECOVERING -> PENDING | FAILED | STOPPED
//! PENDING -> STOPPED                    (StopRun before the run started)
//! STOPPED | FAILED -> PENDING           (ResumeRun)
//! ```
//!
//! A coordinator that starts up moves RUNNING and RECOVERING runs to PENDING and STOPPING
//! runs to STOPPED without these checks, because the attempts they describe died with the
//! previous coordinator.

use ssgan_store::RunState;

/// Returns whether a run may change from `from` to `to`.
pub(crate) fn is_legal(from: RunState, to: RunState) -> bool {
    use RunState::*;
    matches!(
        (from, to),
        (Pending, Running | Stopped)
            | (
                Running,
                Succeeded | Failed | Stopping | Stopped | Recovering
            )
            | (Stopping, Stopped | Succeeded | Failed)
            | (Recovering, Pending | Failed | Stopped)
            | (Stopped | Failed, Pending)
            // Only through ResumeRun with a larger target_steps: training further.
            | (Succeeded, Pending)
    )
}

/// Returns the state's name as in run.json and the API.
pub(crate) fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Pending => "PENDING",
        RunState::Running => "RUNNING",
        RunState::Stopping => "STOPPING",
        RunState::Stopped => "STOPPED",
        RunState::Succeeded => "SUCCEEDED",
        RunState::Failed => "FAILED",
        RunState::Recovering => "RECOVERING",
    }
}

/// Returns the state that a run in `state` takes when a coordinator starts up.
pub(crate) fn state_after_restart(state: RunState) -> RunState {
    match state {
        RunState::Running | RunState::Recovering => RunState::Pending,
        RunState::Stopping => RunState::Stopped,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_only_from_ended_runs() {
        for from in [RunState::Stopped, RunState::Failed, RunState::Succeeded] {
            assert!(is_legal(from, RunState::Pending), "{from:?}");
        }
        for from in [RunState::Running, RunState::Stopping] {
            assert!(!is_legal(from, RunState::Pending), "{from:?}");
        }
    }

    #[test]
    fn succeeded_only_resumes() {
        for to in [RunState::Running, RunState::Failed, RunState::Stopped] {
            assert!(!is_legal(RunState::Succeeded, to), "{to:?}");
        }
    }

    #[test]
    fn restart_reschedules_live_runs() {
        assert_eq!(state_after_restart(RunState::Running), RunState::Pending);
        assert_eq!(state_after_restart(RunState::Recovering), RunState::Pending);
        assert_eq!(state_after_restart(RunState::Stopping), RunState::Stopped);
        assert_eq!(state_after_restart(RunState::Failed), RunState::Failed);
    }
}
