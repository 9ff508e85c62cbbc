//! A shared command: one process for every subscriber of the route. A supervisor task starts
//! it when the first subscriber arrives (or at once with `start = "always"`), reads its stdout
//! into events — broadcast live, or published to the route's hub when it has a `topic` — ends
//! it `idle_stop` after the last subscriber left, and restarts it with backoff when it exits.
//! A subscriber that falls `subscriber_queue` events behind is cut off with a `retry:` hint
//! (the slow-subscriber rule), so a flooding program never grows memory.
//!
//! Under `[server] processes = N` the program runs once for the box, in worker 0. Another
//! worker whose subscribers want it follows worker 0's feed ([`crate::siblings::follow`]): the
//! connection counts as a subscriber there, and carries the live events into this worker's
//! broadcast (with a `topic`, the events reach every worker through the shared journal, and
//! the connection only says the program is wanted).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use super::output::{DropReport, OutputRules};
use super::{end, Program, Start};
use crate::hub::journal::Publication;
use crate::hub::Hub;
use crate::source::{NextEvent, Source};
use crate::sse::EncodedEvent;

/// Longest wait before a program that keeps exiting is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What `/status` shows of a shared command.
#[derive(Debug, Default)]
pub struct SharedStats {
    /// Whether the process runs now.
    pub running: AtomicBool,
    /// Its pid (0 when none).
    pub pid: AtomicU32,
    /// Times it was started again after it exited.
    pub restarts: AtomicU64,
    /// Events read from it.
    pub events: AtomicU64,
    /// Events dropped as larger than `max_event_bytes` (so the broadcast buffer holds at most
    /// `subscriber_queue` × that many bytes).
    pub dropped: AtomicU64,
}

/// One shared command route.
pub struct SharedProgram {
    program: Program,
    output: OutputRules,
    start: Start,
    idle_stop: Duration,
    retry_ms: u64,
    live: broadcast::Sender<Bytes>,
    hub: Option<(Arc<Hub>, String)>,
    wanted: Notify,
    started: std::sync::OnceLock<()>,
    /// Another worker runs the program: the data directory of the box, whose worker 0 this
    /// one follows.
    follows: Option<PathBuf>,
    /// Siblings following this worker's feed now (each counts as a subscriber).
    followers: AtomicUsize,
    /// Counters for `/status`.
    pub stats: SharedStats,
}

/// A sibling's hold on the feed: counted while it lasts.
struct FollowerGuard(Arc<SharedProgram>);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SharedProgram {
    /// A shared command (its supervisor starts with [`SharedProgram::start`]).
    pub fn new(
        program: Program,
        output: OutputRules,
        (start, idle_stop): (Start, Duration),
        (queue, retry): (usize, Duration),
        hub: Option<(Arc<Hub>, String)>,
        follows: Option<PathBuf>,
    ) -> Arc<SharedProgram> {
        Arc::new(SharedProgram {
            program,
            output,
            start,
            idle_stop,
            retry_ms: retry.as_millis() as u64,
            live: broadcast::channel(queue.max(1)).0,
            hub,
            wanted: Notify::new(),
            started: std::sync::OnceLock::new(),
            follows,
            followers: AtomicUsize::new(0),
            stats: SharedStats::default(),
        })
    }

    /// Starts the supervisor on the current runtime, once (a no-op without a runtime: it
    /// starts with the first subscriber or when the daemon's runtime is up).
    pub fn ensure_started(self: &Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if self.started.set(()).is_ok() {
                rt.spawn(supervise(Arc::downgrade(self)));
            }
        }
    }

    /// The hub events go through, when the route has a `topic`.
    pub fn hub(&self) -> Option<&(Arc<Hub>, String)> {
        self.hub.as_ref()
    }

    /// Subscribers of this worker now (a sibling following the feed is not one of them).
    pub fn subscribers(&self) -> usize {
        match &self.hub {
            Some((hub, _)) => hub.subscribers(),
            None => self
                .live
                .receiver_count()
                .saturating_sub(self.followers.load(Ordering::Relaxed)),
        }
    }

    /// A live subscriber (routes without a `topic`); wakes the supervisor.
    pub fn subscribe(self: &Arc<Self>) -> LiveSource {
        let rx = self.live.subscribe();
        self.ensure_started();
        self.wanted.notify_one();
        LiveSource {
            rx,
            retry_ms: self.retry_ms,
            finished: false,
            _shared: self.clone(),
        }
    }

    /// Tells the supervisor someone subscribed (through the hub).
    pub fn wake(self: &Arc<Self>) {
        self.ensure_started();
        self.wanted.notify_one();
    }

    /// The feed a sibling follows: live events, and its count as a subscriber while it
    /// lasts; `None` where another worker runs the program.
    pub fn follow(self: &Arc<Self>) -> Option<crate::siblings::Follow> {
        if self.follows.is_some() {
            return None;
        }
        let events = self.live.subscribe();
        self.followers.fetch_add(1, Ordering::Relaxed);
        let guard = FollowerGuard(self.clone());
        self.wake();
        Some(crate::siblings::Follow {
            events,
            guard: Box::new(guard),
        })
    }

    fn wanted_now(&self) -> bool {
        let here = self.subscribers() > 0;
        match self.follows {
            // A follower holds its feed while its own subscribers want it.
            Some(_) => here,
            None => {
                self.start == Start::Always || here || self.followers.load(Ordering::Relaxed) > 0
            }
        }
    }

    /// Hands one event on: broadcast, or published to the hub (in order).
    async fn emit(&self, ev: super::output::ProgramEvent) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        match &self.hub {
            Some((hub, topic)) => {
                let p = Publication {
                    topics: vec![topic.clone()],
                    event: ev.event,
                    retry_ms: ev.retry_ms,
                    data: ev.data,
                    ..Publication::default()
                };
                if let Err(e) = hub.publish(p).await {
                    log::warn!("route {}: event not stored: {e}", self.program.route);
                }
            }
            None => match ev.to_event().encode() {
                Ok(bytes) => {
                    let _ = self.live.send(bytes.into_bytes());
                }
                Err(_) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }
}

