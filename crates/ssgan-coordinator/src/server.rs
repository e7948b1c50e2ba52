//! The coordinator's gRPC server: start, address and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ssgan_proto::v1::evaluator_service_server::EvaluatorServiceServer;
use ssgan_proto::v1::run_service_server::RunServiceServer;
use ssgan_proto::v1::worker_service_server::WorkerServiceServer;
use ssgan_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::evaluator_service::EvaluatorService;
use crate::registry::Registry;
use crate::run_service::RunService;
use crate::shared::Core;
use crate::worker_service::WorkerService;
use crate::{CoordinatorError, CoordinatorOptions};

/// Time that open requests get to finish after a shutdown before the server is cancelled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A running coordinator: the gRPC server with `ssgan.v1.RunService`,
/// `ssgan.v1.WorkerService`, `ssgan.v1.EvaluatorService`, `grpc.health.v1.Health` and server reflection (v1).
pub struct Coordinator {
    local_addr: SocketAddr,
    core: Core,
    shutdown: watch::Sender<bool>,
    server: ServerTask,
}

impl Coordinator {
    /// Opens the store, loads the run registry, binds `options.listen` and starts serving.
    ///
    /// Runs that were RUNNING, RECOVERING or PENDING when the previous coordinator stopped
    /// become PENDING and start again, as attempt + 1, once enough workers have joined.
    /// STOPPING runs become STOPPED.
    pub async fn start(options: CoordinatorOptions) -> Result<Self, CoordinatorError> {
        let store = Store::open(&options.storage_url).map_err(CoordinatorError::OpenStore)?;
        let registry = Registry::load(store)
            .await
            .map_err(CoordinatorError::LoadRegistry)?;
        let listener = bind(options.listen).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Bind {
                addr: options.listen,
                source,
            })?;

        let (shutdown, shutdown_signal) = watch::channel(false);
        let core = Core::new(registry, options, shutdown_signal.clone());
        let router = router(&core).await?;
        let incoming = TcpListenerStream::new(listener);
        let server = tokio::spawn(
            router.serve_with_incoming_shutdown(incoming, wait_for_shutdown(shutdown_signal)),
        );
        tracing::debug!(%local_addr, "coordinator listening");
        Ok(Self {
            local_addr,
            core,
            shutdown,
            server,
        })
    }

    /// Runs a coordinator until `signal` completes, then shuts it down.
    pub async fn serve_until(
        options: CoordinatorOptions,
        signal: impl Future<Output = ()>,
    ) -> Result<(), CoordinatorError> {
        Self::start(options).await?.run_until(signal).await
    }

    /// Serves until `signal` completes, then shuts down, as [`Coordinator::serve_until`]
    /// does for a coordinator that is already started.
    pub async fn run_until(
        mut self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), CoordinatorError> {
        tokio::select! {
            () = signal => {}
            // The server ends by itself only when it fails.
            result = &mut self.server => return Ok(result??),
        }
        self.shutdown().await
    }

    /// Returns the address the server listens on, with the actual port when `listen` had
    /// port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and ends every worker session and watch. Run states stay as they are, so
    /// a coordinator started later on the same store reschedules the runs that were training.
    pub async fn shutdown(self) -> Result<(), CoordinatorError> {
        self.core.close().await;
        let _ = self.shutdown.send(true);
        let mut server = self.server;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(result) => result??,
            Err(_) => {
                tracing::debug!("open requests did not finish in time, cancelling the server");
                server.abort();
            }
        }
        tracing::debug!(local_addr = %self.local_addr, "coordinator stopped");
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, CoordinatorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Bind { addr, source })
}

async fn router(core: &Core) -> Result<Router, CoordinatorError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RunServiceServer<RunService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ssgan_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let router = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(RunServiceServer::new(RunService::new(core.clone())))
        .add_service(WorkerServiceServer::new(WorkerService::new(core.clone())))
        .add_service(EvaluatorServiceServer::new(EvaluatorService::new(
            core.clone(),
        )));
    Ok(router)
}

async fn wait_for_shutdown(mut signal: watch::Receiver<bool>) {
    // An error means the sender is gone, which also ends the coordinator.
    let _ = signal.wait_for(|closing| *closing).await;
}
