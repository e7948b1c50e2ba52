//! The collective bootstrap of an assigned rank: a TCP ring listener on a CPU worker, or the
//! NCCL unique id on a GPU worker, from the Assignment to the connected communicator.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use ssgan_collective::{
    Communicator, NCCL_UNIQUE_ID_BYTES, RingConfig, RingListener, RingMembership, SingleRank,
};
use ssgan_proto::v1::Rendezvous;

use crate::DeviceSpec;
use crate::error::Result;

/// The collective state that a rank prepares on its Assignment, before the Rendezvous.
pub(super) enum Bootstrap {
    /// A CPU rank's bound ring listener.
    Ring(RingListener),
    /// A GPU rank. For rank 0 of a group of several, `unique_id` is the id it created. For
    /// the other ranks it is empty until the Rendezvous brings rank 0's.
    Nccl { unique_id: Vec<u8> },
}

/// The communicator a job builds once the Rendezvous arrived.
pub(super) enum JobComm {
    Ring {
        listener: RingListener,
        membership: RingMembership,
    },
    Nccl {
        world_size: usize,
        unique_id: Vec<u8>,
    },
}

impl Bootstrap {
    /// Binds the ring listener (CPU), or creates the NCCL unique id on rank 0 (GPU).
    pub fn prepare(
        device: DeviceSpec,
        rank: usize,
        world_size: usize,
        ring_host: IpAddr,
    ) -> std::result::Result<Self, String> {
        if !device.is_cuda() {
            let listener = RingListener::bind(SocketAddr::new(ring_host, 0))
                .map_err(|error| error.to_string())?;
            return Ok(Self::Ring(listener));
        }
        let unique_id = if rank == 0 && world_size > 1 {
            create_unique_id()?
        } else {
            Vec::new()
        };
        Ok(Self::Nccl { unique_id })
    }

    /// Returns the ring address and the NCCL unique id that the RingAddress reply carries.
    pub fn report(&self) -> (String, Vec<u8>) {
        match self {
            Self::Ring(listener) => (listener.local_addr().to_string(), Vec::new()),
            Self::Nccl { unique_id } => (String::new(), unique_id.clone()),
        }
    }

    /// Checks the Rendezvous and returns the communicator settings of the job.
    pub fn complete(
        self,
        rendezvous: &Rendezvous,
        rank: usize,
        world_size: usize,
    ) -> std::result::Result<JobComm, String> {
        match self {
            Self::Ring(listener) => {
                let addresses = parse_addresses(&rendezvous.addresses)?;
                if addresses.len() != world_size {
                    return Err(format!(
                        "the Rendezvous lists {} addresses for world size {world_size}",
                        addresses.len()
                    ));
                }
                let membership = RingMembership {
                    rank,
                    addresses,
                    token: rendezvous.token,
                };
                Ok(JobComm::Ring {
                    listener,
                    membership,
                })
            }
            Self::Nccl { .. } => {
                let unique_id = rendezvous.nccl_unique_id.clone();
                if world_size > 1 && unique_id.len() != NCCL_UNIQUE_ID_BYTES {
                    return Err(format!(
                        "the Rendezvous carries an NCCL unique id of {} bytes, expected \
                         {NCCL_UNIQUE_ID_BYTES} from rank 0; are all workers of the attempt \
                         GPU workers?",
                        unique_id.len()
                    ));
                }
                Ok(JobComm::Nccl {
                    world_size,
                    unique_id,
                })
            }
        }
    }
}

impl JobComm {
    /// Connects to the other ranks. `timeout` bounds the connection and every collective.
    ///
    /// Every rank of the attempt must call this; a rank that does not makes the others fail
    /// after `timeout`.
    pub fn connect(
        self,
        device: &Device,
        rank: usize,
        timeout: Duration,
    ) -> Result<Arc<dyn Communicator>> {
        match self {
            JobComm::Ring {
                listener,
                membership,
            } => {
                let config = RingConfig {
                    bootstrap_timeout: timeout,
                    op_timeout: timeout,
                    ..RingConfig::default()
                };
                let ring = listener
                    .join(&membership, &config)
                    .map_err(ssgan_model::ModelError::from)?;
                Ok(Arc::new(ring))
            }
            JobComm::Nccl { world_size: 1, .. } => Ok(Arc::new(SingleRank)),
            JobComm::Nccl {
                world_size,
                unique_id,
            } => join_nccl(device, rank, world_size, &unique_id, timeout),
        }
    }
}

