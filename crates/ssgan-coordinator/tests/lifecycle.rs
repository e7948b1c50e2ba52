//! A run from creation to its end: assignment, rendezvous, reports and the final state.

mod common;

use common::{FakeWorker, WAIT, create_run, get_run, run_client, start, wait_for_state};
use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message as Incoming;
use ssgan_proto::v1::run_ended::Outcome;
use ssgan_proto::v1::run_event::Event;
use ssgan_proto::v1::worker_message::Message as Outgoing;
use ssgan_store::{RunState, Store};
use tonic::Streaming;

async fn next_event(events: &mut Streaming<v1::RunEvent>) -> Event {
    let received = tokio::time::timeout(WAIT, events.message()).await;
    let event = received.expect("no run event in time").unwrap();
    event.expect("watch ended early").event.unwrap()
}

fn ring_address(assignment: &v1::Assignment, port: u16) -> Outgoing {
    Outgoing::RingAddress(v1::RingAddress {
        run_id: assignment.run_id.clone(),
        attempt: assignment.attempt,
        address: format!("127.0.0.1:{port}"),
        nccl_unique_id: Vec::new(),
    })
}

fn step_report(assignment: &v1::Assignment, step: u64) -> Outgoing {
    let metrics = v1::StepMetrics {
        step,
        loss_d: 1.5,
        loss_g: 0.75,
        rotation_accuracy: 0.5,
        step_seconds: 2.0,
        images_per_second: 4.0,
        ..v1::StepMetrics::default()
    };
    Outgoing::Step(v1::StepMetricsReport {
        run_id: assignment.run_id.clone(),
        attempt: assignment.attempt,
        metrics: Some(metrics),
    })
}

async fn next_rendezvous(worker: &mut FakeWorker) -> v1::Rendezvous {
    match worker.next().await {
        Incoming::Rendezvous(rendezvous) => rendezvous,
        other => panic!("expected a Rendezvous, got {other:?}"),
    }
}

