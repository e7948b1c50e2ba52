//! Stride-1 "same" convolutions on the CPU through im2col and GEMM, forward and backward,
//! optionally fused with a zero-insertion 2x upsampling of the input, with the bias added in
//! the same op.
//!
//! candle 0.11 computes a convolution's input gradient with its CPU conv_transpose2d, a direct
//! loop that dominated the SS-GAN step. These ops compute all three products of a convolution
//! (output, input gradient, kernel gradient) as GEMMs over per-image patch matrices. Images
//! are split across the rayon pool with one patch buffer per worker thread, so the patch
//! matrix of the whole batch never exists at once. The backward pass rebuilds patches instead
//! of keeping them from the forward pass, and skips the gradient of an input that no variable
//! depends on. Adding the bias inside the op keeps one output tensor per layer alive for
//! backward instead of two.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::im2col::{col2im, im2col};
use super::matmul::{Float, MatRef, matmul};
use super::plan::{ConvKind, ConvPlan, Phase};
use super::storage::slice;

/// Convolves x [N, C, H, W] with kernel [O, C, k, k] (k odd), stride 1, zero padding k / 2,
/// and adds `bias` [O] when given, giving [N, O, H, W].
///
/// All tensors must have the same dtype, F32 or F64. On the CPU this runs the im2col + GEMM
/// op, whose backward uses the same kernels. On other devices it calls candle's conv2d.
pub fn conv2d_same(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    conv2d(ConvKind::Same, x, kernel, bias)
}

/// Convolves the zero-insertion upsampling of x [N, C, H, W] (x[i, j] at (2i, 2j), zeros at
/// the other three pixels of each 2x2 cell) with kernel [O, C, k, k] (k odd), "same"
/// padding, and adds `bias` [O] when given, giving [N, O, 2H, 2W].
///
/// Equal to `conv2d_same(upsample(x, Zeros), kernel, bias)` but skips the products with
/// inserted zeros, three quarters of them for k = 3. Same dtypes and devices as
/// [`conv2d_same`].
pub fn conv2d_zero_upsampled(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    conv2d(ConvKind::ZeroUpsampled, x, kernel, bias)
}

fn conv2d(
    kind: ConvKind,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    if !runs_on_kernels(x, kernel)? {
        return candle_conv2d(kind, x, kernel, bias);
    }
    let bias = match bias {
        Some(bias) => bias.contiguous()?,
        None => Tensor::zeros(kernel.dim(0)?, kernel.dtype(), kernel.device())?,
    };
    x.contiguous()?
        .apply_op3(&kernel.contiguous()?, &bias, ConvOp(kind))
}

/// The same convolution from candle's own ops, for devices and dtypes the kernels lack.
fn candle_conv2d(
    kind: ConvKind,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let x = match kind {
        ConvKind::Same => x.clone(),
        ConvKind::ZeroUpsampled => crate::resample::upsample(x, crate::config::Upsample::Zeros)
            .map_err(candle_core::Error::wrap)?,
    };
    let y = x.conv2d(kernel, kernel.dim(3)? / 2, 1, 1, 1)?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// Computes the input gradient of a convolution of `kind`: dy [N, O, Ho, Wo] and kernel
/// [O, C, k, k] give dx [N, C, H, W]. CPU only, F32 or F64.
pub fn conv2d_input_grad(
    kind: ConvKind,
    dy: &Tensor,
    kernel: &Tensor,
) -> candle_core::Result<Tensor> {
    dy.contiguous()?
        .apply_op2_no_bwd(&kernel.contiguous()?, &InputGradOp(kind))
}

/// Computes the kernel gradient of a convolution of `kind`: x [N, C, H, W] and dy
/// [N, O, Ho, Wo] give the gradient of a kernel of shape `kernel` = (O, C, k, k). CPU only,
/// F32 or F64.
pub fn conv2d_kernel_grad(
    kind: ConvKind,
    x: &Tensor,
    dy: &Tensor,
    kernel: (usize, usize, usize, usize),
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &KernelGradOp { kind, kernel })
}

fn runs_on_kernels(x: &Tensor, kernel: &Tensor) -> candle_core::Result<bool> {
    let (_, c, _, _) = x.dims4()?;
    let (_, c_kernel, k, k_w) = kernel.dims4()?;
    if c != c_kernel || k != k_w || k % 2 == 0 {
        let message = format!(
            "conv2d: input {:?} and kernel {:?} do not match; expected [N, C, H, W] and \
             [O, C, k, k] with odd k",
            x.dims(),
            kernel.dims()
        );
        return Err(candle_core::Error::msg(message));
    }
    let supported = matches!(x.dtype(), DType::F32 | DType::F64);
    Ok(x.device().is_cpu() && supported)
}

/// Forward op: (x, kernel, bias) -> y.
struct ConvOp(ConvKind);

/// Input gradient: (dy, kernel) -> dx.
struct InputGradOp(ConvKind);

