//! Gradient averaging in buckets, and a check that all ranks have the same parameters.

use candle_core::{DType, Tensor};

use crate::{CollectiveError, Communicator, all_reduce_sum_in_place};

/// Default bucket size of [`all_reduce_mean_in_place`]: 8 MiB of f32 values per call.
pub const DEFAULT_BUCKET_BYTES: usize = 8 * 1024 * 1024;

/// Replaces each tensor in `grads` by its mean over all ranks, in buckets of the default size.
///
/// See [`all_reduce_mean_bucketed`] for the contract.
pub fn all_reduce_mean_in_place(
    comm: &dyn Communicator,
    grads: &mut [Tensor],
) -> Result<(), CollectiveError> {
    all_reduce_mean_bucketed(comm, grads, DEFAULT_BUCKET_BYTES)
}

/// Replaces each tensor in `grads` by its mean over all ranks.
///
/// The gradients are flattened into one f32 buffer, which is summed in place one bucket of at
/// most `bucket_bytes` at a time, and scaled by 1 / world size once. A bucket bounds the size,
/// and so the duration, of one collective call, which must finish within the communicator's
/// timeout. Buckets do not overlap communication with the backward pass, because candle's
/// backward returns all gradients at once.
///
/// Every rank must pass tensors of the same shapes in the same order and the same
/// `bucket_bytes`. The tensors must be F32, F64 or BF16; F64 values travel as F32. With one
/// rank nothing is done. A peer's failure returns the communicator's error and leaves `grads`
/// unchanged.
///
/// Gradients on a CUDA device stay there. They are concatenated into one device tensor, BF16
/// when all of them are BF16 and F32 otherwise. NCCL sums its buckets in place on the device,
/// and other communicators through the host.
pub fn all_reduce_mean_bucketed(
    comm: &dyn Communicator,
    grads: &mut [Tensor],
    bucket_bytes: usize,
) -> Result<(), CollectiveError> {
    let world = comm.world_size();
    if world == 1 {
        return Ok(());
    }
    if bucket_bytes < 4 {
        return Err(CollectiveError::InvalidCall {
            operation: "all_reduce_mean_bucketed",
            reason: format!("bucket_bytes must be at least 4, got {bucket_bytes}"),
        });
    }
    if grads.iter().any(|grad| grad.device().is_cuda()) {
        return all_reduce_mean_on_device(comm, grads, bucket_bytes);
    }
    let mut flat = flatten(grads)?;
    for bucket in flat.chunks_mut(bucket_bytes / 4) {
        comm.all_reduce_sum(bucket)?;
    }
    let scale = 1.0 / world as f32;
    flat.iter_mut().for_each(|value| *value *= scale);
    restore(grads, &flat)
}

/// Averages `grads` like [`all_reduce_mean_bucketed`] without leaving their device. It also
/// runs on the CPU for F32 gradients, which the tests use.
fn all_reduce_mean_on_device(
    comm: &dyn Communicator,
    grads: &mut [Tensor],
    bucket_bytes: usize,
) -> Result<(), CollectiveError> {
    if grads.is_empty() {
        return Ok(());
    }

    let all_bf16 = grads.iter().all(|grad| grad.dtype() == DType::BF16);
    let dtype = if all_bf16 { DType::BF16 } else { DType::F32 };
    let parts = grads
        .iter()
        .map(|grad| grad.flatten_all().and_then(|g| g.to_dtype(dtype)))
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(tensor_error)?;
    let flat = Tensor::cat(&parts, 0).map_err(tensor_error)?;

    let total = flat.elem_count();
    let bucket_len = (bucket_bytes / dtype.size_in_bytes()).max(1);
    let mut start = 0;
    while start < total {
        let len = bucket_len.min(total - start);
        let bucket = flat.narrow(0, start, len).map_err(tensor_error)?;
        all_reduce_sum_in_place(comm, &bucket)?;
        start += len;
    }

    let mean = flat
        .affine(1.0 / comm.world_size() as f64, 0.0)
        .map_err(tensor_error)?;

    let mut offset = 0;
    for grad in grads.iter_mut() {
        let count = grad.elem_count();
        *grad = mean
            .narrow(0, offset, count)
            .and_then(|g| g.reshape(grad.shape()))
            .and_then(|g| g.to_dtype(grad.dtype()))
            .map_err(tensor_error)?;
        offset += count;
    }
    Ok(())
}

