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

/// Refused connections that may linger at once; past this, they are closed right after
/// the `REFUSED` line, so a connection storm cannot pile up open descriptors.
const MAX_LINGERING: usize = 64;

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

    /// Tells a connection over the limit why it is closed, and closes it: writes
    /// `REFUSED max-connections`, half-closes, and reads (discarding) until the client
    /// hangs up or [`REFUSAL_LINGER`] passes, so that closing with unread input does not
    /// reset the connection before the client has read the line. Beyond [`MAX_LINGERING`]
    /// refused connections at once, it closes without lingering.
    pub fn turn_away<S>(
        &self,
        stream: S,
        broker: Arc<Broker>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let linger = self.lingering.clone().try_acquire_owned().ok();
        turn_away(stream, broker, linger)
    }
}

/// File descriptors the server needs besides its connections (listener, log segments,
/// lock file, standard streams), with room to spare.
const OTHER_FILES: u64 = 64;

/// Makes sure, at start-up, that the process may open enough files for `max_connections`:
/// raises the soft open-files limit towards the hard one if needed, and warns if that is
/// not enough (connections beyond it would fail at `accept` instead of being told
/// `REFUSED`).
pub fn check_open_files_limit(max_connections: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let needed = max_connections.saturating_add(OTHER_FILES);
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
    if let Some(soft) = limit.current {
        if max_connections == 0 || soft < needed {
            tracing::warn!(
                open_files_limit = soft,
                max_connections,
                "the open-files limit (ulimit -n) is below --max-connections plus {OTHER_FILES}: \
                 connections past it fail at accept without a REFUSED line"
            );
        }
    }
}

/// See [`ConnectionGate::turn_away`]; lingers only with a `linger` place.
async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    broker: Arc<Broker>,
    linger: Option<OwnedSemaphorePermit>,
) {
    broker.with_engine(|e| e.refuse_connection());
    // A reply without a body always encodes to bytes.
    let line = Reply::Refused(Refusal::MaxConnections)
        .to_bytes()
        .unwrap_or_default();
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&line).await?;
        stream.shutdown().await?;
        if linger.is_some() {
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
        }
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
