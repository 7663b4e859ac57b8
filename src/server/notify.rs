//! Readiness and stopping notices for systemd (`Type=notify`): `READY=1` once the log is
//! replayed and connections are accepted, `STOPPING=1` when shutdown begins. Without
//! `NOTIFY_SOCKET` in the environment (not started by systemd) they do nothing.

use sd_notify::NotifyState;

/// Tells the service manager the server is accepting connections.
pub fn ready() {
    send(NotifyState::Ready);
}

/// Tells the service manager the server is shutting down.
pub fn stopping() {
    send(NotifyState::Stopping);
}

fn send(state: NotifyState) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
