//! Multi-process tests of `TcpRing` on 127.0.0.1. Each rank is a child process of this test
//! binary (see `common`), so the ranks share nothing but their sockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use candle_core::{Device, Tensor};
use common::{Outcome, Ring, SCENARIO_VAR, assert_all_succeeded, loopback};
use ssgan_collective::{
    CollectiveError, Communicator, RingConfig, RingListener, RingMembership, TcpRing,
    all_reduce_mean_bucketed, bench_all_reduce, check_parameters_match,
};

/// Name of the test function that the child processes run.
const ENTRY: &str = "child_process_entry";
const TOKEN: u64 = 42;
const OP_TIMEOUT_VAR: &str = "SSGAN_RING_OP_TIMEOUT_MS";
const BOOTSTRAP_TIMEOUT_VAR: &str = "SSGAN_RING_BOOTSTRAP_TIMEOUT_MS";
/// Upper bound of one scenario's run time. Reaching it means a hang, not a slow machine.
const SCENARIO_LIMIT: Duration = Duration::from_secs(45);
/// Requested benchmark sizes in bytes; 1 byte is rounded up to one f32.
const BENCH_SIZES: [usize; 3] = [1, 4096, 4 << 20];

/// The child side of every test below. In a plain `cargo test` run the scenario variable is
/// unset, so this returns at once. It does its work only inside a child process.
#[test]
fn child_process_entry() {
    let Ok(scenario) = std::env::var(SCENARIO_VAR) else {
        return;
    };
    common::start_watchdog();
    let (listener, membership) = common::listen_for_parent();
    let config = config_from_env();
    if scenario == "join" {
        return child_join(listener, &membership, &config);
    }
    let ring = listener.join(&membership, &config).expect("ring joins");
    match scenario.as_str() {
        "sum" => child_sum(&ring),
        "random" => child_random(&ring),
        "broadcast" => child_broadcast(&ring),
        "barrier" => child_barrier(&ring),
        "kill" => child_kill(&ring),
        "silent" => child_silent(&ring),
        "mismatch" => child_mismatch(&ring),
        "bench" => child_bench(&ring),
        other => panic!("unknown scenario {other}"),
    }
}

fn config_from_env() -> RingConfig {
    let millis = |key: &str, default: u64| {
        let value = std::env::var(key).map(|v| v.parse().unwrap());
        Duration::from_millis(value.unwrap_or(default))
    };
    RingConfig {
        bootstrap_timeout: millis(BOOTSTRAP_TIMEOUT_VAR, 20_000),
        op_timeout: millis(OP_TIMEOUT_VAR, 20_000),
        ..RingConfig::default()
    }
}

/// Small integers, so that every partial sum is exact in f32 whatever the order.
fn small_value(rank: usize, index: usize) -> f32 {
    ((index * 7 + rank * 13) % 17) as f32 - 8.0
}

