//! Cost per operation of the broker state machine with 1,000,000 jobs present: `put`,
//! `reserve` and `delete`, each a call of [`Engine::apply`] plus dropping the changes it
//! queued for the log (what the server takes under the same lock). No I/O, no clock: the
//! engine is the part of a command's cost that holds the broker's lock.
//!
//! Every timed run is followed by an untimed one that undoes it (the puts are deleted, the
//! reserved jobs released, the deleted jobs put back), so every sample sees 1,000,000 jobs.
//!
//! ```text
//! cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use larder::engine::{
    Engine, EngineConfig, Limits, Outcome, ProcessInfo, SessionId, Timestamp, NANOS_PER_SEC,
};
use larder::protocol::{Command, JobId, Reply};

/// Jobs present while every operation is measured.
const JOBS: usize = 1_000_000;

/// Most operations timed before they are undone, so the population stays within 10% of
/// [`JOBS`] however many iterations criterion asks for (its warm-up doubles them).
const CHUNK: u64 = 100_000;

const NOW: Timestamp = Timestamp(1_800_000_000 * NANOS_PER_SEC);

/// The engine, its session, and the ids of the ready jobs, oldest first.
struct World {
    engine: Engine,
    session: SessionId,
    ready: VecDeque<JobId>,
    body: Bytes,
}

impl World {
    fn new() -> World {
        let config = EngineConfig {
            limits: Limits::UNLIMITED,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, ProcessInfo::fixed(), NOW);
        let session = engine.open_session();
        let mut w = World {
            engine,
            session,
            ready: VecDeque::with_capacity(JOBS * 2),
            body: Bytes::from(vec![b'x'; 100]),
        };
        for _ in 0..JOBS {
            let id = w.put();
            w.ready.push_back(id);
        }
        assert_eq!(w.engine.job_count(), JOBS);
        w
    }

    fn apply(&mut self, cmd: Command) -> Reply {
        let outcome = self.engine.apply(self.session, cmd, NOW);
        self.engine.discard_changes();
        match outcome {
            Outcome::Reply(r) => r,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    fn put(&mut self) -> JobId {
        match self.apply(Command::Put {
            pri: 1024,
            delay: 0,
            ttr: 60,
            body: self.body.clone(),
        }) {
            Reply::Inserted(id) => id,
            other => panic!("put: {other:?}"),
        }
    }

    fn delete(&mut self, id: JobId) {
        let reply = self.apply(Command::Delete(id));
        assert_eq!(reply, Reply::Deleted, "delete {id}");
    }

    fn reserve(&mut self) -> JobId {
        match self.apply(Command::ReserveWithTimeout(0)) {
            Reply::Reserved { id, .. } => id,
            other => panic!("reserve: {other:?}"),
        }
    }

    fn release(&mut self, id: JobId) {
        let reply = self.apply(Command::Release {
            id,
            pri: 1024,
            delay: 0,
        });
        assert_eq!(reply, Reply::Released, "release {id}");
    }

    /// Runs `timed` on chunks of at most [`CHUNK`] of `iters` operations and adds up the
    /// times it reports.
    fn in_chunks(&mut self, iters: u64, timed: fn(&mut World, u64) -> Duration) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(CHUNK);
            total += timed(self, n);
            left -= n;
        }
        total
    }

    /// Times `iters` puts, then deletes them.
    fn time_puts(&mut self, iters: u64) -> Duration {
        let mut ids = Vec::with_capacity(iters as usize);
        let start = Instant::now();
        for _ in 0..iters {
            ids.push(black_box(self.put()));
        }
        let took = start.elapsed();
        for id in ids {
            self.delete(id);
        }
        took
    }

    /// Times `iters` reserves, then releases the jobs.
    fn time_reserves(&mut self, iters: u64) -> Duration {
        let mut ids = Vec::with_capacity(iters as usize);
        let start = Instant::now();
        for _ in 0..iters {
            ids.push(black_box(self.reserve()));
        }
        let took = start.elapsed();
        for id in ids {
            self.release(id);
        }
        took
    }

    /// Times deleting the `iters` oldest ready jobs, then puts as many back.
    fn time_deletes(&mut self, iters: u64) -> Duration {
        let ids: Vec<JobId> = self.ready.drain(..iters as usize).collect();
        let start = Instant::now();
        for &id in &ids {
            self.delete(black_box(id));
        }
        let took = start.elapsed();
        for _ in 0..iters {
            let id = self.put();
            self.ready.push_back(id);
        }
        took
    }
}

fn engine(c: &mut Criterion) {
    let mut w = World::new();
    let mut g = c.benchmark_group("engine at 1M jobs");
    g.bench_function("put", |b| {
        b.iter_custom(|iters| w.in_chunks(iters, World::time_puts))
    });
    g.bench_function("reserve", |b| {
        b.iter_custom(|iters| w.in_chunks(iters, World::time_reserves))
    });
    g.bench_function("delete", |b| {
        b.iter_custom(|iters| w.in_chunks(iters, World::time_deletes))
    });
    g.finish();
    assert_eq!(w.engine.job_count(), JOBS);
}

criterion_group!(benches, engine);
criterion_main!(benches);
