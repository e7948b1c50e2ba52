//! `ssgan worker --gpus all|N`: one worker process per GPU of this machine, each with
//! `--device cuda:I`, supervised by this process.
//!
//! CUDA_VISIBLE_DEVICES is passed on unchanged, so every child can use all GPUs and NCCL can
//! find the peer-to-peer links between them. The supervisor forwards SIGINT and SIGTERM to the
//! children. When one child exits, it stops the others and exits too, non-zero unless all
//! exited with status 0, so that a pod restart brings the whole set back.

use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

/// How often the supervisor checks its children and the termination flag.
const POLL: Duration = Duration::from_millis(200);
/// Time the children get to end their runs after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// Number of GPUs that `--gpus` requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuCount {
    All,
    Count(usize),
}

impl std::str::FromStr for GpuCount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "all" {
            return Ok(Self::All);
        }
        match text.parse::<usize>() {
            Ok(count) if count > 0 => Ok(Self::Count(count)),
            _ => Err(format!(
                "expected \"all\" or a positive number of GPUs, got {text:?}"
            )),
        }
    }
}

/// Resolves `--gpus` to a number of GPUs, asking the CUDA driver for `all`. Fails in a build
/// without the `cuda` feature, whose workers could not use the GPUs.
fn resolve(count: GpuCount) -> Result<usize> {
    anyhow::ensure!(
        cfg!(feature = "cuda"),
        "--gpus needs a build with the `cuda` feature (cargo build --release --features cuda)"
    );
    match count {
        GpuCount::Count(count) => Ok(count),
        GpuCount::All => visible_gpus(),
    }
}

#[cfg(feature = "cuda")]
fn visible_gpus() -> Result<usize> {
    let count = ssgan_worker::device::cuda_device_count()?;
    anyhow::ensure!(count > 0, "--gpus all found no visible CUDA device");
    Ok(count)
}

#[cfg(not(feature = "cuda"))]
fn visible_gpus() -> Result<usize> {
    anyhow::bail!("no CUDA support in this build")
}

/// Returns the command-line arguments of the child worker for GPU `ordinal`.
pub fn child_args(shared: &[String], ordinal: usize) -> Vec<String> {
    let mut args = vec!["worker".to_owned()];
    args.extend(shared.iter().cloned());
    args.push("--device".to_owned());
    args.push(format!("cuda:{ordinal}"));
    args
}

/// Starts one worker per GPU with `shared` arguments and supervises them until they end.
pub fn run_per_gpu(count: GpuCount, shared: &[String]) -> Result<i32> {
    let gpus = resolve(count)?;

    let terminate = Arc::new(AtomicBool::new(false));
    let flag = terminate.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the SIGINT/SIGTERM handler")?;

    let executable = std::env::current_exe().context("cannot find the ssgan executable")?;
    let mut children = Vec::with_capacity(gpus);
    for ordinal in 0..gpus {
        let spawned = Command::new(&executable)
            .args(child_args(shared, ordinal))
            .spawn()
            .with_context(|| format!("cannot start the worker for cuda:{ordinal}"));
        match spawned {
            Ok(child) => children.push(child),
            Err(error) => {
                stop_all(&mut children);
                return Err(error);
            }
        }
        tracing::info!(device = %format!("cuda:{ordinal}"), pid = children[ordinal].id(), "worker started");
    }

    let first = wait_for_first_exit(&mut children, &terminate)?;
    if let Some((ordinal, status)) = first {
        tracing::warn!(device = %format!("cuda:{ordinal}"), %status, "worker exited; stopping the others");
    }
    let statuses = stop_all(&mut children);
    let all_ok = first.is_none_or(|(_, status)| status.success())
        && statuses
            .iter()
            .all(|status| status.is_some_and(|s| s.success()));
    Ok(if all_ok { 0 } else { 1 })
}

/// Waits until a child exits (returning its ordinal and status) or termination is requested
/// (returning `None`).
fn wait_for_first_exit(
    children: &mut [Child],
    terminate: &AtomicBool,
) -> Result<Option<(usize, ExitStatus)>> {
    loop {
        if terminate.load(Ordering::SeqCst) {
            return Ok(None);
        }
        for (ordinal, child) in children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait().context("cannot check a worker process")? {
                return Ok(Some((ordinal, status)));
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Sends SIGTERM to every running child, waits up to [`STOP_GRACE`], kills what is left,
/// and returns each child's exit status (`None` where it could not be read).
fn stop_all(children: &mut [Child]) -> Vec<Option<ExitStatus>> {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill only sends a signal to the process id of a child we have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while std::time::Instant::now() < deadline {
        let running = children
            .iter_mut()
            .any(|child| matches!(child.try_wait(), Ok(None)));
        if !running {
            break;
        }
        std::thread::sleep(POLL);
    }
    children
        .iter_mut()
        .map(|child| {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            child.wait().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gpu_counts() {
        assert_eq!("all".parse::<GpuCount>(), Ok(GpuCount::All));
        assert_eq!("4".parse::<GpuCount>(), Ok(GpuCount::Count(4)));
        assert!("0".parse::<GpuCount>().is_err());
        assert!("many".parse::<GpuCount>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn gpus_need_cuda_feature() {
        let error = resolve(GpuCount::Count(2)).unwrap_err();
        assert!(error.to_string().contains("--features cuda"), "{error}");
    }

    #[test]
    fn child_gets_its_device() {
        let shared = ["--coordinator".to_owned(), "http://c:50051".to_owned()];
        let args = child_args(&shared, 3);
        assert_eq!(
            args,
            [
                "worker",
                "--coordinator",
                "http://c:50051",
                "--device",
                "cuda:3"
            ]
        );
    }
}
