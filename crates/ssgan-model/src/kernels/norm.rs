//! Batch-norm kernels over NCHW planes: per-channel moments and the normalise-and-modulate
//! step, each one pass over the data, with their backward passes.
//!
//! candle 0.11 sums over the batch and spatial dimensions (`sum((0, 2, 3))`, and the backward
//! of every broadcast op) on one thread with strided access, which took about a third of the
//! 32x32 model's step. These ops walk contiguous [H, W] planes split across the rayon pool.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::Float;
use super::storage::slice;

/// Computes per-channel sums of x [N, C, H, W] and of its squares, as one tensor [2 * C]
/// with the sums first, in x's dtype. The kernel runs for F32 and F64 on the CPU, and other
/// devices and dtypes use candle's own reductions. Differentiable.
pub fn channel_moments(x: &Tensor) -> candle_core::Result<Tensor> {
    if !on_kernels(x) {
        let sums = x.sum((0, 2, 3))?;
        return Tensor::cat(&[&sums, &x.sqr()?.sum((0, 2, 3))?], 0);
    }
    x.contiguous()?.apply_op1(ChannelMoments)
}

/// Computes y = (x - mean[c]) * inv_std[c] * gamma[n, c] + beta[n, c] for x [N, C, H, W],
/// with `stats` [2, C] = (mean, inv_std) and `affine` [N, 2, C] = (gamma, beta) per image.
/// Same shape and dtype as x. Differentiable in all three inputs.
pub fn normalize_affine(
    x: &Tensor,
    stats: &Tensor,
    affine: &Tensor,
) -> candle_core::Result<Tensor> {
    if !on_kernels(x) {
        return normalize_affine_reference(x, stats, affine);
    }
    let (stats, affine) = (stats.contiguous()?, affine.contiguous()?);
    x.contiguous()?.apply_op3(&stats, &affine, NormalizeAffine)
}

/// The same function from candle's ops, for other devices and dtypes.
fn normalize_affine_reference(
    x: &Tensor,
    stats: &Tensor,
    affine: &Tensor,
) -> candle_core::Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let per_channel = |row: usize| stats.get(row)?.reshape((1, c, 1, 1));
    let per_image = |row: usize| affine.narrow(1, row, 1)?.reshape((n, c, 1, 1));
    let centred = x.broadcast_sub(&per_channel(0)?)?;
    let scaled = centred.broadcast_mul(&per_channel(1)?)?;
    scaled
        .broadcast_mul(&per_image(0)?)?
        .broadcast_add(&per_image(1)?)
}

fn on_kernels(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.rank() == 4
}

struct ChannelMoments;

/// Backward of [`ChannelMoments`]: (x, g [2C]) -> dx = g_sum[c] + 2 x g_sq[c].
struct ChannelMomentsGrad;

struct NormalizeAffine;

/// Input gradient of [`NormalizeAffine`]: (dy, stats, affine) -> dx.
struct NormalizeAffineInputGrad;

/// Plane sums for the other gradients: (x, dy, stats) -> [N, 2, C] holding
/// A = sum_hw dy and B = sum_hw dy (x - mean).
struct NormalizeAffinePlaneSums;

impl CustomOp1 for ChannelMoments {
    fn name(&self) -> &'static str {
        "channel-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let dims = Planes { n, c, hw: h * w };
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(moments(dims, slice(x, l)?)),
            CpuStorage::F64(x) => CpuStorage::F64(moments(dims, slice(x, l)?)),
            other => return Err(dtype_error(self.name(), other.dtype())),
        };
        Ok((out, Shape::from(2 * c)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = g.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&g, &ChannelMomentsGrad)?))
    }
}

impl CustomOp2 for ChannelMomentsGrad {
    fn name(&self) -> &'static str {
        "channel-moments-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let dims = Planes { n, c, hw: h * w };
        let out = match (x, g) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(moments_grad(dims, slice(x, xl)?, slice(g, gl)?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(moments_grad(dims, slice(x, xl)?, slice(g, gl)?))
            }
            _ => return Err(dtype_error(self.name(), x.dtype())),
        };
        Ok((out, xl.shape().clone()))
    }
}

