//! systemd's service notifications (sd_notify(3)) for the `Type=notify`
//! units: `READY=1` once the sockets are bound and the database is open,
//! `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` at shutdown.
//! Without `NOTIFY_SOCKET` (not started by systemd) each is a no-op.
//!
//! The units say `NotifyAccess=main`: only the process systemd started
//! may notify, so these are sent from it and never from a child.

use sd_notify::NotifyState;

/// The sockets are bound and the database open: requests are served.
pub fn ready() {
    send(&[NotifyState::Ready], "ready");
}

/// A reload begins; [`reloaded`] ends it. MONOTONIC_USEC lets systemd
/// tell this reload from an earlier one (systemd.service(5), Type=).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now], "reloading"),
        Err(_) => send(&[NotifyState::Reloading], "reloading"),
    }
}

/// A reload has ended, whether or not it kept the old configuration.
pub fn reloaded() {
    send(&[NotifyState::Ready], "reloaded");
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping], "stopping");
}

fn send(states: &[NotifyState], what: &str) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot tell systemd the service is {what}");
    }
}
