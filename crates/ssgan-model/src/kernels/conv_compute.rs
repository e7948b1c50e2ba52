//! The per-image loops of the convolution ops: forward, input gradient and kernel gradient,
//! with the optional ReLU on the input, 2x2 average pooling of the output and addend.
//!
//! Images are split across the rayon pool with one set of buffers per worker thread, so the
//! patch matrix, the ReLU of the input and the unpooled output exist for one image at a time.

use rayon::prelude::*;

use super::im2col::{col2im, im2col};
use super::matmul::{Float, MatRef, matmul};
use super::plan::{ConvPlan, Phase};

/// Element-wise steps fused into a convolution op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fusion {
    /// Convolves relu(x) instead of x. The op keeps x for backward and zeroes the input
    /// gradient where x <= 0, so relu(x) never exists as a tensor.
    pub relu_input: bool,
    /// Averages each 2x2 cell of the convolution's output (stride-2 average pooling), which
    /// halves the output's height and width; both must be even.
    pub pool_output: bool,
}

/// The term that the forward pass adds to the (pooled) convolution output.
pub enum AddendData<'a, T> {
    /// One value per output channel, [O].
    Bias(&'a [T]),
    /// A tensor of the output's shape [N, O, Ho', Wo'].
    Residual(&'a [T]),
}

/// Shapes of one fused convolution: the plan of the convolution proper and the fusion.
pub struct FusedPlan {
    pub conv: ConvPlan,
    pub fusion: Fusion,
}

impl FusedPlan {
    /// Elements of one image of the op's output: the pooled output when pooling.
    pub fn output_len(&self) -> usize {
        let (h, w) = self.output();
        self.conv.c_out * h * w
    }

    /// Spatial size of the op's output.
    pub fn output(&self) -> (usize, usize) {
        let (h, w) = self.conv.output;
        match self.fusion.pool_output {
            true => (h / 2, w / 2),
            false => (h, w),
        }
    }
}

/// Per-thread buffers.
struct Scratch<T> {
    /// One patch matrix.
    patches: Vec<T>,
    /// One phase of the output, [O, H * W].
    phase_out: Vec<T>,
    /// relu(x) of one image, when the input is rectified.
    input: Vec<T>,
    /// The unpooled output (or its gradient) of one image, when pooling.
    full: Vec<T>,
}

impl<T: Float> Scratch<T> {
    fn new(plan: &FusedPlan) -> Self {
        let conv = &plan.conv;
        let rows = conv.phases.iter().map(|p| p.patches.rows()).max();
        let pixels = conv.input.0 * conv.input.1;
        let input = if plan.fusion.relu_input {
            conv.input_len()
        } else {
            0
        };
        let full = if plan.fusion.pool_output {
            conv.output_len()
        } else {
            0
        };
        Self {
            patches: vec![T::ZERO; rows.unwrap_or(0) * pixels],
            phase_out: vec![T::ZERO; conv.c_out * pixels],
            input: vec![T::ZERO; input],
            full: vec![T::ZERO; full],
        }
    }

    /// Returns the image the convolution reads: `image` itself, or its ReLU in `self.input`.
    fn conv_input<'a>(&'a mut self, fusion: Fusion, image: &'a [T]) -> &'a [T] {
        if !fusion.relu_input {
            return image;
        }
        for (dst, &src) in self.input.iter_mut().zip(image) {
            *dst = if src > T::ZERO { src } else { T::ZERO };
        }
        &self.input
    }
}

/// y_n = addend + pool(kernel_p [O, rows] x patches_p(relu(x_n)) [rows, HW]) for every image
/// n and phase p, with the ReLU and pooling only where `plan.fusion` enables them.
pub fn forward<T: Float>(plan: &FusedPlan, x: &[T], w: &[T], addend: AddendData<T>) -> Vec<T> {
    let conv = &plan.conv;
    let kernels = gather_kernels(conv, w);
    let mut y = vec![T::ZERO; conv.batch * plan.output_len()];
    let images = x.par_chunks(conv.input_len());
    let outputs = y.par_chunks_mut(plan.output_len()).enumerate();
    images.zip(outputs).for_each_init(
        || Scratch::new(plan),
        |scratch, (image, (n, out))| {
            forward_image(plan, &kernels, image, out, scratch);
            match addend {
                AddendData::Bias(bias) => add_bias(out, bias),
                AddendData::Residual(r) => add_slice(out, &r[n * out.len()..][..out.len()]),
            }
        },
    );
    y
}

fn forward_image<T: Float>(
    plan: &FusedPlan,
    kernels: &[Vec<T>],
    image: &[T],
    out: &mut [T],
    scratch: &mut Scratch<T>,
) {
    let conv = &plan.conv;
    let mut full = std::mem::take(&mut scratch.full);
    {
        let target = match plan.fusion.pool_output {
            true => &mut full[..],
            false => &mut *out,
        };
        let mut patches = std::mem::take(&mut scratch.patches);
        let mut phase_out = std::mem::take(&mut scratch.phase_out);
        let input = scratch.conv_input(plan.fusion, image);
        for (phase, kernel) in conv.phases.iter().zip(kernels) {
            let geom = &phase.patches;
            let patches = &mut patches[..geom.rows() * geom.pixels()];
            im2col(geom, input, patches);
            let kernel = MatRef::new(kernel, conv.c_out, geom.rows());
            let patches = MatRef::new(patches, geom.rows(), geom.pixels());
            if conv.is_direct() {
                matmul(kernel, patches, target, false);
            } else {
                matmul(kernel, patches, &mut phase_out, false);
                conv.scatter_output(phase, &phase_out, target);
            }
        }
        scratch.patches = patches;
        scratch.phase_out = phase_out;
    }
    if plan.fusion.pool_output {
        pool_2x2(conv.c_out, conv.output, &full, out);
    }
    scratch.full = full;
}

/// Adds bias[o] to every pixel of channel o of one output image [O, Ho * Wo].
fn add_bias<T: Float>(out: &mut [T], bias: &[T]) {
    let pixels = out.len() / bias.len();
    for (plane, &b) in out.chunks_mut(pixels).zip(bias) {
        plane.iter_mut().for_each(|v| *v += b);
    }
}

fn add_slice<T: Float>(out: &mut [T], addend: &[T]) {
    out.iter_mut().zip(addend).for_each(|(v, &a)| *v += a);
}

/// Averages each 2x2 cell of `full` [C, H, W] into `out` [C, H/2, W/2].
fn pool_2x2<T: Float>(channels: usize, (h, w): (usize, usize), full: &[T], out: &mut [T]) {
    let (ho, wo) = (h / 2, w / 2);
    for c in 0..channels {
        let plane = &full[c * h * w..][..h * w];
        for i in 0..ho {
            let top = &plane[2 * i * w..][..w];
            let bottom = &plane[(2 * i + 1) * w..][..w];
            let row = &mut out[(c * ho + i) * wo..][..wo];
            for (j, v) in row.iter_mut().enumerate() {
                let sum = top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1];
                *v = sum * T::QUARTER;
            }
        }
    }
}

