//! Forward-only 2D convolutions on the CPU for inference networks such as the FID
//! InceptionV3. They take any kh x kw kernel, one stride for both axes and zero padding per
//! axis, and apply a per-output-channel scale, shift (an eval-mode batch norm) and ReLU in the
//! same op.
//!
//! Each image's patch matrix [C * kh * kw, Ho * Wo] is written into a buffer that one worker
//! thread reuses for all its images, then multiplied by the kernel matrix [O, C * kh * kw]
//! with GEMM. A 1x1 convolution with stride 1 and no padding skips im2col, because the image
//! [C, H * W] is already its own patch matrix. The batch is split into one contiguous group of
//! images per rayon thread.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::{Float, MatRef, matmul};
use super::storage::slice;

/// Stride and zero padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Step between neighbouring output positions in input pixels, on both axes; at least 1.
    pub stride: usize,
    /// Zeros added on both sides of the input, (rows, columns).
    pub padding: (usize, usize),
}

impl Default for ConvGeometry {
    /// Stride 1 and no padding.
    fn default() -> Self {
        Self {
            stride: 1,
            padding: (0, 0),
        }
    }
}

/// Per-output-channel steps applied to the convolution output y in the same op:
/// `y * scale[o] + shift[o]`, then `max(y, 0)` when `relu` is set.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Factor per output channel, shape [O]. Absent means 1.
    pub scale: Option<&'a Tensor>,
    /// Offset per output channel (a bias or a folded batch-norm shift), shape [O]. Absent
    /// means 0.
    pub shift: Option<&'a Tensor>,
    /// Rectifies the result.
    pub relu: bool,
}

/// Convolves x [N, C, H, W] with kernel [O, C, kh, kw] (no groups, no dilation) and applies
/// the epilogue, giving [N, O, Ho, Wo] with Ho = (H + 2 * padding.0 - kh) / stride + 1 and
/// Wo = (W + 2 * padding.1 - kw) / stride + 1, rounded down as in PyTorch.
///
/// x, kernel, scale and shift share one dtype and may hold any values. Inference only: the
/// result has no gradient. On the CPU with F32 or F64 this runs im2col + GEMM. Other devices
/// and dtypes run candle's conv2d and element-wise ops.
///
/// # Errors
///
/// Returns an error when the shapes do not match, when C, H, W, kh or kw is 0, when the
/// stride is 0, or when the padded input is smaller than the kernel.
pub fn conv2d_inference(
    x: &Tensor,
    kernel: &Tensor,
    geometry: ConvGeometry,
    epilogue: Epilogue,
) -> candle_core::Result<Tensor> {
    let plan = InferencePlan::new(x.dims4()?, kernel.dims4()?, geometry)?;
    let on_kernels = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if !on_kernels {
        return candle_conv2d(x, kernel, geometry, epilogue);
    }
    let affine = epilogue_tensor(&plan, kernel, epilogue)?;
    let op = InferenceConvOp {
        plan,
        relu: epilogue.relu,
    };
    x.contiguous()?
        .apply_op3_no_bwd(&kernel.contiguous()?, &affine, &op)
}

/// The same function from candle's own ops, for devices and dtypes the kernels lack.
fn candle_conv2d(
    x: &Tensor,
    kernel: &Tensor,
    geometry: ConvGeometry,
    epilogue: Epilogue,
) -> candle_core::Result<Tensor> {
    let (ph, pw) = geometry.padding;
    let mut y = if ph == pw {
        x.conv2d(kernel, ph, geometry.stride, 1, 1)?
    } else {
        let padded = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
        padded.conv2d(kernel, 0, geometry.stride, 1, 1)?
    };
    if let Some(scale) = epilogue.scale {
        y = y.broadcast_mul(&scale.reshape((1, (), 1, 1))?)?;
    }
    if let Some(shift) = epilogue.shift {
        y = y.broadcast_add(&shift.reshape((1, (), 1, 1))?)?;
    }
    if epilogue.relu { y.relu() } else { Ok(y) }
}

