//! Synchronized batch norm over a real two-process `TcpRing`: each rank normalises half of a
//! batch, and its outputs and gradients must equal those of one rank on the whole batch.

mod common;
// The process harness of ssgan-collective's ring tests: the test binary re-executes itself as
// each rank, and the parent hands out the listening addresses.
#[path = "../../ssgan-collective/tests/common/mod.rs"]
mod process;

use std::sync::Arc;
use std::time::Duration;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_collective::{Communicator, SingleRank};
use ssgan_model::batch_norm::{Norm, NormSpec};
use ssgan_model::config::{GeneratorNorm, Init};
use ssgan_model::ctx::Ctx;
use ssgan_model::generator::Generator;
use ssgan_model::params::{Builder, ParamStore};

/// Name of the test function that the child processes run.
const ENTRY: &str = "child_process_entry";
const WORLD: usize = 2;
const BATCH: usize = 4;
/// Allowed difference, relative to max(1, max |expected|) over the compared values. The two
/// computations sum the same f32 terms in another order: a rank sums its own samples, then
/// the ring adds the two partial sums. Each order rounds by about 6e-8 relative to the terms,
/// and the variance E[x^2] - E[x]^2, the division by sqrt(var + eps), the backward's sums over
/// the batch and the generator's depth amplify that. A gradient element that sums terms of
/// both signs can be near zero while its rounding error follows the size of the terms, so the
/// error is measured against the largest value, not element-wise. The children print the
/// largest differences measured as `@@MAXERR` lines, and the parent prints them.
const TOLERANCE: f32 = 2e-5;

/// The child side of the tests below. It does nothing in a plain `cargo test` run.
#[test]
fn child_process_entry() {
    let Some((scenario, ring)) = process::child_ring() else {
        return;
    };
    let ring: Arc<dyn Communicator> = Arc::new(ring);
    match scenario.as_str() {
        "plain" => child_norm(&ring, GeneratorNorm::Batch),
        "self_modulated" => child_norm(&ring, GeneratorNorm::SelfModulated),
        "generator" => child_generator(&ring),
        other => panic!("unknown scenario {other}"),
    }
    println!("@@DONE {scenario}");
}

/// Outputs and gradients of one forward and backward pass.
struct Pass {
    output: Tensor,
    /// Gradients of the inputs (x, then z), batch first.
    input_grads: Vec<Tensor>,
    /// Gradient of every parameter, in store order.
    param_grads: Vec<f32>,
    /// Running statistics after the pass, in store order.
    buffers: Vec<f32>,
}

fn builder<'a>(store: &'a mut ParamStore, rng: &'a mut ChaCha8Rng) -> Builder<'a> {
    Builder {
        store,
        rng,
        device: Device::Cpu,
        dtype: DType::F32,
        init: Init::Normal,
        init_std: 0.3,
    }
}

