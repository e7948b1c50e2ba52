//! Lost workers, restarts and a restarted coordinator.

mod common;

use common::{FakeWorker, WAIT, create_run, get_run, run_client, start, wait_for_state};
use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message as Incoming;
use ssgan_proto::v1::run_ended::Outcome;
use ssgan_proto::v1::run_event::Event;
use ssgan_store::{RunState, Store};

/// Reads run events until a state change to `state` and returns it.
async fn wait_for_event(
    events: &mut tonic::Streaming<v1::RunEvent>,
    state: v1::RunState,
) -> v1::StateChange {
    loop {
        let received = tokio::time::timeout(WAIT, events.message()).await;
        let event = received.expect("no run event in time").unwrap();
        let event = event.expect("watch ended early").event.unwrap();
        if let Event::State(change) = event
            && change.state() == state
        {
            return change;
        }
    }
}

async fn watch(client: &mut common::RunClient, run_id: &str) -> tonic::Streaming<v1::RunEvent> {
    let request = v1::WatchRunRequest {
        run_id: run_id.to_owned(),
        from_step: 0,
    };
    client.watch_run(request).await.unwrap().into_inner()
}

async fn expect_abort(worker: &mut FakeWorker, attempt: u32) {
    match worker.next().await {
        Incoming::Abort(abort) => {
            assert_eq!(abort.attempt, attempt);
            assert!(abort.reason.contains("w1"), "{}", abort.reason);
        }
        other => panic!("expected an Abort, got {other:?}"),
    }
}

#[tokio::test]
async fn lost_worker_restarts_run_as_attempt_2() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 2).await;
    let mut rank0 = FakeWorker::join(&coordinator, "w0").await;
    let mut rank1 = FakeWorker::join(&coordinator, "w1").await;
    let first = rank0.next_assignment().await;
    rank1.next_assignment().await;
    let mut events = watch(&mut client, "r1").await;

    drop(rank1);
    expect_abort(&mut rank0, 1).await;
    let recovering = wait_for_event(&mut events, v1::RunState::Recovering).await;
    assert_eq!(recovering.attempt, 1);
    assert!(
        recovering.message.contains("lost"),
        "{}",
        recovering.message
    );
    wait_for_event(&mut events, v1::RunState::Pending).await;

    // Rank 0 is busy until it confirms the abort, so the run waits for it.
    rank0.send_ended(&first, Outcome::Aborted).await;
    let mut replacement = FakeWorker::join(&coordinator, "w2").await;
    let second = rank0.next_assignment().await;
    let second_rank1 = replacement.next_assignment().await;
    assert_eq!((second.attempt, second_rank1.attempt), (2, 2));
    assert_eq!((second.rank, second_rank1.rank), (0, 1));
    let running = wait_for_state(&mut client, "r1", v1::RunState::Running).await;
    assert_eq!(running.attempt, 2);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn silent_worker_is_lost_after_timeout() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 2).await;
    let mut rank0 = FakeWorker::join(&coordinator, "w0").await;
    let mut rank1 = FakeWorker::join_silent(&coordinator, "w1").await;
    rank0.next_assignment().await;
    rank1.next_assignment().await;
    let mut events = watch(&mut client, "r1").await;

    expect_abort(&mut rank0, 1).await;
    let recovering = wait_for_event(&mut events, v1::RunState::Recovering).await;
    assert!(
        recovering.message.contains("heartbeat"),
        "{}",
        recovering.message
    );
    assert!(
        rank1.stream_ends().await,
        "the silent worker's stream stayed open"
    );
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_rank_fails_run_after_restart_limit() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 1).await;
    let mut worker = FakeWorker::join(&coordinator, "w0").await;

    // restart_limit is 2: attempts 1 and 2 are restarted, attempt 3 ends the run.
    for attempt in 1..=3 {
        let assignment = worker.next_assignment().await;
        assert_eq!(assignment.attempt, attempt);
        let ended = v1::RunEnded {
            run_id: "r1".to_owned(),
            attempt,
            outcome: Outcome::Failed.into(),
            step: 0,
            message: "loss is NaN".to_owned(),
        };
        worker.send(v1::worker_message::Message::Ended(ended)).await;
    }
    let failed = wait_for_state(&mut client, "r1", v1::RunState::Failed).await;
    assert_eq!(failed.attempt, 3);
    assert!(failed.message.contains("loss is NaN"), "{}", failed.message);
    assert!(
        failed.message.contains("restart limit"),
        "{}",
        failed.message
    );
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn restarted_coordinator_reschedules_runs() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "running", 1).await;
    create_run(&mut client, "stopping", 1).await;
    let mut first = FakeWorker::join(&coordinator, "w0").await;
    let mut second = FakeWorker::join(&coordinator, "w1").await;
    assert_eq!(first.next_assignment().await.run_id, "running");
    assert_eq!(second.next_assignment().await.run_id, "stopping");
    let stop = v1::StopRunRequest {
        run_id: "stopping".to_owned(),
    };
    client.stop_run(stop).await.unwrap();
    coordinator.shutdown().await.unwrap();
    assert!(
        first.stream_ends().await,
        "worker session outlived the coordinator"
    );

    let record = Store::open(storage.path().to_str().unwrap())
        .unwrap()
        .read_run("running")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.state,
        RunState::Running,
        "shutdown changed the run state"
    );

    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    let listed = client
        .list_runs(v1::ListRunsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<&str> = listed.runs.iter().map(|run| run.run_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["running", "stopping"]);
    let pending = get_run(&mut client, "running").await;
    assert_eq!(pending.state(), v1::RunState::Pending);
    assert_eq!(pending.attempt, 1);
    let stopped = get_run(&mut client, "stopping").await;
    assert_eq!(stopped.state(), v1::RunState::Stopped);

    let mut worker = FakeWorker::join(&coordinator, "w2").await;
    let assignment = worker.next_assignment().await;
    assert_eq!(assignment.run_id, "running");
    assert_eq!(assignment.attempt, 2);
    coordinator.shutdown().await.unwrap();
}
