//! Splitting a global batch across data-parallel ranks.

use ssgan_data::{DataError, shard};

#[test]
fn shard_covers_batch_disjointly() {
    let global: Vec<usize> = vec![9, 4, 7, 1, 0, 8, 3, 2, 6, 5, 11, 10];

    for world_size in [1, 2, 3, 4, 6, 12] {
        let shards: Vec<Vec<usize>> = (0..world_size)
            .map(|rank| shard(&global, rank, world_size).unwrap())
            .collect();

        for (rank, part) in shards.iter().enumerate() {
            assert_eq!(
                part.len(),
                global.len() / world_size,
                "world size {world_size}, rank {rank}"
            );
        }
        // Concatenated in rank order, the shards give back the global batch, so they are
        // contiguous and no index is repeated or missing.
        assert_eq!(shards.concat(), global, "world size {world_size}");
    }
}

#[test]
fn shard_rejects_indivisible_batch() {
    let global: Vec<usize> = (0..10).collect();

    let error = shard(&global, 0, 4).unwrap_err();

    let message = error.to_string();
    assert!(message.contains("batch size 10"), "{message}");
    assert!(message.contains("world size 4"), "{message}");
    assert!(
        matches!(
            error,
            DataError::IndivisibleBatch {
                batch_size: 10,
                world_size: 4
            }
        ),
        "{error:?}"
    );
}

#[test]
fn shard_rejects_rank_out_of_range() {
    let global: Vec<usize> = (0..8).collect();

    let error = shard(&global, 4, 4).unwrap_err();

    assert!(
        matches!(
            error,
            DataError::RankOutOfRange {
                rank: 4,
                world_size: 4
            }
        ),
        "{error:?}"
    );
}

#[test]
fn shard_rejects_zero_world_size() {
    let error = shard(&[0, 1], 0, 0).unwrap_err();

    assert!(matches!(error, DataError::ZeroWorldSize), "{error:?}");
}

#[test]
fn shard_empty_batch_is_empty() {
    let part = shard(&[], 1, 2).unwrap();

    assert!(part.is_empty());
}