impl CustomOp3 for NormalizeAffine {
    fn name(&self) -> &'static str {
        "normalize-affine"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        stats: &CpuStorage,
        sl: &Layout,
        affine: &CpuStorage,
        al: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let dims = Planes { n, c, hw: h * w };
        let out = match (x, stats, affine) {
            (CpuStorage::F32(x), CpuStorage::F32(s), CpuStorage::F32(a)) => {
                let (x, s, a) = (slice(x, xl)?, slice(s, sl)?, slice(a, al)?);
                CpuStorage::F32(map_planes(dims, x, |i, v| affine_plane(dims, i, v, s, a)))
            }
            (CpuStorage::F64(x), CpuStorage::F64(s), CpuStorage::F64(a)) => {
                let (x, s, a) = (slice(x, xl)?, slice(s, sl)?, slice(a, al)?);
                CpuStorage::F64(map_planes(dims, x, |i, v| affine_plane(dims, i, v, s, a)))
            }
            _ => return Err(dtype_error(self.name(), x.dtype())),
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = match x.track_op() {
            true => Some(dy.apply_op3_no_bwd(stats, affine, &NormalizeAffineInputGrad)?),
            false => None,
        };
        if !stats.track_op() && !affine.track_op() {
            return Ok((dx, None, None));
        }
        let sums = x.apply_op3_no_bwd(&dy, stats, &NormalizeAffinePlaneSums)?;
        let (plane_sum, centred_sum) = (sums.narrow(1, 0, 1)?, sums.narrow(1, 1, 1)?);
        let (gamma, inv_std) = (affine.narrow(1, 0, 1)?, stats.narrow(0, 1, 1)?);
        let dgamma = centred_sum.broadcast_mul(&inv_std)?;
        let daffine = Tensor::cat(&[&dgamma, &plane_sum], 1)?;
        let dmean = (plane_sum * &gamma)?
            .sum(0)?
            .broadcast_mul(&inv_std)?
            .neg()?;
        let dinv_std = (centred_sum * &gamma)?.sum(0)?;
        let dstats = Tensor::cat(&[&dmean, &dinv_std], 0)?;
        Ok((dx, Some(dstats), Some(daffine)))
    }
}

impl CustomOp3 for NormalizeAffineInputGrad {
    fn name(&self) -> &'static str {
        "normalize-affine-input-grad"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dl: &Layout,
        stats: &CpuStorage,
        sl: &Layout,
        affine: &CpuStorage,
        al: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dl.shape().dims4()?;
        let dims = Planes { n, c, hw: h * w };
        let out = match (dy, stats, affine) {
            (CpuStorage::F32(g), CpuStorage::F32(s), CpuStorage::F32(a)) => {
                let (g, s, a) = (slice(g, dl)?, slice(s, sl)?, slice(a, al)?);
                CpuStorage::F32(map_planes(dims, g, |i, v| scale_plane(dims, i, v, s, a)))
            }
            (CpuStorage::F64(g), CpuStorage::F64(s), CpuStorage::F64(a)) => {
                let (g, s, a) = (slice(g, dl)?, slice(s, sl)?, slice(a, al)?);
                CpuStorage::F64(map_planes(dims, g, |i, v| scale_plane(dims, i, v, s, a)))
            }
            _ => return Err(dtype_error(self.name(), dy.dtype())),
        };
        Ok((out, dl.shape().clone()))
    }
}

impl CustomOp3 for NormalizeAffinePlaneSums {
    fn name(&self) -> &'static str {
        "normalize-affine-plane-sums"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        dy: &CpuStorage,
        dl: &Layout,
        stats: &CpuStorage,
        sl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let dims = Planes { n, c, hw: h * w };
        let out = match (x, dy, stats) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(s)) => CpuStorage::F32(
                plane_sums(dims, slice(x, xl)?, slice(g, dl)?, slice(s, sl)?),
            ),
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(s)) => CpuStorage::F64(
                plane_sums(dims, slice(x, xl)?, slice(g, dl)?, slice(s, sl)?),
            ),
            _ => return Err(dtype_error(self.name(), x.dtype())),
        };
        Ok((out, Shape::from((n, 2, c))))
    }
}