/// Returns a value in [-1, 1) from a SplitMix64 hash of (rank, index).
fn random_value(rank: usize, index: usize) -> f32 {
    let mut x = (rank as u64) << 40 ^ index as u64;
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn child_sum(ring: &TcpRing) {
    let world = ring.world_size();
    for len in [0, 1, 2, 3, world - 1, 1023, 3_000_001] {
        let mut data: Vec<f32> = (0..len).map(|i| small_value(ring.rank(), i)).collect();
        ring.all_reduce_sum(&mut data).expect("all-reduce succeeds");
        let expected = |i: usize| (0..world).map(|r| small_value(r, i)).sum::<f32>();
        let wrong = (0..len).find(|&i| data[i] != expected(i));
        assert_eq!(wrong, None, "first wrong index of {len} elements");
    }
    println!("@@DONE sum");
}

fn child_random(ring: &TcpRing) {
    let (rank, world) = (ring.rank(), ring.world_size());
    let len = 100_003;
    let mut data: Vec<f32> = (0..len).map(|i| random_value(rank, i)).collect();
    ring.all_reduce_sum(&mut data).expect("all-reduce succeeds");
    // Each of the world - 1 additions in f32 rounds once, by at most half an ulp of a partial
    // sum, and every partial sum is at most sum |x| in size; the bound below is twice that.
    let eps = f64::from(f32::EPSILON);
    for (i, got) in data.iter().enumerate() {
        let terms: Vec<f64> = (0..world).map(|r| f64::from(random_value(r, i))).collect();
        let exact: f64 = terms.iter().sum();
        let bound = (world - 1) as f64 * eps * terms.iter().map(|t| t.abs()).sum::<f64>();
        let error = (f64::from(*got) - exact).abs();
        assert!(
            error <= bound,
            "index {i}: got {got}, f64 sum {exact}, bound {bound}"
        );
    }
    check_replicas(ring, data);
    check_bucketed_mean(ring);
    println!("@@DONE random");
}

/// Checks that all ranks have the same bits after an all-reduce, and that every rank reports
/// a changed value on the last rank.
fn check_replicas(ring: &TcpRing, mut data: Vec<f32>) {
    let tensor = |values: &[f32]| Tensor::new(values, &Device::Cpu).unwrap();
    let checksum = check_parameters_match(ring, &[tensor(&data)]).expect("replicas match");
    println!("@@CHECKSUM {checksum:016x}");
    let last = ring.world_size() - 1;
    if ring.rank() == last {
        data[17] += 1.0;
    }
    match check_parameters_match(ring, &[tensor(&data)]) {
        Err(CollectiveError::Diverged { ranks, .. }) => assert_eq!(ranks, vec![last]),
        other => panic!("expected a divergence of rank {last}, got {other:?}"),
    }
}

/// Gradients of three shapes, averaged in 16-element buckets that cut across tensors.
fn check_bucketed_mean(ring: &TcpRing) {
    let (rank, world) = (ring.rank(), ring.world_size());
    let shapes: [&[usize]; 3] = [&[3, 5], &[7], &[10, 100]];
    let values = |r: usize, count: usize, offset: usize| -> Vec<f32> {
        (0..count).map(|i| small_value(r, offset + i)).collect()
    };
    let mut grads = Vec::new();
    let mut offset = 0;
    for shape in shapes {
        let count = shape.iter().product();
        let local = values(rank, count, offset);
        grads.push(Tensor::from_vec(local, shape, &Device::Cpu).unwrap());
        offset += count;
    }
    all_reduce_mean_bucketed(ring, &mut grads, 64).expect("bucketed mean succeeds");
    let scale = 1.0 / world as f32;
    let mut offset = 0;
    for (grad, shape) in grads.iter().zip(shapes) {
        assert_eq!(grad.dims(), shape);
        let got = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expected: Vec<f32> = (0..got.len())
            .map(|i| (0..world).map(|r| small_value(r, offset + i)).sum::<f32>() * scale)
            .collect();
        assert_eq!(got, expected, "mean of the tensor of shape {shape:?}");
        offset += got.len();
    }
}

fn child_broadcast(ring: &TcpRing) {
    let (rank, world) = (ring.rank(), ring.world_size());
    for root in 0..world {
        for len in [1, 5, 100_003] {
            let pattern = |i: usize| small_value(root, i) + 100.0 * root as f32;
            let mut data: Vec<f32> = if rank == root {
                (0..len).map(pattern).collect()
            } else {
                vec![-1.0; len]
            };
            ring.broadcast(&mut data, root).expect("broadcast succeeds");
            let wrong = (0..len).find(|&i| data[i] != pattern(i));
            assert_eq!(wrong, None, "root {root}, {len} elements");
        }
    }
    println!("@@DONE broadcast");
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn child_barrier(ring: &TcpRing) {
    std::thread::sleep(Duration::from_millis(150 * ring.rank() as u64));
    println!("@@ARRIVED {}", unix_micros());
    ring.barrier().expect("barrier succeeds");
    println!("@@LEFT {}", unix_micros());
}

/// Prints how the failing call failed and how a later call fails.
fn report_failure(ring: &TcpRing, error: &CollectiveError, elapsed: Duration) {
    let blamed = error
        .blamed_rank()
        .map_or("none".to_string(), |r| r.to_string());
    println!("@@FAILED {blamed} {} {error}", elapsed.as_millis());
    let start = Instant::now();
    let again = ring.all_reduce_sum(&mut [1.0]);
    let poisoned = matches!(again, Err(CollectiveError::Poisoned { .. }));
    println!("@@AFTER {poisoned} {}", start.elapsed().as_millis());
}

/// All-reduces 4 MB again and again until a call fails.
fn child_kill(ring: &TcpRing) {
    let mut data = vec![1.0f32; 1_000_000];
    let mut calls = 0;
    loop {
        let start = Instant::now();
        if let Err(error) = ring.all_reduce_sum(&mut data) {
            return report_failure(ring, &error, start.elapsed());
        }
        calls += 1;
        if calls == 1 {
            println!("@@READY");
        }
        data.fill(1.0);
    }
}

/// Makes the last rank join but never call, so the others time out.
fn child_silent(ring: &TcpRing) {
    if ring.rank() == ring.world_size() - 1 {
        std::thread::sleep(Duration::from_secs(10));
        return;
    }
    let start = Instant::now();
    let error = ring.all_reduce_sum(&mut [1.0; 8]).unwrap_err();
    report_failure(ring, &error, start.elapsed());
}

/// Rank r all-reduces 10 + r elements, which no peer matches.
fn child_mismatch(ring: &TcpRing) {
    let mut data = vec![1.0; 10 + ring.rank()];
    let start = Instant::now();
    let error = ring.all_reduce_sum(&mut data).unwrap_err();
    let kind = matches!(error, CollectiveError::Mismatch { .. });
    println!("@@MISMATCH {kind}");
    report_failure(ring, &error, start.elapsed());
}

fn child_bench(ring: &TcpRing) {
    let rows = bench_all_reduce(ring, &BENCH_SIZES, 3).expect("benchmark runs");
    for row in rows {
        println!("@@ROW {}", row.to_json_line());
    }
}

fn child_join(listener: RingListener, membership: &RingMembership, config: &RingConfig) {
    let start = Instant::now();
    match listener.join(membership, config) {
        Ok(_) => println!("@@JOIN ok"),
        Err(error) => {
            let blamed = error
                .blamed_rank()
                .map_or("none".to_string(), |r| r.to_string());
            let rejected = matches!(error, CollectiveError::Rejected { .. });
            let peer = match &error {
                CollectiveError::Rejected { peer, .. } => peer.to_string(),
                _ => blamed,
            };
            let millis = start.elapsed().as_millis();
            println!("@@JOIN err rejected={rejected} peer={peer} elapsed_ms={millis} {error}");
        }
    }
}

// ---- Parent side ----

fn env_millis(key: &'static str, millis: u64) -> (&'static str, String) {
    (key, millis.to_string())
}

/// Starts `world` ranks of `scenario`, lets them join, and waits for all of them.
fn run(scenario: &str, world: usize, env: &[(&str, String)]) -> Vec<Outcome> {
    let mut ring = Ring::launch(ENTRY, scenario, world, env);
    ring.start_with_token(|_| TOKEN);
    ring.finish(SCENARIO_LIMIT)
}

fn assert_done(outcomes: &[Outcome], scenario: &str) {
    assert_all_succeeded(outcomes);
    for (rank, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.value("DONE"), Some(scenario), "rank {rank}");
    }
}

#[test]
fn all_reduce_exact_two_ranks() {
    assert_done(&run("sum", 2, &[]), "sum");
}

#[test]
fn all_reduce_exact_three_ranks() {
    assert_done(&run("sum", 3, &[]), "sum");
}

#[test]
fn all_reduce_exact_four_ranks() {
    assert_done(&run("sum", 4, &[]), "sum");
}

#[test]
fn all_reduce_random_values_and_replicas() {
    let outcomes = run("random", 3, &[]);
    assert_done(&outcomes, "random");
    let checksums: Vec<_> = outcomes.iter().map(|o| o.value("CHECKSUM")).collect();
    assert!(checksums[0].is_some());
    assert!(
        checksums.iter().all(|c| *c == checksums[0]),
        "{checksums:?}"
    );
}

#[test]
fn broadcast_from_every_root() {
    assert_done(&run("broadcast", 3, &[]), "broadcast");
}

#[test]
fn barrier_waits_for_last_rank() {
    let outcomes = run("barrier", 3, &[]);
    assert_all_succeeded(&outcomes);
    let times = |key: &str| -> Vec<u128> {
        let parse = |o: &Outcome| o.value(key).expect("time printed").parse().unwrap();
        outcomes.iter().map(parse).collect()
    };
    let last_arrival = *times("ARRIVED").iter().max().unwrap();
    for (rank, left) in times("LEFT").into_iter().enumerate() {
        assert!(
            left >= last_arrival,
            "rank {rank} left before the last rank arrived"
        );
    }
}

/// Parses a `@@FAILED <blamed> <elapsed_ms> <message>` line.
fn failure(outcome: &Outcome) -> (String, u64, String) {
    let line = outcome.value("FAILED").expect("the rank reports a failure");
    let mut parts = line.splitn(3, ' ');
    let blamed = parts.next().unwrap().to_string();
    let millis = parts.next().unwrap().parse().unwrap();
    (blamed, millis, parts.next().unwrap_or_default().to_string())
}

fn assert_poisoned_after(outcome: &Outcome, rank: usize) {
    let after = outcome.value("AFTER").expect("a later call was made");
    let (poisoned, millis) = after.split_once(' ').unwrap();
    assert_eq!(
        poisoned, "true",
        "rank {rank}: later call is rejected as poisoned"
    );
    let millis: u64 = millis.parse().unwrap();
    assert!(millis < 100, "rank {rank}: poisoned call took {millis} ms");
}

/// Kills `victim` during back-to-back all-reduces and checks what the survivors report.
fn kill_mid_all_reduce(world: usize, victim: usize) {
    let op_timeout_ms = 5_000;
    let env = [env_millis(OP_TIMEOUT_VAR, op_timeout_ms)];
    let mut ring = Ring::launch(ENTRY, "kill", world, &env);
    ring.start_with_token(|_| TOKEN);
    for rank in &ring.ranks {
        assert_eq!(rank.next_line(Duration::from_secs(20)), "@@READY");
    }
    std::thread::sleep(Duration::from_millis(30));
    ring.ranks[victim].kill();
    let outcomes = ring.finish(SCENARIO_LIMIT);
    for (rank, outcome) in outcomes.iter().enumerate().filter(|(r, _)| *r != victim) {
        assert!(outcome.succeeded(), "rank {rank}: {}", outcome.stderr);
        let (blamed, millis, message) = failure(outcome);
        assert_eq!(blamed, victim.to_string(), "rank {rank}: {message}");
        // The call may have started before the kill, so only its own timeout bounds it. The
        // margin covers the abort message's delivery wait (1 s) and process scheduling.
        assert!(
            millis <= op_timeout_ms + 2_000,
            "rank {rank} failed after {millis} ms"
        );
        assert_poisoned_after(outcome, rank);
    }
}

#[test]
fn killed_peer_named_by_survivor() {
    kill_mid_all_reduce(2, 1);
}

#[test]
fn killed_peer_named_around_ring() {
    kill_mid_all_reduce(4, 2);
}

#[test]
fn silent_peer_times_out() {
    let op_timeout_ms = 1_000;
    let outcomes = run("silent", 2, &[env_millis(OP_TIMEOUT_VAR, op_timeout_ms)]);
    assert_all_succeeded(&outcomes);
    let (blamed, millis, message) = failure(&outcomes[0]);
    assert_eq!(blamed, "1", "{message}");
    assert!(message.contains("timed out"), "{message}");
    assert!(millis >= op_timeout_ms, "timed out after only {millis} ms");
    assert!(
        millis <= op_timeout_ms + 2_000,
        "timed out after {millis} ms"
    );
    assert_poisoned_after(&outcomes[0], 0);
}

#[test]
fn mismatched_lengths_are_detected() {
    let outcomes = run("mismatch", 2, &[]);
    assert_all_succeeded(&outcomes);
    for (rank, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.value("MISMATCH"), Some("true"), "rank {rank}");
        let (blamed, _, message) = failure(outcome);
        assert_eq!(blamed, (1 - rank).to_string(), "rank {rank}: {message}");
        assert_poisoned_after(outcome, rank);
    }
}

