//! Rotation of NCHW image batches and the SS-GAN discriminator batch layout.

use candle_core::{Device, Tensor};

use crate::discriminator::ROTATIONS;
use crate::error::{ModelError, Result};

/// For a square S x S image, the flat source index of each output pixel after
/// `quarter_turns` counter-clockwise quarter turns (the index arithmetic of NumPy's
/// `rot90(k)` on the H, W axes):
/// 90 degrees: out[i, j] = in[j, S-1-i]; 180: in[S-1-i, S-1-j]; 270: in[S-1-j, i].
pub fn rotation_index_map(size: usize, quarter_turns: usize) -> Vec<u32> {
    let last = size - 1;
    let source = |i: usize, j: usize| match quarter_turns % 4 {
        0 => (i, j),
        1 => (j, last - i),
        2 => (last - i, last - j),
        _ => (last - j, i),
    };
    let mut map = Vec::with_capacity(size * size);
    for i in 0..size {
        for j in 0..size {
            let (row, col) = source(i, j);
            map.push((row * size + col) as u32);
        }
    }
    map
}

/// Rotates every image of x: [N, C, S, S] counter-clockwise by 90 * `quarter_turns` degrees.
/// The result has x's shape and dtype; the op is differentiable (a gather by index).
pub fn rotate(x: &Tensor, quarter_turns: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h != w {
        return Err(ModelError::Input(format!(
            "cannot rotate non-square {h}x{w} images"
        )));
    }
    let map = rotation_index_map(h, quarter_turns);
    let index = Tensor::from_vec(map, h * w, x.device())?;
    let flat = x.reshape((n, c, h * w))?.contiguous()?;
    Ok(flat.index_select(&index, 2)?.reshape((n, c, h, w))?)
}

/// Rotation labels of the 4n rotation rows of one side: n zeros, then n ones, twos, threes.
pub fn rotation_labels(n: usize, device: &Device) -> Result<Tensor> {
    let labels: Vec<u32> = (0..ROTATIONS as u32)
        .flat_map(|r| std::iter::repeat_n(r, n))
        .collect();
    Ok(Tensor::from_vec(labels, 4 * n, device)?)
}

/// Rotates the last `n` images of x: [B, C, S, S] by 90, 180 and 270 degrees and returns them
/// grouped by angle: [3n, C, S, S].
pub fn rotated_tail(x: &Tensor, n: usize) -> Result<Tensor> {
    let b = x.dim(0)?;
    let tail = x.narrow(0, b - n, n)?;
    let turns = [1, 2, 3].map(|k| rotate(&tail, k));
    let [r90, r180, r270] = turns;
    Ok(Tensor::cat(&[r90?, r180?, r270?], 0)?)
}

/// Row ranges of one side (real or fake) of a discriminator batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideRows {
    /// First row of this side's B unrotated images (the true/fake loss rows).
    pub start: usize,
    /// B, the unrotated images of this side.
    pub batch: usize,
    /// n, the images of this side that are also rotated.
    pub rotated: usize,
}

impl SideRows {
    /// Rows of the true/fake loss: (start, length).
    pub fn gan_rows(&self) -> (usize, usize) {
        (self.start, self.batch)
    }

    /// Rows of the rotation loss: the last n unrotated rows (label 0) and the 3n rotated rows
    /// after them, whose labels are [`rotation_labels`].
    pub fn rotation_rows(&self) -> (usize, usize) {
        (self.start + self.batch - self.rotated, 4 * self.rotated)
    }

    /// Number of rows this side takes: B + 3n.
    pub fn len(&self) -> usize {
        self.batch + 3 * self.rotated
    }

    /// Returns whether this side has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds one side [x, x_rot]: x: [B, C, S, S] followed by its last n images rotated
/// by 90, 180, 270 degrees, [B + 3n, C, S, S]. With n = 0 this is x.
pub fn side_batch(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 0 {
        return Ok(x.clone());
    }
    Ok(Tensor::cat(&[x.clone(), rotated_tail(x, n)?], 0)?)
}

/// Builds the discriminator batch [x, x_rot, g, g_rot] of one step and the row ranges of its
/// two sides. x and g: [B, C, S, S] each; n <= B images per side are rotated.
pub fn discriminator_batch(
    x: &Tensor,
    g: &Tensor,
    n: usize,
) -> Result<(Tensor, SideRows, SideRows)> {
    let b = x.dim(0)?;
    if g.dim(0)? != b || n > b {
        let message = format!(
            "real batch {b}, fake batch {}, rotated {n}: expected equal batches and n <= B",
            g.dim(0)?
        );
        return Err(ModelError::Input(message));
    }
    let real = SideRows {
        start: 0,
        batch: b,
        rotated: n,
    };
    let fake = SideRows {
        start: real.len(),
        batch: b,
        rotated: n,
    };
    let batch = Tensor::cat(&[side_batch(x, n)?, side_batch(g, n)?], 0)?;
    Ok((batch, real, fake))
}
