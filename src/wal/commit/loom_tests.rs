//! Loom models of the watermark (run with `RUSTFLAGS="--cfg loom"`; see src/sync.rs).

use std::task::Wake;

use loom::future::block_on;
use loom::thread;

use super::*;
use crate::sync::Arc;

/// Runs `test` in every interleaving with at most 3 preemptions, unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
fn model(test: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(test);
}

/// A waker that does nothing, for a future polled once and then dropped.
struct Inert;

impl Wake for Inert {
    fn wake(self: std::sync::Arc<Self>) {}
}

/// How a waiter thread waits.
#[derive(Clone, Copy)]
enum How {
    Blocking,
    Async,
}

fn spawn_waiter(
    watermark: &Arc<Watermark>,
    lsn: u64,
    how: How,
) -> thread::JoinHandle<Result<(), Poisoned>> {
    let watermark = watermark.clone();
    thread::spawn(move || {
        let outcome = match how {
            How::Blocking => watermark.wait(lsn),
            How::Async => block_on(watermark.reached(lsn)),
        };
        if outcome.is_ok() {
            assert!(
                watermark.durable() >= lsn,
                "released before {lsn} was durable"
            );
        }
        outcome
    })
}

fn two_waiters_are_released_by_the_publishes_covering_them(how: How) {
    model(move || {
        let watermark = Arc::new(Watermark::new(0));
        let first = spawn_waiter(&watermark, 1, how);
        let second = spawn_waiter(&watermark, 2, how);
        let publisher = {
            let watermark = watermark.clone();
            thread::spawn(move || {
                watermark.publish(1);
                watermark.publish(2);
            })
        };
        publisher.join().unwrap();
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        assert_eq!(watermark.waiting(), 0);
    });
}

#[test]
fn two_blocked_threads_are_released_by_the_publishes_covering_them() {
    two_waiters_are_released_by_the_publishes_covering_them(How::Blocking);
}

#[test]
fn two_tasks_are_released_by_the_publishes_covering_them() {
    two_waiters_are_released_by_the_publishes_covering_them(How::Async);
}

fn failure_racing_a_publish_decides_the_waiter(how: How) {
    model(move || {
        let watermark = Arc::new(Watermark::new(0));
        let waiter = spawn_waiter(&watermark, 1, how);
        let failer = {
            let watermark = watermark.clone();
            thread::spawn(move || watermark.fail(io::Error::other("fsync failed")))
        };
        watermark.publish(1);
        failer.join().unwrap();
        match waiter.join().unwrap() {
            Ok(()) => assert_eq!(watermark.durable(), 1),
            Err(error) => {
                assert_eq!(error.durable(), 0);
                assert_eq!(watermark.durable(), 0);
            }
        }
        assert!(watermark.wait(2).is_err());
        assert_eq!(watermark.waiting(), 0);
    });
}

#[test]
fn failure_racing_a_publish_decides_a_blocked_thread() {
    failure_racing_a_publish_decides_the_waiter(How::Blocking);
}

#[test]
fn failure_racing_a_publish_decides_a_task() {
    failure_racing_a_publish_decides_the_waiter(How::Async);
}

fn registering_and_publishing_the_same_lsn_loses_no_wakeup(how: How) {
    model(move || {
        let watermark = Arc::new(Watermark::new(0));
        let waiter = spawn_waiter(&watermark, 1, how);
        watermark.publish(1);
        waiter.join().unwrap().unwrap();
        assert_eq!(watermark.waiting(), 0);
    });
}

#[test]
fn a_blocked_thread_and_a_publish_of_its_lsn_lose_no_wakeup() {
    registering_and_publishing_the_same_lsn_loses_no_wakeup(How::Blocking);
}

#[test]
fn a_task_and_a_publish_of_its_lsn_lose_no_wakeup() {
    registering_and_publishing_the_same_lsn_loses_no_wakeup(How::Async);
}

#[test]
fn a_wait_dropped_while_a_publish_runs_leaves_nothing_registered() {
    model(|| {
        let watermark = Arc::new(Watermark::new(0));
        let canceller = {
            let watermark = watermark.clone();
            thread::spawn(move || {
                let waker = Waker::from(std::sync::Arc::new(Inert));
                let mut future = watermark.reached(1);
                let _ = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
            })
        };
        watermark.publish(1);
        canceller.join().unwrap();
        assert_eq!(watermark.waiting(), 0);
    });
}

/// The runtime's thread and the log's writer thread both publish (the runtime writes a lone
/// client's batches itself, and hands one it cannot finish to the writer thread): in either
/// order the watermark ends at the higher LSN, and a waiter on it is released only then.
#[test]
fn publishes_from_two_threads_keep_the_higher_one() {
    model(|| {
        let watermark = Arc::new(Watermark::new(0));
        let waiter = spawn_waiter(&watermark, 2, How::Async);
        let runtime = {
            let watermark = watermark.clone();
            thread::spawn(move || watermark.publish(1))
        };
        watermark.publish(2);
        runtime.join().unwrap();
        waiter.join().unwrap().unwrap();
        assert_eq!(watermark.durable(), 2);
        assert_eq!(watermark.waiting(), 0);
    });
}

/// The server's arrangement: one thread runs the relay and a waiting task together (as the
/// runtime does), another publishes. However they interleave, the task is released.
#[test]
fn a_task_behind_a_relay_loses_no_wakeup() {
    model(|| {
        let watermark = Arc::new(Watermark::new(0));
        let runtime = {
            let watermark = watermark.clone();
            thread::spawn(move || {
                block_on(async {
                    let relay = std::pin::pin!(watermark.relay());
                    let wait = std::pin::pin!(watermark.reached(1));
                    match futures_util::future::select(relay, wait).await {
                        futures_util::future::Either::Right((outcome, _)) => outcome,
                        futures_util::future::Either::Left(((), _)) => {
                            unreachable!("the relay never resolves")
                        }
                    }
                })
            })
        };
        watermark.publish(1);
        runtime.join().unwrap().unwrap();
        assert_eq!(watermark.waiting(), 0);
    });
}

/// A relay dropped (its task aborted) while a publish hands it a waiter: the waiter is
/// still released, by the publish or by the drop.
#[test]
fn a_relay_dropped_while_a_publish_runs_loses_no_wakeup() {
    model(|| {
        let watermark = Arc::new(Watermark::new(0));
        let waiter = spawn_waiter(&watermark, 1, How::Async);
        let relay = {
            let watermark = watermark.clone();
            thread::spawn(move || {
                let waker = Waker::from(std::sync::Arc::new(Inert));
                let mut relay = watermark.relay();
                let _ = Pin::new(&mut relay).poll(&mut Context::from_waker(&waker));
            })
        };
        watermark.publish(1);
        relay.join().unwrap();
        waiter.join().unwrap().unwrap();
    });
}
