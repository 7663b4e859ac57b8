//! The signals `larder serve` obeys: SIGTERM and SIGINT stop it (exit 0), SIGUSR1 puts it
//! in drain mode.
//!
//! They are blocked as the first thing `main` does ([`block`]) and unblocked only once
//! handlers for all three exist ([`Signals::install`]), so a signal that arrives while the
//! process is starting — parsing flags, binding, replaying the log — waits for its handler
//! instead of killing the process. Threads started while they are blocked keep them
//! blocked; the signals are then delivered to the main thread, which unblocked them.

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals that must never kill a starting server.
const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];

fn set_mask(how: libc::c_int) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data that sigemptyset initialises; pthread_sigmask reads
    // the set we built and writes nothing (the old-set pointer is null).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in HANDLED {
            libc::sigaddset(&mut set, sig);
        }
        match libc::pthread_sigmask(how, &set, std::ptr::null_mut()) {
            0 => Ok(()),
            rc => Err(std::io::Error::from_raw_os_error(rc)),
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGUSR1 in the calling thread (and the threads it starts
/// from now on): they stay pending until [`unblock`] or [`Signals::install`].
pub fn block() -> std::io::Result<()> {
    set_mask(libc::SIG_BLOCK)
}

/// Undoes [`block`], for subcommands that keep the default actions (Ctrl-C ends them).
pub fn unblock() -> std::io::Result<()> {
    set_mask(libc::SIG_UNBLOCK)
}

/// Handlers for the server's signals. Must be created inside the tokio runtime.
pub struct Signals {
    term: Signal,
    int: Signal,
    drain: Signal,
}

impl Signals {
    /// Installs the handlers, then unblocks the signals, so one that arrived earlier is
    /// handled now.
    pub fn install() -> anyhow::Result<Signals> {
        let signals = Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            drain: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
        };
        unblock().context("unblocking SIGTERM, SIGINT and SIGUSR1")?;
        Ok(signals)
    }

    /// Splits into the stop request (SIGTERM or SIGINT) and the drain requests (SIGUSR1).
    pub fn split(self) -> (impl std::future::Future<Output = ()>, Drain) {
        let Signals {
            mut term,
            mut int,
            drain,
        } = self;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        };
        (stop, Drain(Some(drain)))
    }
}

/// Requests for drain mode (SIGUSR1), or none (for servers run inside tests).
pub struct Drain(Option<Signal>);

impl Drain {
    /// A source that never asks for drain mode.
    pub fn never() -> Drain {
        Drain(None)
    }

    /// SIGUSR1, from now on.
    pub fn sigusr1() -> anyhow::Result<Drain> {
        signal(SignalKind::user_defined1())
            .map(|s| Drain(Some(s)))
            .context("installing the SIGUSR1 handler")
    }

    /// Resolves at the next request.
    pub async fn requested(&mut self) {
        match &mut self.0 {
            Some(s) => {
                if s.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}
