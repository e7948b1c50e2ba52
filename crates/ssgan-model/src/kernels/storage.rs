//! Access to the CPU storage that candle hands to custom ops.

use candle_core::Layout;

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
