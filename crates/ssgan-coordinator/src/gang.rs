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
    outcomes: Vec<Option<Outcome>>,
}

impl Gang {
    pub fn new(attempt: u32, members: Vec<SessionKey>) -> Self {
        let world_size = members.len();
        Self {
            attempt,
            members,
            addresses: vec![None; world_size],
            outcomes: vec![None; world_size],
        }
    }

    pub fn rank_of(&self, key: SessionKey) -> Option<usize> {
        self.members.iter().position(|member| *member == key)
    }

    /// Stores a rank's ring address and returns every rank's address, ordered by rank, once
    /// all ranks have reported one.
    pub fn set_address(&mut self, rank: usize, address: String) -> Option<Vec<String>> {
        self.addresses[rank] = Some(address);
        self.addresses.iter().cloned().collect()
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
        assert_eq!(gang.set_address(1, "b".to_owned()), None);
        let addresses = gang.set_address(0, "a".to_owned()).unwrap();
        assert_eq!(addresses, ["a", "b"]);
    }

    #[test]
    fn token_differs_between_attempts() {
        assert_ne!(rendezvous_token("r", 1), rendezvous_token("r", 2));
        assert_eq!(rendezvous_token("r", 1), rendezvous_token("r", 1));
    }
}
