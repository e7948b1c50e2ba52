//! Patch matrices of one image for stride-1 convolutions, described by kernel taps.
//!
//! A tap along one axis pairs a kernel index with the input offset it reads: output position i
//! reads input position i + offset, and positions outside the image read zero. A "same"
//! k x k convolution has taps (a, a - k/2) for every kernel index a on both axes. The patch
//! matrix of an image [C, H, W] has one row per (channel, row tap, column tap), in that order,
//! and one column per output pixel (H * W, row-major). A convolution is then the kernel
//! matrix [O, rows] times the patch matrix [rows, H * W].

use std::ops::AddAssign;

/// The taps of one axis: (kernel index, input offset) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taps(pub Vec<(usize, isize)>);

impl Taps {
    /// Every kernel index of a "same" convolution with odd kernel side `k`.
    pub fn same(k: usize) -> Self {
        let pad = (k / 2) as isize;
        Self((0..k).map(|a| (a, a as isize - pad)).collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Shape of the patch matrix of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patches {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub row_taps: Taps,
    pub col_taps: Taps,
}

impl Patches {
    /// Rows of the patch matrix: channels x row taps x column taps.
    pub fn rows(&self) -> usize {
        self.channels * self.row_taps.len() * self.col_taps.len()
    }

    /// Columns of the patch matrix: one per pixel, H * W.
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Input row read by output row `oh` for a row offset, if inside the image.
    fn input_row(&self, oh: usize, offset: isize) -> Option<usize> {
        let ih = oh as isize + offset;
        (0..self.height as isize)
            .contains(&ih)
            .then_some(ih as usize)
    }

    /// Output columns whose input column `ow + offset` lies inside the image.
    fn valid_columns(&self, offset: isize) -> (usize, usize) {
        let width = self.width as isize;
        let start = (-offset).clamp(0, width);
        let end = (width - offset).clamp(start, width);
        (start as usize, end as usize)
    }

    /// Calls `f(patch row start, plane, row offset, column offset)` for every patch row.
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, isize, isize)) {
        let mut row = 0;
        for c in 0..self.channels {
            for &(_, dr) in &self.row_taps.0 {
                for &(_, dc) in &self.col_taps.0 {
                    f(row * self.pixels(), c, dr, dc);
                    row += 1;
                }
            }
        }
    }
}

/// Writes the patch matrix of `image` [C, H, W] into `patches` [rows, H*W].
pub fn im2col<T: Copy + Default>(geom: &Patches, image: &[T], patches: &mut [T]) {
    let (hw, w) = (geom.pixels(), geom.width);
    geom.for_each_row(|row, c, dr, dc| {
        let plane = &image[c * hw..(c + 1) * hw];
        let (start, end) = geom.valid_columns(dc);
        for oh in 0..geom.height {
            let out = &mut patches[row + oh * w..row + (oh + 1) * w];
            let Some(ih) = geom.input_row(oh, dr) else {
                out.fill(T::default());
                continue;
            };
            let src = (ih * w + start) as isize + dc;
            let src = &plane[src as usize..src as usize + end - start];
            out[..start].fill(T::default());
            out[start..end].copy_from_slice(src);
            out[end..].fill(T::default());
        }
    });
}

/// Adds the patch-matrix gradient `patches` [rows, H*W] back onto `image` [C, H, W], the
/// adjoint of [`im2col`]. The caller zeroes `image` when it should hold only this sum.
pub fn col2im<T: Copy + AddAssign>(geom: &Patches, patches: &[T], image: &mut [T]) {
    let (hw, w) = (geom.pixels(), geom.width);
    geom.for_each_row(|row, c, dr, dc| {
        let plane = &mut image[c * hw..(c + 1) * hw];
        let (start, end) = geom.valid_columns(dc);
        for oh in 0..geom.height {
            let Some(ih) = geom.input_row(oh, dr) else {
                continue;
            };
            let src = &patches[row + oh * w + start..row + oh * w + end];
            let dst = (ih * w + start) as isize + dc;
            let dst = &mut plane[dst as usize..dst as usize + end - start];
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
        }
    });
}