/// Spreads a quarter of each value of `grad` [C, H/2, W/2] over its 2x2 cell of `full`
/// [C, H, W], the adjoint of [`pool_2x2`].
fn unpool_2x2<T: Float>(channels: usize, (h, w): (usize, usize), grad: &[T], full: &mut [T]) {
    let (ho, wo) = (h / 2, w / 2);
    for c in 0..channels {
        for i in 0..ho {
            let src = &grad[(c * ho + i) * wo..][..wo];
            for r in 0..2 {
                let row = &mut full[(c * h + 2 * i + r) * w..][..w];
                for (j, &g) in src.iter().enumerate() {
                    let quarter = g * T::QUARTER;
                    row[2 * j] = quarter;
                    row[2 * j + 1] = quarter;
                }
            }
        }
    }
}

/// Returns the gradient of the unpooled convolution output of one image: `grad` itself, or
/// the unpooled copy of it in `full`.
fn conv_output_grad<'a, T: Float>(plan: &FusedPlan, grad: &'a [T], full: &'a mut [T]) -> &'a [T] {
    if !plan.fusion.pool_output {
        return grad;
    }
    unpool_2x2(plan.conv.c_out, plan.conv.output, grad, full);
    full
}

/// dpatches_p = kernel_p^T x dy_p [O, HW], then col2im onto dx_n, for every image and phase.
/// With a rectified input, `x` must hold the op's input, and dx_n is zeroed where x_n <= 0.
pub fn input_grad<T: Float>(plan: &FusedPlan, dy: &[T], w: &[T], x: Option<&[T]>) -> Vec<T> {
    let conv = &plan.conv;
    let kernels = gather_kernels_transposed(conv, w);
    let mut dx = vec![T::ZERO; conv.batch * conv.input_len()];
    let grads = dy.par_chunks(plan.output_len());
    let inputs = dx.par_chunks_mut(conv.input_len()).enumerate();
    grads.zip(inputs).for_each_init(
        || Scratch::new(plan),
        |scratch, (grad, (n, dimage))| {
            let mut full = std::mem::take(&mut scratch.full);
            let grad = conv_output_grad(plan, grad, &mut full);
            for (phase, kernel) in conv.phases.iter().zip(&kernels) {
                input_grad_phase(conv, phase, kernel, grad, dimage, scratch);
            }
            scratch.full = full;
            if let (true, Some(x)) = (plan.fusion.relu_input, x) {
                let image = &x[n * conv.input_len()..][..conv.input_len()];
                mask_nonpositive(dimage, image);
            }
        },
    );
    dx
}