/// Kernel gradient: (x, dy) -> dkernel of shape `kernel`.
struct KernelGradOp {
    kind: ConvKind,
    kernel: (usize, usize, usize, usize),
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (o, _, k, _) = w_layout.shape().dims4()?;
        let plan = ConvPlan::new(self.0, x_layout.shape().dims4()?, (o, k));
        let shape = Shape::from((plan.batch, o, plan.output.0, plan.output.1));
        let storage = match (x, w, b) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                let inputs = (
                    slice(x, x_layout)?,
                    slice(w, w_layout)?,
                    slice(b, b_layout)?,
                );
                CpuStorage::F32(forward(&plan, inputs))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                let inputs = (
                    slice(x, x_layout)?,
                    slice(w, w_layout)?,
                    slice(b, b_layout)?,
                );
                CpuStorage::F64(forward(&plan, inputs))
            }
            _ => return Err(dtype_error(self.name(), x.dtype(), w.dtype())),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = match x.track_op() {
            true => Some(conv2d_input_grad(self.0, dy, kernel)?),
            false => None,
        };
        let dkernel = match kernel.track_op() {
            true => Some(conv2d_kernel_grad(self.0, x, dy, kernel.dims4()?)?),
            false => None,
        };
        // The parallel per-channel kernel: candle's sum((0, 2, 3)) runs on one thread.
        let dbias = match bias.track_op() {
            true => Some(super::norm::channel_moments(dy)?.narrow(0, 0, bias.dim(0)?)?),
            false => None,
        };
        Ok((dx, dkernel, dbias))
    }
}

impl candle_core::CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col-input-grad"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dy_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, _, ho, wo) = dy_layout.shape().dims4()?;
        let (o, c, k, _) = w_layout.shape().dims4()?;
        let (h, width) = match self.0 {
            ConvKind::Same => (ho, wo),
            ConvKind::ZeroUpsampled => (ho / 2, wo / 2),
        };
        let plan = ConvPlan::new(self.0, (n, c, h, width), (o, k));
        let storage = match (dy, w) {
            (CpuStorage::F32(dy), CpuStorage::F32(w)) => CpuStorage::F32(input_grad(
                &plan,
                slice(dy, dy_layout)?,
                slice(w, w_layout)?,
            )),
            (CpuStorage::F64(dy), CpuStorage::F64(w)) => CpuStorage::F64(input_grad(
                &plan,
                slice(dy, dy_layout)?,
                slice(w, w_layout)?,
            )),
            _ => return Err(dtype_error(self.name(), dy.dtype(), w.dtype())),
        };
        Ok((storage, Shape::from((n, c, h, width))))
    }
}

impl candle_core::CustomOp2 for KernelGradOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (o, _, k, _) = self.kernel;
        let plan = ConvPlan::new(self.kind, x_layout.shape().dims4()?, (o, k));
        let storage = match (x, dy) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => CpuStorage::F32(kernel_grad(
                &plan,
                slice(x, x_layout)?,
                slice(dy, dy_layout)?,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => CpuStorage::F64(kernel_grad(
                &plan,
                slice(x, x_layout)?,
                slice(dy, dy_layout)?,
            )),
            _ => return Err(dtype_error(self.name(), x.dtype(), dy.dtype())),
        };
        Ok((storage, Shape::from(self.kernel)))
    }
}

/// Per-thread buffers: one patch matrix and one phase of the output.
struct Scratch<T> {
    patches: Vec<T>,
    phase_out: Vec<T>,
}

impl<T: Float> Scratch<T> {
    fn new(plan: &ConvPlan) -> Self {
        let rows = plan
            .phases
            .iter()
            .map(|p| p.patches.rows())
            .max()
            .unwrap_or(0);
        let pixels = plan.input.0 * plan.input.1;
        Self {
            patches: vec![T::ZERO; rows * pixels],
            phase_out: vec![T::ZERO; plan.c_out * pixels],
        }
    }
}

/// y_n = kernel_p [O, rows] x patches_p(x_n) [rows, HW] for every image n and phase p, plus
/// the bias of each output channel.
fn forward<T: Float>(plan: &ConvPlan, (x, w, bias): (&[T], &[T], &[T])) -> Vec<T> {
    let kernels: Vec<Vec<T>> = plan
        .phases
        .iter()
        .map(|p| plan.gather_kernel(p, w))
        .collect();
    let mut y = vec![T::ZERO; plan.batch * plan.output_len()];
    let images = x.par_chunks(plan.input_len());
    let outputs = y.par_chunks_mut(plan.output_len());
    images.zip(outputs).for_each_init(
        || Scratch::new(plan),
        |scratch, (image, out)| {
            for (phase, kernel) in plan.phases.iter().zip(&kernels) {
                forward_phase(plan, phase, kernel, image, out, scratch);
            }
            add_bias(out, bias);
        },
    );
    y
}

/// Adds bias[o] to every pixel of channel o of one output image [O, Ho * Wo].
fn add_bias<T: Float>(out: &mut [T], bias: &[T]) {
    let pixels = out.len() / bias.len();
    for (plane, &b) in out.chunks_mut(pixels).zip(bias) {
        plane.iter_mut().for_each(|v| *v += b);
    }
}

