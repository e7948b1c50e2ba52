//! `ssgan bench conv`: achieved GFLOP/s of the convolution kernels on the 32x32 model's layers.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use ssgan_model::kernels::{ConvKind, conv2d_input_grad, conv2d_kernel_grad, conv2d_same};

use crate::error::Result;

/// One convolution layer's shape: (name, batch, c_in, c_out, spatial size), kernel 3x3.
pub type ConvLayer = (&'static str, usize, usize, usize, usize);

/// Timings of one layer, for the project's kernels and for candle's own ops.
#[derive(Clone, Debug, Serialize)]
pub struct ConvBench {
    pub layer: &'static str,
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub size: usize,
    /// Multiply-adds of one product, counted as 2 FLOPs each: 2 N O C k^2 H W.
    pub gflop: f64,
    pub ours_forward_gflops: f64,
    pub ours_input_grad_gflops: f64,
    pub ours_kernel_grad_gflops: f64,
    pub candle_forward_gflops: f64,
    /// candle's conv_transpose2d, which its autograd uses for the input gradient.
    pub candle_input_grad_gflops: f64,
    /// candle's conv2d of transposed tensors, which its autograd uses for the kernel gradient.
    pub candle_kernel_grad_gflops: f64,
}

/// The 3x3 layers of the 32x32 model at width `ch` (G 2ch, D ch) and batch `batch`, with the
/// discriminator step's batch of [x, x_rot, g, g_rot] = 2 (batch + 3 rotated / 4).
pub fn paper_layers(ch: usize, batch: usize, rotated: usize) -> Vec<ConvLayer> {
    let g = 2 * ch;
    let d_batch = 2 * (batch + 3 * rotated / 4);
    vec![
        ("g.block1.conv", batch, g, g, 8),
        ("g.block2.conv", batch, g, g, 16),
        ("g.block3.conv", batch, g, g, 32),
        ("g.out", batch, g, 3, 32),
        ("d.block1.conv_a", d_batch, 3, ch, 32),
        ("d.block1.conv_b", d_batch, ch, ch, 32),
        ("d.block2.conv", d_batch, ch, ch, 16),
        ("d.block3.conv", d_batch, ch, ch, 8),
    ]
}

/// Times each layer's three products `repeats` times after one warm-up and reports the
/// median in GFLOP/s.
pub fn bench_conv(layers: &[ConvLayer], repeats: usize) -> Result<Vec<ConvBench>> {
    layers
        .iter()
        .map(|&layer| bench_layer(layer, repeats))
        .collect()
}

fn bench_layer(layer: ConvLayer, repeats: usize) -> Result<ConvBench> {
    let (name, n, c, o, s) = layer;
    let device = Device::Cpu;
    let x = Tensor::rand(0f32, 1f32, (n, c, s, s), &device)?;
    let w = Tensor::rand(-0.1f32, 0.1f32, (o, c, 3, 3), &device)?;
    let dy = Tensor::rand(-1f32, 1f32, (n, o, s, s), &device)?;
    let gflop = 2.0 * (n * o * c * 9 * s * s) as f64 / 1e9;
    let rate = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> Result<f64> {
        Ok(gflop / median_seconds(f, repeats)?)
    };
    Ok(ConvBench {
        layer: name,
        batch: n,
        c_in: c,
        c_out: o,
        size: s,
        gflop,
        ours_forward_gflops: rate(&|| conv2d_same(&x, &w, None))?,
        ours_input_grad_gflops: rate(&|| conv2d_input_grad(ConvKind::Same, &dy, &w))?,
        ours_kernel_grad_gflops: rate(&|| {
            conv2d_kernel_grad(ConvKind::Same, &x, &dy, (o, c, 3, 3))
        })?,
        candle_forward_gflops: rate(&|| x.conv2d(&w, 1, 1, 1, 1))?,
        candle_input_grad_gflops: rate(&|| dy.conv_transpose2d(&w, 1, 0, 1, 1))?,
        candle_kernel_grad_gflops: rate(&|| candle_kernel_grad(&x, &dy))?,
    })
}

/// The kernel gradient the way candle 0.11's autograd computes it for a stride-1 conv2d.
fn candle_kernel_grad(x: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
    let x_t = x.transpose(0, 1)?;
    let dy_t = dy.transpose(0, 1)?;
    x_t.conv2d(&dy_t, 1, 1, 1, 1)?.transpose(0, 1)
}

fn median_seconds(f: &dyn Fn() -> candle_core::Result<Tensor>, repeats: usize) -> Result<f64> {
    f()?.to_dtype(DType::F32)?;
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[seconds.len() / 2])
}
