//! The SS-GAN model in candle: the ResNet generators and discriminators (32x32, 128x128), spectral norm,
//! synchronized and self-modulated batch norm, rotations, losses, Adam and the training step.
//!
//! Every network tensor is a [`candle_core::Var`] named in a [`ParamStore`]; state that the
//! forward pass updates (spectral-norm vectors, batch-norm running averages) is a buffer in the
//! same store, so a checkpoint of the store is the whole network.
//!
//! Error policy: every fallible function returns [`ModelError`]; shape mismatches inside the
//! networks surface as [`ModelError::Tensor`].

pub mod adam;
pub mod arch;
pub mod batch_norm;
pub mod config;
pub mod ctx;
pub mod discriminator;
mod error;
pub mod flops;
pub mod gan;
pub mod generator;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod params;
pub mod resample;
pub mod rotation;
pub mod spectral_norm;
#[cfg(test)]
mod test_support;

pub use config::{LossConfig, ModelConfig, OptimConfig, Precision};
pub use error::{ModelError, Result};
pub use gan::{DiscriminatorMetrics, GanSettings, GeneratorMetrics, SsGan, latent};
pub use params::ParamStore;
