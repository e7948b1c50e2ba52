//! The Mixed (Inception) blocks of pytorch-fid's FID InceptionV3 (pytorch-fid 0.3.0).
//!
//! A, C and E_1 differ from torchvision's InceptionA/C/E in their pooling branch: the 3x3
//! average pool excludes the padding from its divisor. E_2 (Mixed_7c) uses a 3x3 max pool
//! there instead. B (Mixed_6a) and D (Mixed_7a) are torchvision's blocks unchanged.

use candle_core::Tensor;

use super::layers::{
    BasicConv2d, Chain, ConvSpec, Loader, avg_pool_3x3_exclude_pad, max_pool_3x3_same,
    max_pool_3x3_stride2,
};
use crate::error::Result;

/// Loads the convolutions `prefix.name` in order into a [`Chain`].
fn chain(loader: &Loader, prefix: &str, layers: &[(&str, ConvSpec)]) -> Result<Chain> {
    let mut chain = Vec::with_capacity(layers.len());
    for (name, spec) in layers {
        chain.push(loader.conv(&format!("{prefix}.{name}"), *spec)?);
    }
    Ok(Chain(chain))
}

fn one(loader: &Loader, prefix: &str, name: &str, spec: ConvSpec) -> Result<BasicConv2d> {
    loader.conv(&format!("{prefix}.{name}"), spec)
}

/// FIDInceptionA: 64 + 64 + 96 + `pool_features` output channels, same H and W.
pub struct MixedA {
    branch1x1: BasicConv2d,
    branch5x5: Chain,
    branch3x3dbl: Chain,
    branch_pool: BasicConv2d,
}

