//! Row-major matrix products on the `gemm` crate (the GEMM that candle's CPU matmul uses).

use gemm::Parallelism;

/// A float type that the GEMM kernels and the convolution ops support.
pub trait Float:
    Copy
    + Default
    + Send
    + Sync
    + std::ops::AddAssign
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + PartialOrd
    + std::fmt::Debug
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const QUARTER: Self;

    /// Returns the square root.
    fn sqrt(self) -> Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const QUARTER: Self = 0.25;

    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const QUARTER: Self = 0.25;

    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// A read-only row-major matrix, or the transpose of one, over a slice.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a, T> MatRef<'a, T> {
    /// Views `data` as a row-major [rows, cols] matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data length");
        Self {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    /// The transpose, without moving data.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            transposed: !self.transposed,
            ..self
        }
    }

    /// (row stride, column stride) in elements.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// Computes dst = a * b, or dst += a * b when `accumulate`, with dst row-major
/// [a.rows, b.cols], on the calling thread.
pub fn matmul<T: Float>(a: MatRef<T>, b: MatRef<T>, dst: &mut [T], accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!(dst.len(), a.rows * b.cols, "output length");
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // SAFETY: the asserts above and MatRef::new bound every index that the strides reach
    // inside the three slices, and dst is borrowed mutably so it aliases neither input.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}