/// Runs the program while it is wanted, restarting it with backoff (or, where another
/// worker runs it, follows that worker's feed).
async fn supervise(shared: Weak<SharedProgram>) {
    if let Some(dir) = shared.upgrade().and_then(|s| s.follows.clone()) {
        return follow(shared, dir).await;
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(s) = wanted(&shared).await else {
            return;
        };
        let started = Instant::now();
        let mut child = match s.program.spawn(&[]) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "route {}: cannot start {:?}: {e}; retrying in {backoff:?}",
                    s.program.route,
                    s.program.argv
                );
                drop(s);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        s.stats.running.store(true, Ordering::Relaxed);
        s.stats.pid.store(pid, Ordering::Relaxed);
        log::info!(
            "route {}: started {:?} (pid {pid})",
            s.program.route,
            s.program.argv
        );
        let (grace, route) = (s.program.kill_grace, s.program.route.clone());
        drop(s);
        let stopped = pump(&shared, &mut child, pid).await;
        if let Some(s) = shared.upgrade() {
            s.stats.running.store(false, Ordering::Relaxed);
            s.stats.pid.store(0, Ordering::Relaxed);
        }
        if stopped {
            end(child, grace);
            backoff = Duration::from_millis(200);
            continue;
        }
        let status = child.wait().await;
        let Some(s) = shared.upgrade() else { return };
        s.stats.restarts.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_millis(200);
        }
        log::warn!(
            "route {route}: pid {pid} exited ({}); starting it again in {backoff:?}",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        );
        drop(s);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follows worker 0's feed of this route while this worker's subscribers want it; reconnects
/// with backoff while it cannot be reached (worker 0 restarting).
async fn follow(shared: Weak<SharedProgram>, dir: PathBuf) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(s) = wanted(&shared).await else {
            return;
        };
        let route = s.program.route.clone();
        let live = (s.hub.is_none()).then(|| s.live.clone());
        drop(s);
        let each = |ev: Bytes| {
            if let Some(live) = &live {
                let _ = live.send(ev);
            }
        };
        let gone = || shared.upgrade().is_none_or(|s| !s.wanted_now());
        let began = Instant::now();
        let followed = crate::siblings::follow(&dir, 0, &route, each, gone).await;
        if began.elapsed() >= Duration::from_secs(1) {
            backoff = Duration::from_millis(200);
            continue;
        }
        // Ended at once (worker 0 starting, or without the route yet): not a tight loop.
        if let Err(e) = followed {
            log::warn!(
                "route {route}: cannot follow worker 0's program ({e}); retrying in {backoff:?}"
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits until someone wants the program (checked every second too: a reload, a leaving
/// hub); `None` once the route is gone.
async fn wanted(shared: &Weak<SharedProgram>) -> Option<Arc<SharedProgram>> {
    loop {
        let s = shared.upgrade()?;
        if s.wanted_now() {
            return Some(s);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), s.wanted.notified()).await;
    }
}

/// Reads the program's output as events until it exits (`false`), or it has had no
/// subscriber for `idle_stop` or its route is gone (`true`: stop it).
async fn pump(shared: &Weak<SharedProgram>, child: &mut tokio::process::Child, pid: u32) -> bool {
    let Some(s) = shared.upgrade() else {
        return true;
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut parser = s.output.parser();
    let mut report = DropReport::new(&s.program.route, pid, s.output.max_event_bytes);
    let (idle_stop, route) = (s.idle_stop, s.program.route.clone());
    drop(s);
    let mut buf = vec![0u8; 16 * 1024];
    let mut idle_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            n = stdout.read(&mut buf) => {
                let n = match n { Ok(0) | Err(_) => return false, Ok(n) => n };
                let Some(s) = shared.upgrade() else { return true };
                for ev in parser.feed(&buf[..n]) {
                    s.emit(ev).await;
                }
                report.update(&parser, &s.stats.dropped);
            }
            _ = tick.tick() => {
                let Some(s) = shared.upgrade() else { return true };
                if s.wanted_now() {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= idle_stop {
                    log::info!("route {route}: no subscribers for {idle_stop:?}; stopping pid {pid}");
                    return true;
                }
            }
        }
    }
}

/// A live subscriber of a shared command.
pub struct LiveSource {
    rx: broadcast::Receiver<Bytes>,
    retry_ms: u64,
    finished: bool,
    /// Keeps the command (and its supervisor) alive while the stream is open.
    _shared: Arc<SharedProgram>,
}

impl Source for LiveSource {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            if self.finished {
                return None;
            }
            match self.rx.recv().await {
                Ok(bytes) => Some(EncodedEvent::from_shared(bytes)),
                // Fell `subscriber_queue` events behind: come back later (and catch up live).
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.finished = true;
                    Some(EncodedEvent::retry_hint(self.retry_ms))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}
