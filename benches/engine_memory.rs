//! Heap bytes per queued job in the engine alone, by priority pattern: puts 1,000,000 jobs
//! of one session, places each body in a (pretend) log as the server does, and counts the
//! bytes the allocator was asked for and not given back. No allocator slack, no server;
//! `benches/memory.sh` measures the whole process's RSS against beanstalkd.
//!
//! Run: `cargo bench --bench engine_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use larder::engine::{
    BodyRef, Engine, EngineConfig, Limits, Outcome, ProcessInfo, Timestamp, NANOS_PER_SEC,
};
use larder::protocol::{Command, Reply};

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(new_size, Ordering::Relaxed);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const JOBS: u64 = 1_000_000;
const BODY: u32 = 100;

/// Puts [`JOBS`] jobs, the `i`th with priority `pri(i)`, and prints the bytes per job.
fn run(name: &str, pri: impl Fn(u64) -> u32) {
    let now = Timestamp(1_800_000_000 * NANOS_PER_SEC);
    let config = EngineConfig {
        limits: Limits::UNLIMITED,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, ProcessInfo::fixed(), now);
    let session = engine.open_session();
    let body = Bytes::from(vec![b'x'; BODY as usize]);
    let before = IN_USE.load(Ordering::Relaxed);
    for i in 0..JOBS {
        let put = Command::Put {
            pri: pri(i),
            delay: 0,
            ttr: 60,
            body: body.clone(),
        };
        let outcome = engine.apply(session, put, now);
        engine.discard_changes();
        let Outcome::Reply(Reply::Inserted(id)) = outcome else {
            panic!("put {i}: {outcome:?}");
        };
        let at = BodyRef {
            segment: 1,
            offset: (i * u64::from(BODY)) as u32,
            len: BODY,
        };
        assert!(engine.place_body(id, at), "place {id}");
    }
    let used = IN_USE.load(Ordering::Relaxed) - before;
    println!("{name:>22}: {:6.1} B/job", used as f64 / JOBS as f64);
}

fn main() {
    println!("engine heap per ready job, {JOBS} jobs");
    run("one priority", |_| 10);
    run("8 priorities in turn", |i| (i % 8) as u32);
    // Spread over all of u32 (Fibonacci hashing of the index).
    run("random priorities", |i| {
        (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
    });
}
