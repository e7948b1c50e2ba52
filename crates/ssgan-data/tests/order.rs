//! Deterministic epoch permutations and resumable batch order.

use ssgan_data::{BatchOrder, DataError, DataPosition};

fn is_permutation(order: &[usize], len: usize) -> bool {
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    sorted == (0..len).collect::<Vec<_>>()
}

#[test]
fn permutation_same_seed_epoch_repeats() {
    let first = BatchOrder::epoch_permutation(11, 4, 500);
    let second = BatchOrder::epoch_permutation(11, 4, 500);

    assert_eq!(first, second);
}

#[test]
fn permutation_differs_across_epochs() {
    let epoch_0 = BatchOrder::epoch_permutation(11, 0, 500);
    let epoch_1 = BatchOrder::epoch_permutation(11, 1, 500);
    let other_seed = BatchOrder::epoch_permutation(12, 0, 500);

    assert_ne!(epoch_0, epoch_1);
    assert_ne!(epoch_0, other_seed);
}

#[test]
fn permutation_covers_all_indices() {
    for len in [1, 2, 10, 2000] {
        for epoch in 0..5 {
            let order = BatchOrder::epoch_permutation(3, epoch, len);

            assert!(is_permutation(&order, len), "len {len}, epoch {epoch}");
        }
    }
}

/// Pins the order of one (seed, epoch), so that a rand or rand_chacha update that
/// changes the order of resumed runs fails here. The expected value was recorded from
/// this implementation with rand 0.9.5 and rand_chacha 0.9.0.
#[test]
fn permutation_matches_golden_value() {
    let order = BatchOrder::epoch_permutation(42, 3, 10);

    assert_eq!(order, [1, 5, 7, 6, 0, 2, 9, 8, 4, 3]);
}

#[test]
fn batch_crossing_epoch_joins_permutations() {
    let epoch_0 = BatchOrder::epoch_permutation(5, 0, 10);
    let epoch_1 = BatchOrder::epoch_permutation(5, 1, 10);
    let mut order = BatchOrder::new(5, 10, DataPosition::default()).unwrap();

    assert_eq!(order.next_batch(4), epoch_0[0..4]);
    assert_eq!(order.next_batch(4), epoch_0[4..8]);
    let crossing = order.next_batch(4);

    assert_eq!(crossing[..2], epoch_0[8..10]);
    assert_eq!(crossing[2..], epoch_1[0..2]);
    assert_eq!(
        order.position(),
        DataPosition {
            epoch: 1,
            offset: 2
        }
    );
}

#[test]
fn batch_larger_than_dataset_spans_epochs() {
    let mut order = BatchOrder::new(9, 3, DataPosition::default()).unwrap();

    let batch = order.next_batch(8);

    let mut expected = Vec::new();
    for epoch in 0..3 {
        expected.extend(BatchOrder::epoch_permutation(9, epoch, 3));
    }
    assert_eq!(batch, expected[..8]);
    assert_eq!(
        order.position(),
        DataPosition {
            epoch: 2,
            offset: 2
        }
    );
}

#[test]
fn epoch_end_position_starts_next_epoch() {
    let mut order = BatchOrder::new(5, 10, DataPosition::default()).unwrap();

    order.next_batch(10);

    assert_eq!(
        order.position(),
        DataPosition {
            epoch: 0,
            offset: 10
        }
    );
    assert_eq!(
        order.next_batch(3),
        BatchOrder::epoch_permutation(5, 1, 10)[0..3]
    );
    assert_eq!(
        order.position(),
        DataPosition {
            epoch: 1,
            offset: 3
        }
    );
}

#[test]
fn zero_batch_size_keeps_position() {
    let start = DataPosition {
        epoch: 2,
        offset: 10,
    };
    let mut order = BatchOrder::new(5, 10, start).unwrap();

    assert!(order.next_batch(0).is_empty());
    assert_eq!(order.position(), start);
}

#[test]
fn resume_matches_uninterrupted_run() {
    let (seed, len, batch_size, steps) = (17, 10, 4, 12);
    let mut uninterrupted = BatchOrder::new(seed, len, DataPosition::default()).unwrap();
    let mut batches = Vec::new();
    let mut positions = Vec::new();
    for _ in 0..steps {
        positions.push(uninterrupted.position());
        batches.push(uninterrupted.next_batch(batch_size));
    }
    // 12 batches of 4 from 10 examples cross four epoch ends, some in mid-batch.
    assert_eq!(
        uninterrupted.position(),
        DataPosition {
            epoch: 4,
            offset: 8
        }
    );

    for (step, position) in positions.iter().enumerate() {
        let saved = serde_json::to_string(position).unwrap();
        let restored: DataPosition = serde_json::from_str(&saved).unwrap();
        let mut resumed = BatchOrder::new(seed, len, restored).unwrap();

        for (later, expected) in batches.iter().enumerate().skip(step) {
            assert_eq!(
                &resumed.next_batch(batch_size),
                expected,
                "resumed at step {step}, batch {later}"
            );
        }
        assert_eq!(
            resumed.position(),
            uninterrupted.position(),
            "resumed at step {step}"
        );
    }
}

#[test]
fn new_rejects_empty_dataset() {
    let error = BatchOrder::new(1, 0, DataPosition::default()).unwrap_err();

    assert!(matches!(error, DataError::EmptyDataset), "{error:?}");
}

#[test]
fn new_rejects_offset_past_end() {
    let position = DataPosition {
        epoch: 3,
        offset: 11,
    };

    let error = BatchOrder::new(1, 10, position).unwrap_err();

    let message = error.to_string();
    assert!(message.contains("offset 11"), "{message}");
    assert!(message.contains("10 examples"), "{message}");
    assert!(
        matches!(
            error,
            DataError::OffsetOutOfRange {
                epoch: 3,
                offset: 11,
                len: 10
            }
        ),
        "{error:?}"
    );
}

#[test]
fn peek_batch_equals_next_batch() {
    let mut order = BatchOrder::new(5, 10, DataPosition::default()).unwrap();
    for batch_size in [3, 4, 3, 10, 7, 25, 0, 1] {
        let peeked = order.peek_batch(batch_size);
        let position = order.position();
        assert_eq!(peeked, order.next_batch(batch_size), "at {position:?}");
    }
}
