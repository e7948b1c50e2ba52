//! Ring schedules: reduce-scatter then all-gather for the sum, a pipelined chain for broadcast.

use std::ops::Range;

use super::call::Call;
use super::frame::{add_into, copy_into};
use crate::CollectiveError;

/// Sums `data` over the ring in place.
///
/// The data is cut into `world` chunks. In reduce-scatter step s, rank r sends chunk r - s and
/// adds chunk r - s - 1 received from rank r - 1, so after world - 1 steps rank r has the
/// full sum of chunk r + 1. All-gather then passes the summed chunks on for world - 1 more
/// steps. Each rank sends and receives 2 (world - 1) / world times the data, which is the
/// minimum for an all-reduce. Chunks travel in segments, and a rank forwards each segment as
/// soon as it has it, so all steps overlap.
pub(crate) fn all_reduce_sum(call: &mut Call, data: &mut [f32]) -> Result<(), CollectiveError> {
    let (rank, world) = (call.topology.rank, call.topology.world);
    let (len, segment_len) = (data.len(), call.segment_len);
    let chunk = |index: usize| chunk_range(len, world, index % world);
    for segment in segments(chunk(rank), segment_len) {
        call.send(&data[segment]);
    }
    for step in 0..world - 1 {
        for segment in segments(chunk(rank + world - 1 - step), segment_len) {
            let target = &mut data[segment];
            add_into(target, call.receive(target.len())?);
            call.send(target);
        }
    }
    for step in 0..world - 1 {
        let forward = step + 2 < world;
        for segment in segments(chunk(rank + world - step), segment_len) {
            let target = &mut data[segment];
            copy_into(target, call.receive(target.len())?);
            if forward {
                call.send(target);
            }
        }
    }
    call.finish()
}

/// Copies `data` of rank `root` to every rank along the ring, segment by segment.
pub(crate) fn broadcast(
    call: &mut Call,
    data: &mut [f32],
    root: usize,
) -> Result<(), CollectiveError> {
    let whole = segments(0..data.len(), call.segment_len);
    if call.topology.rank == root {
        whole.for_each(|segment| call.send(&data[segment]));
        return call.finish();
    }
    let forward = call.topology.next() != root;
    for segment in whole {
        let target = &mut data[segment];
        copy_into(target, call.receive(target.len())?);
        if forward {
            call.send(target);
        }
    }
    call.finish()
}

/// Returns chunk `index` of `world` near-equal chunks of `len` elements; some may be empty.
fn chunk_range(len: usize, world: usize, index: usize) -> Range<usize> {
    let bound = |i: usize| (len as u128 * i as u128 / world as u128) as usize;
    bound(index)..bound(index + 1)
}

/// Splits `range` into pieces of at most `segment_len` elements. An empty range gives one
/// empty piece, so every chunk costs at least one frame and the ranks stay in step.
fn segments(range: Range<usize>, segment_len: usize) -> impl Iterator<Item = Range<usize>> {
    let count = range.len().div_ceil(segment_len).max(1);
    (0..count).map(move |i| {
        let start = range.start + i * segment_len;
        start.min(range.end)..(start + segment_len).min(range.end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_data_in_order() {
        for (len, world) in [(0, 2), (1, 4), (3, 4), (7, 3), (1023, 4)] {
            let chunks: Vec<_> = (0..world).map(|i| chunk_range(len, world, i)).collect();
            assert_eq!(chunks[0].start, 0);
            assert_eq!(chunks[world - 1].end, len);
            for pair in chunks.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "len {len} world {world}");
            }
            let sizes = chunks.iter().map(|c| c.len());
            assert!(sizes.clone().max().unwrap() - sizes.min().unwrap() <= 1);
        }
    }

    #[test]
    fn segments_split_and_keep_empty() {
        let pieces: Vec<_> = segments(3..10, 3).collect();
        assert_eq!(pieces, vec![3..6, 6..9, 9..10]);
        let empty: Vec<_> = segments(5..5, 3).collect();
        assert_eq!(empty, vec![5..5]);
    }
}
