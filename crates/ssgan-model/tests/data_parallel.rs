//! Data-parallel training steps over a real two-process `TcpRing`: replicas that average their
//! gradients stay bit-identical, and replicas that do not are caught by the checksum check.

mod common;
// The process harness of ssgan-collective's ring tests: the test binary re-executes itself as
// each rank, and the parent hands out the listening addresses.
#[path = "../../ssgan-collective/tests/common/mod.rs"]
mod process;

use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_collective::{CollectiveError, Communicator, SingleRank, check_parameters_match};
use ssgan_model::{GanSettings, OptimConfig, SsGan};

/// Name of the test function that the child processes run.
const ENTRY: &str = "child_process_entry";

/// The child side of the test below. It does nothing in a plain `cargo test` run.
#[test]
fn child_process_entry() {
    let Some((scenario, ring)) = process::child_ring() else {
        return;
    };
    let ring: Arc<dyn Communicator> = Arc::new(ring);
    match scenario.as_str() {
        "replicas" => child_replicas(&ring),
        other => panic!("unknown scenario {other}"),
    }
    println!("@@DONE {scenario}");
}

fn build(comm: Arc<dyn Communicator>) -> SsGan {
    let (model, loss) = (common::tiny_model(), common::tiny_loss());
    let optim = OptimConfig::default();
    let settings = GanSettings {
        model: &model,
        loss: &loss,
        optim: &optim,
        init_seed: 21,
        device: Device::Cpu,
        dtype: DType::F32,
        // Small buckets, so that each gradient all-reduce takes several calls.
        bucket_bytes: 1000,
    };
    SsGan::new(&settings, comm).expect("model builds")
}

/// Returns every parameter and buffer of both networks, in creation order.
fn all_tensors(gan: &SsGan) -> Vec<Tensor> {
    let mut tensors = Vec::new();
    for store in [gan.generator_params(), gan.discriminator_params()] {
        let vars = store.params().into_iter().chain(store.buffers());
        tensors.extend(vars.map(|(_, var)| var.as_tensor().clone()));
    }
    tensors
}

/// Runs one discriminator and one generator step on data that differs between ranks.
fn train_step(gan: &mut SsGan, rank: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(100 + rank as u64);
    let reals = common::pattern_images(4, DType::F32);
    let reals = (reals * (1.0 - 0.3 * rank as f64)).unwrap();
    let z = gan.latent(4, &mut rng).unwrap();
    gan.discriminator_step(&reals, &z).unwrap();
    let z = gan.latent(4, &mut rng).unwrap();
    gan.generator_step(&z).unwrap();
}

fn child_replicas(ring: &Arc<dyn Communicator>) {
    let rank = ring.rank();
    let mut synced = build(ring.clone());
    let initial = check_parameters_match(ring.as_ref(), &all_tensors(&synced));
    assert!(initial.is_ok(), "same seed, same weights: {initial:?}");

    train_step(&mut synced, rank);
    let after = check_parameters_match(ring.as_ref(), &all_tensors(&synced));
    assert!(
        after.is_ok(),
        "averaged gradients keep replicas equal: {after:?}"
    );
    assert_ne!(
        after.unwrap(),
        initial.unwrap(),
        "the step changed the parameters"
    );

    // The same step with gradients and batch statistics kept local, so the ranks diverge.
    let mut alone = build(Arc::new(SingleRank));
    train_step(&mut alone, rank);
    match check_parameters_match(ring.as_ref(), &all_tensors(&alone)) {
        Err(CollectiveError::Diverged { ranks, .. }) => assert_eq!(ranks, vec![1]),
        other => panic!("expected rank 1 to diverge, got {other:?}"),
    }
}

#[test]
fn synced_steps_keep_replicas_identical() {
    let mut ring = process::Ring::launch(ENTRY, "replicas", 2, &[]);
    ring.start_with_token(|_| 12);
    let outcomes = ring.finish(Duration::from_secs(60));
    process::assert_all_succeeded(&outcomes);
    for (rank, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.value("DONE"), Some("replicas"), "rank {rank}");
    }
}
