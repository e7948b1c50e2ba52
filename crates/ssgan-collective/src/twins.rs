//! A fake group for unit tests: two ranks that hold the same values.

use crate::{CollectiveError, Communicator};

/// Two ranks that hold the same values, so every sum doubles them.
pub(crate) struct Twins;

impl Communicator for Twins {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        2
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        data.iter_mut().for_each(|value| *value *= 2.0);
        Ok(())
    }

    fn broadcast(&self, _data: &mut [f32], _root: usize) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }
}
