//! The ranks of each run's current attempt, with their ring addresses and outcomes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use ssgan_proto::v1::run_ended::Outcome;

use crate::pool::SessionKey;

/// The workers training one attempt of a run, indexed by rank.
pub(crate) struct Gang {
    pub attempt: u32,
    pub members: Vec<SessionKey>,
    addresses: Vec<Option<String>>,
    /// Rank 0's NCCL unique id; empty for CPU workers.
    nccl_unique_id: Vec<u8>,
    outcomes: Vec<Option<Outcome>>,
}

impl Gang {
    pub fn new(attempt: u32, members: Vec<SessionKey>) -> Self {
        let world_size = members.len();
        Self {
            attempt,
            members,
            addresses: vec![None; world_size],
            nccl_unique_id: Vec::new(),
            outcomes: vec![None; world_size],
        }
    }

    pub fn rank_of(&self, key: SessionKey) -> Option<usize> {
        self.members.iter().position(|member| *member == key)
    }

    /// Stores a rank's ring address, and rank 0's NCCL unique id. Once all ranks have
    /// reported, returns every rank's address ordered by rank, and rank 0's id. An id from
    /// another rank is ignored.
    pub fn set_address(
        &mut self,
        rank: usize,
        address: String,
        nccl_unique_id: Vec<u8>,
    ) -> Option<(Vec<String>, Vec<u8>)> {
        self.addresses[rank] = Some(address);
        if rank == 0 {
            self.nccl_unique_id = nccl_unique_id;
        } else if !nccl_unique_id.is_empty() {
            tracing::debug!(rank, "ignoring an NCCL unique id from a rank other than 0");
        }
        let addresses = self.addresses.iter().cloned().collect::<Option<Vec<_>>>()?;
        Some((addresses, self.nccl_unique_id.clone()))
    }

    /// Returns the members that have not reported an outcome.
    pub fn running_members(&self) -> Vec<SessionKey> {
        self.members
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(key, _)| *key)
            .collect()
    }

    /// Stores a rank's outcome and returns every rank's outcome once all ranks have ended.
    pub fn set_outcome(&mut self, rank: usize, outcome: Outcome) -> Option<Vec<Outcome>> {
        self.outcomes[rank] = Some(outcome);
        self.outcomes.iter().copied().collect()
    }
}

/// Current attempts by run id.
#[derive(Default)]
pub(crate) struct Gangs {
    by_run: HashMap<String, Gang>,
}

impl Gangs {
    pub fn insert(&mut self, run_id: String, gang: Gang) {
        self.by_run.insert(run_id, gang);
    }

    pub fn remove(&mut self, run_id: &str) -> Option<Gang> {
        self.by_run.remove(run_id)
    }

    pub fn get(&self, run_id: &str) -> Option<&Gang> {
        self.by_run.get(run_id)
    }

    /// Returns the gang of attempt `attempt` of `run_id`, and the rank `key` has in it.
    pub fn member(
        &mut self,
        run_id: &str,
        attempt: u32,
        key: SessionKey,
    ) -> Option<(&mut Gang, usize)> {
        let gang = self.by_run.get_mut(run_id)?;
        if gang.attempt != attempt {
            return None;
        }
        let rank = gang.rank_of(key)?;
        Some((gang, rank))
    }
}

/// Returns the rendezvous token of an attempt: a hash of the run id and the attempt, the
/// same for every rank of the attempt and different for the next attempt.
pub(crate) fn rendezvous_token(run_id: &str, attempt: u32) -> u64 {
    let mut hasher = DefaultHasher::new();
    (run_id, attempt).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_complete_in_rank_order() {
        let mut gang = Gang::new(1, vec![7, 3]);
        assert_eq!(gang.set_address(1, "b".to_owned(), Vec::new()), None);
        let (addresses, id) = gang.set_address(0, "a".to_owned(), Vec::new()).unwrap();
        assert_eq!(addresses, ["a", "b"]);
        assert!(id.is_empty());
    }

    #[test]
    fn rank_zero_id_relayed() {
        let mut gang = Gang::new(1, vec![7, 3, 5]);
        assert_eq!(gang.set_address(2, String::new(), vec![9; 128]), None);
        assert_eq!(gang.set_address(0, String::new(), vec![4; 128]), None);
        let (_, id) = gang.set_address(1, String::new(), Vec::new()).unwrap();
        assert_eq!(id, vec![4; 128]);
    }

    #[test]
    fn token_differs_between_attempts() {
        assert_ne!(rendezvous_token("r", 1), rendezvous_token("r", 2));
        assert_eq!(rendezvous_token("r", 1), rendezvous_token("r", 1));
    }
}
