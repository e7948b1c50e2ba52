//! Rejected and repeated requests, resumes, worker protocol errors and health.

mod common;

use bytes::Bytes;
use common::{
    CONFIG, FakeWorker, RunClient, create_request, create_run, get_run, open_session, run_client,
    start, wait_for_state,
};
use ssgan_proto::v1;
use ssgan_proto::v1::run_ended::Outcome;
use ssgan_proto::v1::worker_message::Message as Outgoing;
use ssgan_store::{CheckpointFile, Store};
use tonic::Code;

fn store(storage: &std::path::Path) -> Store {
    Store::open(storage.to_str().unwrap()).unwrap()
}

/// Returns every file under `dir`, to show that a rejected request wrote nothing.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn unknown_run_is_not_found() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    let run_id = "missing".to_owned();

    let get = client
        .get_run(v1::GetRunRequest {
            run_id: run_id.clone(),
        })
        .await;
    let stop = client
        .stop_run(v1::StopRunRequest {
            run_id: run_id.clone(),
        })
        .await;
    let resume = v1::ResumeRunRequest {
        run_id: run_id.clone(),
        step: None,
        target_steps: None,
    };
    let resume = client.resume_run(resume).await;
    let watch = client
        .watch_run(v1::WatchRunRequest {
            run_id,
            from_step: 0,
        })
        .await;
    for (name, status) in [
        ("GetRun", get.unwrap_err()),
        ("StopRun", stop.unwrap_err()),
        ("ResumeRun", resume.unwrap_err()),
        ("WatchRun", watch.unwrap_err()),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{name}: {status}");
        assert!(status.message().contains("\"missing\""), "{name}: {status}");
    }
    assert!(files_under(storage.path()).is_empty());
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_create_names_the_field() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    let cases = [
        ("bad/id", CONFIG, 1, "run_id:"),
        ("r1", "[train", 1, "config_toml:"),
        (
            "r1",
            "[train]\nsteps = 0\nbatch_size = 8\n",
            1,
            "config_toml: train.steps",
        ),
        (
            "r1",
            "[train]\nsteps = 5\n",
            1,
            "config_toml: train.batch_size",
        ),
        ("r1", CONFIG, 3, "workers:"),
    ];
    for (run_id, config, workers, field) in cases {
        let mut request = create_request(run_id, workers);
        request.config_toml = config.to_owned();
        let status = client.create_run(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status}");
        assert!(status.message().starts_with(field), "{field}: {status}");
    }
    assert!(files_under(storage.path()).is_empty());
    let listed = client.list_runs(v1::ListRunsRequest {}).await.unwrap();
    assert!(listed.into_inner().runs.is_empty());
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn existing_run_id_already_exists() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 1).await;
    let record = store(storage.path()).read_run("r1").await.unwrap().unwrap();

    let mut again = create_request("r1", 2);
    again.config_toml = "[train]\nsteps = 99\nbatch_size = 8\n".to_owned();
    let status = client.create_run(again).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let unchanged = store(storage.path()).read_run("r1").await.unwrap().unwrap();
    assert_eq!(unchanged, record);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn create_with_request_id_is_idempotent() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    let mut request = create_request("", 1);
    request.request_id = "key-1".to_owned();
    let first = client
        .create_run(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.run_id.starts_with("run-"), "{}", first.run_id);
    let second = client
        .create_run(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.run_id, first.run_id);
    coordinator.shutdown().await.unwrap();

    // The key is kept in run.json, so a restarted coordinator still finds it.
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    let third = client.create_run(request).await.unwrap().into_inner();
    assert_eq!(third.run_id, first.run_id);
    let listed = client.list_runs(v1::ListRunsRequest {}).await.unwrap();
    assert_eq!(listed.into_inner().runs.len(), 1);
    coordinator.shutdown().await.unwrap();
}

async fn resume(
    client: &mut RunClient,
    step: Option<u64>,
    target: Option<u64>,
) -> tonic::Result<v1::Run> {
    let request = v1::ResumeRunRequest {
        run_id: "r1".to_owned(),
        step,
        target_steps: target,
    };
    Ok(client.resume_run(request).await?.into_inner())
}

#[tokio::test]
async fn resume_of_running_run_fails_precondition() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 1).await;
    let mut worker = FakeWorker::join(&coordinator, "w0").await;
    worker.next_assignment().await;
    let record = store(storage.path()).read_run("r1").await.unwrap().unwrap();

    let status = resume(&mut client, None, None).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("RUNNING"), "{status}");
    let unchanged = store(storage.path()).read_run("r1").await.unwrap().unwrap();
    assert_eq!(unchanged, record);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn resume_from_committed_checkpoint() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let mut client = run_client(&coordinator).await;
    create_run(&mut client, "r1", 1).await;
    let mut worker = FakeWorker::join(&coordinator, "w0").await;
    let first = worker.next_assignment().await;
    let files = vec![CheckpointFile {
        name: "trainer.json".to_owned(),
        bytes: Bytes::from_static(b"{}"),
    }];
    store(storage.path())
        .commit_checkpoint("r1", 5, files)
        .await
        .unwrap();
    client
        .stop_run(v1::StopRunRequest {
            run_id: "r1".to_owned(),
        })
        .await
        .unwrap();
    worker.next().await;
    worker.send_ended(&first, Outcome::Stopped).await;
    wait_for_state(&mut client, "r1", v1::RunState::Stopped).await;

    let record = store(storage.path()).read_run("r1").await.unwrap().unwrap();
    let status = resume(&mut client, Some(6), None).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("step:"), "{status}");
    let status = resume(&mut client, Some(5), Some(5)).await.unwrap_err();
    assert!(status.message().starts_with("target_steps:"), "{status}");
    let unchanged = store(storage.path()).read_run("r1").await.unwrap().unwrap();
    assert_eq!(unchanged, record);

    resume(&mut client, Some(5), Some(20)).await.unwrap();
    let second = worker.next_assignment().await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.resume_step, Some(5));
    assert!(
        second.config_toml.contains("steps = 20"),
        "{}",
        second.config_toml
    );
    let run = get_run(&mut client, "r1").await;
    assert_eq!(run.target_steps, 20);
    assert_eq!(run.state(), v1::RunState::Running);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn session_must_start_with_join() {
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let heartbeat = Outgoing::Heartbeat(v1::Heartbeat {});
    let status = open_session(&coordinator, heartbeat).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");

    let join = Outgoing::Join(v1::Join {
        worker_id: "old".to_owned(),
        version: "0.0.0-old".to_owned(),
        ..v1::Join::default()
    });
    let status = open_session(&coordinator, join).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert!(status.message().contains("0.0.0-old"), "{status}");
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_reports_run_service_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let storage = tempfile::tempdir().unwrap();
    let coordinator = start(storage.path()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: "ssgan.v1.RunService".to_owned(),
    };
    let response = health.check(request).await.unwrap().into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
    coordinator.shutdown().await.unwrap();
}
