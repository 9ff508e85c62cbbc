//! Zero-downtime upgrade, as nginx does it: on SIGUSR2 the daemon starts the binary at the same
//! path with the same arguments and hands it its listening sockets (from fd 3 on, counted in
//! `FASTSSE_LISTEN_FDS`). Once the new process accepts, it sends the old one SIGTERM: the old
//! one stops accepting and drains — every stream told to come back spread over
//! `drain_period`, and `Last-Event-ID` replay makes that lossless — while the new one serves.
//! The sockets never close, so no connection is refused meanwhile.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::listen::{inherited, BoundListener, ListenError, SocketFile};

/// How many listening sockets (from fd 3) a process started by an upgrade was handed.
const LISTEN_FDS: &str = "FASTSSE_LISTEN_FDS";
/// The pid of the process that started this one by an upgrade, told to drain once it accepts.
const UPGRADE_FROM: &str = "FASTSSE_UPGRADE_FROM";
const FIRST_FD: RawFd = 3;

/// In a process started by an upgrade: the listening sockets it was handed. The variable is
/// removed, so that a later upgrade passes its own.
pub fn inherited_listeners() -> Option<Result<Vec<BoundListener>, ListenError>> {
    let n: RawFd = std::env::var(LISTEN_FDS).ok()?.trim().parse().ok()?;
    std::env::remove_var(LISTEN_FDS);
    let listeners = (FIRST_FD..FIRST_FD + n.max(0))
        .map(|fd| {
            let l = inherited(fd).unwrap_or_else(|| {
                Err(ListenError::Io {
                    what: format!("fd {fd} from the upgraded process"),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a listening socket"),
                })
            })?;
            // The socket file is this process's now: removed at exit, as its predecessor would.
            Ok(match l {
                BoundListener::Unix { listener, .. } => {
                    let cleanup = listener
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_pathname().and_then(SocketFile::adopt));
                    BoundListener::Unix { listener, cleanup }
                }
                tcp => tcp,
            })
        })
        .collect();
    Some(listeners)
}

/// In a process started by an upgrade, once it accepts: tells its predecessor to drain.
pub fn relieve_predecessor() {
    let Ok(pid) = std::env::var(UPGRADE_FROM) else {
        return;
    };
    std::env::remove_var(UPGRADE_FROM);
    if let Ok(pid) = pid.trim().parse::<i32>() {
        log::info!("upgrade: accepting; telling the old process {pid} to drain");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

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

/// The binary to start: argv[0] when it is a path, else this process's executable.
fn binary() -> io::Result<std::path::PathBuf> {
    if let Some(arg0) = std::env::args_os().next() {
        let p = std::path::PathBuf::from(arg0);
        if p.components().count() > 1 {
            return Ok(p);
        }
    }
    std::env::current_exe()
}

/// Starts the same binary with the same arguments, handing it `fds` as fds 3, 4, …
fn start_successor(fds: &[RawFd]) -> io::Result<std::process::Child> {
    const MAX: usize = 16;
    if fds.len() > MAX {
        return Err(io::Error::other(format!(
            "more than {MAX} listening sockets"
        )));
    }
    let mut cmd = std::process::Command::new(binary()?);
    cmd.args(std::env::args_os().skip(1))
        .env(LISTEN_FDS, fds.len().to_string())
        .env(UPGRADE_FROM, std::process::id().to_string());
    let fds = fds.to_vec();
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move each socket out of the way first, so that placing one at 3 + i never
            // overwrites another still to be placed.
            // (No allocation between fork and exec: a fixed array.)
            let mut high = [0 as RawFd; MAX];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD(1000))
                    .map_err(io::Error::from)?;
            }
            for (i, &h) in high[..fds.len()].iter().enumerate() {
                nix::unistd::dup2(h, FIRST_FD + i as RawFd).map_err(io::Error::from)?;
                nix::unistd::close(h).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// SIGUSR2: starts a successor with the listening sockets `fds`; `successor` keeps it, so that
/// shutdown leaves the socket files to it. A successor that fails to start (or exits before
/// it accepts) changes nothing: this process goes on serving.
pub async fn upgrade_on_usr2(
    fds: Vec<RawFd>,
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
        if successor.running() {
            log::warn!("SIGUSR2: an upgrade is already under way");
            continue;
        }
        match start_successor(&fds) {
            Ok(child) => {
                log::info!(
                    "SIGUSR2: upgrade: started pid {} with {} listening socket(s); draining once it accepts",
                    child.id(),
                    fds.len()
                );
                *successor.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
            }
            Err(e) => log::error!("SIGUSR2: upgrade failed, serving on: {e}"),
        }
    }
}
