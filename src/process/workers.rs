//! `[server] processes = N`: one supervisor and N worker processes sharing the listening
//! sockets (the kernel hands each new connection to one of them) and the journals (any process
//! appends under the journal's lock; every process follows it). This is how one host serves
//! more streams than one process may hold files — 20,000 here — as nginx does with
//! `worker_processes`.
//!
//! The supervisor binds, opens no journal and serves nothing: it starts the workers (the same
//! binary and arguments, the sockets from fd 3 as an upgrade hands them over), restarts one that
//! dies (backing off while it keeps dying), forwards SIGHUP (reload) and SIGTERM/SIGINT
//! (drain, then exit), and upgrades the whole set on SIGUSR2. It is a plain blocking loop on a
//! signalfd: no runtime, nothing to block. A worker ends when its supervisor dies.

use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::handover::{spawn_with_listeners, start_successor, Handover};
use super::WORKER;
use crate::listen::BoundListener;

/// One worker slot.
struct Worker {
    child: Option<Child>,
    started: Instant,
    /// When to start it again (after it died).
    restart_at: Option<Instant>,
    backoff: Duration,
}

fn start(n: usize, sockets: &Handover) -> Option<Child> {
    match spawn_with_listeners(sockets, &[(WORKER, n.to_string())], true) {
        Ok(c) => {
            log::info!("worker {n}: started, pid {}", c.id());
            Some(c)
        }
        Err(e) => {
            log::error!("worker {n}: cannot start: {e}");
            None
        }
    }
}

fn signal_all(workers: &[Worker], sig: Signal) {
    for w in workers {
        if let Some(c) = &w.child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }
}

/// Reaps workers that exited; schedules their restart unless `stopping`.
fn reap(workers: &mut [Worker], stopping: bool) {
    for (n, w) in workers.iter_mut().enumerate() {
        let Some(c) = &mut w.child else { continue };
        let Ok(Some(status)) = c.try_wait() else {
            continue;
        };
        w.child = None;
        if stopping {
            continue;
        }
        // A worker that lived a while starts again at once; one that keeps dying backs off.
        w.backoff = if w.started.elapsed() > Duration::from_secs(30) {
            Duration::from_millis(200)
        } else {
            (w.backoff * 2).min(Duration::from_secs(30))
        };
        log::error!(
            "worker {n} exited ({status}); starting it again in {:?}",
            w.backoff
        );
        w.restart_at = Some(Instant::now() + w.backoff);
    }
}

/// The signals the supervisor takes, blocked and read from a signalfd.
fn signals() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))
}

/// The supervisor's state: its workers, the sockets they share, an upgrade's successor, and
/// when stopping gives up waiting.
struct Supervisor {
    processes: usize,
    workers: Vec<Worker>,
    fds: Handover,
    successor: Option<Child>,
    stop_deadline: Option<Instant>,
    grace: Duration,
}

/// Runs the supervisor for `processes` workers on `listeners` until SIGTERM/SIGINT and every
/// worker has exited (or `grace` more passed: they are killed). Blocking; call it with no
/// runtime and no other thread running.
pub fn supervise(
    processes: usize,
    listeners: Vec<BoundListener>,
    grace: Duration,
) -> Result<(), String> {
    let sfd = signals()?;
    let fds = Handover::of(&listeners);
    for l in &listeners {
        log::info!("listening on {l} for {processes} worker processes");
    }
    let workers: Vec<Worker> = (0..processes)
        .map(|n| Worker {
            child: start(n, &fds),
            started: Instant::now(),
            restart_at: None,
            backoff: Duration::from_millis(100),
        })
        .collect();
    // Started by an upgrade: the workers accept now, the old set may drain.
    super::handover::relieve_predecessor();
    let mut sup = Supervisor {
        processes,
        workers,
        fds,
        successor: None,
        stop_deadline: None,
        grace,
    };
    while sup.tick() {
        let mut pfd = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut pfd, PollTimeout::from(200u16));
        while let Ok(Some(info)) = sfd.read_signal() {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                sup.on_signal(signal);
            }
        }
    }
    let successor = &mut sup.successor;
    // After an upgrade the socket files belong to the successor (same sockets).
    let handed_over = successor
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    if !handed_over {
        for l in &listeners {
            if let BoundListener::Unix {
                cleanup: Some(p), ..
            } = l
            {
                p.remove_if_ours();
            }
        }
    }
    log::info!("every worker has exited");
    Ok(())
}

impl Supervisor {
    /// Reaps exited workers and restarts those due; `false` once stopping is done (every
    /// worker exited, or killed after the grace period).
    fn tick(&mut self) -> bool {
        let stopping = self.stop_deadline.is_some();
        reap(&mut self.workers, stopping);
        if stopping && self.workers.iter().all(|w| w.child.is_none()) {
            return false;
        }
        if self.stop_deadline.is_some_and(|d| Instant::now() >= d) {
            log::warn!("workers still running after the grace period: killing them");
            signal_all(&self.workers, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            reap(&mut self.workers, true);
            return false;
        }
        for (n, w) in self.workers.iter_mut().enumerate() {
            if w.child.is_none() && !stopping && w.restart_at.is_some_and(|t| Instant::now() >= t) {
                w.restart_at = None;
                w.started = Instant::now();
                w.child = start(n, &self.fds);
                if w.child.is_none() {
                    w.restart_at = Some(Instant::now() + w.backoff);
                }
            }
        }
        true
    }

    /// SIGTERM/SIGINT: drain every worker; SIGHUP: each reloads; SIGUSR2: an upgrade.
    fn on_signal(&mut self, signal: Signal) {
        let stopping = self.stop_deadline.is_some();
        match signal {
            Signal::SIGTERM | Signal::SIGINT if !stopping => {
                log::info!("shutting down: telling {} workers to drain", self.processes);
                signal_all(&self.workers, Signal::SIGTERM);
                self.stop_deadline = Some(Instant::now() + self.grace + Duration::from_secs(2));
            }
            Signal::SIGHUP => {
                log::info!("SIGHUP: every worker reloads its config ([server] processes is read at start only)");
                signal_all(&self.workers, Signal::SIGHUP);
            }
            Signal::SIGUSR2 if !stopping => self.upgrade(),
            _ => {}
        }
    }

    /// Starts a successor supervisor that takes the sockets over (unless one is starting).
    fn upgrade(&mut self) {
        if self
            .successor
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            log::warn!("SIGUSR2: an upgrade is already under way");
            return;
        }
        match start_successor(&self.fds) {
            Ok(c) => {
                log::info!(
                    "SIGUSR2: upgrade: started supervisor pid {}; draining once its workers accept",
                    c.id()
                );
                self.successor = Some(c);
            }
            Err(e) => log::error!("SIGUSR2: upgrade failed, serving on: {e}"),
        }
    }
}
