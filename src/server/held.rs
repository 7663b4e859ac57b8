//! The durability rule as a type: a reply that depends on the log is a [`Held`] value, and
//! the only way to take it out is [`Held::release`], which waits until the log is durable
//! up to the record the reply depends on.
//!
//! This is where "no reply before its change is durable" is kept. The engine answers a
//! command with a plain [`Reply`](crate::protocol::Reply) and leaves the state change as a
//! record for the log; the broker queues that record in the journal under the engine's lock
//! and wraps the reply in a `Held` tagged with the log's tail ([`Held::fill`] for the replies
//! of a batch, [`Held::after`] for a blocked reserve's wake-up). A connection holds its
//! encoded replies as a `Held` too, and can write them only once [`Held::release`] has
//! awaited the group-commit watermark ([`crate::wal::commit`]). A reply that depends on no
//! record (an authentication answer, a cancelled wait's `TIMED_OUT`) is made with
//! [`Held::ready`], which says so at the place it is made.
//!
//! A held value can be added to and measured without being released: [`Held::merge`] folds
//! another held value in (the result depends on the later of the two records), and
//! [`Held::measure`] reads a `Copy` figure from it. Both take plain function pointers, which
//! capture nothing, so neither can carry the value out.

use crate::wal::commit::{Poisoned, Watermark};
use crate::wal::Lsn;

/// A value that may not be given out before the log is durable up to [`Held::lsn`].
#[must_use = "a held reply is only sent once it is released"]
#[derive(Debug)]
pub struct Held<T> {
    value: T,
    /// The last record the value depends on; `Lsn(0)` for none.
    lsn: Lsn,
}

impl<T> Held<T> {
    /// A value that depends on no log record: released at once.
    pub fn ready(value: T) -> Held<T> {
        Held { value, lsn: Lsn(0) }
    }

    /// A value that depends on every record up to `lsn` (the journal's tail when it was
    /// made).
    pub(super) fn after(value: T, lsn: Lsn) -> Held<T> {
        Held { value, lsn }
    }

    /// Adds to the value with `f`, which returns what it produced and the journal's tail
    /// once the records its additions depend on are queued; the value then depends on
    /// that tail too. There is no other way to add a plain value to a held one.
    pub(super) fn fill<R>(&mut self, f: impl FnOnce(&mut T) -> (R, Lsn)) -> R {
        let (result, lsn) = f(&mut self.value);
        self.lsn = self.lsn.max(lsn);
        result
    }

    /// Changes the value in place with `f` (which captures nothing, so it cannot carry
    /// the value out).
    pub(super) fn update(&mut self, f: fn(&mut T)) {
        f(&mut self.value);
    }

    /// The last log record the value depends on (`Lsn(0)`: none).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Folds `other` into this value with `add`; the result depends on the records both
    /// depended on.
    pub fn merge<U>(&mut self, other: Held<U>, add: fn(&mut T, U)) {
        add(&mut self.value, other.value);
        self.lsn = self.lsn.max(other.lsn);
    }

    /// A figure read from the value (its size, say), without releasing it.
    pub fn measure<R: Copy + 'static>(&self, f: fn(&T) -> R) -> R {
        f(&self.value)
    }

    /// Waits until every record the value depends on is durable (as the fsync policy
    /// defines it), then gives the value out. Fails, dropping the value, if the log has
    /// failed and those records may never be durable.
    pub async fn release(self, watermark: &Watermark) -> Result<T, Poisoned> {
        if self.lsn.0 > watermark.durable() {
            watermark.reached(self.lsn.0).await?;
        }
        Ok(self.value)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn push(to: &mut Vec<u8>, x: u8) {
        to.push(x);
    }

    #[test]
    fn a_held_value_comes_out_only_once_the_watermark_covers_it() {
        let watermark = Watermark::new(4);
        let mut held = Held::after(vec![1u8], Lsn(6));
        held.merge(Held::after(2, Lsn(5)), push);
        assert_eq!(held.lsn(), Lsn(6));
        let mut release = Box::pin(held.release(&watermark));
        assert!((&mut release).now_or_never().is_none());
        watermark.publish(5);
        assert!((&mut release).now_or_never().is_none());
        watermark.publish(6);
        let value = release.now_or_never().expect("released").expect("durable");
        assert_eq!(value, vec![1, 2]);
    }

    #[test]
    fn filling_a_held_value_raises_what_it_waits_for() {
        let watermark = Watermark::new(0);
        let mut held = Held::ready(Vec::new());
        assert!(Held::ready(()).release(&watermark).now_or_never().is_some());
        let n = held.fill(|v| {
            v.push(7u8);
            (v.len(), Lsn(3))
        });
        assert_eq!(n, 1);
        assert_eq!(held.measure(Vec::len), 1);
        // Merging a ready value keeps the older dependency.
        held.merge(Held::ready(8), push);
        assert_eq!(held.lsn(), Lsn(3));
        let mut release = Box::pin(held.release(&watermark));
        assert!((&mut release).now_or_never().is_none());
        watermark.publish(3);
        assert_eq!(
            release.now_or_never().expect("released").expect("durable"),
            vec![7, 8]
        );
    }

    #[test]
    fn a_failed_log_releases_nothing_it_did_not_make_durable() {
        let watermark = Watermark::new(2);
        watermark.fail(std::io::Error::other("disk gone"));
        let below = Held::after("old", Lsn(2)).release(&watermark);
        assert_eq!(below.now_or_never().expect("at once").ok(), Some("old"));
        let above = Held::after("new", Lsn(3)).release(&watermark);
        assert!(above.now_or_never().expect("at once").is_err());
    }
}
