//! Attempts of GPU workers: the NCCL unique id relay and the NCCL version check.

mod common;

use std::time::Duration;

use common::{FakeWorker, create_run, get_run, run_client, start};
use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message as Incoming;
use ssgan_proto::v1::worker_message::Message as Outgoing;

const NCCL_2_27: u32 = 22_703;
const NCCL_2_30: u32 = 23_003;

fn report(assignment: &v1::Assignment, nccl_unique_id: Vec<u8>) -> Outgoing {
    Outgoing::RingAddress(v1::RingAddress {
        run_id: assignment.run_id.clone(),
        attempt: assignment.attempt,
        address: String::new(),
        nccl_unique_id,
    })
}

async fn next_rendezvous(worker: &mut FakeWorker) -> v1::Rendezvous {
    match worker.next().await {
        Incoming::Rendezvous(rendezvous) => rendezvous,
        other => panic!("expected a Rendezvous, got {other:?}"),
    }
}

#[tokio::test]
async fn unique_id_reaches_every_rank() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "gpu", 4).await;
    let mut workers = Vec::new();
    for name in ["g0", "g1", "g2", "g3"] {
        workers.push(FakeWorker::join_gpu(&coordinator, name, NCCL_2_30).await);
    }
    let mut assignments = Vec::new();
    for worker in &mut workers {
        assignments.push(worker.next_assignment().await);
    }
    let id: Vec<u8> = (0..128).map(|i| (i * 7 % 251) as u8).collect();

    // Rank 0 reports last, so the relay cannot depend on its report coming first.
    for rank in [3, 2, 1, 0] {
        let assignment = &assignments[rank];
        assert_eq!(assignment.rank as usize, rank);
        let unique_id = if rank == 0 { id.clone() } else { Vec::new() };
        workers[rank].send(report(assignment, unique_id)).await;
    }

    for worker in &mut workers {
        let rendezvous = next_rendezvous(worker).await;
        assert_eq!(rendezvous.nccl_unique_id, id, "{}", worker.worker_id);
        assert_eq!(rendezvous.addresses.len(), 4);
    }
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn mixed_nccl_versions_never_share_attempt() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "mixed", 2).await;
    let mut old = FakeWorker::join_gpu(&coordinator, "old", NCCL_2_27).await;
    let mut new = FakeWorker::join_gpu(&coordinator, "new", NCCL_2_30).await;

    assert!(old.stays_quiet(Duration::from_millis(300)).await);
    assert!(new.stays_quiet(Duration::from_millis(300)).await);
    assert_eq!(
        get_run(&mut client, "mixed").await.state(),
        v1::RunState::Pending
    );

    // A second worker with the newer version completes a group.
    let mut newer = FakeWorker::join_gpu(&coordinator, "new2", NCCL_2_30).await;
    assert_eq!(new.next_assignment().await.rank, 0);
    assert_eq!(newer.next_assignment().await.rank, 1);
    assert!(old.stays_quiet(Duration::from_millis(300)).await);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn cpu_and_gpu_workers_never_share_attempt() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "split", 2).await;
    let mut cpu = FakeWorker::join(&coordinator, "cpu").await;
    let mut gpu = FakeWorker::join_gpu(&coordinator, "gpu", NCCL_2_30).await;

    assert!(cpu.stays_quiet(Duration::from_millis(300)).await);
    assert!(gpu.stays_quiet(Duration::from_millis(300)).await);
    assert_eq!(
        get_run(&mut client, "split").await.state(),
        v1::RunState::Pending
    );
    coordinator.shutdown().await.unwrap();
}