/// Stacks the epilogue into one contiguous [2, O] tensor of the kernel's dtype: the scales,
/// then the shifts.
fn epilogue_tensor(
    plan: &InferencePlan,
    kernel: &Tensor,
    epilogue: Epilogue,
) -> candle_core::Result<Tensor> {
    let channels = plan.c_out;
    let (dtype, device) = (kernel.dtype(), kernel.device());
    let row = |value: Option<&Tensor>, name: &str, default: f64| match value {
        Some(t) if t.dims() == [channels] => t.to_dtype(dtype),
        Some(t) => Err(candle_core::Error::msg(format!(
            "conv2d_inference: {name} has shape {:?}, expected [{channels}], one value per \
             output channel",
            t.dims()
        ))),
        None => Tensor::full(default, channels, device)?.to_dtype(dtype),
    };
    let scale = row(epilogue.scale, "scale", 1.0)?;
    let shift = row(epilogue.shift, "shift", 0.0)?;
    Tensor::stack(&[scale, shift], 0)?.contiguous()
}

/// Shapes of one inference convolution.
#[derive(Clone, Copy, Debug)]
struct InferencePlan {
    batch: usize,
    channels: usize,
    /// (H, W) of the input.
    input: (usize, usize),
    c_out: usize,
    /// (kh, kw).
    kernel: (usize, usize),
    stride: usize,
    padding: (usize, usize),
    /// (Ho, Wo) of the output.
    output: (usize, usize),
}

impl InferencePlan {
    /// Checks the shapes of x [N, C, H, W] and the kernel [O, C, kh, kw] and computes the
    /// output size.
    fn new(
        x: (usize, usize, usize, usize),
        kernel: (usize, usize, usize, usize),
        geometry: ConvGeometry,
    ) -> candle_core::Result<Self> {
        let (batch, channels, h, w) = x;
        let (c_out, kernel_channels, kh, kw) = kernel;
        let (ph, pw) = geometry.padding;
        let valid = channels == kernel_channels
            && [channels, h, w, kh, kw, geometry.stride]
                .iter()
                .all(|&d| d > 0)
            && h + 2 * ph >= kh
            && w + 2 * pw >= kw;
        if !valid {
            return Err(candle_core::Error::msg(format!(
                "conv2d_inference: input {x:?} and kernel {kernel:?} with {geometry:?} do not \
                 match; expected [N, C, H, W] and [O, C, kh, kw] with C, H, W, kh, kw and the \
                 stride at least 1 and the padded input at least as large as the kernel"
            )));
        }
        let output = (
            (h + 2 * ph - kh) / geometry.stride + 1,
            (w + 2 * pw - kw) / geometry.stride + 1,
        );
        Ok(Self {
            batch,
            channels,
            input: (h, w),
            c_out,
            kernel: (kh, kw),
            stride: geometry.stride,
            padding: geometry.padding,
            output,
        })
    }

    fn input_len(&self) -> usize {
        self.channels * self.input.0 * self.input.1
    }

    fn output_pixels(&self) -> usize {
        self.output.0 * self.output.1
    }

    fn output_len(&self) -> usize {
        self.c_out * self.output_pixels()
    }

    /// Rows of the patch matrix: one per (channel, kernel row, kernel column).
    fn patch_rows(&self) -> usize {
        self.channels * self.kernel.0 * self.kernel.1
    }

    /// Returns whether the image is its own patch matrix: a 1x1 kernel, stride 1, no padding.
    fn is_pointwise(&self) -> bool {
        self.kernel == (1, 1) && self.stride == 1 && self.padding == (0, 0)
    }
}

/// Forward op: (x, kernel, [scale; shift]) -> y.
struct InferenceConvOp {
    plan: InferencePlan,
    relu: bool,
}

