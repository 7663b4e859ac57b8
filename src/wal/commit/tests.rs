//! Tests of the watermark: waiters released in order, only once their position is durable,
//! and poisoning.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;
use std::thread;

use super::*;

/// A waker that counts how often it is woken.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    (counter.clone(), Waker::from(counter))
}

fn woken(counter: &Counter) -> usize {
    counter.0.load(Ordering::SeqCst)
}

fn poll(future: &mut Durable<'_>, waker: &Waker) -> Poll<Result<(), Poisoned>> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

fn fsync_error() -> io::Error {
    io::Error::other("fsync failed")
}

#[test]
fn wait_for_durable_lsn_returns_at_once_without_registering() {
    let watermark = Watermark::new(5);
    assert!(watermark.wait(0).is_ok());
    assert!(watermark.wait(5).is_ok());
    let (count, waker) = counter();
    assert!(matches!(
        poll(&mut watermark.reached(5), &waker),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(watermark.waiting(), 0);
    assert_eq!(woken(&count), 0);
}

#[test]
fn publish_below_the_watermark_is_ignored() {
    let watermark = Watermark::new(0);
    watermark.publish(10);
    watermark.publish(4);
    watermark.publish(10);
    assert_eq!(watermark.durable(), 10);
}

#[test]
fn publish_wakes_only_the_waiters_it_covers() {
    let watermark = Watermark::new(0);
    let (counts, wakers): (Vec<_>, Vec<_>) = (0..3).map(|_| counter()).unzip();
    let mut futures: Vec<_> = [2, 5, 9].map(|lsn| watermark.reached(lsn)).into();
    for (future, waker) in futures.iter_mut().zip(&wakers) {
        assert!(poll(future, waker).is_pending());
    }
    assert_eq!(watermark.waiting(), 3);

    watermark.publish(5);
    assert_eq!(
        counts.iter().map(|c| woken(c)).collect::<Vec<_>>(),
        [1, 1, 0]
    );
    assert_eq!(watermark.waiting(), 1);
    assert!(matches!(
        poll(&mut futures[0], &wakers[0]),
        Poll::Ready(Ok(()))
    ));
    assert!(matches!(
        poll(&mut futures[1], &wakers[1]),
        Poll::Ready(Ok(()))
    ));
    assert!(poll(&mut futures[2], &wakers[2]).is_pending());

    watermark.publish(9);
    assert_eq!(woken(&counts[2]), 1);
    assert!(matches!(
        poll(&mut futures[2], &wakers[2]),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(watermark.waiting(), 0);
}

#[test]
fn a_repoll_with_another_waker_replaces_the_first() {
    let watermark = Watermark::new(0);
    let (first, first_waker) = counter();
    let (second, second_waker) = counter();
    let mut future = watermark.reached(1);
    assert!(poll(&mut future, &first_waker).is_pending());
    assert!(poll(&mut future, &second_waker).is_pending());
    assert_eq!(watermark.waiting(), 1);
    watermark.publish(1);
    assert_eq!((woken(&first), woken(&second)), (0, 1));
}

#[test]
fn dropping_a_pending_wait_withdraws_it() {
    let watermark = Watermark::new(0);
    let (count, waker) = counter();
    let mut future = watermark.reached(3);
    assert!(poll(&mut future, &waker).is_pending());
    drop(future);
    assert_eq!(watermark.waiting(), 0);
    watermark.publish(3);
    assert_eq!(woken(&count), 0);
}

#[test]
fn fail_releases_every_waiter_with_an_error_and_freezes_the_watermark() {
    let watermark = Watermark::new(0);
    watermark.publish(2);
    let (count, waker) = counter();
    let mut futures: Vec<_> = [3, 4, 100].map(|lsn| watermark.reached(lsn)).into();
    for future in &mut futures {
        assert!(poll(future, &waker).is_pending());
    }

    watermark.fail(fsync_error());
    assert_eq!(woken(&count), 3);
    assert_eq!(watermark.waiting(), 0);
    for future in &mut futures {
        let Poll::Ready(Err(error)) = poll(future, &waker) else {
            panic!("a waiter above the watermark was not failed");
        };
        assert_eq!(error.durable(), 2);
        assert_eq!(error.cause().to_string(), "fsync failed");
    }

    watermark.publish(50);
    watermark.fail(io::Error::other("second failure"));
    assert_eq!(watermark.durable(), 2);
    assert!(watermark.is_poisoned());
    let error = watermark.wait(3).unwrap_err();
    assert_eq!(error.cause().to_string(), "fsync failed");
    assert!(matches!(
        poll(&mut watermark.reached(50), &waker),
        Poll::Ready(Err(_))
    ));
    assert!(
        watermark.wait(2).is_ok(),
        "a record durable before the failure stays durable"
    );
}

#[test]
fn blocked_threads_are_released_by_publish_and_by_fail() {
    let watermark = Arc::new(Watermark::new(0));
    let spawn = |lsn| {
        let watermark = watermark.clone();
        thread::spawn(move || watermark.wait(lsn).map(|()| watermark.durable()))
    };
    let covered = spawn(4);
    let beyond = spawn(9);
    // Both threads are blocked (publishes below must signal them, not find them early).
    while watermark.blocked() < 2 {
        thread::yield_now();
    }
    watermark.publish(3);
    watermark.publish(4);
    assert!(covered.join().unwrap().unwrap() >= 4);
    watermark.fail(fsync_error());
    assert_eq!(beyond.join().unwrap().unwrap_err().durable(), 4);
    assert_eq!(
        watermark.blocked(),
        0,
        "released threads are no longer counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_are_released_by_batched_publishes() {
    const RECORDS: u64 = 500;
    let watermark = Arc::new(Watermark::new(0));
    let waiters: Vec<_> = (1..=RECORDS)
        .map(|lsn| {
            let watermark = watermark.clone();
            tokio::spawn(async move {
                watermark.reached(lsn).await.unwrap();
                assert!(
                    watermark.durable() >= lsn,
                    "released before {lsn} was durable"
                );
            })
        })
        .collect();
    let publisher = {
        let watermark = watermark.clone();
        tokio::spawn(async move {
            while watermark.waiting() < RECORDS as usize {
                tokio::task::yield_now().await;
            }
            for lsn in (0..=RECORDS).step_by(7).chain([RECORDS]) {
                watermark.publish(lsn);
                tokio::task::yield_now().await;
            }
        })
    };
    publisher.await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(watermark.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_wakes_every_task_with_an_error() {
    let watermark = Arc::new(Watermark::new(10));
    let waiters: Vec<_> = (11..=200)
        .map(|lsn| {
            let watermark = watermark.clone();
            tokio::spawn(async move { watermark.reached(lsn).await })
        })
        .collect();
    while watermark.waiting() < waiters.len() {
        tokio::task::yield_now().await;
    }
    watermark.fail(fsync_error());
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap_err().durable(), 10);
    }
    assert!(watermark.reached(11).await.is_err());
    assert!(watermark.reached(10).await.is_ok());
}

fn poll_relay(relay: &mut Relay<'_>, waker: &Waker) -> Poll<()> {
    Pin::new(relay).poll(&mut Context::from_waker(waker))
}

#[test]
fn a_running_relay_is_woken_once_per_publish_and_wakes_the_released_tasks() {
    let watermark = Watermark::new(0);
    let (relay_count, relay_waker) = counter();
    let mut relay = watermark.relay();
    assert!(poll_relay(&mut relay, &relay_waker).is_pending());
    let waiters: Vec<_> = (1..=3).map(|_| counter()).collect();
    let mut waits: Vec<_> = (1..=3).map(|lsn| watermark.reached(lsn)).collect();
    for (wait, (_, waker)) in waits.iter_mut().zip(&waiters) {
        assert!(poll(wait, waker).is_pending());
    }

    // The publisher wakes the relay alone, once, however many tasks it releases.
    watermark.publish(2);
    assert_eq!(woken(&relay_count), 1);
    assert!(waiters.iter().all(|(count, _)| woken(count) == 0));
    // A second publish before the relay ran does not wake it again: it will take both.
    watermark.publish(3);
    assert_eq!(woken(&relay_count), 1);

    // The relay, polled, wakes every task released so far, and only them, once each.
    assert!(poll_relay(&mut relay, &relay_waker).is_pending());
    let counts: Vec<_> = waiters.iter().map(|(count, _)| woken(count)).collect();
    assert_eq!(counts, [1, 1, 1]);
    for (wait, (_, waker)) in waits.iter_mut().zip(&waiters) {
        assert!(matches!(poll(wait, waker), Poll::Ready(Ok(()))));
    }
    assert_eq!(watermark.waiting(), 0);

    // A publish that releases nobody does not wake the relay.
    watermark.publish(4);
    assert_eq!(woken(&relay_count), 1);
}

#[test]
fn dropping_the_relay_wakes_what_it_held_and_publishes_wake_tasks_again() {
    let watermark = Watermark::new(0);
    let (relay_count, relay_waker) = counter();
    let mut relay = watermark.relay();
    assert!(poll_relay(&mut relay, &relay_waker).is_pending());
    let (first_count, first) = counter();
    let (second_count, second) = counter();
    let mut first_wait = watermark.reached(1);
    let mut second_wait = watermark.reached(2);
    assert!(poll(&mut first_wait, &first).is_pending());
    assert!(poll(&mut second_wait, &second).is_pending());

    watermark.publish(1);
    assert_eq!((woken(&relay_count), woken(&first_count)), (1, 0));
    // The relay's task is gone before it ran: its drop wakes the task it was handed.
    drop(relay);
    assert_eq!(woken(&first_count), 1);
    // With no relay, the publisher wakes the task itself.
    watermark.publish(2);
    assert_eq!(woken(&second_count), 1);
    assert_eq!(woken(&relay_count), 1);
    assert!(matches!(
        poll(&mut second_wait, &second),
        Poll::Ready(Ok(()))
    ));
}

#[test]
fn a_relay_polled_by_another_task_takes_over_the_wake_ups() {
    let watermark = Watermark::new(0);
    let (old_count, old) = counter();
    let (new_count, new) = counter();
    let mut relay = watermark.relay();
    assert!(poll_relay(&mut relay, &old).is_pending());
    assert!(poll_relay(&mut relay, &new).is_pending());
    let (_, waiter) = counter();
    let mut wait = watermark.reached(1);
    assert!(poll(&mut wait, &waiter).is_pending());
    watermark.publish(1);
    assert_eq!((woken(&old_count), woken(&new_count)), (0, 1));
}

/// The server's arrangement: the tasks and the relay on one current-thread runtime, the
/// publishes from a thread of their own, as the log writer makes them.
#[test]
fn tasks_on_a_runtime_with_a_relay_are_released_by_a_publishing_thread() {
    const RECORDS: u64 = 300;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let watermark = Arc::new(Watermark::new(0));
    runtime.block_on(async {
        let relay = tokio::spawn({
            let watermark = watermark.clone();
            async move { watermark.relay().await }
        });
        let waiters: Vec<_> = (1..=RECORDS)
            .map(|lsn| {
                let watermark = watermark.clone();
                tokio::spawn(async move {
                    watermark.reached(lsn).await.unwrap();
                    assert!(watermark.durable() >= lsn, "released before {lsn}");
                })
            })
            .collect();
        while watermark.waiting() < RECORDS as usize || watermark.lock().relay.is_none() {
            tokio::task::yield_now().await;
        }
        let publisher = {
            let watermark = watermark.clone();
            thread::spawn(move || {
                for lsn in (0..=RECORDS).step_by(11).chain([RECORDS]) {
                    watermark.publish(lsn);
                }
            })
        };
        for waiter in waiters {
            waiter.await.unwrap();
        }
        publisher.join().unwrap();
        relay.abort();
        assert!(relay.await.unwrap_err().is_cancelled());
    });
    assert_eq!(watermark.waiting(), 0);
    assert!(
        watermark.lock().relay.is_none(),
        "the aborted relay deregistered"
    );
}
