//! `ssgan coordinator --create-run`: the run that a coordinator creates when it starts, as a
//! Kubernetes deployment does from its ConfigMap.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ssgan_proto::v1::run_service_client::RunServiceClient;
use ssgan_proto::v1::{CreateRunRequest, GetRunRequest, RunState};
use ssgan_worker::RunConfig;

use crate::text::counted;

/// Options of the run that a coordinator creates at start.
#[derive(Args)]
pub struct StartupRunArgs {
    /// Run config (TOML) of a run to create when the coordinator starts. When a run of
    /// --run-id exists already, as after a restart of the coordinator, it is left as it is.
    #[arg(long, value_name = "CONFIG", requires = "run_id")]
    create_run: Option<PathBuf>,
    /// Id of the run that --create-run creates.
    #[arg(long, requires = "create_run")]
    run_id: Option<String>,
    /// Worker processes of the run that --create-run creates.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Override one key of the --create-run config, such as --set train.steps=1000
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "create_run")]
    overrides: Vec<String>,
}

/// A validated run to create.
pub struct StartupRun {
    run_id: String,
    config: RunConfig,
    workers: u32,
}

impl StartupRunArgs {
    /// Loads and checks the config, so that a bad file stops the coordinator before it
    /// serves. Returns `None` without --create-run.
    pub fn load(&self) -> Result<Option<StartupRun>> {
        let (Some(path), Some(run_id)) = (&self.create_run, &self.run_id) else {
            return Ok(None);
        };
        anyhow::ensure!(
            self.workers >= 1,
            "invalid --workers 0: expected at least 1 worker process"
        );
        ssgan_store::validate_run_id(run_id)?;
        let config = RunConfig::load(path, &self.overrides)?;
        config.validate(self.workers as usize)?;
        Ok(Some(StartupRun {
            run_id: run_id.clone(),
            config,
            workers: self.workers,
        }))
    }
}

impl StartupRun {
    /// Creates the run through the coordinator at `addr`, unless a run of this id exists.
    pub async fn ensure(&self, addr: SocketAddr) -> Result<()> {
        let url = format!("http://{}", connectable(addr));
        let mut client = RunServiceClient::connect(url.clone())
            .await
            .with_context(|| format!("cannot reach the coordinator at {url}"))?;
        let request = GetRunRequest {
            run_id: self.run_id.clone(),
        };
        match client.get_run(request).await {
            Ok(existing) => {
                self.report_existing(&existing.into_inner());
                return Ok(());
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => {
                anyhow::bail!("cannot look up run {}: {}", self.run_id, status.message())
            }
        }
        let request = CreateRunRequest {
            config_toml: self.config.to_toml(),
            run_id: self.run_id.clone(),
            request_id: format!("startup-{}", self.run_id),
            workers: self.workers,
        };
        let run = client
            .create_run(request)
            .await
            .map_err(|status| {
                anyhow::anyhow!("cannot create run {}: {}", self.run_id, status.message())
            })?
            .into_inner();
        let workers = counted(self.workers, "worker");
        tracing::info!(run_id = %run.run_id, "created the run; it starts when {workers} have joined");
        Ok(())
    }

    fn report_existing(&self, run: &ssgan_proto::v1::Run) {
        let state = RunState::try_from(run.state).unwrap_or(RunState::Unspecified);
        tracing::info!(run_id = %run.run_id, state = state.as_str_name(), step = run.step, "the run exists already and is left as it is");
        if run.config_toml != self.config.to_toml() {
            tracing::warn!(run_id = %run.run_id, "the run's stored config differs from --create-run's file; the stored one stays in use");
        }
    }
}

/// Returns an address to connect to: the loopback address in place of an unspecified one.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}
