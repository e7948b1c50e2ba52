//! Deterministic, resumable order of examples across epochs.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tracing::trace;

use crate::DataError;

/// Position in the shuffled stream: epoch and the number of examples of that epoch already consumed.
///
/// `offset` runs from 0 to the dataset length. An offset equal to the length means that
/// the epoch is used up and the next batch starts epoch `epoch + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DataPosition {
    pub epoch: u64,
    pub offset: u64,
}

/// Deterministic stream of example indices, one shuffled pass over the dataset per epoch.
///
/// The order of epoch `e` is [`BatchOrder::epoch_permutation`]`(seed, e, len)`. It depends
/// only on the seed, the epoch and the dataset length, and not on the world size, so a
/// run can resume on a different number of ranks. A batch that crosses the end of an
/// epoch takes the rest of that epoch's permutation and continues with the start of
/// the next epoch's permutation.
#[derive(Clone, Debug)]
pub struct BatchOrder {
    seed: u64,
    len: usize,
    position: DataPosition,
    /// Permutation of epoch `position.epoch`.
    permutation: Vec<usize>,
}

impl BatchOrder {
    /// Creates the order for a dataset of `len` examples, starting at `position`.
    ///
    /// A position from [`BatchOrder::position`] resumes the stream exactly where it was.
    ///
    /// # Errors
    ///
    /// [`DataError::EmptyDataset`] if `len` is 0, and [`DataError::OffsetOutOfRange`] if
    /// `position.offset > len`.
    pub fn new(seed: u64, len: usize, position: DataPosition) -> Result<Self, DataError> {
        if len == 0 {
            return Err(DataError::EmptyDataset);
        }
        if position.offset > len as u64 {
            return Err(DataError::OffsetOutOfRange {
                epoch: position.epoch,
                offset: position.offset,
                len,
            });
        }

        Ok(Self {
            seed,
            len,
            position,
            permutation: Self::epoch_permutation(seed, position.epoch, len),
        })
    }

    /// Takes the next `batch_size` indices of the global batch and advances the position.
    ///
    /// Indices are in `0..len`. A batch larger than `len` spans several epochs, and a
    /// `batch_size` of 0 returns an empty batch.
    pub fn next_batch(&mut self, batch_size: usize) -> Vec<usize> {
        let mut batch = Vec::with_capacity(batch_size);
        while batch.len() < batch_size {
            if self.position.offset == self.len as u64 {
                self.start_next_epoch();
            }

            let offset = self.position.offset as usize;
            let count = (batch_size - batch.len()).min(self.len - offset);
            batch.extend_from_slice(&self.permutation[offset..offset + count]);
            self.position.offset += count as u64;
        }
        batch
    }

    /// Returns the indices that [`BatchOrder::next_batch`] would return next, without
    /// advancing. Only a batch that crosses into the next epoch draws a permutation.
    pub fn peek_batch(&self, batch_size: usize) -> Vec<usize> {
        let offset = self.position.offset as usize;
        if offset + batch_size <= self.len {
            return self.permutation[offset..offset + batch_size].to_vec();
        }
        self.clone().next_batch(batch_size)
    }

    /// Returns the current position, which [`BatchOrder::new`] accepts to resume.
    pub fn position(&self) -> DataPosition {
        self.position
    }

    /// Draws the order of epoch `epoch`: a permutation of `0..len`.
    ///
    /// The generator is ChaCha8 (`rand_chacha::ChaCha8Rng`, stream 0) with the 32-byte
    /// key `seed.to_le_bytes() ++ epoch.to_le_bytes() ++ [0; 16]`. Every `(seed, epoch)`
    /// pair therefore has its own key. The permutation is `(0..len)` shuffled in place
    /// by rand 0.9's `SliceRandom::shuffle`, a Fisher-Yates shuffle. For `len` below
    /// `u32::MAX` it draws `u32` samples, so 32-bit and 64-bit targets get the same order.
    ///
    /// NOTE: rand may change `shuffle` output in a new minor version (0.9 to 0.10), which
    /// would change the order of a resumed run. The test `permutation_matches_golden_value`
    /// catches such a change.
    pub fn epoch_permutation(seed: u64, epoch: u64, len: usize) -> Vec<usize> {
        let mut rng = ChaCha8Rng::from_seed(epoch_key(seed, epoch));
        let mut permutation: Vec<usize> = (0..len).collect();
        permutation.shuffle(&mut rng);
        permutation
    }

    fn start_next_epoch(&mut self) {
        self.position = DataPosition {
            epoch: self.position.epoch + 1,
            offset: 0,
        };
        self.permutation = Self::epoch_permutation(self.seed, self.position.epoch, self.len);
        trace!(
            epoch = self.position.epoch,
            len = self.len,
            "drew epoch permutation"
        );
    }
}

/// Builds the ChaCha8 key of one epoch: seed and epoch as little-endian bytes, then zeros.
fn epoch_key(seed: u64, epoch: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key
}