/// Hello of the ring handshake: magic, world size, rank, token, all little-endian.
fn hello(world: u32, rank: u32, token: u64) -> Vec<u8> {
    let mut bytes = b"SSGRING1".to_vec();
    bytes.extend_from_slice(&world.to_le_bytes());
    bytes.extend_from_slice(&rank.to_le_bytes());
    bytes.extend_from_slice(&token.to_le_bytes());
    bytes
}

/// Connects to `address`, sends `bytes`, and returns the stream for reading the reply.
fn stray(address: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(bytes).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads the 20-byte reply and returns its verdict code (0 accepts).
fn verdict(mut stream: TcpStream) -> u32 {
    let mut reply = [0u8; 20];
    stream.read_exact(&mut reply).expect("the listener replies");
    assert_eq!(&reply[..8], b"SSGRING1");
    u32::from_le_bytes(reply[8..12].try_into().unwrap())
}

#[test]
fn handshake_rejects_stray_clients() {
    let mut ring = Ring::launch(ENTRY, "broadcast", 2, &[]);
    // Exactly one hello's length of HTTP, so the listener reads all of it before it closes.
    let http = stray(ring.addresses[0], b"GET / HTTP/1.1\r\nHost: x\r");
    let old_attempt = stray(ring.addresses[0], &hello(2, 1, TOKEN + 1));
    let wrong_world = stray(ring.addresses[0], &hello(3, 2, TOKEN));
    ring.start_with_token(|_| TOKEN);
    assert_eq!(verdict(http), 1, "bad magic");
    assert_eq!(verdict(old_attempt), 3, "token differs");
    assert_eq!(verdict(wrong_world), 2, "world size differs");
    assert_done(&ring.finish(SCENARIO_LIMIT), "broadcast");
}

#[test]
fn join_rejected_by_listener() {
    // The test plays rank 1 and rejects rank 0's hello as one of another attempt.
    let fake = TcpListener::bind(loopback()).unwrap();
    let env = [env_millis(BOOTSTRAP_TIMEOUT_VAR, 10_000)];
    let mut ring = Ring::launch(ENTRY, "join", 1, &env);
    let list = format!("{},{}", ring.addresses[0], fake.local_addr().unwrap());
    ring.start_with(|_| format!("{TOKEN} {list}"));
    let (mut stream, _) = fake.accept().unwrap();
    let mut received = [0u8; 24];
    stream.read_exact(&mut received).unwrap();
    assert_eq!(received.to_vec(), hello(2, 0, TOKEN));
    let mut reply = b"SSGRING1".to_vec();
    for word in [3u32, 1, 2] {
        reply.extend_from_slice(&word.to_le_bytes());
    }
    stream.write_all(&reply).unwrap();
    let outcomes = ring.finish(SCENARIO_LIMIT);
    assert_all_succeeded(&outcomes);
    let result = outcomes[0].value("JOIN").unwrap();
    assert!(result.starts_with("err rejected=true peer=1 "), "{result}");
    assert!(result.contains("tokens differ"), "{result}");
}

#[test]
fn join_with_other_token_fails() {
    let bootstrap_ms = 3_000;
    let env = [env_millis(BOOTSTRAP_TIMEOUT_VAR, bootstrap_ms)];
    let mut ring = Ring::launch(ENTRY, "join", 2, &env);
    ring.start_with_token(|rank| TOKEN + rank as u64);
    let outcomes = ring.finish(SCENARIO_LIMIT);
    assert_all_succeeded(&outcomes);
    for (rank, outcome) in outcomes.iter().enumerate() {
        let result = outcome.value("JOIN").unwrap();
        let other = 1 - rank;
        assert!(result.starts_with("err "), "rank {rank} joined: {result}");
        assert!(
            result.contains(&format!(" peer={other} ")),
            "rank {rank}: {result}"
        );
        let millis: u64 = result
            .split(' ')
            .find_map(|part| part.strip_prefix("elapsed_ms="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            millis <= bootstrap_ms + 2_000,
            "rank {rank} failed after {millis} ms"
        );
    }
}

#[test]
fn single_rank_ring_returns_input() {
    let listener = RingListener::bind(loopback()).unwrap();
    let membership = RingMembership {
        rank: 0,
        addresses: vec![listener.local_addr()],
        token: TOKEN,
    };
    let ring = listener.join(&membership, &RingConfig::default()).unwrap();
    assert_eq!(ring.world_size(), 1);
    let mut data = [1.5f32, -2.0];
    ring.all_reduce_sum(&mut data).unwrap();
    assert_eq!(data, [1.5, -2.0]);
    ring.broadcast(&mut data, 0).unwrap();
    ring.barrier().unwrap();
    let invalid = ring.broadcast(&mut data, 1);
    assert!(matches!(invalid, Err(CollectiveError::InvalidCall { .. })));
}

#[test]
fn join_rejects_rank_outside_addresses() {
    let listener = RingListener::bind(loopback()).unwrap();
    let membership = RingMembership {
        rank: 2,
        addresses: vec![listener.local_addr(); 2],
        token: TOKEN,
    };
    let result = listener.join(&membership, &RingConfig::default());
    assert!(matches!(result, Err(CollectiveError::InvalidCall { .. })));
}

/// Returns the value of `"key":` in a flat JSON object line.
fn json_number(line: &str, key: &str) -> f64 {
    let start = line.find(&format!("\"{key}\":")).expect("key present") + key.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).expect("value ends");
    rest[..end].parse().expect("a number")
}

#[test]
fn bench_rows_for_each_size() {
    let outcomes = run("bench", 2, &[]);
    assert_all_succeeded(&outcomes);
    let rows: Vec<Vec<&String>> = outcomes
        .iter()
        .map(|o| o.lines.iter().filter(|l| l.starts_with("@@ROW ")).collect())
        .collect();
    assert_eq!(rows[0], rows[1], "every rank returns rank 0's rows");
    assert_eq!(rows[0].len(), BENCH_SIZES.len());
    for (line, expected_bytes) in rows[0].iter().zip([4.0, 4096.0, 4194304.0]) {
        let json = line.strip_prefix("@@ROW ").unwrap();
        println!("{json}");
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert_eq!(json_number(json, "bytes"), expected_bytes, "{json}");
        for key in ["bus_gbps", "tcp_copy_gbps"] {
            let rate = json_number(json, key);
            assert!(rate.is_finite() && rate > 0.0, "{key} in {json}");
        }
    }
}