#[tokio::test]
async fn run_succeeds_on_two_workers() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 2).await;
    assert_eq!(
        get_run(&mut client, "r1").await.state(),
        v1::RunState::Pending
    );

    let mut rank0 = FakeWorker::join(&coordinator, "w0").await;
    let mut rank1 = FakeWorker::join(&coordinator, "w1").await;
    let assignment0 = rank0.next_assignment().await;
    let assignment1 = rank1.next_assignment().await;
    assert_eq!((assignment0.rank, assignment1.rank), (0, 1));
    for assignment in [&assignment0, &assignment1] {
        assert_eq!(assignment.run_id, "r1");
        assert_eq!(assignment.attempt, 1);
        assert_eq!(assignment.world_size, 2);
        assert_eq!(assignment.config_toml, common::CONFIG);
        assert_eq!(assignment.resume_step, None);
        let store = Store::open(&assignment.storage_url).unwrap();
        assert!(store.read_run("r1").await.unwrap().is_some());
    }
    let running = get_run(&mut client, "r1").await;
    assert_eq!(running.state(), v1::RunState::Running);
    assert_eq!(running.attempt, 1);

    // Rank 1 reports first: the rendezvous still lists addresses by rank.
    rank1.send(ring_address(&assignment1, 7001)).await;
    rank0.send(ring_address(&assignment0, 7000)).await;
    let rendezvous0 = next_rendezvous(&mut rank0).await;
    let rendezvous1 = next_rendezvous(&mut rank1).await;
    assert_eq!(rendezvous0.addresses, ["127.0.0.1:7000", "127.0.0.1:7001"]);
    assert_eq!(rendezvous0.attempt, 1);
    assert_eq!(rendezvous0, rendezvous1);

    let watch = v1::WatchRunRequest {
        run_id: "r1".to_owned(),
        from_step: 0,
    };
    let mut events = client.watch_run(watch).await.unwrap().into_inner();
    let Event::State(initial) = next_event(&mut events).await else {
        panic!("watch did not start with the state");
    };
    assert_eq!(initial.state(), v1::RunState::Running);

    rank0.send(step_report(&assignment0, 4)).await;
    let Event::Step(step) = next_event(&mut events).await else {
        panic!("expected a step event");
    };
    assert_eq!(step.step, 4);
    let run = get_run(&mut client, "r1").await;
    assert_eq!(run.step, 4);
    assert_eq!(run.last_step.unwrap().loss_d, 1.5);
    assert_eq!(run.progress, 0.4);
    assert_eq!(run.eta_seconds, Some(12.0));

    let checkpoint = v1::CheckpointReport {
        run_id: "r1".to_owned(),
        attempt: 1,
        step: 4,
        url: String::new(),
    };
    rank0.send(Outgoing::Checkpoint(checkpoint)).await;
    let Event::Checkpoint(committed) = next_event(&mut events).await else {
        panic!("expected a checkpoint event");
    };
    assert_eq!(committed.step, 4);
    assert!(
        committed.url.ends_with("runs/r1/checkpoints/0000000004"),
        "{}",
        committed.url
    );
    let run = get_run(&mut client, "r1").await;
    assert_eq!(run.latest_checkpoint_step, Some(4));
    assert_eq!(run.latest_checkpoint_url, committed.url);

    rank0.send_ended(&assignment0, Outcome::Finished).await;
    assert_eq!(
        get_run(&mut client, "r1").await.state(),
        v1::RunState::Running
    );
    rank1.send_ended(&assignment1, Outcome::Finished).await;
    let Event::State(last) = next_event(&mut events).await else {
        panic!("expected a state event");
    };
    assert_eq!(last.state(), v1::RunState::Succeeded);
    let after_end = tokio::time::timeout(WAIT, events.message()).await.unwrap();
    assert!(
        after_end.unwrap().is_none(),
        "watch went on after SUCCEEDED"
    );

    let record = Store::open(storage.path().to_str().unwrap())
        .unwrap()
        .read_run("r1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, RunState::Succeeded);
    assert_eq!(record.latest_step, Some(4));
    assert_eq!(record.world_size, 2);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_replays_steps_from_from_step() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 1).await;
    let mut worker = FakeWorker::join(&coordinator, "w0").await;
    let assignment = worker.next_assignment().await;
    for step in 1..=3 {
        worker.send(step_report(&assignment, step)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while get_run(&mut client, "r1").await.step < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "step 3 never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let watch = v1::WatchRunRequest {
        run_id: "r1".to_owned(),
        from_step: 2,
    };
    let mut events = client.watch_run(watch).await.unwrap().into_inner();
    for expected in [2, 3] {
        let Event::Step(step) = next_event(&mut events).await else {
            panic!("expected the replay of step {expected}");
        };
        assert_eq!(step.step, expected);
    }
    let Event::State(state) = next_event(&mut events).await else {
        panic!("expected the current state after the replay");
    };
    assert_eq!(state.state(), v1::RunState::Running);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn stop_run_stops_every_rank() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 2).await;
    let mut workers = [
        FakeWorker::join(&coordinator, "w0").await,
        FakeWorker::join(&coordinator, "w1").await,
    ];
    let mut assignments = Vec::new();
    for worker in &mut workers {
        assignments.push(worker.next_assignment().await);
    }

    let stop = v1::StopRunRequest {
        run_id: "r1".to_owned(),
    };
    let stopping = client.stop_run(stop).await.unwrap().into_inner();
    assert_eq!(stopping.state(), v1::RunState::Stopping);
    for worker in &mut workers {
        match worker.next().await {
            Incoming::Stop(stop) => assert_eq!((stop.run_id.as_str(), stop.attempt), ("r1", 1)),
            other => panic!("expected a Stop, got {other:?}"),
        }
    }
    for (worker, assignment) in workers.iter().zip(&assignments) {
        worker.send_ended(assignment, Outcome::Stopped).await;
    }
    wait_for_state(&mut client, "r1", v1::RunState::Stopped).await;

    // Both workers are idle again and take the next run.
    create_run(&mut client, "r2", 2).await;
    for worker in &mut workers {
        assert_eq!(worker.next_assignment().await.run_id, "r2");
    }
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn stop_of_pending_run_stops_at_once() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 1).await;
    let stop = v1::StopRunRequest {
        run_id: "r1".to_owned(),
    };
    let stopped = client.stop_run(stop.clone()).await.unwrap().into_inner();
    assert_eq!(stopped.state(), v1::RunState::Stopped);
    let again = client.stop_run(stop).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(again.message().contains("STOPPED"), "{}", again.message());
    coordinator.shutdown().await.unwrap();
}