fn tensor_error(source: candle_core::Error) -> CollectiveError {
    CollectiveError::Tensor {
        operation: "all_reduce_mean_bucketed",
        source,
    }
}

fn flatten(grads: &[Tensor]) -> Result<Vec<f32>, CollectiveError> {
    let mut flat = Vec::with_capacity(grads.iter().map(Tensor::elem_count).sum());
    for grad in grads {
        let values = grad
            .flatten_all()
            .and_then(|g| g.to_dtype(DType::F32))
            .and_then(|g| g.to_vec1::<f32>())
            .map_err(tensor_error)?;
        flat.extend(values);
    }
    Ok(flat)
}

fn restore(grads: &mut [Tensor], flat: &[f32]) -> Result<(), CollectiveError> {
    let mut start = 0;
    for grad in grads.iter_mut() {
        let count = grad.elem_count();
        let values = flat[start..start + count].to_vec();
        start += count;
        *grad = Tensor::from_vec(values, grad.shape(), grad.device())
            .and_then(|t| t.to_dtype(grad.dtype()))
            .map_err(tensor_error)?;
    }
    Ok(())
}

/// Checks that all ranks have bit-identical `params`, and returns this rank's checksum.
///
/// Each rank hashes the bits and element counts of its tensors into a 64-bit checksum, and one
/// all-reduce gathers every rank's checksum. All ranks return the same verdict:
/// [`CollectiveError::Diverged`] lists the ranks whose checksum differs from rank 0's. Equal
/// checksums make equal parameters very likely but are no proof, because the hash is 64 bits.
///
/// Every rank must call this with tensors of the same shapes in the same order. A peer's
/// failure returns the communicator's error.
pub fn check_parameters_match(
    comm: &dyn Communicator,
    params: &[Tensor],
) -> Result<u64, CollectiveError> {
    let checksum = parameter_checksum(params)?;
    let (rank, world) = (comm.rank(), comm.world_size());
    // A u64 travels as four 16-bit pieces, which f32 represents exactly. Every slot is summed
    // with zeros only, so the gathered values are exact.
    let mut slots = vec![0.0f32; 4 * world];
    for (piece, slot) in slots[4 * rank..4 * rank + 4].iter_mut().enumerate() {
        *slot = ((checksum >> (16 * piece)) & 0xffff) as f32;
    }
    comm.all_reduce_sum(&mut slots)?;
    let checksums: Vec<u64> = slots.chunks_exact(4).map(join_pieces).collect();
    let diverged: Vec<usize> = (1..world)
        .filter(|&r| checksums[r] != checksums[0])
        .collect();
    if diverged.is_empty() {
        return Ok(checksum);
    }
    let listed: Vec<String> = checksums
        .iter()
        .enumerate()
        .map(|(r, sum)| format!("rank {r}: {sum:016x}"))
        .collect();
    Err(CollectiveError::Diverged {
        ranks: diverged,
        detail: format!("parameter checksums {}", listed.join(", ")),
    })
}

fn join_pieces(pieces: &[f32]) -> u64 {
    let piece = |i: usize| (pieces[i] as u64) << (16 * i);
    piece(0) | piece(1) | piece(2) | piece(3)
}

/// Hashes the element counts and value bits of `params`, in order.
fn parameter_checksum(params: &[Tensor]) -> Result<u64, CollectiveError> {
    let mut hash = Mix::default();
    for param in params {
        hash.add(param.elem_count() as u64);
        // Every supported dtype widens to F64 exactly, so equal bits stay equal bits.
        let values = param
            .flatten_all()
            .and_then(|p| p.to_dtype(DType::F64))
            .and_then(|p| p.to_vec1::<f64>())
            .map_err(|source| CollectiveError::Tensor {
                operation: "check_parameters_match",
                source,
            })?;
        values.iter().for_each(|value| hash.add(value.to_bits()));
    }
    Ok(hash.finish())
}

