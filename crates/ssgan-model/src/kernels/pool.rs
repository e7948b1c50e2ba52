//! Forward-only max and average pooling on the CPU with stride and padding, as PyTorch's
//! `max_pool2d` and `avg_pool2d(count_include_pad=False)` compute them.
//!
//! candle 0.11's CPU pools take no padding and run on one thread, so a padded pool needs two
//! padding copies first. Here every (image, channel) plane is pooled on the rayon pool, and
//! a window only visits the input positions inside the image.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::Float;
use super::storage::slice;

/// The reduction of a pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// The maximum of the window's positions inside the image (padding acts as -infinity).
    Max,
    /// The mean of the window's positions inside the image: the padding counts neither in the
    /// sum nor in the divisor (PyTorch's `count_include_pad=False`).
    AverageExcludePad,
}

/// A square pooling window with its stride and zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub kind: PoolKind,
    /// Side of the square window, at least 1.
    pub size: usize,
    /// Step between neighbouring windows, at least 1.
    pub stride: usize,
    /// Positions added on each side of both axes, at most `size / 2` as in PyTorch.
    pub padding: usize,
}

/// Pools x [N, C, H, W], giving [N, C, Ho, Wo] with Ho = (H + 2 * padding - size) / stride + 1,
/// rounded down (PyTorch's `ceil_mode=False`), and Wo likewise.
///
/// F32 and F64 on the CPU run the rayon kernel. Other devices and dtypes run candle's pools on
/// an explicitly padded copy of x.
///
/// # Errors
///
/// Returns an error when x is not 4D, when `size` or `stride` is 0, when `padding` exceeds
/// `size / 2`, or when the padded input is smaller than the window.
pub fn pool2d_inference(x: &Tensor, spec: PoolSpec) -> candle_core::Result<Tensor> {
    let plan = PoolPlan::new(x.dims4()?, spec)?;
    let on_kernels = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if !on_kernels {
        return candle_pool2d(x, spec);
    }
    x.contiguous()?.apply_op1_no_bwd(&PoolOp { plan })
}

/// Pools with candle's ops, for devices and dtypes the kernel lacks. The average
/// divides the window sums of x by those of a ones image, both zero-padded, which gives the
/// in-image counts.
fn candle_pool2d(x: &Tensor, spec: PoolSpec) -> candle_core::Result<Tensor> {
    let window = (spec.size, spec.size);
    let stride = (spec.stride, spec.stride);
    match spec.kind {
        PoolKind::Max => {
            let padded = pad_constant(x, spec.padding, f64::NEG_INFINITY)?;
            padded.max_pool2d_with_stride(window, stride)
        }
        PoolKind::AverageExcludePad => {
            let (_, _, h, w) = x.dims4()?;
            let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
            let sums = pad_constant(x, spec.padding, 0.0)?;
            let counts = pad_constant(&ones, spec.padding, 0.0)?;
            let sums = sums.avg_pool2d_with_stride(window, stride)?;
            sums.broadcast_div(&counts.avg_pool2d_with_stride(window, stride)?)
        }
    }
}

