//! CPU kernels that replace slow candle ops on the training hot path.

mod adam;
mod conv;
mod conv_compute;
mod im2col;
mod inference;
mod matmul;
mod norm;
mod plan;
mod pool;
mod storage;

pub use adam::{AdamCoefficients, adam_update_in_place, supports_in_place_adam};
pub use conv::{
    Addend, conv2d_fused, conv2d_input_grad, conv2d_kernel_grad, conv2d_same, conv2d_zero_upsampled,
};
pub use conv_compute::Fusion;
pub use inference::{ConvGeometry, Epilogue, conv2d_inference};
pub use norm::{channel_moments, normalize_affine};
pub use plan::ConvKind;
pub use pool::{PoolKind, PoolSpec, pool2d_inference};