fn forward_phase<T: Float>(
    plan: &ConvPlan,
    phase: &Phase,
    kernel: &[T],
    image: &[T],
    out: &mut [T],
    scratch: &mut Scratch<T>,
) {
    let geom = &phase.patches;
    let patches = &mut scratch.patches[..geom.rows() * geom.pixels()];
    im2col(geom, image, patches);
    let kernel = MatRef::new(kernel, plan.c_out, geom.rows());
    let patches = MatRef::new(patches, geom.rows(), geom.pixels());
    if plan.is_direct() {
        matmul(kernel, patches, out, false);
    } else {
        matmul(kernel, patches, &mut scratch.phase_out, false);
        plan.scatter_output(phase, &scratch.phase_out, out);
    }
}

/// dpatches_p = kernel_p^T x dy_p [O, HW], then col2im onto dx_n, for every image and phase.
fn input_grad<T: Float>(plan: &ConvPlan, dy: &[T], w: &[T]) -> Vec<T> {
    let kernels: Vec<Vec<T>> = plan
        .phases
        .iter()
        .map(|p| plan.gather_kernel(p, w))
        .collect();
    let mut dx = vec![T::ZERO; plan.batch * plan.input_len()];
    let grads = dy.par_chunks(plan.output_len());
    let inputs = dx.par_chunks_mut(plan.input_len());
    grads.zip(inputs).for_each_init(
        || Scratch::new(plan),
        |scratch, (grad, image)| {
            for (phase, kernel) in plan.phases.iter().zip(&kernels) {
                input_grad_phase(plan, phase, kernel, grad, image, scratch);
            }
        },
    );
    dx
}

fn input_grad_phase<T: Float>(
    plan: &ConvPlan,
    phase: &Phase,
    kernel: &[T],
    grad: &[T],
    image: &mut [T],
    scratch: &mut Scratch<T>,
) {
    let geom = &phase.patches;
    let kernel_t = MatRef::new(kernel, plan.c_out, geom.rows()).t();
    let grad = phase_grad(plan, phase, grad, &mut scratch.phase_out);
    let patches = &mut scratch.patches[..geom.rows() * geom.pixels()];
    matmul(kernel_t, grad, patches, false);
    col2im(geom, patches, image);
}

/// The output gradient of one phase as a matrix [O, HW]: the image's own gradient when the
/// plan writes in place, else the phase's pixels gathered into `buf`.
fn phase_grad<'a, T: Float>(
    plan: &ConvPlan,
    phase: &Phase,
    grad: &'a [T],
    buf: &'a mut [T],
) -> MatRef<'a, T> {
    let pixels = phase.patches.pixels();
    if plan.is_direct() {
        return MatRef::new(grad, plan.c_out, pixels);
    }
    plan.gather_output(phase, grad, buf);
    MatRef::new(buf, plan.c_out, pixels)
}

/// dkernel = sum over images n and phases p of dy_p [O, HW] x patches_p(x_n)^T [HW, rows].
///
/// Images are split into one contiguous group per rayon thread, and each group sums into its
/// own buffers. The buffers are added in group order, so the result depends on the thread
/// count but not on scheduling.
fn kernel_grad<T: Float>(plan: &ConvPlan, x: &[T], dy: &[T]) -> Vec<T> {
    let groups = rayon::current_num_threads().clamp(1, plan.batch.max(1));
    let per_group = plan.batch.div_ceil(groups);
    let partials: Vec<Vec<Vec<T>>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let images = g * per_group..((g + 1) * per_group).min(plan.batch);
            kernel_grad_group(plan, x, dy, images)
        })
        .collect();
    let mut total = vec![T::ZERO; plan.kernel_len()];
    for partial in &partials {
        for (phase, grad) in plan.phases.iter().zip(partial) {
            plan.scatter_kernel(phase, grad, &mut total);
        }
    }
    total
}

fn kernel_grad_group<T: Float>(
    plan: &ConvPlan,
    x: &[T],
    dy: &[T],
    images: std::ops::Range<usize>,
) -> Vec<Vec<T>> {
    let mut sums: Vec<Vec<T>> = plan
        .phases
        .iter()
        .map(|p| vec![T::ZERO; plan.c_out * p.patches.rows()])
        .collect();
    let mut scratch = Scratch::new(plan);
    for n in images {
        let image = &x[n * plan.input_len()..(n + 1) * plan.input_len()];
        let grad = &dy[n * plan.output_len()..(n + 1) * plan.output_len()];
        for (phase, sum) in plan.phases.iter().zip(&mut sums) {
            let geom = &phase.patches;
            let patches = &mut scratch.patches[..geom.rows() * geom.pixels()];
            im2col(geom, image, patches);
            let patches_t = MatRef::new(patches, geom.rows(), geom.pixels()).t();
            let grad = phase_grad(plan, phase, grad, &mut scratch.phase_out);
            matmul(grad, patches_t, sum, true);
        }
    }
    sums
}

fn dtype_error(op: &str, a: DType, b: DType) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "{op} supports F32 or F64 inputs of one dtype, got {a:?} and {b:?}"
    ))
}
