//! GPU checks, built only with `--features cuda` and run by scripts/gpu-check.sh. They compare
//! the model on a CUDA device with the CPU, run NCCL collectives across every visible GPU (one
//! thread per GPU), and compare synchronized batch norm over NCCL with one device on the
//! whole batch.
//!
//! Each test prints one `PASS` or `FAIL` line with the measured numbers before it asserts.
#![cfg(feature = "cuda")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use candle_core::cuda::cudarc::driver::CudaContext;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_collective::{
    Communicator, NcclCommunicator, SingleRank, all_reduce_sum_in_place, all_reduce_sum_tensor,
    create_unique_id,
};
use ssgan_model::SsGan;
use ssgan_model::batch_norm::{Norm, NormSpec};
use ssgan_model::config::{GeneratorNorm, Init};
use ssgan_model::ctx::Ctx;
use ssgan_model::params::{Builder, ParamStore};

const TIMEOUT: Duration = Duration::from_secs(60);

fn gpu_count() -> usize {
    CudaContext::device_count().expect("the CUDA driver answers") as usize
}

/// Prints the check's verdict with its numbers, then fails the test if it failed.
fn report(check: &str, passed: bool, numbers: &str) {
    let verdict = if passed { "PASS" } else { "FAIL" };
    println!("{verdict} {check}: {numbers}");
    assert!(passed, "{check}: {numbers}");
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    diff.max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn build(device: &Device) -> SsGan {
    common::build_on(&common::tiny_model(), DType::F32, 21, device)
}

#[test]
fn model_forward_backward_matches_cpu() {
    let gpu = Device::new_cuda(0).unwrap();
    let (cpu_gan, gpu_gan) = (build(&Device::Cpu), build(&gpu));
    let reals = common::pattern_images(4, DType::F32);
    let z = cpu_gan
        .latent(4, &mut ChaCha8Rng::seed_from_u64(3))
        .unwrap();

    let (cpu_loss, _) = cpu_gan.discriminator_loss(&reals, &z, false).unwrap();
    let gpu_reals = reals.to_device(&gpu).unwrap();
    let gpu_z = z.to_device(&gpu).unwrap();
    let (gpu_loss, _) = gpu_gan
        .discriminator_loss(&gpu_reals, &gpu_z, false)
        .unwrap();
    let loss_diff = max_abs_diff(&cpu_loss, &gpu_loss);

    let cpu_grads = cpu_loss.backward().unwrap();
    let gpu_grads = gpu_loss.backward().unwrap();
    let mut grad_diff = 0.0f32;
    let mut grad_scale = 0.0f32;
    let cpu_params = cpu_gan.discriminator_params().params();
    let gpu_params = gpu_gan.discriminator_params().params();
    for ((name, cpu_var), (_, gpu_var)) in cpu_params.iter().zip(&gpu_params) {
        let cpu_grad = cpu_grads.get(cpu_var.as_tensor());
        let gpu_grad = gpu_grads.get(gpu_var.as_tensor());
        let (Some(cpu_grad), Some(gpu_grad)) = (cpu_grad, gpu_grad) else {
            panic!("no gradient for {name}");
        };
        grad_diff = grad_diff.max(max_abs_diff(cpu_grad, gpu_grad));
        let zero = cpu_grad.zeros_like().unwrap();
        grad_scale = grad_scale.max(max_abs_diff(cpu_grad, &zero));
    }
    // cuBLAS and candle's CUDA convolutions sum in another order than the CPU kernels and may
    // use TF32; 1e-3 relative to the largest gradient allows for that.
    let passed = loss_diff < 1e-3 && grad_diff <= 1e-3 * grad_scale.max(1.0);
    let numbers = format!(
        "loss diff {loss_diff:.3e}, max gradient diff {grad_diff:.3e} (largest gradient {grad_scale:.3e})"
    );
    report("model forward/backward on cuda:0 vs CPU", passed, &numbers);
}

/// Runs `body(rank, device, comm)` on one thread per visible GPU, with one NCCL communicator
/// across them, and returns the results by rank.
fn on_every_gpu<T: Send + 'static>(
    body: impl Fn(usize, Device, Arc<dyn Communicator>) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let world = gpu_count();
    let id = create_unique_id().unwrap();
    let body = Arc::new(body);
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            let (id, body) = (id.clone(), body.clone());
            std::thread::spawn(move || {
                let device = Device::new_cuda(rank).unwrap();
                let cuda = device.as_cuda_device().unwrap().clone();
                let comm = NcclCommunicator::join(&cuda, rank, world, &id, TIMEOUT).unwrap();
                body(rank, device, Arc::new(comm))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn nccl_all_reduce_across_gpus() {
    let world = gpu_count();
    let results = on_every_gpu(|rank, device, comm| {
        let len = 1 << 20;
        let value = (rank + 1) as f32;
        let f32_tensor = Tensor::full(value, len, &device).unwrap();
        all_reduce_sum_in_place(comm.as_ref(), &f32_tensor).unwrap();
        let bf16_tensor = Tensor::full(value, len, &device)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        all_reduce_sum_in_place(comm.as_ref(), &bf16_tensor).unwrap();
        let mut host = vec![value; 1000];
        comm.all_reduce_sum(&mut host).unwrap();
        let mut broadcast = vec![value; 10];
        comm.broadcast(&mut broadcast, 0).unwrap();
        comm.barrier().unwrap();
        let f32_sum = f32_tensor.to_vec1::<f32>().unwrap();
        let bf16_sum = bf16_tensor
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (f32_sum, bf16_sum, host, broadcast)
    });
    let expected = (world * (world + 1) / 2) as f32;
    let mut passed = true;
    for (f32_sum, bf16_sum, host, broadcast) in &results {
        passed &= f32_sum.iter().all(|&v| v == expected);
        passed &= bf16_sum.iter().all(|&v| v == expected);
        passed &= host.iter().all(|&v| v == expected);
        passed &= broadcast.iter().all(|&v| v == 1.0);
    }
    let numbers = format!(
        "{world} GPUs, expected sum {expected}, rank 0 got f32 {} bf16 {} host {} broadcast {}",
        results[0].0[0], results[0].1[0], results[0].2[0], results[0].3[0]
    );
    report(
        "NCCL all-reduce (f32, bf16, host) and broadcast",
        passed,
        &numbers,
    );
}

#[test]
fn nccl_differentiable_all_reduce() {
    let world = gpu_count();
    let grads = on_every_gpu(|rank, device, comm| {
        let x = Var::from_tensor(&Tensor::full((rank + 1) as f32, 8, &device).unwrap()).unwrap();
        let summed = all_reduce_sum_tensor(&comm, x.as_tensor()).unwrap();
        // d/dx_r of sum_r' sum(summed_r' * (r' + 1)) = sum over ranks of (r' + 1).
        let weight = (rank + 1) as f64;
        let loss = (summed * weight).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
    });
    let expected = (world * (world + 1) / 2) as f32;
    let passed = grads.iter().flatten().all(|&g| g == expected);
    let numbers = format!(
        "{world} GPUs, expected gradient {expected}, rank 0 got {}",
        grads[0][0]
    );
    report(
        "differentiable all-reduce backward over NCCL",
        passed,
        &numbers,
    );
}

const BN_BATCH_PER_GPU: usize = 4;

fn pattern(shape: &[usize], seed: usize) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Runs a self-modulated batch norm layer forward and backward, and returns the output and
/// the gradient of x, on the CPU.
fn norm_pass(
    comm: Arc<dyn Communicator>,
    device: &Device,
    x: &Tensor,
    z: &Tensor,
    weights: &Tensor,
) -> (Tensor, Tensor) {
    let (mut store, mut rng) = (ParamStore::default(), ChaCha8Rng::seed_from_u64(5));
    let mut builder = Builder {
        store: &mut store,
        rng: &mut rng,
        device: device.clone(),
        dtype: DType::F32,
        init: Init::Normal,
        init_std: 0.3,
    };
    let spec = NormSpec {
        kind: GeneratorNorm::SelfModulated,
        channels: 8,
        z_dim: 4,
        hidden: 3,
        spectral_norm: false,
        decay: 0.9,
        epsilon: 1e-5,
    };
    let norm = Norm::new(&mut builder, "bn", &spec).unwrap();
    let x = Var::from_tensor(&x.to_device(device).unwrap()).unwrap();
    let z = z.to_device(device).unwrap();
    let output = norm.forward(&Ctx::training(comm), &x, &z).unwrap();
    let weights = weights.to_device(device).unwrap();
    let loss = (&output * weights).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let x_grad = grads.get(x.as_tensor()).unwrap().clone();
    (
        output.to_device(&Device::Cpu).unwrap(),
        x_grad.to_device(&Device::Cpu).unwrap(),
    )
}

#[test]
fn sync_batch_norm_matches_single_device() {
    let world = gpu_count();
    let batch = BN_BATCH_PER_GPU * world;
    let x = pattern(&[batch, 8, 6, 6], 1);
    let z = pattern(&[batch, 4], 2);
    let weights = pattern(&[batch, 8, 6, 6], 3);
    let whole = norm_pass(
        Arc::new(SingleRank),
        &Device::new_cuda(0).unwrap(),
        &x,
        &z,
        &weights,
    );

    let inputs = Arc::new((x, z, weights));
    let parts = on_every_gpu(move |rank, device, comm| {
        let rows = |t: &Tensor| {
            t.narrow(0, rank * BN_BATCH_PER_GPU, BN_BATCH_PER_GPU)
                .unwrap()
        };
        let (x, z, weights) = &*inputs;
        norm_pass(comm, &device, &rows(x), &rows(z), &rows(weights))
    });
    let outputs: Vec<Tensor> = parts.iter().map(|(o, _)| o.clone()).collect();
    let x_grads: Vec<Tensor> = parts.iter().map(|(_, g)| g.clone()).collect();
    let output_diff = max_abs_diff(&Tensor::cat(&outputs, 0).unwrap(), &whole.0);
    let grad_diff = max_abs_diff(&Tensor::cat(&x_grads, 0).unwrap(), &whole.1);
    let passed = output_diff < 1e-4 && grad_diff < 1e-4;
    let numbers = format!(
        "{world} GPUs x batch {BN_BATCH_PER_GPU}: max output diff {output_diff:.3e}, max input gradient diff {grad_diff:.3e}"
    );
    report(
        "synchronized batch norm over NCCL vs one GPU",
        passed,
        &numbers,
    );
}
