//! A tube's ready queue: its ready jobs, most urgent first (priority, then id).
//!
//! Jobs are put with increasing ids, and most queues hold a few priorities, so the ready
//! jobs of one priority mostly have consecutive ids. Such jobs are kept as one bit each:
//! a B-tree from (priority, id / 64) to a 64-bit word whose bit `id % 64` says whether
//! that job is in. A run of consecutive ids costs about a bit per job where a B-tree of
//! (priority, id) pairs costs some 35 bytes (its leaves fill to about half when keys only
//! grow). A job alone in its word would cost a 24-byte entry where the pair takes 16, so
//! a group of one stays a pair, in a second B-tree: with priorities spread over all of
//! `u32` the set costs what the pairs did (`cargo bench --bench engine_memory`).
//!
//! Each (priority, id / 64) group with jobs in is in exactly one of the two: `words` when
//! it has two or more, `singles` when it has one. Every operation is a few B-tree lookups.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::JobId;

/// Ids per word.
const WORD: u64 = 64;

/// Ready jobs as (priority, id) pairs, ordered by priority then id.
#[derive(Debug, Default)]
pub struct ReadySet {
    /// Groups of two or more jobs: bit `id % 64` of the word under (priority, id / 64).
    words: BTreeMap<(u32, u64), u64>,
    /// Groups of one job.
    singles: BTreeSet<(u32, JobId)>,
    len: usize,
}

impl ReadySet {
    /// Adds `(pri, id)`; returns whether it was absent.
    pub fn insert(&mut self, (pri, id): (u32, JobId)) -> bool {
        let key = (pri, id.0 / WORD);
        let bit = 1u64 << (id.0 % WORD);
        if let Some(word) = self.words.get_mut(&key) {
            if *word & bit != 0 {
                return false;
            }
            *word |= bit;
        } else if let Some(other) = self.single_in(key) {
            if other == id {
                return false;
            }
            // The group's second job: both move to a word.
            self.singles.remove(&(pri, other));
            self.words.insert(key, bit | (1u64 << (other.0 % WORD)));
        } else {
            self.singles.insert((pri, id));
        }
        self.len += 1;
        true
    }

    /// Removes `(pri, id)`; returns whether it was present.
    pub fn remove(&mut self, &(pri, id): &(u32, JobId)) -> bool {
        let key = (pri, id.0 / WORD);
        let bit = 1u64 << (id.0 % WORD);
        if let Some(word) = self.words.get_mut(&key) {
            if *word & bit == 0 {
                return false;
            }
            *word &= !bit;
            if word.count_ones() == 1 {
                // One job left in the group: back to a pair.
                let last = JobId(key.1 * WORD + u64::from(word.trailing_zeros()));
                self.words.remove(&key);
                self.singles.insert((pri, last));
            }
        } else if !self.singles.remove(&(pri, id)) {
            return false;
        }
        self.len -= 1;
        true
    }

    /// The one job of group `key` kept as a pair, if it is so kept.
    fn single_in(&self, (pri, block): (u32, u64)) -> Option<JobId> {
        let first = JobId(block * WORD);
        let last = JobId(block * WORD + (WORD - 1));
        self.singles
            .range((pri, first)..=(pri, last))
            .next()
            .map(|&(_, id)| id)
    }

    /// The most urgent pair: lowest priority, then lowest id.
    pub fn first(&self) -> Option<(u32, JobId)> {
        // A word has two bits or more set, so it has a lowest.
        let word = self.words.first_key_value().map(|(&(pri, block), &word)| {
            (pri, JobId(block * WORD + u64::from(word.trailing_zeros())))
        });
        let single = self.singles.first().copied();
        match (word, single) {
            (Some(w), Some(s)) => Some(w.min(s)),
            (w, s) => w.or(s),
        }
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every pair in order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u32, JobId)> + '_ {
        let mut all: Vec<(u32, JobId)> = self.singles.iter().copied().collect();
        for (&(pri, block), &word) in &self.words {
            let mut rest = word;
            while rest != 0 {
                all.push((pri, JobId(block * WORD + u64::from(rest.trailing_zeros()))));
                rest &= rest - 1;
            }
        }
        all.sort_unstable();
        all.into_iter()
    }

    /// Whether every group is where it belongs: words hold two or more, singles are
    /// alone in their group, no group is in both, and `len` counts them all.
    #[cfg(test)]
    fn is_consistent(&self) -> bool {
        let words_ok = self.words.values().all(|w| w.count_ones() >= 2);
        let singles_ok = self.singles.iter().all(|&(pri, id)| {
            let key = (pri, id.0 / WORD);
            !self.words.contains_key(&key) && self.single_in(key) == Some(id) && {
                let first = JobId(key.1 * WORD);
                let last = JobId(key.1 * WORD + (WORD - 1));
                self.singles.range((pri, first)..=(pri, last)).count() == 1
            }
        });
        let counted = self.singles.len()
            + self
                .words
                .values()
                .map(|w| w.count_ones() as usize)
                .sum::<usize>();
        words_ok && singles_ok && counted == self.len
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The set behaves as a B-tree set of (priority, id) pairs, whatever the operations.
        #[test]
        fn it_agrees_with_a_btreeset(
            ops in prop::collection::vec((any::<bool>(), 0u32..4, 0u64..300), 0..800),
        ) {
            let mut set = ReadySet::default();
            let mut model = BTreeSet::new();
            for (insert, pri, id) in ops {
                let pair = (pri, JobId(id));
                if insert {
                    prop_assert_eq!(set.insert(pair), model.insert(pair));
                } else {
                    prop_assert_eq!(set.remove(&pair), model.remove(&pair));
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.is_empty(), model.is_empty());
                prop_assert_eq!(set.first(), model.first().copied());
                prop_assert!(set.is_consistent());
            }
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn extreme_ids_and_priorities_keep_their_order() {
        let mut set = ReadySet::default();
        let pairs = [
            (u32::MAX, JobId(u64::MAX)),
            (0, JobId(u64::MAX)),
            (0, JobId(63)),
            (0, JobId(64)),
            (u32::MAX, JobId(0)),
        ];
        for p in pairs {
            assert!(set.insert(p));
        }
        let mut want = pairs.to_vec();
        want.sort();
        assert_eq!(set.iter().collect::<Vec<_>>(), want);
        assert_eq!(set.first(), Some((0, JobId(63))));
        assert!(set.remove(&(0, JobId(63))));
        assert_eq!(set.first(), Some((0, JobId(64))));
    }

    #[test]
    fn consecutive_ids_share_words() {
        let mut set = ReadySet::default();
        for id in 0..WORD * 10 {
            set.insert((7, JobId(id)));
        }
        assert_eq!(
            (set.len(), set.words.len(), set.singles.len()),
            (640, 10, 0)
        );
    }

    #[test]
    fn a_job_alone_in_its_group_is_kept_as_a_pair_and_joins_a_word_with_a_second() {
        let mut set = ReadySet::default();
        set.insert((5, JobId(1)));
        set.insert((6, JobId(2)));
        assert_eq!((set.words.len(), set.singles.len()), (0, 2));
        set.insert((5, JobId(3)));
        assert_eq!((set.words.len(), set.singles.len()), (1, 1));
        set.remove(&(5, JobId(1)));
        assert_eq!((set.words.len(), set.singles.len()), (0, 2));
        assert_eq!(set.first(), Some((5, JobId(3))));
        assert!(set.is_consistent());
    }
}