impl MixedA {
    pub fn load(loader: &Loader, prefix: &str, input: usize, pool_features: usize) -> Result<Self> {
        let branch5x5 = [
            ("branch5x5_1", ConvSpec::square(input, 48, 1, 0)),
            ("branch5x5_2", ConvSpec::square(48, 64, 5, 2)),
        ];
        let branch3x3dbl = [
            ("branch3x3dbl_1", ConvSpec::square(input, 64, 1, 0)),
            ("branch3x3dbl_2", ConvSpec::square(64, 96, 3, 1)),
            ("branch3x3dbl_3", ConvSpec::square(96, 96, 3, 1)),
        ];
        Ok(Self {
            branch1x1: one(
                loader,
                prefix,
                "branch1x1",
                ConvSpec::square(input, 64, 1, 0),
            )?,
            branch5x5: chain(loader, prefix, &branch5x5)?,
            branch3x3dbl: chain(loader, prefix, &branch3x3dbl)?,
            branch_pool: one(
                loader,
                prefix,
                "branch_pool",
                ConvSpec::square(input, pool_features, 1, 0),
            )?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [
            self.branch1x1.forward(x)?,
            self.branch5x5.forward(x)?,
            self.branch3x3dbl.forward(x)?,
            self.branch_pool.forward(&avg_pool_3x3_exclude_pad(x)?)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// torchvision's InceptionB (Mixed_6a): 288 -> 384 + 96 + 288 = 768 channels, 35 -> 17.
pub struct MixedB {
    branch3x3: BasicConv2d,
    branch3x3dbl: Chain,
}

impl MixedB {
    pub fn load(loader: &Loader, prefix: &str, input: usize) -> Result<Self> {
        let branch3x3dbl = [
            ("branch3x3dbl_1", ConvSpec::square(input, 64, 1, 0)),
            ("branch3x3dbl_2", ConvSpec::square(64, 96, 3, 1)),
            (
                "branch3x3dbl_3",
                ConvSpec::square(96, 96, 3, 0).with_stride(2),
            ),
        ];
        let branch3x3 = ConvSpec::square(input, 384, 3, 0).with_stride(2);
        Ok(Self {
            branch3x3: one(loader, prefix, "branch3x3", branch3x3)?,
            branch3x3dbl: chain(loader, prefix, &branch3x3dbl)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [
            self.branch3x3.forward(x)?,
            self.branch3x3dbl.forward(x)?,
            max_pool_3x3_stride2(x)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// FIDInceptionC with `c7` channels in the 7x7 branches: 768 -> 4 x 192 channels.
pub struct MixedC {
    branch1x1: BasicConv2d,
    branch7x7: Chain,
    branch7x7dbl: Chain,
    branch_pool: BasicConv2d,
}

impl MixedC {
    pub fn load(loader: &Loader, prefix: &str, input: usize, c7: usize) -> Result<Self> {
        let row = |i, o| ConvSpec::new(i, o, (1, 7), (0, 3));
        let column = |i, o| ConvSpec::new(i, o, (7, 1), (3, 0));
        let branch7x7 = [
            ("branch7x7_1", ConvSpec::square(input, c7, 1, 0)),
            ("branch7x7_2", row(c7, c7)),
            ("branch7x7_3", column(c7, 192)),
        ];
        let branch7x7dbl = [
            ("branch7x7dbl_1", ConvSpec::square(input, c7, 1, 0)),
            ("branch7x7dbl_2", column(c7, c7)),
            ("branch7x7dbl_3", row(c7, c7)),
            ("branch7x7dbl_4", column(c7, c7)),
            ("branch7x7dbl_5", row(c7, 192)),
        ];
        let pointwise = ConvSpec::square(input, 192, 1, 0);
        Ok(Self {
            branch1x1: one(loader, prefix, "branch1x1", pointwise)?,
            branch7x7: chain(loader, prefix, &branch7x7)?,
            branch7x7dbl: chain(loader, prefix, &branch7x7dbl)?,
            branch_pool: one(loader, prefix, "branch_pool", pointwise)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [
            self.branch1x1.forward(x)?,
            self.branch7x7.forward(x)?,
            self.branch7x7dbl.forward(x)?,
            self.branch_pool.forward(&avg_pool_3x3_exclude_pad(x)?)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// torchvision's InceptionD (Mixed_7a): 768 -> 320 + 192 + 768 = 1280 channels, 17 -> 8.
pub struct MixedD {
    branch3x3: Chain,
    branch7x7x3: Chain,
}

impl MixedD {
    pub fn load(loader: &Loader, prefix: &str, input: usize) -> Result<Self> {
        let branch3x3 = [
            ("branch3x3_1", ConvSpec::square(input, 192, 1, 0)),
            (
                "branch3x3_2",
                ConvSpec::square(192, 320, 3, 0).with_stride(2),
            ),
        ];
        let branch7x7x3 = [
            ("branch7x7x3_1", ConvSpec::square(input, 192, 1, 0)),
            ("branch7x7x3_2", ConvSpec::new(192, 192, (1, 7), (0, 3))),
            ("branch7x7x3_3", ConvSpec::new(192, 192, (7, 1), (3, 0))),
            (
                "branch7x7x3_4",
                ConvSpec::square(192, 192, 3, 0).with_stride(2),
            ),
        ];
        Ok(Self {
            branch3x3: chain(loader, prefix, &branch3x3)?,
            branch7x7x3: chain(loader, prefix, &branch7x7x3)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [
            self.branch3x3.forward(x)?,
            self.branch7x7x3.forward(x)?,
            max_pool_3x3_stride2(x)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// Pool of the last branch of an E block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EPool {
    /// FIDInceptionE_1 (Mixed_7b): 3x3 average pool excluding the padding.
    Average,
    /// FIDInceptionE_2 (Mixed_7c): 3x3 max pool, a quirk of the 2015 TensorFlow graph.
    Max,
}

/// FIDInceptionE_1 / E_2: 320 + 768 + 768 + 192 = 2048 output channels, same H and W.
pub struct MixedE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2: [BasicConv2d; 2],
    branch3x3dbl: Chain,
    branch3x3dbl_3: [BasicConv2d; 2],
    branch_pool: BasicConv2d,
    pool: EPool,
}

impl MixedE {
    pub fn load(loader: &Loader, prefix: &str, input: usize, pool: EPool) -> Result<Self> {
        let row = ConvSpec::new(384, 384, (1, 3), (0, 1));
        let column = ConvSpec::new(384, 384, (3, 1), (1, 0));
        let branch3x3dbl = [
            ("branch3x3dbl_1", ConvSpec::square(input, 448, 1, 0)),
            ("branch3x3dbl_2", ConvSpec::square(448, 384, 3, 1)),
        ];
        let conv = |name, spec| one(loader, prefix, name, spec);
        Ok(Self {
            branch1x1: conv("branch1x1", ConvSpec::square(input, 320, 1, 0))?,
            branch3x3_1: conv("branch3x3_1", ConvSpec::square(input, 384, 1, 0))?,
            branch3x3_2: [conv("branch3x3_2a", row)?, conv("branch3x3_2b", column)?],
            branch3x3dbl: chain(loader, prefix, &branch3x3dbl)?,
            branch3x3dbl_3: [
                conv("branch3x3dbl_3a", row)?,
                conv("branch3x3dbl_3b", column)?,
            ],
            branch_pool: conv("branch_pool", ConvSpec::square(input, 192, 1, 0))?,
            pool,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let split = |input: &Tensor, pair: &[BasicConv2d; 2]| -> Result<[Tensor; 2]> {
            Ok([pair[0].forward(input)?, pair[1].forward(input)?])
        };
        let [a3, b3] = split(&self.branch3x3_1.forward(x)?, &self.branch3x3_2)?;
        let [a3dbl, b3dbl] = split(&self.branch3x3dbl.forward(x)?, &self.branch3x3dbl_3)?;
        let pooled = match self.pool {
            EPool::Average => avg_pool_3x3_exclude_pad(x)?,
            EPool::Max => max_pool_3x3_same(x)?,
        };
        let branches = [
            self.branch1x1.forward(x)?,
            a3,
            b3,
            a3dbl,
            b3dbl,
            self.branch_pool.forward(&pooled)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}
