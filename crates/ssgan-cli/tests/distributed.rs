//! The distributed service run as a user would: `ssgan coordinator`, `ssgan worker` and
//! `ssgan run` as real processes on 127.0.0.1, and `ssgan train --workers`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{repo, ssgan};

/// Time that a run of the tiny model gets to reach a state before a test gives up.
const STATE_TIMEOUT: Duration = Duration::from_secs(180);

fn demo_config() -> String {
    repo()
        .join("configs/cifar10-cpu-demo.toml")
        .to_string_lossy()
        .into_owned()
}

/// Returns `--set` overrides that make the demo config tiny: width 2, global batch 8, a
/// checkpoint every 2 steps.
fn tiny(steps: u64) -> Vec<String> {
    let keys = [
        "model.ch=2".to_string(),
        "train.batch_size=8".into(),
        "loss.rotated_batch_size=8".into(),
        "checkpoint.every=2".into(),
        "checkpoint.keep=100".into(),
        format!("train.steps={steps}"),
    ];
    keys.iter()
        .flat_map(|key| ["--set".to_string(), key.clone()])
        .collect()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().unwrap().port()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Child processes that are killed when the test ends, passed or not.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A coordinator process and its storage directory.
struct Service {
    url: String,
    port: u16,
    storage: PathBuf,
    /// Arguments added to every start of the coordinator.
    extra: Vec<String>,
    processes: Processes,
}

impl Service {
    fn start(storage: &Path) -> Self {
        Self::start_with(storage, &[])
    }

    /// Starts a coordinator with `extra` arguments, such as --create-run.
    fn start_with(storage: &Path, extra: &[String]) -> Self {
        let port = free_port();
        let mut service = Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            storage: storage.to_path_buf(),
            extra: extra.to_vec(),
            processes: Processes(Vec::new()),
        };
        service.start_coordinator();
        service
    }

    fn start_coordinator(&mut self) {
        let child = ssgan()
            .args([
                "coordinator",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(["--storage", self.storage.to_str().unwrap()])
            .args(&self.extra)
            .args([
                "--heartbeat-seconds",
                "1",
                "--heartbeat-timeout-seconds",
                "5",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("coordinator starts");
        self.processes.0.insert(0, child);
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "coordinator never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the coordinator with SIGKILL, as a crash would.
    fn kill_coordinator(&mut self) {
        let mut coordinator = self.processes.0.remove(0);
        coordinator.kill().unwrap();
        coordinator.wait().unwrap();
    }

    fn start_workers(&mut self, count: usize) {
        for _ in 0..count {
            let child = ssgan()
                .args(["--threads", "1", "worker", "--coordinator", &self.url])
                .stdout(Stdio::null())
                .spawn()
                .expect("worker starts");
            self.processes.0.push(child);
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        ssgan()
            .args(["run", "--coordinator", &self.url])
            .args(args)
            .output()
            .expect("ssgan run runs")
    }

    fn create(&self, run_id: &str, workers: &str, steps: u64) -> Output {
        let config = demo_config();
        let mut args = vec!["create", "--config", &config, "--workers", workers];
        args.extend(["--run-id", run_id]);
        let tiny = tiny(steps);
        args.extend(tiny.iter().map(String::as_str));
        self.run(&args)
    }

    fn get_json(&self, run_id: &str) -> serde_json::Value {
        let output = self.run(&["get", run_id, "--json"]);
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_str(stdout(&output).trim()).expect("get --json prints JSON")
    }

    /// Polls the run until its state is `state`, failing on FAILED or after the timeout.
    fn wait_state(&self, run_id: &str, state: &str) -> serde_json::Value {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let run = self.get_json(run_id);
            if run["state"] == state {
                return run;
            }
            assert_ne!(run["state"], "FAILED", "run failed: {run}");
            assert!(
                Instant::now() < deadline,
                "run never reached {state}: {run}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn checkpoint_file(&self, run_id: &str, step: u64, file: &str) -> Vec<u8> {
        let path = self
            .storage
            .join(format!("runs/{run_id}/checkpoints/{step:010}/{file}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }
}

/// Starts `ssgan run watch` and returns it with its standard output.
fn watch(service: &Service, run_id: &str) -> (Processes, BufReader<ChildStdout>) {
    let mut child = ssgan()
        .args(["run", "--coordinator", &service.url, "watch", run_id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let out = BufReader::new(child.stdout.take().unwrap());
    (Processes(vec![child]), out)
}

/// Reads watch output until a line starts with `prefix`, and returns that line.
fn read_until(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let read = out.read_line(&mut line).expect("watch output is readable");
        assert!(
            read > 0,
            "watch ended before a line starting with {prefix:?}"
        );
        if line.starts_with(prefix) {
            return line;
        }
    }
}

const MODEL_FILES: [&str; 4] = [
    "generator.safetensors",
    "discriminator.safetensors",
    "optimizer_g.safetensors",
    "optimizer_d.safetensors",
];

#[test]
fn stop_resume_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(dir.path());
    service.start_workers(2);

    let reference = service.create("straight", "2", 12);
    assert!(reference.status.success(), "{}", stderr(&reference));
    assert_eq!(stdout(&reference).trim(), "straight");
    service.wait_state("straight", "SUCCEEDED");

    let created = service.create("interrupted", "2", 12);
    assert!(created.status.success(), "{}", stderr(&created));
    let (_watcher, mut out) = watch(&service, "interrupted");
    let step_line = read_until(&mut out, "step ");
    assert!(step_line.contains("loss_d"), "{step_line}");
    let stop = service.run(&["stop", "interrupted"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let stopped = service.wait_state("interrupted", "STOPPED");
    let stopped_step = stopped["step"].as_u64().unwrap();
    assert!(stopped_step < 12, "stop came too late to test: {stopped}");
    assert_eq!(stopped["latest_checkpoint_step"], stopped_step);

    let resume = service.run(&["resume", "interrupted"]);
    assert!(resume.status.success(), "{}", stderr(&resume));
    let done = service.wait_state("interrupted", "SUCCEEDED");
    assert_eq!(done["step"], 12);
    assert_eq!(done["attempt"], 2);
    for file in MODEL_FILES {
        let straight = service.checkpoint_file("straight", 12, file);
        let resumed = service.checkpoint_file("interrupted", 12, file);
        assert!(straight == resumed, "{file} differs after stop and resume");
    }
}

#[test]
fn coordinator_restart_resumes_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(dir.path());
    service.start_workers(2);
    let created = service.create("survivor", "2", 40);
    assert!(created.status.success(), "{}", stderr(&created));
    service.wait_state("survivor", "RUNNING");
    let deadline = Instant::now() + STATE_TIMEOUT;
    while service.get_json("survivor")["latest_checkpoint_step"].is_null() {
        assert!(Instant::now() < deadline, "no checkpoint was committed");
        std::thread::sleep(Duration::from_millis(100));
    }

    service.kill_coordinator();
    service.start_coordinator();
    let listed = service.run(&["list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("survivor"), "{}", stdout(&listed));
    let done = service.wait_state("survivor", "SUCCEEDED");
    assert_eq!(done["step"], 40);
    assert!(done["attempt"].as_u64().unwrap() >= 2, "{done}");
}

#[test]
fn bad_requests_exit_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path());

    let unknown = service.run(&["get", "no-such-run"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("NotFound"),
        "{}",
        stderr(&unknown)
    );

    let odd = service.create("odd", "3", 4);
    assert_eq!(odd.status.code(), Some(1));
    assert!(stderr(&odd).contains("batch_size"), "{}", stderr(&odd));

    let created = service.create("waiting", "2", 4);
    assert!(created.status.success(), "{}", stderr(&created));
    let resume = service.run(&["resume", "waiting"]);
    assert_eq!(resume.status.code(), Some(1));
    assert!(
        stderr(&resume).contains("FailedPrecondition"),
        "{}",
        stderr(&resume)
    );
    assert!(!dir.path().join("runs/odd").exists());
}

fn train_workers(storage: &Path, steps: u64) -> Output {
    ssgan()
        .args([
            "--threads",
            "2",
            "train",
            "--config",
            &demo_config(),
            "--workers",
            "2",
        ])
        .args(["--listen", "127.0.0.1:0", "--run-id", "pair"])
        .args(["--storage", storage.to_str().unwrap()])
        .args(tiny(steps))
        .output()
        .expect("ssgan train runs")
}

#[test]
fn train_with_two_workers_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let output = train_workers(dir.path(), 4);
    assert!(output.status.success(), "{}", stderr(&output));
    let record = std::fs::read_to_string(dir.path().join("runs/pair/run.json")).unwrap();
    assert!(record.contains("\"SUCCEEDED\""), "{record}");
    let manifest = dir
        .path()
        .join("runs/pair/checkpoints/0000000004/MANIFEST.json");
    assert!(
        manifest.exists(),
        "no final checkpoint: {}",
        stderr(&output)
    );
    assert!(dir.path().join("runs/pair/samples/0000000004.png").exists());

    let further = train_workers(dir.path(), 6);
    assert!(further.status.success(), "{}", stderr(&further));
    assert!(
        stderr(&further).contains("resuming from step 4"),
        "{}",
        stderr(&further)
    );
    let manifest = dir
        .path()
        .join("runs/pair/checkpoints/0000000006/MANIFEST.json");
    assert!(
        manifest.exists(),
        "no checkpoint at step 6: {}",
        stderr(&further)
    );

    let again = train_workers(dir.path(), 6);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("nothing to train"),
        "{}",
        stderr(&again)
    );
}

/// Arguments that make the coordinator create run `boot` of the tiny demo at start.
fn create_at_start(steps: u64) -> Vec<String> {
    let mut args: Vec<String> = ["--create-run", &demo_config(), "--run-id", "boot"]
        .map(String::from)
        .to_vec();
    args.extend(["--workers".to_string(), "1".to_string()]);
    args.extend(tiny(steps));
    args
}

#[test]
fn coordinator_creates_run_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start_with(dir.path(), &create_at_start(2));
    service.start_workers(1);
    let run = service.wait_state("boot", "SUCCEEDED");
    assert_eq!(run["step"], 2, "{run}");

    // A restarted coordinator finds the run and leaves it as it is.
    service.kill_coordinator();
    service.start_coordinator();
    let run = service.get_json("boot");
    assert_eq!(run["state"], "SUCCEEDED", "{run}");
    assert_eq!(run["attempt"], 1, "{run}");
}

#[test]
fn coordinator_rejects_bad_startup_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = create_at_start(2);
    args.extend(["--set".to_string(), "model.chanels=3".to_string()]);
    let output = ssgan()
        .args(["coordinator", "--listen", "127.0.0.1:0"])
        .args(["--storage", dir.path().to_str().unwrap()])
        .args(&args)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("chanels"), "{}", stderr(&output));
}
