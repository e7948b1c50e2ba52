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
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use super::conv_compute::{AddendData, FusedPlan, Fusion, forward, input_grad, kernel_grad};
use super::plan::{ConvKind, ConvPlan};
use super::storage::{dtype_error, slice};

/// The term that a fused convolution adds to its (pooled) output.
#[derive(Clone, Copy)]
pub enum Addend<'a> {
    /// Nothing.
    None,
    /// A bias [O], one value per output channel.
    Bias(&'a Tensor),
    /// A residual of the op's output shape [N, O, Ho', Wo'], for example a shortcut branch.
    Residual(&'a Tensor),
}

/// Convolves x [N, C, H, W] with kernel [O, C, k, k] (k odd), stride 1, zero padding k / 2,
/// and adds `bias` [O] when given, giving [N, O, H, W].
///
/// All tensors must have the same dtype, F32 or F64, and any values. On the CPU this runs the
/// im2col + GEMM op, whose backward uses the same kernels. On other devices it calls candle's
/// conv2d.
pub fn conv2d_same(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let addend = bias.map_or(Addend::None, Addend::Bias);
    conv2d_fused(ConvKind::Same, x, kernel, addend, Fusion::default())
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
    let addend = bias.map_or(Addend::None, Addend::Bias);
    conv2d_fused(
        ConvKind::ZeroUpsampled,
        x,
        kernel,
        addend,
        Fusion::default(),
    )
}

/// Computes `addend + pool(conv(relu(x)))` for a convolution of `kind` of x [N, C, H, W] with
/// kernel [O, C, k, k] (k odd), where the ReLU and the 2x2 average pooling run only when
/// `fusion` enables them.
///
/// The output is [N, O, Ho, Wo] with (Ho, Wo) = (H, W) for `Same` and (2H, 2W) for
/// `ZeroUpsampled`, halved when pooling (the unpooled size must then be even). A residual
/// addend must have that output shape. All tensors share one dtype, F32 or F64, with any
/// values. Differentiable in every input, through the same kernels on the CPU; other devices
/// and dtypes run candle's ops.
pub fn conv2d_fused(
    kind: ConvKind,
    x: &Tensor,
    kernel: &Tensor,
    addend: Addend,
    fusion: Fusion,
) -> candle_core::Result<Tensor> {
    let plan = checked_plan(kind, x, kernel, fusion)?;
    if !runs_on_kernels(x) {
        return candle_conv2d(kind, x, kernel, addend, fusion);
    }
    let addend = match addend {
        Addend::None => Tensor::zeros(plan.conv.c_out, kernel.dtype(), kernel.device())?,
        Addend::Bias(bias) => bias.contiguous()?,
        Addend::Residual(residual) => {
            let (h, w) = plan.output();
            let expected = [plan.conv.batch, plan.conv.c_out, h, w];
            if residual.dims() != expected {
                let message = format!(
                    "conv2d: residual {:?} does not match the output {expected:?}",
                    residual.dims()
                );
                return Err(candle_core::Error::msg(message));
            }
            residual.contiguous()?
        }
    };
    let op = ConvOp { kind, fusion };
    x.contiguous()?
        .apply_op3(&kernel.contiguous()?, &addend, op)
}

/// The same function from candle's own ops, for devices and dtypes the kernels lack.
fn candle_conv2d(
    kind: ConvKind,
    x: &Tensor,
    kernel: &Tensor,
    addend: Addend,
    fusion: Fusion,
) -> candle_core::Result<Tensor> {
    let x = if fusion.relu_input {
        x.relu()?
    } else {
        x.clone()
    };
    let x = match kind {
        ConvKind::Same => x,
        ConvKind::ZeroUpsampled => crate::resample::upsample(&x, crate::config::Upsample::Zeros)
            .map_err(candle_core::Error::wrap)?,
    };
    let y = x.conv2d(kernel, kernel.dim(3)? / 2, 1, 1, 1)?;
    let y = if fusion.pool_output {
        y.avg_pool2d(2)?
    } else {
        y
    };
    match addend {
        Addend::None => Ok(y),
        Addend::Bias(bias) => y.broadcast_add(&bias.reshape((1, (), 1, 1))?),
        Addend::Residual(residual) => y + residual,
    }
}

/// Computes the input gradient of a plain convolution of `kind`: dy [N, O, Ho, Wo] and kernel
/// [O, C, k, k] give dx [N, C, H, W]. CPU only, F32 or F64.
pub fn conv2d_input_grad(
    kind: ConvKind,
    dy: &Tensor,
    kernel: &Tensor,
) -> candle_core::Result<Tensor> {
    let op = InputGradOp {
        kind,
        fusion: Fusion::default(),
    };
    dy.contiguous()?
        .apply_op2_no_bwd(&kernel.contiguous()?, &op)
}

/// Computes the kernel gradient of a plain convolution of `kind`: x [N, C, H, W] and dy
/// [N, O, Ho, Wo] give the gradient of a kernel of shape `kernel` = (O, C, k, k). CPU only,
/// F32 or F64.
pub fn conv2d_kernel_grad(
    kind: ConvKind,
    x: &Tensor,
    dy: &Tensor,
    kernel: (usize, usize, usize, usize),
) -> candle_core::Result<Tensor> {
    fused_kernel_grad(kind, Fusion::default(), x, dy, kernel)
}

fn fused_kernel_grad(
    kind: ConvKind,
    fusion: Fusion,
    x: &Tensor,
    dy: &Tensor,
    kernel: (usize, usize, usize, usize),
) -> candle_core::Result<Tensor> {
    let op = KernelGradOp {
        kind,
        fusion,
        kernel,
    };
    x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &op)
}

