//! The evaluator against a real coordinator and worker agent on 127.0.0.1, with the
//! random-weight FID Inception fixture, and its refusal to start without weights.

#[path = "../../ssgan-fid/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ssgan_coordinator::{Coordinator, CoordinatorOptions};
use ssgan_evaluator::{EvalFile, EvaluatorError, EvaluatorOptions, WeightsError, run_evaluator};
use ssgan_proto::v1;
use ssgan_proto::v1::run_service_client::RunServiceClient;
use ssgan_worker::agent::{AgentOptions, run_agent};
use tokio::sync::watch;

/// Maximum wait for the run to train and for its checkpoint to be evaluated.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Two steps of a width-2 model with a checkpoint each. Only the final step (2) is due for
/// evaluation, and its FID uses 16 generated and 16 real images.
fn config_toml() -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar10-sample");
    format!(
        r#"
[run]
seed = 3
[train]
steps = 2
batch_size = 8
[data]
path = "{}"
[model]
ch = 2
z_dim = 16
sbn_hidden = 4
[loss]
rotated_batch_size = 8
[optim]
n_dis = 1
[checkpoint]
every = 1
keep = 1
[eval]
every = 2
samples = 16
real_samples = 16
"#,
        data.display()
    )
}

async fn start_coordinator(storage: &Path) -> Coordinator {
    let mut options = CoordinatorOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        storage.display().to_string(),
    );
    options.heartbeat_interval = Duration::from_millis(200);
    options.heartbeat_timeout = Duration::from_secs(30);
    Coordinator::start(options).await.unwrap()
}

/// Returns a future that completes once `stop` becomes true.
fn stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut receiver = stop.subscribe();
    async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    }
}

/// Polls GetRun until the run has an evaluation and a final state.
async fn wait_for_eval(url: &str, run_id: &str) -> v1::Run {
    let mut client = RunServiceClient::connect(url.to_owned()).await.unwrap();
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    loop {
        let request = v1::GetRunRequest {
            run_id: run_id.to_owned(),
        };
        let run = client.get_run(request).await.unwrap().into_inner();
        let finished = run.state() == v1::RunState::Succeeded;
        if finished && !run.evals.is_empty() {
            return run;
        }
        assert!(
            run.state() != v1::RunState::Failed,
            "run failed: {}",
            run.message
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no evaluation within {RUN_TIMEOUT:?}: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluator_scores_final_checkpoint() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let storage = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(storage.path()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let (stop, _) = watch::channel(false);

    let mut agent_options = AgentOptions::new(url.clone(), 1);
    agent_options.exit_on_disconnect = true;
    let agent = tokio::spawn(run_agent(agent_options, stopped(&stop)));
    let weights: PathBuf = fixtures.join("inception_random.pth");
    let weights = weights.display().to_string();
    let mut evaluator_options = EvaluatorOptions::new(url.clone(), weights, 1);
    evaluator_options.exit_on_disconnect = true;
    let evaluator = tokio::spawn(run_evaluator(evaluator_options, stopped(&stop)));

    let mut client = RunServiceClient::connect(url.clone()).await.unwrap();
    let request = v1::CreateRunRequest {
        config_toml: config_toml(),
        run_id: "evaluated".to_owned(),
        request_id: String::new(),
        workers: 1,
    };
    client.create_run(request).await.unwrap();
    let run = wait_for_eval(&url, "evaluated").await;

    assert_eq!(run.evals.len(), 1, "{:?}", run.evals);
    let eval = &run.evals[0];
    assert_eq!(eval.step, 2);
    assert_eq!(eval.samples, 16);
    assert!(eval.fid.is_finite(), "fid {}", eval.fid);
    assert!(eval.fid >= 0.0, "fid {}", eval.fid);
    assert_eq!(run.best_checkpoint_step, Some(2));

    let run_dir = storage.path().join("runs/evaluated");
    let json = std::fs::read(run_dir.join("checkpoints/0000000002/eval.json")).unwrap();
    let file: EvalFile = serde_json::from_slice(&json).unwrap();
    assert_eq!(file.step, 2);
    assert_eq!(file.fid, eval.fid);
    assert_eq!(file.real_samples, 16);
    assert_eq!(file.inception_weights, "inception_random.pth");
    assert!(run_dir.join("fid_real_stats_16.npz").is_file());

    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["best_step"], 2);
    assert_eq!(record["evals"][0]["step"], 2);

    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    evaluator.await.unwrap().unwrap();
    coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn evaluator_rejects_missing_weights() {
    let missing = tempfile::tempdir().unwrap().path().join("absent.pth");
    let options = EvaluatorOptions::new("http://127.0.0.1:9", missing.display().to_string(), 1);
    let error = run_evaluator(options, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(error, EvaluatorError::Weights(WeightsError::Missing { .. })),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains(ssgan_fid::WEIGHTS_FILE_NAME), "{message}");
    assert!(message.contains(ssgan_fid::WEIGHTS_URL), "{message}");
}
