//! Plans that split a stride-1 convolution, optionally over a zero-inserted 2x upsampling of
//! its input, into patch-matrix products.
//!
//! Convolving the zero-insertion upsampling of x (x[i, j] at (2i, 2j), zeros elsewhere) with
//! a k x k kernel touches only the kernel taps that land on nonzero pixels. Each of the four
//! output parities (even or odd row, even or odd column) is a small convolution of x itself
//! with a subset of the taps: for k = 3, 1, 2, 2 and 4 taps, so 9 in all instead of 4 x 9.
//! The plan lists those phases, and the same kernels then run both convolution kinds.

use super::im2col::{Patches, Taps};

/// The kind of convolution a plan computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// conv(x), "same" zero padding.
    Same,
    /// conv(zero_insert(x)), "same" zero padding on the upsampled map.
    ZeroUpsampled,
}

/// One output parity: its patch geometry and where its pixels go in the output.
pub struct Phase {
    pub patches: Patches,
    pub row_parity: usize,
    pub col_parity: usize,
}

/// Shapes and phases of one convolution over a batch.
pub struct ConvPlan {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    /// Input spatial size (H, W).
    pub input: (usize, usize),
    /// Output spatial size: the input's, or twice it when upsampled.
    pub output: (usize, usize),
    pub phases: Vec<Phase>,
}

impl ConvPlan {
    /// Plans a convolution of x [N, C, H, W] with a kernel [O, C, k, k], k odd.
    pub fn new(kind: ConvKind, x: (usize, usize, usize, usize), kernel: (usize, usize)) -> Self {
        let (batch, c_in, h, w) = x;
        let (c_out, k) = kernel;
        let phase = |row_taps, col_taps, row_parity, col_parity| Phase {
            patches: Patches {
                channels: c_in,
                height: h,
                width: w,
                row_taps,
                col_taps,
            },
            row_parity,
            col_parity,
        };
        let (output, phases) = match kind {
            ConvKind::Same => ((h, w), vec![phase(Taps::same(k), Taps::same(k), 0, 0)]),
            ConvKind::ZeroUpsampled => {
                let parities = [(0, 0), (0, 1), (1, 0), (1, 1)];
                let phases = parities
                    .map(|(r, s)| phase(upsampled_taps(k, r), upsampled_taps(k, s), r, s))
                    .into();
                ((2 * h, 2 * w), phases)
            }
        };
        Self {
            batch,
            c_in,
            c_out,
            kernel: k,
            input: (h, w),
            output,
            phases,
        }
    }

    pub fn input_len(&self) -> usize {
        self.c_in * self.input.0 * self.input.1
    }

    pub fn output_len(&self) -> usize {
        self.c_out * self.output.0 * self.output.1
    }

    pub fn kernel_len(&self) -> usize {
        self.c_out * self.c_in * self.kernel * self.kernel
    }

    /// True when the single phase writes the output in place (no scatter needed).
    pub fn is_direct(&self) -> bool {
        self.output == self.input
    }

    /// Copies the kernel taps of `phase` into a matrix [O, phase rows].
    pub fn gather_kernel<T: Copy>(&self, phase: &Phase, kernel: &[T]) -> Vec<T> {
        let mut out = Vec::with_capacity(self.c_out * phase.patches.rows());
        for o in 0..self.c_out {
            self.for_each_tap(phase, o, |index| out.push(kernel[index]));
        }
        out
    }

    /// Adds a phase's kernel gradient [O, phase rows] into the full gradient [O, C, k, k].
    pub fn scatter_kernel<T: Copy + std::ops::AddAssign>(
        &self,
        phase: &Phase,
        grad: &[T],
        kernel: &mut [T],
    ) {
        let mut values = grad.iter();
        for o in 0..self.c_out {
            self.for_each_tap(phase, o, |index| {
                kernel[index] += *values.next().expect("one value per tap");
            });
        }
    }

    /// Calls `f` with the flat kernel index of every tap of `phase` for output channel `o`,
    /// in patch-row order.
    fn for_each_tap(&self, phase: &Phase, o: usize, mut f: impl FnMut(usize)) {
        let k = self.kernel;
        for c in 0..self.c_in {
            for &(a, _) in &phase.patches.row_taps.0 {
                for &(b, _) in &phase.patches.col_taps.0 {
                    f(((o * self.c_in + c) * k + a) * k + b);
                }
            }
        }
    }

    /// Copies output pixels of `phase` from `image` [O, Ho, Wo] into `buf` [O, H*W].
    pub fn gather_output<T: Copy>(&self, phase: &Phase, image: &[T], buf: &mut [T]) {
        self.walk_output(phase, |dst, src| buf[dst] = image[src]);
    }

    /// Writes `buf` [O, H*W] to the output pixels of `phase` in `image` [O, Ho, Wo].
    pub fn scatter_output<T: Copy>(&self, phase: &Phase, buf: &[T], image: &mut [T]) {
        self.walk_output(phase, |src, dst| image[dst] = buf[src]);
    }

    /// Calls `f(phase index, output index)` for every pixel of `phase` and output channel.
    fn walk_output(&self, phase: &Phase, mut f: impl FnMut(usize, usize)) {
        let (h, w) = self.input;
        let (ho, wo) = self.output;
        let stride = ho / h;
        for o in 0..self.c_out {
            for i in 0..h {
                let out_row = (o * ho + stride * i + phase.row_parity) * wo;
                for j in 0..w {
                    f((o * h + i) * w + j, out_row + stride * j + phase.col_parity);
                }
            }
        }
    }
}

/// Taps along one axis of a "same" k-tap convolution over a zero-inserted input, for output
/// positions of parity `parity`: output 2i + parity reads the upsampled input at
/// 2i + parity + a - k/2, which is x[i + (parity + a - k/2) / 2] when that index is even.
fn upsampled_taps(k: usize, parity: usize) -> Taps {
    let pad = (k / 2) as isize;
    let taps = (0..k)
        .filter_map(|a| {
            let shift = parity as isize + a as isize - pad;
            (shift % 2 == 0).then_some((a, shift / 2))
        })
        .collect();
    Taps(taps)
}