/// Plans the op and checks the shapes of x and the kernel.
fn checked_plan(
    kind: ConvKind,
    x: &Tensor,
    kernel: &Tensor,
    fusion: Fusion,
) -> candle_core::Result<FusedPlan> {
    let (_, c, _, _) = x.dims4()?;
    let (o, c_kernel, k, k_w) = kernel.dims4()?;
    if c != c_kernel || k != k_w || k % 2 == 0 {
        let message = format!(
            "conv2d: input {:?} and kernel {:?} do not match; expected [N, C, H, W] and \
             [O, C, k, k] with odd k",
            x.dims(),
            kernel.dims()
        );
        return Err(candle_core::Error::msg(message));
    }
    let conv = ConvPlan::new(kind, x.dims4()?, (o, k));
    let (h, w) = conv.output;
    if fusion.pool_output && (h % 2 != 0 || w % 2 != 0) {
        let message = format!("conv2d: cannot pool an output of odd size {h}x{w} by 2x2");
        return Err(candle_core::Error::msg(message));
    }
    Ok(FusedPlan { conv, fusion })
}

fn runs_on_kernels(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Forward op: (x, kernel, addend) -> y, with the addend [O] or of y's shape.
struct ConvOp {
    kind: ConvKind,
    fusion: Fusion,
}

/// Input gradient: (dy, kernel) -> dx, or (dy, kernel, x) -> dx with a rectified input.
struct InputGradOp {
    kind: ConvKind,
    fusion: Fusion,
}

/// Kernel gradient: (x, dy) -> dkernel of shape `kernel`.
struct KernelGradOp {
    kind: ConvKind,
    fusion: Fusion,
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
        a: &CpuStorage,
        a_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (o, _, k, _) = w_layout.shape().dims4()?;
        let conv = ConvPlan::new(self.kind, x_layout.shape().dims4()?, (o, k));
        let plan = FusedPlan {
            conv,
            fusion: self.fusion,
        };
        let (h, width) = plan.output();
        let shape = Shape::from((plan.conv.batch, o, h, width));
        let is_bias = a_layout.shape().rank() == 1;
        let storage = match (x, w, a) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(a)) => {
                let (x, w) = (slice(x, x_layout)?, slice(w, w_layout)?);
                let addend = addend_data(slice(a, a_layout)?, is_bias);
                CpuStorage::F32(forward(&plan, x, w, addend))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(a)) => {
                let (x, w) = (slice(x, x_layout)?, slice(w, w_layout)?);
                let addend = addend_data(slice(a, a_layout)?, is_bias);
                CpuStorage::F64(forward(&plan, x, w, addend))
            }
            _ => return Err(dtype_error(self.name(), x.dtype(), w.dtype())),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        addend: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = match x.track_op() {
            true => Some(self.input_grad(&dy, kernel, x)?),
            false => None,
        };
        let dkernel = match kernel.track_op() {
            true => {
                let shape = kernel.dims4()?;
                Some(fused_kernel_grad(self.kind, self.fusion, x, &dy, shape)?)
            }
            false => None,
        };
        let daddend = match (addend.track_op(), addend.rank()) {
            (false, _) => None,
            // The parallel per-channel kernel: candle's sum((0, 2, 3)) runs on one thread.
            (true, 1) => Some(super::norm::channel_moments(&dy)?.narrow(0, 0, addend.dim(0)?)?),
            (true, _) => Some(dy),
        };
        Ok((dx, dkernel, daddend))
    }
}