/// Returns a deterministic f32 tensor of `shape` with values in [offset - 1, offset + 1).
fn pattern(shape: &[usize], seed: usize, offset: f32) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0 + offset)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Returns the rows of this rank: samples rank * B / W up to (rank + 1) * B / W.
fn local_rows(t: &Tensor, rank: usize) -> Tensor {
    let per_rank = BATCH / WORLD;
    t.narrow(0, rank * per_rank, per_rank).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Collects the parameter gradients of one backward pass and the buffer values of `store`.
fn collect(store: &ParamStore, grads: &GradStore) -> (Vec<f32>, Vec<f32>) {
    let mut param_grads = Vec::new();
    for (name, var) in store.params() {
        let grad = grads.get(var.as_tensor());
        param_grads.extend(flat(
            grad.unwrap_or_else(|| panic!("no gradient for {name}")),
        ));
    }
    let buffers = store
        .buffers()
        .into_iter()
        .flat_map(|(_, v)| flat(v.as_tensor()));
    (param_grads, buffers.collect())
}

/// Runs backward from the loss sum(output * weights). The loss is weighted because the gradient
/// of a plain sum through batch norm is zero.
fn backward_weighted(output: &Tensor, weights: &Tensor) -> GradStore {
    let loss = (output * weights).and_then(|t| t.sum_all()).unwrap();
    loss.backward().unwrap()
}

fn norm_pass(comm: Arc<dyn Communicator>, kind: GeneratorNorm, inputs: [&Tensor; 3]) -> Pass {
    let [x, z, weights] = inputs;
    let (mut store, mut rng) = (ParamStore::default(), ChaCha8Rng::seed_from_u64(5));
    let spec = NormSpec {
        kind,
        channels: 3,
        z_dim: 4,
        hidden: 3,
        spectral_norm: false,
        decay: 0.9,
        epsilon: 1e-5,
    };
    let norm = Norm::new(&mut builder(&mut store, &mut rng), "bn", &spec).unwrap();

    let (x, z) = (Var::from_tensor(x).unwrap(), Var::from_tensor(z).unwrap());
    let output = norm.forward(&Ctx::training(comm), &x, &z).unwrap();
    let grads = backward_weighted(&output, weights);
    let (param_grads, buffers) = collect(&store, &grads);

    let mut input_grads = vec![grads.get(&x).unwrap().clone()];
    if kind == GeneratorNorm::SelfModulated {
        input_grads.push(grads.get(&z).unwrap().clone());
    }
    Pass {
        output,
        input_grads,
        param_grads,
        buffers,
    }
}

fn generator_pass(comm: Arc<dyn Communicator>, z: &Tensor, weights: &Tensor) -> Pass {
    let (mut store, mut rng) = (ParamStore::default(), ChaCha8Rng::seed_from_u64(5));
    let config = common::tiny_model();
    let generator = Generator::new(&mut builder(&mut store, &mut rng), &config).unwrap();
    let z = Var::from_tensor(z).unwrap();
    let output = generator.forward(&Ctx::training(comm), &z).unwrap();
    let grads = backward_weighted(&output, weights);
    let (param_grads, buffers) = collect(&store, &grads);
    Pass {
        output,
        input_grads: vec![grads.get(&z).unwrap().clone()],
        param_grads,
        buffers,
    }
}

/// Compares this rank's pass with the rows of `reference` that belong to it.
fn compare(comm: &Arc<dyn Communicator>, reference: &Pass, mut local: Pass) {
    let rank = comm.rank();
    let expected_rows = local_rows(&reference.output, rank);
    assert_close("output", &flat(&local.output), &flat(&expected_rows));
    for (index, (got, full)) in local
        .input_grads
        .iter()
        .zip(&reference.input_grads)
        .enumerate()
    {
        let expected = flat(&local_rows(full, rank));
        assert_close(&format!("input gradient {index}"), &flat(got), &expected);
    }
    // Each rank has the gradient of its own part of the loss, and the parameter gradient of
    // the whole loss is their sum.
    comm.all_reduce_sum(&mut local.param_grads).unwrap();
    assert_close(
        "parameter gradients",
        &local.param_grads,
        &reference.param_grads,
    );
    assert_close("running statistics", &local.buffers, &reference.buffers);
}

fn assert_close(name: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{name}: length");
    assert!(!got.is_empty(), "{name}: nothing to compare");
    let scale = expected.iter().fold(1.0f32, |max, e| max.max(e.abs()));
    let mut worst = (0.0f32, 0);
    for (index, (g, e)) in got.iter().zip(expected).enumerate() {
        let error = (g - e).abs() / scale;
        if error > worst.0 || error.is_nan() {
            worst = (error, index);
        }
    }
    println!("@@MAXERR {name} {:e}", worst.0);
    let (error, index) = worst;
    assert!(
        error <= TOLERANCE,
        "{name}[{index}]: got {}, expected {}, error {error:e} relative to {scale}",
        got[index],
        expected[index]
    );
}

fn child_norm(comm: &Arc<dyn Communicator>, kind: GeneratorNorm) {
    let x = pattern(&[BATCH, 3, 2, 2], 1, 0.7);
    let z = pattern(&[BATCH, 4], 2, 0.0);
    let weights = pattern(&[BATCH, 3, 2, 2], 3, 0.2);
    let reference = norm_pass(Arc::new(SingleRank), kind, [&x, &z, &weights]);
    let rank = comm.rank();
    let rows = [x, z, weights].map(|t| local_rows(&t, rank));
    let local = norm_pass(comm.clone(), kind, [&rows[0], &rows[1], &rows[2]]);
    compare(comm, &reference, local);
}

fn child_generator(comm: &Arc<dyn Communicator>) {
    let z = pattern(&[BATCH, common::tiny_model().z_dim], 4, 0.0);
    let weights = pattern(&[BATCH, 3, 32, 32], 5, 0.0);
    let reference = generator_pass(Arc::new(SingleRank), &z, &weights);
    let rank = comm.rank();
    let local = generator_pass(
        comm.clone(),
        &local_rows(&z, rank),
        &local_rows(&weights, rank),
    );
    compare(comm, &reference, local);
}

fn run_two_ranks(scenario: &str) {
    let mut ring = process::Ring::launch(ENTRY, scenario, WORLD, &[]);
    ring.start_with_token(|_| 11);
    let outcomes = ring.finish(Duration::from_secs(60));
    process::assert_all_succeeded(&outcomes);
    for (rank, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.value("DONE"), Some(scenario), "rank {rank}");
        for line in outcome.lines.iter().filter(|l| l.starts_with("@@MAXERR")) {
            println!("{scenario} rank {rank}: {line}");
        }
    }
}

#[test]
fn plain_norm_matches_full_batch() {
    run_two_ranks("plain");
}

#[test]
fn self_modulated_norm_matches_full_batch() {
    run_two_ranks("self_modulated");
}

#[test]
fn generator_matches_full_batch() {
    run_two_ranks("generator");
}
