//! State shared by the gRPC services and background tasks of one coordinator.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard, watch};

use crate::CoordinatorOptions;
use crate::evaluation::requeue_pending;
use crate::evaluators::EvaluatorPool;
use crate::gang::Gangs;
use crate::pool::Pool;
use crate::registry::Registry;

/// Everything that changes while the coordinator runs. One lock guards it all, so that a run's
/// record, its attempt and its workers always change together. Run records are written to the
/// store while the lock is held.
pub(crate) struct Shared {
    pub registry: Registry,
    pub pool: Pool,
    pub gangs: Gangs,
    pub evaluators: EvaluatorPool,
    /// Set when the coordinator shuts down. Worker sessions then end without changing any run
    /// state, so that the next coordinator reschedules the runs they trained.
    pub closing: bool,
}

/// Cloneable handle on a coordinator's state and settings.
#[derive(Clone)]
pub(crate) struct Core {
    shared: Arc<Mutex<Shared>>,
    pub options: Arc<CoordinatorOptions>,
    /// Changes to `true` when the coordinator shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl Core {
    pub fn new(
        registry: Registry,
        options: CoordinatorOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut shared = Shared {
            registry,
            pool: Pool::default(),
            gangs: Gangs::default(),
            evaluators: EvaluatorPool::default(),
            closing: false,
        };
        requeue_pending(&mut shared);
        Self {
            shared: Arc::new(Mutex::new(shared)),
            options: Arc::new(options),
            shutdown,
        }
    }

    pub async fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().await
    }

    /// Marks the coordinator as closing and drops every worker and evaluator session's
    /// response stream.
    pub async fn close(&self) {
        let mut shared = self.lock().await;
        shared.closing = true;
        shared.pool.clear();
        shared.evaluators.clear();
    }
}