impl CustomOp3 for InferenceConvOp {
    fn name(&self) -> &'static str {
        "conv2d-inference"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        a: &CpuStorage,
        a_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let plan = &self.plan;
        let shape = Shape::from((plan.batch, plan.c_out, plan.output.0, plan.output.1));
        let layouts = [x_layout, w_layout, a_layout];
        let storage = match (x, w, a) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(a)) => {
                CpuStorage::F32(self.run([x, w, a], layouts)?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(a)) => {
                CpuStorage::F64(self.run([x, w, a], layouts)?)
            }
            _ => {
                return Err(candle_core::Error::msg(
                    "conv2d_inference: x, kernel, scale and shift must all be F32 or all F64",
                ));
            }
        };
        Ok((storage, shape))
    }
}

impl InferenceConvOp {
    /// Runs the op on the storages of x, the kernel and [scale; shift].
    fn run<T: Float>(&self, data: [&[T]; 3], layouts: [&Layout; 3]) -> candle_core::Result<Vec<T>> {
        let [x, w, a] = data;
        let (x, w) = (slice(x, layouts[0])?, slice(w, layouts[1])?);
        let affine = slice(a, layouts[2])?;
        Ok(forward(&self.plan, x, w, affine, self.relu))
    }
}

/// Computes y_n = epilogue(kernel [O, rows] x patches(x_n) [rows, Ho * Wo]) for every image n,
/// with `affine` = [scale; shift] of shape [2, O].
fn forward<T: Float>(plan: &InferencePlan, x: &[T], w: &[T], affine: &[T], relu: bool) -> Vec<T> {
    let mut y = vec![T::ZERO; plan.batch * plan.output_len()];
    if y.is_empty() {
        return y;
    }
    // NOTE: a batch smaller than the thread count leaves threads idle, because the GEMM of an
    // image runs on one thread.
    let group = plan.batch.div_ceil(rayon::current_num_threads().max(1));
    let inputs = x.par_chunks(group * plan.input_len());
    let outputs = y.par_chunks_mut(group * plan.output_len());
    inputs.zip(outputs).for_each(|(images, outs)| {
        forward_group(plan, w, affine, relu, images, outs);
    });
    y
}

/// Convolves consecutive images on the calling thread with one patch buffer.
fn forward_group<T: Float>(
    plan: &InferencePlan,
    w: &[T],
    affine: &[T],
    relu: bool,
    images: &[T],
    outs: &mut [T],
) {
    let (rows, pixels) = (plan.patch_rows(), plan.output_pixels());
    let mut patches = match plan.is_pointwise() {
        true => Vec::new(),
        false => vec![T::ZERO; rows * pixels],
    };
    let kernel = MatRef::new(w, plan.c_out, rows);
    let images = images.chunks_exact(plan.input_len());
    for (image, out) in images.zip(outs.chunks_exact_mut(plan.output_len())) {
        let columns = if plan.is_pointwise() {
            image
        } else {
            im2col_strided(plan, image, &mut patches);
            &patches
        };
        matmul(kernel, MatRef::new(columns, rows, pixels), out, false);
        apply_epilogue(out, pixels, affine, relu);
    }
}

/// Computes `y * scale[o] + shift[o]` (then the ReLU) on each channel row of `out` [O, pixels].
fn apply_epilogue<T: Float>(out: &mut [T], pixels: usize, affine: &[T], relu: bool) {
    let (scale, shift) = affine.split_at(affine.len() / 2);
    for ((row, &s), &b) in out.chunks_exact_mut(pixels).zip(scale).zip(shift) {
        for value in row {
            let y = *value * s + b;
            *value = if relu && y < T::ZERO { T::ZERO } else { y };
        }
    }
}

/// Writes the patch matrix of `image` [C, H, W] into `patches` [C * kh * kw, Ho * Wo].
///
/// Row (c, i, j) contains x[c, oh * stride + i - ph, ow * stride + j - pw] at column
/// oh * Wo + ow, and zero where that position lies in the padding.
fn im2col_strided<T: Float>(plan: &InferencePlan, image: &[T], patches: &mut [T]) {
    let (h, w) = plan.input;
    let (kh, kw) = plan.kernel;
    let mut rows = patches.chunks_exact_mut(plan.output_pixels());
    for plane in image.chunks_exact(h * w) {
        for i in 0..kh {
            for j in 0..kw {
                let row = rows.next().expect("patch buffer has C * kh * kw rows");
                fill_patch_row(plan, plane, (i, j), row);
            }
        }
    }
}