/// Zeroes `grad` wherever `input` <= 0: the backward pass of a ReLU on `input`.
fn mask_nonpositive<T: Float>(grad: &mut [T], input: &[T]) {
    for (d, &v) in grad.iter_mut().zip(input) {
        if v <= T::ZERO {
            *d = T::ZERO;
        }
    }
}

fn input_grad_phase<T: Float>(
    conv: &ConvPlan,
    phase: &Phase,
    kernel_t: &[T],
    grad: &[T],
    image: &mut [T],
    scratch: &mut Scratch<T>,
) {
    let geom = &phase.patches;
    let kernel_t = MatRef::new(kernel_t, geom.rows(), conv.c_out);
    let grad = phase_grad(conv, phase, grad, &mut scratch.phase_out);
    let patches = &mut scratch.patches[..geom.rows() * geom.pixels()];
    matmul(kernel_t, grad, patches, false);
    col2im(geom, patches, image);
}

/// Returns the output gradient of one phase as a matrix [O, HW]: the image's own gradient when the
/// plan writes in place, else the phase's pixels gathered into `buf`.
fn phase_grad<'a, T: Float>(
    conv: &ConvPlan,
    phase: &Phase,
    grad: &'a [T],
    buf: &'a mut [T],
) -> MatRef<'a, T> {
    let pixels = phase.patches.pixels();
    if conv.is_direct() {
        return MatRef::new(grad, conv.c_out, pixels);
    }
    conv.gather_output(phase, grad, buf);
    MatRef::new(buf, conv.c_out, pixels)
}

/// dkernel = sum over images n and phases p of dy_p [O, HW] x patches_p(relu(x_n))^T
/// [HW, rows].
///
/// Images are split into one contiguous group per rayon thread, and each group sums into its
/// own buffers. The buffers are added in group order, so the result depends on the thread
/// count but not on scheduling.
pub fn kernel_grad<T: Float>(plan: &FusedPlan, x: &[T], dy: &[T]) -> Vec<T> {
    let conv = &plan.conv;
    let groups = rayon::current_num_threads().clamp(1, conv.batch.max(1));
    let per_group = conv.batch.div_ceil(groups);
    let partials: Vec<Vec<Vec<T>>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let images = g * per_group..((g + 1) * per_group).min(conv.batch);
            kernel_grad_group(plan, x, dy, images)
        })
        .collect();
    let mut total = vec![T::ZERO; conv.kernel_len()];
    for partial in &partials {
        for (phase, grad) in conv.phases.iter().zip(partial) {
            conv.scatter_kernel(phase, grad, &mut total);
        }
    }
    total
}

