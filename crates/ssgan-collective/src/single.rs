use crate::{CollectiveError, Communicator};

/// The communicator of a run with one rank: every collective leaves its input unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleRank;

impl Communicator for SingleRank {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _data: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn broadcast(&self, _data: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        if root != 0 {
            return Err(CollectiveError::InvalidCall {
                operation: "broadcast",
                reason: format!("root rank {root} does not exist in a group of 1"),
            });
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }
}
