//! The job index: every live job by id, packed densely.
//!
//! Ids are handed out in increasing order, so jobs are grouped in blocks of
//! [`BLOCK`] consecutive ids, each block a ring buffer of the present jobs sorted by id,
//! and the blocks kept in a B-tree by block number. Appending jobs fills blocks
//! completely, where a B-tree of single jobs leaves its nodes about half full when keys
//! only grow (about 190 bytes per job instead of the job's own size). A block whose jobs
//! were mostly deleted gives memory back; an empty one is removed. Nothing is ever rehashed
//! or moved in bulk, so no operation stalls the broker.
//!
//! Blocks are large (see [`BLOCK`]) because each block allocation pins down whatever the
//! allocator handed out around it meanwhile: with 64-id blocks, 1,000,000 jobs put over
//! the network left about 21 bytes per job of heap free but not returnable (glibc
//! `malloc_stats`: 98 MB in use, 119 MB held), with 512-id blocks under 1 byte. A ring
//! buffer keeps removal cheap at either end of a large block: deleting jobs in the order
//! they were put moves nothing, and a removal elsewhere moves the shorter side.

use std::collections::{BTreeMap, VecDeque};

use super::job::Job;
use crate::protocol::JobId;

/// Ids per block: a full block of 512 jobs of 64 bytes is 32 KiB.
pub const BLOCK: u64 = 512;

/// Live jobs by id.
#[derive(Default)]
pub struct JobTable {
    blocks: BTreeMap<u64, VecDeque<Job>>,
    len: usize,
}

impl JobTable {
    fn find(block: &VecDeque<Job>, id: JobId) -> Result<usize, usize> {
        block.binary_search_by_key(&id, |j| j.id)
    }

    /// The job with `id`.
    pub fn get(&self, id: &JobId) -> Option<&Job> {
        let block = self.blocks.get(&(id.0 / BLOCK))?;
        Self::find(block, *id).ok().map(|i| &block[i])
    }

    /// The job with `id`, to change it (never its id).
    pub fn get_mut(&mut self, id: &JobId) -> Option<&mut Job> {
        let block = self.blocks.get_mut(&(id.0 / BLOCK))?;
        Self::find(block, *id).ok().map(|i| &mut block[i])
    }

    /// Whether a job with `id` exists.
    pub fn contains_key(&self, id: &JobId) -> bool {
        self.get(id).is_some()
    }

    /// Adds `job` under `id` (which must be its id), replacing any job with that id.
    pub fn insert(&mut self, id: JobId, job: Job) -> Option<Job> {
        debug_assert_eq!(id, job.id);
        let key = id.0 / BLOCK;
        let newest = self
            .blocks
            .last_key_value()
            .is_none_or(|(&last, _)| last <= key);
        let block = self.blocks.entry(key).or_default();
        match Self::find(block, id) {
            Ok(i) => Some(std::mem::replace(&mut block[i], job)),
            Err(i) => {
                if block.capacity() == block.len() {
                    // The newest block is being appended to: give it its full size at once,
                    // as doubling would leave a trail of freed smaller blocks behind (holes
                    // the allocator cannot return). Others grow in steps that end exactly
                    // at a full block.
                    let want = if newest {
                        BLOCK as usize
                    } else {
                        (block.len() * 2).clamp(4, BLOCK as usize)
                    };
                    block.reserve_exact(want.saturating_sub(block.len()).max(1));
                }
                block.insert(i, job);
                self.len += 1;
                None
            }
        }
    }

    /// Removes and returns the job with `id`.
    pub fn remove(&mut self, id: &JobId) -> Option<Job> {
        let key = id.0 / BLOCK;
        let block = self.blocks.get_mut(&key)?;
        let i = Self::find(block, *id).ok()?;
        let job = block.remove(i)?;
        self.len -= 1;
        if block.is_empty() {
            self.blocks.remove(&key);
        } else if block.len() * 4 <= block.capacity() {
            block.shrink_to(block.len() * 2);
        }
        Some(job)
    }

    /// How many jobs there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every job in id order.
    pub fn values(&self) -> impl Iterator<Item = &Job> + '_ {
        self.blocks.values().flatten()
    }

    /// Every id in order.
    pub fn keys(&self) -> impl Iterator<Item = &JobId> + '_ {
        self.values().map(|j| &j.id)
    }

    /// Jobs with ids from `from` on, in id order.
    pub fn range_from(&self, from: JobId) -> impl Iterator<Item = &Job> + '_ {
        self.blocks
            .range(from.0 / BLOCK..)
            .flat_map(|(_, b)| b.iter())
            .skip_while(move |j| j.id < from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::{BodyRef, JobState, SmallTally};
    use crate::engine::{Timestamp, TubeId};
    use proptest::prelude::*;

    fn job(id: u64) -> Job {
        Job {
            id: JobId(id),
            tube: TubeId(0),
            pri: id as u32,
            delay: 0,
            ttr: 1,
            created_at: Timestamp(0),
            state: JobState::Ready.into(),
            body: BodyRef::in_memory(0),
            tally: SmallTally::default(),
        }
    }

    proptest! {
        /// The table behaves as a map from id to job, whatever the order of operations.
        #[test]
        fn it_agrees_with_a_btreemap(ops in prop::collection::vec((any::<bool>(), 0u64..1600), 0..800), from in 0u64..1600) {
            let mut table = JobTable::default();
            let mut model = BTreeMap::new();
            for (insert, id) in ops {
                if insert {
                    prop_assert_eq!(table.insert(JobId(id), job(id)).map(|j| j.id), model.insert(id, id).map(JobId));
                } else {
                    prop_assert_eq!(table.remove(&JobId(id)).map(|j| j.id), model.remove(&id).map(JobId));
                }
                prop_assert_eq!(table.len(), model.len());
            }
            let ids: Vec<u64> = table.keys().map(|id| id.0).collect();
            prop_assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
            let tail: Vec<u64> = table.range_from(JobId(from)).map(|j| j.id.0).collect();
            prop_assert_eq!(tail, model.range(from..).map(|(&k, _)| k).collect::<Vec<_>>());
            for id in 0..1600 {
                prop_assert_eq!(table.get(&JobId(id)).map(|j| j.pri), model.get(&id).map(|&i| i as u32));
                prop_assert_eq!(table.contains_key(&JobId(id)), model.contains_key(&id));
            }
        }
    }

    #[test]
    fn appended_jobs_fill_their_blocks_exactly() {
        let mut table = JobTable::default();
        for id in 0..BLOCK * 10 {
            table.insert(JobId(id), job(id));
        }
        for block in table.blocks.values() {
            assert_eq!(
                (block.len(), block.capacity()),
                (BLOCK as usize, BLOCK as usize)
            );
        }
    }
}
