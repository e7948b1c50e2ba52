//! Runs the ranks of a ring as real child processes of the test binary.
//!
//! The test binary re-executes itself (`current_exe() --exact <entry> --nocapture`) with the
//! scenario and rank in environment variables, so each rank is a separate process
//! with its own sockets, and a test can SIGKILL one of them. This needs no extra binary target
//! and keeps the scenarios next to the checks. The parent plays the coordinator: it reads the
//! address that each child bound from the child's stdout and writes the full list to every
//! child's stdin. Children print result lines that start with `@@`; everything else on their
//! stdout is the test harness's own output.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ssgan_collective::{RingConfig, RingListener, RingMembership, TcpRing};

pub const SCENARIO_VAR: &str = "SSGAN_RING_SCENARIO";
pub const RANK_VAR: &str = "SSGAN_RING_RANK";

/// The line that the stdout reader sends when the child closed its stdout.
const END_OF_OUTPUT: &str = "@@END";

/// A child rank exits on its own after this long, in case its parent died without killing it.
pub const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// One rank's process and the `@@` lines it printed.
pub struct Rank {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

/// What a finished rank left behind.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<ExitStatus>,
    pub lines: Vec<String>,
    pub stderr: String,
}

impl Outcome {
    /// Returns the first `@@` line that starts with `key`, without the key.
    pub fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("@@{key} ");
        let line = self.lines.iter().find(|line| line.starts_with(&prefix))?;
        Some(&line[prefix.len()..])
    }

    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}

/// The child processes of one ring; dropping it kills every child that still runs.
pub struct Ring {
    pub ranks: Vec<Rank>,
    pub addresses: Vec<SocketAddr>,
}

impl Ring {
    /// Starts `world` ranks of `scenario` and waits until each reports its listening address.
    pub fn launch(entry: &str, scenario: &str, world: usize, env: &[(&str, String)]) -> Self {
        let mut ring = Ring {
            ranks: Vec::new(),
            addresses: Vec::new(),
        };
        for rank in 0..world {
            ring.ranks.push(spawn(entry, scenario, rank, env));
        }
        for rank in &mut ring.ranks {
            let line = rank.next_line(Duration::from_secs(20));
            let address = line
                .strip_prefix("@@ADDR ")
                .expect("child prints its address");
            ring.addresses
                .push(address.parse().expect("a socket address"));
        }
        ring
    }

    /// Sends every rank the `<token> <address,...>` line, which starts the joins.
    pub fn start_with_token(&mut self, token_for: impl Fn(usize) -> u64) {
        let list: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        let list = list.join(",");
        self.start_with(|rank| format!("{} {list}", token_for(rank)));
    }

    /// Sends each rank the line that `line_for(rank)` returns.
    pub fn start_with(&mut self, line_for: impl Fn(usize) -> String) {
        for (index, rank) in self.ranks.iter_mut().enumerate() {
            let mut stdin = rank.stdin.take().expect("started once");
            writeln!(stdin, "{}", line_for(index)).expect("child reads its stdin");
        }
    }

    /// Waits up to `limit` for every rank to exit, killing the rest, and collects the outcomes.
    pub fn finish(mut self, limit: Duration) -> Vec<Outcome> {
        let deadline = Instant::now() + limit;
        let ranks = std::mem::take(&mut self.ranks);
        ranks
            .into_iter()
            .map(|rank| rank.finish(deadline))
            .collect()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for rank in &mut self.ranks {
            let _ = rank.child.kill();
            let _ = rank.child.wait();
        }
    }
}

impl Rank {
    /// Waits up to `limit` for the next `@@` line.
    pub fn next_line(&self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(error) => panic!("no line from the child within {limit:?}: {error}"),
        }
    }

    /// Sends SIGKILL to the process.
    pub fn kill(&mut self) {
        self.child.kill().expect("child can be killed");
    }

    fn finish(mut self, deadline: Instant) -> Outcome {
        let status = wait_until(&mut self.child, deadline);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if line == END_OF_OUTPUT {
                break;
            }
            lines.push(line);
        }
        Outcome {
            status,
            lines,
            stderr: self
                .stderr
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_default(),
        }
    }
}

fn spawn(entry: &str, scenario: &str, rank: usize, env: &[(&str, String)]) -> Rank {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(SCENARIO_VAR, scenario)
        .env(RANK_VAR, rank.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("child process starts");
    let stdin = child.stdin.take();
    let lines = forward_lines(child.stdout.take().expect("piped stdout"));
    let stderr = collect_text(child.stderr.take().expect("piped stderr"));
    Rank {
        child,
        stdin,
        lines,
        stderr,
    }
}

fn forward_lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The first result line follows the harness's `test <name> ... ` on the same line.
            let Some(start) = line.find("@@") else {
                continue;
            };
            if sender.send(line[start..].to_string()).is_err() {
                return;
            }
        }
        let _ = sender.send(END_OF_OUTPUT.to_string());
    });
    receiver
}

fn collect_text(mut stderr: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = sender.send(text);
    });
    receiver
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Child side: binds a listener, reports its address, and reads the membership that the
/// parent writes to stdin as `<token> <address,address,...>` once every rank is listening.
pub fn listen_for_parent() -> (RingListener, RingMembership) {
    let rank = env_number(RANK_VAR);
    let listener = RingListener::bind(loopback()).expect("bind on loopback");
    println!("@@ADDR {}", listener.local_addr());
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("parent writes the addresses");
    let (token, list) = line.trim().split_once(' ').expect("token and addresses");
    let membership = RingMembership {
        rank,
        addresses: list.split(',').map(|a| a.parse().unwrap()).collect(),
        token: token.parse().unwrap(),
    };
    (listener, membership)
}

/// Asserts that every rank exited with status 0, showing the stderr of the first that did not.
pub fn assert_all_succeeded(outcomes: &[Outcome]) {
    for (rank, outcome) in outcomes.iter().enumerate() {
        assert!(
            outcome.succeeded(),
            "rank {rank} exited with {:?}; stderr:\n{}",
            outcome.status,
            outcome.stderr
        );
    }
}

/// Child side: returns the scenario and the ring joined with the default config, or None in a
/// plain `cargo test` run, where no parent set the scenario.
pub fn child_ring() -> Option<(String, TcpRing)> {
    let scenario = std::env::var(SCENARIO_VAR).ok()?;
    start_watchdog();
    let (listener, membership) = listen_for_parent();
    let ring = listener.join(&membership, &RingConfig::default());
    Some((scenario, ring.expect("ring joins")))
}

/// Child side: ends the process after [`CHILD_LIFETIME`], whatever it is doing.
pub fn start_watchdog() {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        eprintln!("child rank ran past {CHILD_LIFETIME:?}; exiting");
        std::process::exit(3);
    });
}

/// Reads an environment variable that the parent set.
pub fn env_number(key: &str) -> usize {
    let value = std::env::var(key).unwrap_or_else(|_| panic!("{key} is set by the parent"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{key}={value} is a number"))
}
