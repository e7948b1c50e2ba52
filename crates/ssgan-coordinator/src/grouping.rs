//! Choosing the workers of an attempt: all ranks must use the same collective backend, so
//! an attempt gets only CPU workers (TCP ring) or only GPU workers with one NCCL version.

use std::collections::BTreeMap;

use crate::pool::SessionKey;

/// Result of [`select_members`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The members of the attempt, in rank order.
    Members(Vec<SessionKey>),
    /// Enough workers are idle, but no backend group has `world_size` of them.
    Mixed {
        /// Idle workers per NCCL version (`None`: CPU workers), ascending by version.
        counts: Vec<(Option<u32>, usize)>,
    },
    /// Fewer idle workers than the world size.
    TooFew,
}

/// Picks `world_size` idle workers that share a backend: all CPU workers, or all GPU workers
/// with the same NCCL version, because NCCL does not support ranks with different versions.
///
/// `idle` lists the idle workers with their NCCL versions, longest connected first. Of the
/// groups that are large enough, the one whose first worker connected earliest wins, and its
/// longest-connected workers become ranks 0, 1, ...
pub(crate) fn select_members(idle: &[(SessionKey, Option<u32>)], world_size: usize) -> Selection {
    if idle.len() < world_size {
        return Selection::TooFew;
    }
    let mut groups: Vec<(Option<u32>, Vec<SessionKey>)> = Vec::new();
    for &(key, version) in idle {
        match groups.iter_mut().find(|(group, _)| *group == version) {
            Some((_, keys)) => keys.push(key),
            None => groups.push((version, vec![key])),
        }
    }
    let chosen = groups
        .into_iter()
        .find(|(_, keys)| keys.len() >= world_size);
    match chosen {
        Some((_, mut keys)) => {
            keys.truncate(world_size);
            Selection::Members(keys)
        }
        None => Selection::Mixed {
            counts: count_by_version(idle),
        },
    }
}

fn count_by_version(idle: &[(SessionKey, Option<u32>)]) -> Vec<(Option<u32>, usize)> {
    let mut counts = BTreeMap::new();
    for (_, version) in idle {
        *counts.entry(*version).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NCCL_A: Option<u32> = Some(22_703);
    const NCCL_B: Option<u32> = Some(23_003);

    #[test]
    fn cpu_workers_in_join_order() {
        let idle = [(4, None), (7, None), (9, None)];
        assert_eq!(select_members(&idle, 2), Selection::Members(vec![4, 7]));
    }

    #[test]
    fn same_nccl_version_forms_group() {
        let idle = [(1, NCCL_A), (2, NCCL_A)];
        assert_eq!(select_members(&idle, 2), Selection::Members(vec![1, 2]));
    }

    #[test]
    fn mixed_nccl_versions_rejected() {
        let idle = [(1, NCCL_A), (2, NCCL_B)];
        let expected = Selection::Mixed {
            counts: vec![(NCCL_A, 1), (NCCL_B, 1)],
        };
        assert_eq!(select_members(&idle, 2), expected);
    }

    #[test]
    fn cpu_and_gpu_never_mix() {
        let idle = [(1, None), (2, NCCL_A)];
        let expected = Selection::Mixed {
            counts: vec![(None, 1), (NCCL_A, 1)],
        };
        assert_eq!(select_members(&idle, 2), expected);
    }

    #[test]
    fn matching_group_skips_other_versions() {
        let idle = [(1, NCCL_B), (2, NCCL_A), (3, None), (5, NCCL_A)];
        assert_eq!(select_members(&idle, 2), Selection::Members(vec![2, 5]));
    }

    #[test]
    fn earliest_large_group_wins() {
        let idle = [(1, NCCL_B), (2, NCCL_A), (3, NCCL_A), (4, NCCL_B)];
        assert_eq!(select_members(&idle, 2), Selection::Members(vec![1, 4]));
    }

    #[test]
    fn too_few_workers() {
        assert_eq!(select_members(&[(1, None)], 2), Selection::TooFew);
    }
}
