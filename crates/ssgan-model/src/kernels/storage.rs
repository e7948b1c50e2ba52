//! Access to the CPU storage that candle hands to custom ops.

use candle_core::{DType, Layout};

/// Returns the elements of a contiguous tensor from its storage and layout.
///
/// The public wrappers of every kernel call `contiguous()` on their inputs first, so a strided
/// layout here is a bug in this module, reported as an error rather than read wrongly.
pub fn slice<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::msg(
            "a CPU kernel got a strided input; its wrapper must make inputs contiguous",
        )),
    }
}

/// Returns the elements of a contiguous tensor from its mutable storage and layout, for
/// in-place ops. A strided layout is an error, as in [`slice`].
pub fn slice_mut<'a, T>(data: &'a mut [T], layout: &Layout) -> candle_core::Result<&'a mut [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => Err(candle_core::Error::msg(
            "an in-place CPU kernel got a strided tensor; its wrapper must check for that",
        )),
    }
}

/// Builds the error of a kernel that got a dtype it lacks, or two different dtypes.
pub fn dtype_error(op: &str, a: DType, b: DType) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "{op} supports F32 or F64 inputs of one dtype, got {a:?} and {b:?}"
    ))
}
