//! What the engine has to report: it does no I/O, logging included, so it queues
//! [`Notice`]s and the server logs them ([`crate::engine::Engine::take_notices`]).

use crate::protocol::{Refusal, TubeName};

/// A fact worth an operator's attention, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// New work is being refused: a limit was reached (the first refusal of an episode;
    /// the ones after it are only counted).
    Refusing {
        /// The limit.
        limit: Refusal,
        /// Its value (for a per-tube limit, the tube's).
        value: u64,
        /// The tube, for a per-tube limit.
        tube: Option<TubeName>,
        /// Jobs held when it was reached.
        jobs: usize,
        /// Body bytes held when it was reached.
        bytes: u64,
    },
    /// New work is being refused: the free disk space fell below `--min-free-disk`.
    DiskLow {
        /// Free bytes measured.
        free: Option<u64>,
        /// The floor.
        floor: u64,
    },
    /// An episode of refusals ended: new work is accepted again.
    Accepting {
        /// The limit.
        limit: Refusal,
        /// The tube, for a per-tube limit.
        tube: Option<TubeName>,
        /// How many were refused in the episode.
        refused: u64,
    },
}