/// Surrounds every plane of x [N, C, H, W] with `padding` rows and columns of `value`.
fn pad_constant(x: &Tensor, padding: usize, value: f64) -> candle_core::Result<Tensor> {
    if padding == 0 {
        return Ok(x.clone());
    }
    let (n, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| {
        Tensor::full(value, shape, x.device())?.to_dtype(x.dtype())
    };
    let sides = fill((n, c, h, padding))?;
    let x = Tensor::cat(&[&sides, x, &sides], 3)?;
    let rows = fill((n, c, padding, w + 2 * padding))?;
    Tensor::cat(&[&rows, &x, &rows], 2)
}

/// Shapes of one pooling op.
#[derive(Clone, Copy, Debug)]
struct PoolPlan {
    planes: usize,
    input: (usize, usize),
    output: (usize, usize),
    spec: PoolSpec,
}

impl PoolPlan {
    fn new(x: (usize, usize, usize, usize), spec: PoolSpec) -> candle_core::Result<Self> {
        let (n, c, h, w) = x;
        let padded = (h + 2 * spec.padding, w + 2 * spec.padding);
        let valid = spec.size > 0
            && spec.stride > 0
            && spec.padding <= spec.size / 2
            && padded.0 >= spec.size
            && padded.1 >= spec.size;
        if !valid {
            return Err(candle_core::Error::msg(format!(
                "pool2d_inference: input {x:?} and {spec:?} do not match; expected size and \
                 stride at least 1, padding at most size / 2, and the padded input at least \
                 as large as the window"
            )));
        }
        let output = (
            (padded.0 - spec.size) / spec.stride + 1,
            (padded.1 - spec.size) / spec.stride + 1,
        );
        Ok(Self {
            planes: n * c,
            input: (h, w),
            output,
            spec,
        })
    }

    /// Input positions [start, end) along an axis of `size` that output position `o` reads.
    fn window(&self, o: usize, size: usize) -> (usize, usize) {
        let first = (o * self.spec.stride) as isize - self.spec.padding as isize;
        let start = first.max(0) as usize;
        let end = ((first + self.spec.size as isize).max(0) as usize).min(size);
        (start, end.max(start))
    }
}

/// Forward op: x -> pooled x.
struct PoolOp {
    plan: PoolPlan,
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "pool2d-inference"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let plan = &self.plan;
        let (n, c, _, _) = layout.shape().dims4()?;
        let shape = Shape::from((n, c, plan.output.0, plan.output.1));
        let pooled = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(pool(plan, slice(x, layout)?)),
            CpuStorage::F64(x) => CpuStorage::F64(pool(plan, slice(x, layout)?)),
            other => {
                return Err(candle_core::Error::msg(format!(
                    "pool2d_inference: dtype {:?} is not supported, expected F32 or F64",
                    other.dtype()
                )));
            }
        };
        Ok((pooled, shape))
    }
}

/// Pools every plane [H, W] of `x` on the rayon pool.
fn pool<T: Float + FromCount>(plan: &PoolPlan, x: &[T]) -> Vec<T> {
    let (h, w) = plan.input;
    let (ho, wo) = plan.output;
    let mut y = vec![T::ZERO; plan.planes * ho * wo];
    if y.is_empty() || h * w == 0 {
        return y;
    }
    let planes = x.par_chunks_exact(h * w);
    planes
        .zip(y.par_chunks_exact_mut(ho * wo))
        .for_each(|(input, output)| pool_plane(plan, input, output));
    y
}

fn pool_plane<T: Float + FromCount>(plan: &PoolPlan, input: &[T], output: &mut [T]) {
    let (h, w) = plan.input;
    for (oh, row) in output.chunks_exact_mut(plan.output.1).enumerate() {
        let rows = plan.window(oh, h);
        for (ow, value) in row.iter_mut().enumerate() {
            let columns = plan.window(ow, w);
            let lines = input[rows.0 * w..rows.1 * w].chunks_exact(w);
            let window = lines.flat_map(|line| &line[columns.0..columns.1]);
            *value = reduce(plan.spec.kind, window);
        }
    }
}

/// Reduces the in-image values of one window, which contains at least one value whenever
/// `padding <= size / 2`.
fn reduce<'a, T: Float + FromCount>(kind: PoolKind, values: impl Iterator<Item = &'a T>) -> T {
    match kind {
        PoolKind::Max => values
            .copied()
            .reduce(|max, v| if v > max { v } else { max })
            .unwrap_or(T::ZERO),
        PoolKind::AverageExcludePad => {
            let (sum, count) = values.fold((T::ZERO, 0), |(sum, count), &v| (sum + v, count + 1));
            sum / T::from_count(count.max(1))
        }
    }
}

/// Conversion of a small count to a float, for the divisor of an average.
trait FromCount: Sized + std::ops::Div<Output = Self> {
    fn from_count(count: usize) -> Self;
}

impl FromCount for f32 {
    fn from_count(count: usize) -> Self {
        count as f32
    }
}

impl FromCount for f64 {
    fn from_count(count: usize) -> Self {
        count as f64
    }
}