/// A 64-bit multiply-rotate hash; not cryptographic, only meant to detect drift.
struct Mix(u64);

impl Default for Mix {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Mix {
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }

    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::SingleRank;
    use crate::twins::Twins;

    /// Counts the all-reduce calls and their lengths, and doubles like [`Twins`].
    #[derive(Default)]
    struct CountingTwins(std::sync::Mutex<Vec<usize>>);

    impl Communicator for CountingTwins {
        fn rank(&self) -> usize {
            0
        }

        fn world_size(&self) -> usize {
            2
        }

        fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
            self.0.lock().unwrap().push(data.len());
            Twins.all_reduce_sum(data)
        }

        fn broadcast(&self, _data: &mut [f32], _root: usize) -> Result<(), CollectiveError> {
            Ok(())
        }

        fn barrier(&self) -> Result<(), CollectiveError> {
            Ok(())
        }
    }

    #[test]
    fn device_path_matches_host_path() {
        let make = || {
            vec![
                Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap(),
                Tensor::new(&[5.0f32, -6.0, 7.5], &Device::Cpu).unwrap(),
            ]
        };
        let mut on_host = make();
        let mut on_device = make();
        // 12 bytes: buckets of 3 values, so a bucket spans both tensors.
        all_reduce_mean_bucketed(&Twins, &mut on_host, 12).unwrap();
        all_reduce_mean_on_device(&Twins, &mut on_device, 12).unwrap();
        for (host, device) in on_host.iter().zip(&on_device) {
            assert_eq!(host.shape(), device.shape());
            let host = host.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let device = device.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(host, device);
        }
        // Equal values on both ranks: the mean is the input.
        let first = on_device[0]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(first, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn device_path_splits_into_buckets() {
        let comm = CountingTwins::default();
        let mut grads = vec![
            Tensor::new(&[1.0f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap(),
            Tensor::new(&[5.0f32, 6.0, 7.0], &Device::Cpu).unwrap(),
        ];
        all_reduce_mean_on_device(&comm, &mut grads, 12).unwrap();
        assert_eq!(*comm.0.lock().unwrap(), [3, 3, 1]);
        assert_eq!(grads[1].to_vec1::<f32>().unwrap(), [5.0, 6.0, 7.0]);
    }

    #[test]
    fn checksum_changes_with_one_bit() {
        let a = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1.0f32, 2.0, 3.000_000_2], &Device::Cpu).unwrap();
        let sum_a = parameter_checksum(std::slice::from_ref(&a)).unwrap();
        let sum_b = parameter_checksum(&[b]).unwrap();
        assert_ne!(sum_a, sum_b);
        assert_eq!(sum_a, parameter_checksum(&[a]).unwrap());
    }

    #[test]
    fn checksum_depends_on_tensor_boundaries() {
        let whole = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let first = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let second = Tensor::new(&[2.0f32], &Device::Cpu).unwrap();
        let split = parameter_checksum(&[first, second]).unwrap();
        assert_ne!(parameter_checksum(&[whole]).unwrap(), split);
    }

    #[test]
    fn pieces_round_trip() {
        let value = 0xfedc_ba98_7654_3210u64;
        let pieces: Vec<f32> = (0..4)
            .map(|i| ((value >> (16 * i)) & 0xffff) as f32)
            .collect();
        assert_eq!(join_pieces(&pieces), value);
    }

    #[test]
    fn single_rank_matches_itself() {
        let param = Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let checksum = check_parameters_match(&SingleRank, std::slice::from_ref(&param));
        assert_eq!(checksum.unwrap(), parameter_checksum(&[param]).unwrap());
    }
}