fn kernel_grad_group<T: Float>(
    plan: &FusedPlan,
    x: &[T],
    dy: &[T],
    images: std::ops::Range<usize>,
) -> Vec<Vec<T>> {
    let conv = &plan.conv;
    let mut sums: Vec<Vec<T>> = conv
        .phases
        .iter()
        .map(|p| vec![T::ZERO; conv.c_out * p.patches.rows()])
        .collect();
    let mut scratch = Scratch::new(plan);
    let mut patches = std::mem::take(&mut scratch.patches);
    let mut phase_out = std::mem::take(&mut scratch.phase_out);
    let mut full = std::mem::take(&mut scratch.full);
    for n in images {
        let image = &x[n * conv.input_len()..][..conv.input_len()];
        let grad = &dy[n * plan.output_len()..][..plan.output_len()];
        let grad = conv_output_grad(plan, grad, &mut full);
        let input = scratch.conv_input(plan.fusion, image);
        for (phase, sum) in conv.phases.iter().zip(&mut sums) {
            let geom = &phase.patches;
            let patches = &mut patches[..geom.rows() * geom.pixels()];
            im2col(geom, input, patches);
            let patches = MatRef::new(patches, geom.rows(), geom.pixels());
            let grad = phase_grad(conv, phase, grad, &mut phase_out);
            let transposed = kernel_grad_transposed(conv, phase);
            accumulate_kernel_grad(transposed, grad, patches, sum);
        }
    }
    conv.phases
        .iter()
        .zip(sums)
        .map(|(phase, sum)| match kernel_grad_transposed(conv, phase) {
            true => transpose(&sum, phase.patches.rows(), conv.c_out),
            false => sum,
        })
        .collect()
}

/// Returns true when a phase sums its kernel gradient transposed, as [rows, O] rather than
/// [O, rows].
///
/// gemm 0.19 computes a row-major product a x b as b^T x a^T and packs b^T into panels. In a
/// kernel-gradient product both operands, dy_p [O, HW] and the patch matrix [rows, HW], are
/// contiguous along the pixels, which is the wrong axis for those panels, so the packing
/// gathers b one element at a time. With the patch matrix as b that gather took about 10 % of
/// a training step (`perf record` of the 32x32 model). Whichever of O and rows is smaller
/// goes on the b side: dy_p, unless a layer has more output channels than patch rows.
fn kernel_grad_transposed(conv: &ConvPlan, phase: &Phase) -> bool {
    conv.c_out < phase.patches.rows()
}

/// Adds dy_p [O, HW] x patches_p^T [HW, rows] to `sum`, which is [O, rows], or its transpose
/// [rows, O] when `transposed`.
fn accumulate_kernel_grad<T: Float>(
    transposed: bool,
    grad: MatRef<T>,
    patches: MatRef<T>,
    sum: &mut [T],
) {
    match transposed {
        true => matmul(patches, grad.t(), sum, true),
        false => matmul(grad, patches.t(), sum, true),
    }
}

/// Returns the transpose [cols, rows] of the row-major matrix `data` [rows, cols].
fn transpose<T: Copy>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| data[r * cols + c]));
    }
    out
}

fn gather_kernels<T: Float>(conv: &ConvPlan, w: &[T]) -> Vec<Vec<T>> {
    conv.phases
        .iter()
        .map(|p| conv.gather_kernel(p, w))
        .collect()
}

/// Gathers each phase's kernel as [rows, O], so that the input-gradient products read it
/// without gemm packing it again for every image.
fn gather_kernels_transposed<T: Float>(conv: &ConvPlan, w: &[T]) -> Vec<Vec<T>> {
    let kernels = gather_kernels(conv, w);
    let shapes = conv.phases.iter().map(|p| p.patches.rows());
    kernels
        .iter()
        .zip(shapes)
        .map(|(kernel, rows)| transpose(kernel, conv.c_out, rows))
        .collect()
}
