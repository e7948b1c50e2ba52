//! Split of a global batch across data-parallel ranks.

use crate::DataError;

/// Returns the slice of a global batch that rank `rank` of `world_size` trains on.
///
/// The batch is cut into `world_size` contiguous shards of equal size, and rank `r` gets
/// shard `r`. Together the shards cover the batch once, in order.
///
/// # Errors
///
/// [`DataError::ZeroWorldSize`] if `world_size` is 0, [`DataError::RankOutOfRange`] if
/// `rank >= world_size`, and [`DataError::IndivisibleBatch`] if `global.len()` is not a
/// multiple of `world_size`.
pub fn shard(global: &[usize], rank: usize, world_size: usize) -> Result<Vec<usize>, DataError> {
    if world_size == 0 {
        return Err(DataError::ZeroWorldSize);
    }
    if rank >= world_size {
        return Err(DataError::RankOutOfRange { rank, world_size });
    }
    if !global.len().is_multiple_of(world_size) {
        return Err(DataError::IndivisibleBatch {
            batch_size: global.len(),
            world_size,
        });
    }

    let shard_size = global.len() / world_size;
    let start = rank * shard_size;
    Ok(global[start..start + shard_size].to_vec())
}
