//! The Kubernetes manifest `deploy/ssgan.yaml`: its run config loads, its objects agree with
//! each other, and its coordinator command, run here, creates the run.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

mod common;

use common::{repo, ssgan};

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/ssgan.yaml")).unwrap();
    text.split("\n---\n")
        .map(|document| serde_yaml::from_str(document).unwrap())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/ssgan.yaml"))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Value) -> Vec<String> {
    let list = container(deployment)["args"].as_sequence().unwrap();
    list.iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    let found = args.iter().find(|a| a.starts_with(&prefix));
    let found = found.unwrap_or_else(|| panic!("no --{name} in {args:?}"));
    &found[prefix.len()..]
}

#[test]
fn workers_match_replicas_and_gpus() {
    let objects = manifest();
    let coordinator = object(&objects, "Deployment", "ssgan-coordinator");
    let worker = object(&objects, "Deployment", "ssgan-worker");
    let replicas = worker["spec"]["replicas"].as_u64().unwrap();
    let gpus = container(worker)["resources"]["limits"]["nvidia.com/gpu"]
        .as_u64()
        .unwrap();
    let coordinator_args = args(coordinator);
    let workers: u64 = flag(&coordinator_args, "workers").parse().unwrap();
    assert_eq!(workers, replicas * gpus);
    assert!(args(worker).contains(&"--gpus=all".to_string()));

    let service = object(&objects, "Service", "ssgan-coordinator");
    let env = object(&objects, "ConfigMap", "ssgan-env");
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let url = env["data"]["SSGAN_COORDINATOR"].as_str().unwrap();
    assert_eq!(url, format!("http://ssgan-coordinator:{port}"));
    let listen = flag(&coordinator_args, "listen");
    assert!(listen.ends_with(&format!(":{port}")), "{listen}");
}

/// Starts the coordinator with the manifest's arguments, with local storage and a port of
/// this machine in place of the cluster's.
fn start_manifest_coordinator(storage: &Path, config: &Path, port: u16) -> Child {
    let objects = manifest();
    let coordinator = object(&objects, "Deployment", "ssgan-coordinator");
    let args: Vec<String> = args(coordinator)
        .into_iter()
        .map(|arg| {
            arg.replace("$(SSGAN_STORAGE)", storage.to_str().unwrap())
                .replace("/etc/ssgan/run.toml", config.to_str().unwrap())
                .replace("0.0.0.0:50051", &format!("127.0.0.1:{port}"))
        })
        .collect();
    ssgan()
        .current_dir(repo())
        .args(&args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn manifest_coordinator_creates_run() {
    let dir = tempfile::tempdir().unwrap();
    let objects = manifest();
    let run_config = object(&objects, "ConfigMap", "ssgan-run")["data"]["run.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, run_config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut coordinator = start_manifest_coordinator(&dir.path().join("store"), &config, port);

    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let output = ssgan()
            .args(["run", "--coordinator", &url, "get", "ssgan-demo", "--json"])
            .output()
            .unwrap();
        if output.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "run ssgan-demo never appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    assert_eq!(run["state"], "PENDING", "{run}");
    assert_eq!(run["world_size"], 2, "{run}");
}