/// Sizes of an NCHW tensor seen as N * C planes of H * W values.
#[derive(Clone, Copy)]
struct Planes {
    n: usize,
    c: usize,
    hw: usize,
}

/// Sums and sums of squares per channel. Each channel is summed by one thread, plane by plane
/// in image order, so the result does not depend on the thread count.
fn moments<T: Float>(dims: Planes, x: &[T]) -> Vec<T> {
    let per_channel: Vec<(T, T)> = (0..dims.c)
        .into_par_iter()
        .map(|c| {
            let mut sums = (T::ZERO, T::ZERO);
            for n in 0..dims.n {
                let plane = &x[(n * dims.c + c) * dims.hw..][..dims.hw];
                for &v in plane {
                    sums.0 += v;
                    sums.1 += v * v;
                }
            }
            sums
        })
        .collect();
    let mut out: Vec<T> = per_channel.iter().map(|s| s.0).collect();
    out.extend(per_channel.iter().map(|s| s.1));
    out
}

fn moments_grad<T: Float>(dims: Planes, x: &[T], g: &[T]) -> Vec<T> {
    map_planes(dims, x, |i, plane| {
        let c = i % dims.c;
        let (g_sum, g_sq) = (g[c], g[dims.c + c] + g[dims.c + c]);
        plane.iter_mut().for_each(|v| *v = g_sum + g_sq * *v);
    })
}

/// Copies `src` and applies `f(plane index n * C + c, plane)` to every plane, in parallel.
fn map_planes<T: Float>(dims: Planes, src: &[T], f: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = src.to_vec();
    out.par_chunks_mut(dims.hw.max(1))
        .enumerate()
        .for_each(|(i, plane)| f(i, plane));
    out
}

/// (v - mean) * inv_std * gamma + beta over one plane.
fn affine_plane<T: Float>(dims: Planes, index: usize, plane: &mut [T], stats: &[T], affine: &[T]) {
    let (n, c) = (index / dims.c, index % dims.c);
    let (mean, inv_std) = (stats[c], stats[dims.c + c]);
    let gamma = affine[n * 2 * dims.c + c];
    let beta = affine[n * 2 * dims.c + dims.c + c];
    let scale = inv_std * gamma;
    plane
        .iter_mut()
        .for_each(|v| *v = (*v - mean) * scale + beta);
}

/// dy * inv_std * gamma over one plane.
fn scale_plane<T: Float>(dims: Planes, index: usize, plane: &mut [T], stats: &[T], affine: &[T]) {
    let (n, c) = (index / dims.c, index % dims.c);
    let scale = stats[dims.c + c] * affine[n * 2 * dims.c + c];
    plane.iter_mut().for_each(|v| *v = *v * scale);
}

fn plane_sums<T: Float>(dims: Planes, x: &[T], dy: &[T], stats: &[T]) -> Vec<T> {
    let sums: Vec<(T, T)> = (0..dims.n * dims.c)
        .into_par_iter()
        .map(|i| {
            let mean = stats[i % dims.c];
            let (xs, gs) = (&x[i * dims.hw..][..dims.hw], &dy[i * dims.hw..][..dims.hw]);
            let mut sums = (T::ZERO, T::ZERO);
            for (&v, &g) in xs.iter().zip(gs) {
                sums.0 += g;
                sums.1 += g * (v - mean);
            }
            sums
        })
        .collect();
    let mut out = vec![T::ZERO; dims.n * 2 * dims.c];
    for (i, (a, b)) in sums.into_iter().enumerate() {
        let (n, c) = (i / dims.c, i % dims.c);
        out[n * 2 * dims.c + c] = a;
        out[n * 2 * dims.c + dims.c + c] = b;
    }
    out
}

fn dtype_error(op: &str, dtype: DType) -> candle_core::Error {
    candle_core::Error::msg(format!("{op} supports F32 or F64 inputs, got {dtype:?}"))
}
