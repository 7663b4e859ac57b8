//! A tube's ready queue: its ready jobs, most urgent first (priority, then id).
//!
//! Jobs are put with increasing ids, and most queues hold a few priorities, so the ready
//! jobs of one priority mostly have consecutive ids. The set is kept as one bit per job:
//! a B-tree from (priority, id / 64) to a 64-bit word whose bit `id % 64` says whether that
//! job is in. A run of consecutive ids costs about a bit each where a B-tree of
//! (priority, id) pairs costs some 35 bytes per job (its leaves fill to about half when
//! keys only grow). The worst case is every job in a word of its own, a 24-byte entry
//! where the pair took 16: with priorities spread over all of `u32`, about 37 bytes per
//! job against the pairs' 27 (`cargo bench --bench engine_memory`). Every operation is
//! one B-tree lookup, as before.

use std::collections::BTreeMap;

use crate::protocol::JobId;

/// Ids per word.
const WORD: u64 = 64;

/// Ready jobs as (priority, id) pairs, ordered by priority then id.
#[derive(Debug, Default)]
pub struct ReadySet {
    words: BTreeMap<(u32, u64), u64>,
    len: usize,
}

impl ReadySet {
    /// Adds `(pri, id)`; returns whether it was absent.
    pub fn insert(&mut self, (pri, id): (u32, JobId)) -> bool {
        let bit = 1u64 << (id.0 % WORD);
        let word = self.words.entry((pri, id.0 / WORD)).or_insert(0);
        let added = *word & bit == 0;
        *word |= bit;
        self.len += usize::from(added);
        added
    }

    /// Removes `(pri, id)`; returns whether it was present.
    pub fn remove(&mut self, &(pri, id): &(u32, JobId)) -> bool {
        let key = (pri, id.0 / WORD);
        let bit = 1u64 << (id.0 % WORD);
        let Some(word) = self.words.get_mut(&key) else {
            return false;
        };
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        if *word == 0 {
            self.words.remove(&key);
        }
        self.len -= 1;
        true
    }

    /// The most urgent pair: lowest priority, then lowest id.
    pub fn first(&self) -> Option<(u32, JobId)> {
        // An entry is removed when its word empties, so every word has a bit set.
        self.words.first_key_value().map(|(&(pri, block), &word)| {
            (pri, JobId(block * WORD + u64::from(word.trailing_zeros())))
        })
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
        self.words.iter().flat_map(|(&(pri, block), &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some((pri, JobId(block * WORD + u64::from(bit))))
            })
        })
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
        assert_eq!((set.len(), set.words.len()), (640, 10));
    }
}