/// Parses the rendezvous addresses, ordered by rank.
fn parse_addresses(addresses: &[String]) -> std::result::Result<Vec<SocketAddr>, String> {
    addresses
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|e| format!("invalid ring address {a:?}: {e}"))
        })
        .collect()
}

#[cfg(feature = "cuda")]
fn create_unique_id() -> std::result::Result<Vec<u8>, String> {
    ssgan_collective::create_unique_id().map_err(|error| error.to_string())
}

#[cfg(not(feature = "cuda"))]
fn create_unique_id() -> std::result::Result<Vec<u8>, String> {
    Err("this ssgan binary was built without the `cuda` feature".to_owned())
}

#[cfg(feature = "cuda")]
fn join_nccl(
    device: &Device,
    rank: usize,
    world_size: usize,
    unique_id: &[u8],
    timeout: Duration,
) -> Result<Arc<dyn Communicator>> {
    let cuda = device.as_cuda_device()?;
    let comm = ssgan_collective::NcclCommunicator::join(cuda, rank, world_size, unique_id, timeout)
        .map_err(ssgan_model::ModelError::from)?;
    Ok(Arc::new(comm))
}

#[cfg(not(feature = "cuda"))]
fn join_nccl(
    _device: &Device,
    _rank: usize,
    world_size: usize,
    _unique_id: &[u8],
    _timeout: Duration,
) -> Result<Arc<dyn Communicator>> {
    Err(crate::WorkerError::InvalidValue {
        key: "device",
        value: format!("an NCCL group of {world_size} ranks"),
        expected: "a build with the `cuda` feature".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendezvous(addresses: &[&str], nccl_unique_id: Vec<u8>) -> Rendezvous {
        Rendezvous {
            run_id: "r".to_owned(),
            attempt: 1,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            token: 9,
            nccl_unique_id,
        }
    }

    #[test]
    fn gpu_rank_reports_no_address() {
        let bootstrap = Bootstrap::prepare(DeviceSpec::Cuda(0), 1, 2, IpAddr::from([127, 0, 0, 1]));
        let (address, unique_id) = bootstrap.unwrap().report();
        assert_eq!(address, "");
        assert!(unique_id.is_empty());
    }

    #[test]
    fn gpu_rank_takes_relayed_id() {
        let bootstrap = Bootstrap::Nccl {
            unique_id: Vec::new(),
        };
        let id = vec![3u8; NCCL_UNIQUE_ID_BYTES];
        let comm = bootstrap
            .complete(&rendezvous(&["", ""], id.clone()), 1, 2)
            .unwrap();
        let JobComm::Nccl {
            world_size,
            unique_id,
        } = comm
        else {
            panic!("expected an NCCL job");
        };
        assert_eq!(world_size, 2);
        assert_eq!(unique_id, id);
    }

    #[test]
    fn gpu_rank_rejects_missing_id() {
        let bootstrap = Bootstrap::Nccl {
            unique_id: Vec::new(),
        };
        let Err(message) = bootstrap.complete(&rendezvous(&["", ""], Vec::new()), 1, 2) else {
            panic!("accepted a Rendezvous without an NCCL unique id");
        };
        assert!(message.contains("0 bytes"), "{message}");
    }

    #[test]
    fn single_gpu_needs_no_id() {
        let bootstrap = Bootstrap::prepare(DeviceSpec::Cuda(0), 0, 1, IpAddr::from([127, 0, 0, 1]));
        let comm = bootstrap
            .unwrap()
            .complete(&rendezvous(&[""], Vec::new()), 0, 1);
        assert!(matches!(comm, Ok(JobComm::Nccl { world_size: 1, .. })));
    }

    #[test]
    fn ring_rank_checks_address_count() {
        let bootstrap = Bootstrap::prepare(DeviceSpec::Cpu, 0, 2, IpAddr::from([127, 0, 0, 1]));
        let result = bootstrap
            .unwrap()
            .complete(&rendezvous(&["127.0.0.1:1"], Vec::new()), 0, 2);
        let Err(message) = result else {
            panic!("accepted one address for two ranks");
        };
        assert!(message.contains("1 addresses"), "{message}");
    }
}
