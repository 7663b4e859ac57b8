//! The limits the server enforces around the engine: the connection gate
//! (`--max-connections`) and the free-space watcher (`--min-free-disk`). The engine
//! enforces the job limits and counts every refusal; the per-connection output limit lives
//! in `connection`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Broker;
use crate::datadir::FreeSpaceProbe;
use crate::protocol::{Refusal, Reply};

/// How long a refused connection is given to take its `REFUSED` line and hang up.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Refused connections that may be in the middle of their refusal at once (writing the
/// `REFUSED` line and lingering); past this, a connection over the limit is closed at
/// once without a line, so a connection storm cannot pile up open descriptors.
pub const MAX_LINGERING: usize = 16;

/// Admits at most `--max-connections` connections at once.
pub struct ConnectionGate {
    /// `None`: no limit.
    permits: Option<Arc<Semaphore>>,
    /// Places for refused connections to linger.
    lingering: Arc<Semaphore>,
}

/// A connection's place under the limit, given back when dropped.
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ConnectionGate {
    /// A gate for `max` connections (0: no limit).
    pub fn new(max: u64) -> ConnectionGate {
        let max = usize::try_from(max)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        ConnectionGate {
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            lingering: Arc::new(Semaphore::new(MAX_LINGERING)),
        }
    }

    /// A place for one more connection, or `None` if the server has as many as it takes.
    pub fn admit(&self) -> Option<Admitted> {
        match &self.permits {
            None => Some(Admitted { _permit: None }),
            Some(s) => s
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| Admitted { _permit: Some(p) }),
        }
    }

    /// Tells a connection over the limit why it is closed, and closes it: the returned
    /// task writes `REFUSED max-connections`, half-closes, and reads (discarding) until the
    /// client hangs up or [`REFUSAL_LINGER`] passes, so that closing with unread input
    /// does not reset the connection before the client has read the line. Beyond
    /// [`MAX_LINGERING`] refusals at once, the connection is closed here and now, without
    /// a line (`None`).
    pub fn turn_away<S>(
        &self,
        stream: S,
        broker: Arc<Broker>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match self.lingering.clone().try_acquire_owned() {
            Ok(linger) => Some(turn_away(stream, broker, linger)),
            Err(_) => {
                broker.with_engine(|e| e.refuse_connection());
                drop(stream);
                None
            }
        }
    }
}

/// File descriptors the server keeps for itself besides connections: standard streams,
/// listener, the runtime's, lock and reserve files, the log's directory and active
/// segment, segment files open for reading ([`super::body_reader::MAX_OPEN_SEGMENTS`]), and
/// room to spare.
pub const OTHER_FILES: u64 = 16 + super::body_reader::MAX_OPEN_SEGMENTS as u64;

/// Descriptors kept free of client connections: refusals in progress and the server's own.
pub const RESERVED_FILES: u64 = MAX_LINGERING as u64 + OTHER_FILES;

/// Makes sure, at start-up, that the process may open enough files for `max_connections`
/// plus [`RESERVED_FILES`]: raises the soft open-files limit towards the hard one if
/// needed. If that is not enough, fewer connections are admitted (with a warning), so that
/// clients can never take the descriptors the log needs. Returns the connection limit to
/// enforce.
pub fn check_open_files_limit(max_connections: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let needed = max_connections.saturating_add(RESERVED_FILES);
    let mut limit = getrlimit(Resource::Nofile);
    if max_connections > 0 && limit.current.is_some_and(|soft| soft < needed) {
        let raised = limit.maximum.map_or(needed, |hard| hard.min(needed));
        let wanted = rustix::process::Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    match limit.current {
        Some(soft) if max_connections > 0 && soft < needed => {
            let fits = soft.saturating_sub(RESERVED_FILES).max(1);
            tracing::warn!(
                open_files_limit = soft,
                max_connections,
                admitted = fits,
                "the open-files limit (ulimit -n) is below --max-connections plus {RESERVED_FILES} \
                 kept for the server itself: admitting at most {fits} connections"
            );
            fits
        }
        Some(soft) if max_connections == 0 => {
            tracing::warn!(
                open_files_limit = soft,
                "--max-connections 0 (no limit): clients can take every file descriptor, and \
                 new jobs are then refused (REFUSED open-files) until they are given back"
            );
            0
        }
        _ => max_connections,
    }
}

/// Rate-limits the warning for failed `accept` calls: one line per [`ACCEPT_WARN_EVERY`],
/// with the number of failures since the last.
#[derive(Default)]
pub struct AcceptErrors {
    last: Option<std::time::Instant>,
    since: u64,
}

/// Shortest time between two warnings about failed `accept` calls.
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

impl AcceptErrors {
    /// Records a failed `accept`, logging it if the last warning is old enough.
    pub fn failed(&mut self, e: &std::io::Error) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < ACCEPT_WARN_EVERY) {
            return;
        }
        tracing::warn!(error = %e, failures = self.since, "accept failed");
        self.last = Some(std::time::Instant::now());
        self.since = 0;
    }
}

/// See [`ConnectionGate::turn_away`]; lingers only with a `linger` place.
async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    broker: Arc<Broker>,
    linger: OwnedSemaphorePermit,
) {
    broker.with_engine(|e| e.refuse_connection());
    // A reply without a body always encodes to bytes.
    let line = Reply::Refused(Refusal::MaxConnections)
        .to_bytes()
        .unwrap_or_default();
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&line).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
    drop(linger);
}

/// Measures the free space of `dir`'s filesystem with `probe` every `interval` and hands
/// it to the engine, until the task is dropped. The first measurement is taken by
/// [`measure_free_space`] before the server accepts connections.
pub async fn watch_free_space(
    broker: Arc<Broker>,
    dir: PathBuf,
    probe: FreeSpaceProbe,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (dir2, probe2) = (dir.clone(), probe.clone());
        // statvfs is quick, but a hung filesystem must not stall the connections' thread.
        let free = tokio::task::spawn_blocking(move || probe2.measure(&dir2))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        report(&broker, &dir, free, false);
    }
}

/// Measures once, now (at start-up).
pub fn measure_free_space(broker: &Broker, dir: &std::path::Path, probe: &FreeSpaceProbe) {
    report(broker, dir, probe.measure(dir), true);
}

/// Hands a measurement to the engine. A failure is logged when it is the first one after
/// a success (or `always`), not every second.
fn report(broker: &Broker, dir: &std::path::Path, free: std::io::Result<u64>, always: bool) {
    let free = match free {
        Ok(free) => Some(free),
        Err(e) => {
            // Unknown free space refuses nothing: the log's own write errors still stop
            // confirmations if the disk really is full.
            if always || broker.with_engine(|e| e.free_disk().is_some()) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot measure free disk space");
            }
            None
        }
    };
    broker.with_engine(|e| e.set_free_disk(free));
}