/// Fills one patch row [Ho * Wo] from one input plane [H, W] for the kernel tap (i, j).
fn fill_patch_row<T: Float>(plan: &InferencePlan, plane: &[T], tap: (usize, usize), row: &mut [T]) {
    let (h, w) = plan.input;
    let (ho, wo) = plan.output;
    let row_offset = tap.0 as isize - plan.padding.0 as isize;
    let column_offset = tap.1 as isize - plan.padding.1 as isize;
    let rows = valid_outputs(h, ho, row_offset, plan.stride);
    let columns = valid_outputs(w, wo, column_offset, plan.stride);
    for (oh, out) in row.chunks_exact_mut(wo).enumerate() {
        if !(rows.0..rows.1).contains(&oh) {
            out.fill(T::ZERO);
            continue;
        }
        let ih = (oh * plan.stride) as isize + row_offset;
        let line = &plane[ih as usize * w..][..w];
        gather_line(line, out, columns, column_offset, plan.stride);
    }
}

/// Copies input[ow * stride + offset] to out[ow] for ow in `valid` and zeroes the rest.
fn gather_line<T: Float>(
    input: &[T],
    out: &mut [T],
    valid: (usize, usize),
    offset: isize,
    stride: usize,
) {
    let (start, end) = valid;
    out[..start].fill(T::ZERO);
    out[end..].fill(T::ZERO);
    if start == end {
        return;
    }
    let first = ((start * stride) as isize + offset) as usize;
    let targets = &mut out[start..end];
    if stride == 1 {
        targets.copy_from_slice(&input[first..first + targets.len()]);
        return;
    }
    let sources = input[first..].iter().step_by(stride);
    for (target, &source) in targets.iter_mut().zip(sources) {
        *target = source;
    }
}

/// Returns the range [start, end) of output positions o < `outputs` along one axis whose
/// input position o * stride + offset lies inside [0, size).
fn valid_outputs(size: usize, outputs: usize, offset: isize, stride: usize) -> (usize, usize) {
    let stride = stride as isize;
    let start = if offset >= 0 {
        0
    } else {
        (-offset + stride - 1) / stride
    };
    let last_input = size as isize - 1 - offset;
    let end = if last_input < 0 {
        0
    } else {
        (last_input / stride + 1).min(outputs as isize)
    };
    let start = start.min(end);
    (start as usize, end as usize)
}

#[cfg(test)]
mod tests {
    use super::valid_outputs;

    #[test]
    fn valid_outputs_stride_one_padding() {
        // Size 5, padding 1, tap 0: output 0 reads input -1.
        assert_eq!(valid_outputs(5, 5, -1, 1), (1, 5));
        // Tap 2: output 4 reads input 5.
        assert_eq!(valid_outputs(5, 5, 1, 1), (0, 4));
    }

    #[test]
    fn valid_outputs_stride_two() {
        // Size 7, kernel 3, no padding: outputs 0..3 read 0..7.
        assert_eq!(valid_outputs(7, 3, 2, 2), (0, 3));
        // Padding 2 with offset -2: outputs 1.. read inputs 0, 2, 4.
        assert_eq!(valid_outputs(5, 4, -2, 2), (1, 4));
        // Offset -3: output 2 reads input 1, output 1 reads -1.
        assert_eq!(valid_outputs(5, 4, -3, 2), (2, 4));
    }

    #[test]
    fn valid_outputs_all_in_padding() {
        let (start, end) = valid_outputs(1, 3, -5, 1);
        assert_eq!(start, end);
        assert_eq!(valid_outputs(1, 3, 2, 1), (0, 0));
    }
}
