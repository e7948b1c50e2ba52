//! Settings of a coordinator.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a coordinator process.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// Address of the gRPC server. Port 0 picks a free port, which
    /// [`Coordinator::local_addr`](crate::Coordinator::local_addr) returns.
    pub listen: SocketAddr,
    /// Root URL of the object store that contains the run registry and checkpoints, in any
    /// form that `ssgan_store::Store::open` accepts. Workers receive its normalised form
    /// (`Store::url`, an absolute path for a local directory) in their Assignment.
    pub storage_url: String,
    /// Interval at which workers must send a message, sent to them in the Welcome.
    pub heartbeat_interval: Duration,
    /// Silence after which a worker counts as lost.
    pub heartbeat_timeout: Duration,
    /// Maximum number of restarts after a lost worker or a failed attempt before the run
    /// becomes FAILED. The count resets when a user resumes the run.
    pub restart_limit: u32,
    /// Wait before the first restart. Each further restart waits twice as long as the one
    /// before, up to 32 times this value.
    pub restart_backoff: Duration,
}

impl CoordinatorOptions {
    /// Returns options with a 5 s heartbeat interval, a 30 s heartbeat timeout, 3 restarts
    /// and a 5 s restart backoff.
    pub fn new(listen: SocketAddr, storage_url: impl Into<String>) -> Self {
        Self {
            listen,
            storage_url: storage_url.into(),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(30),
            restart_limit: 3,
            restart_backoff: Duration::from_secs(5),
        }
    }

    /// Returns the wait before restart number `restart`, counting from 1.
    pub(crate) fn backoff(&self, restart: u32) -> Duration {
        let doublings = restart.saturating_sub(1).min(5);
        self.restart_backoff * (1u32 << doublings)
    }
}