impl ConvOp {
    fn input_grad(&self, dy: &Tensor, kernel: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let op = InputGradOp {
            kind: self.kind,
            fusion: self.fusion,
        };
        let kernel = kernel.contiguous()?;
        match self.fusion.relu_input {
            true => dy.apply_op3_no_bwd(&kernel, x, &op),
            false => dy.apply_op2_no_bwd(&kernel, &op),
        }
    }
}

impl InputGradOp {
    /// Plans the convolution whose output gradient has the layout `dy` and kernel `w`.
    fn plan(&self, dy: &Layout, w: &Layout) -> candle_core::Result<FusedPlan> {
        let (n, _, ho, wo) = dy.shape().dims4()?;
        let (o, c, k, _) = w.shape().dims4()?;
        let (ho, wo) = match self.fusion.pool_output {
            true => (2 * ho, 2 * wo),
            false => (ho, wo),
        };
        let (h, width) = match self.kind {
            ConvKind::Same => (ho, wo),
            ConvKind::ZeroUpsampled => (ho / 2, wo / 2),
        };
        let conv = ConvPlan::new(self.kind, (n, c, h, width), (o, k));
        Ok(FusedPlan {
            conv,
            fusion: self.fusion,
        })
    }

    fn run(
        &self,
        (dy, dy_layout): (&CpuStorage, &Layout),
        (w, w_layout): (&CpuStorage, &Layout),
        x: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let plan = self.plan(dy_layout, w_layout)?;
        let conv = &plan.conv;
        let shape = Shape::from((conv.batch, conv.c_in, conv.input.0, conv.input.1));
        let storage = match (dy, w, x) {
            (CpuStorage::F32(dy), CpuStorage::F32(w), x) => {
                let x = match x {
                    Some((CpuStorage::F32(x), l)) => Some(slice(x, l)?),
                    Some(_) => return Err(dtype_error(self.name(), DType::F32, DType::F64)),
                    None => None,
                };
                let (dy, w) = (slice(dy, dy_layout)?, slice(w, w_layout)?);
                CpuStorage::F32(input_grad(&plan, dy, w, x))
            }
            (CpuStorage::F64(dy), CpuStorage::F64(w), x) => {
                let x = match x {
                    Some((CpuStorage::F64(x), l)) => Some(slice(x, l)?),
                    Some(_) => return Err(dtype_error(self.name(), DType::F64, DType::F32)),
                    None => None,
                };
                let (dy, w) = (slice(dy, dy_layout)?, slice(w, w_layout)?);
                CpuStorage::F64(input_grad(&plan, dy, w, x))
            }
            _ => return Err(dtype_error(self.name(), dy.dtype(), w.dtype())),
        };
        Ok((storage, shape))
    }

    fn name(&self) -> &'static str {
        "conv2d-im2col-input-grad"
    }
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        InputGradOp::name(self)
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dy_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((dy, dy_layout), (w, w_layout), None)
    }
}

impl CustomOp3 for InputGradOp {
    fn name(&self) -> &'static str {
        InputGradOp::name(self)
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dy_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        x: &CpuStorage,
        x_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((dy, dy_layout), (w, w_layout), Some((x, x_layout)))
    }
}

impl CustomOp2 for KernelGradOp {
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
        let conv = ConvPlan::new(self.kind, x_layout.shape().dims4()?, (o, k));
        let plan = FusedPlan {
            conv,
            fusion: self.fusion,
        };
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

/// Reads the addend of [`ConvOp`]: a bias [O] when `is_bias`, else a residual.
fn addend_data<T>(data: &[T], is_bias: bool) -> AddendData<'_, T> {
    match is_bias {
        true => AddendData::Bias(data),
        false => AddendData::Residual(data),
    }
}
