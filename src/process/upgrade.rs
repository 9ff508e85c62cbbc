//! Zero-downtime upgrade, as nginx does it: on SIGUSR2 the daemon starts the binary at the same
//! path with the same arguments and hands it its listening sockets (from fd 3 on, counted in
//! `FASTSSE_LISTEN_FDS`). Once the new process accepts, it sends the old one SIGTERM: the old
//! one stops accepting and drains — every stream told to come back spread over
//! `drain_period`, and `Last-Event-ID` replay makes that lossless — while the new one serves.
//! The sockets never close, so no connection is refused meanwhile.

use std::sync::{Arc, Mutex};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::handover::{start_successor, Handover};

/// The process an upgrade started.
#[derive(Default)]
pub struct Successor(Mutex<Option<std::process::Child>>);

impl Successor {
    /// Whether a successor runs now (then the socket files are its, not to be removed).
    pub fn running(&self) -> bool {
        let mut child = self.0.lock().unwrap_or_else(|p| p.into_inner());
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// SIGUSR2: starts a successor with the listening sockets `fds`; `successor` keeps it, so that
/// shutdown leaves the socket files to it. A successor that fails to start (or exits before
/// it accepts) changes nothing: this process goes on serving.
pub async fn upgrade_on_usr2(
    sockets: Handover,
    successor: Arc<Successor>,
    shutdown: CancellationToken,
) {
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return log::error!("cannot install the SIGUSR2 handler");
    };
    loop {
        tokio::select! {
            _ = usr2.recv() => {}
            _ = shutdown.cancelled() => return,
        }
        if super::is_worker() {
            log::warn!("SIGUSR2 ignored: send it to the supervisor (this process's parent) to upgrade every worker");
            continue;
        }
        if successor.running() {
            log::warn!("SIGUSR2: an upgrade is already under way");
            continue;
        }
        match start_successor(&sockets) {
            Ok(child) => {
                log::info!(
                    "SIGUSR2: upgrade: started pid {} with {} listening socket(s); draining once it accepts",
                    child.id(),
                    sockets.len()
                );
                *successor.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
            }
            Err(e) => log::error!("SIGUSR2: upgrade failed, serving on: {e}"),
        }
    }
}
