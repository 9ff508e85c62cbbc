//! One route's hook queue in this process: the calls not yet made (in memory, bounded in
//! bytes, and in the journal before they are sent), the streams open (so that each gets its
//! leave, even from the next process), and the sender that makes the calls — in order per
//! stream, a few at once, retried with backoff while the application is down.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::call::{Call, Event, Reason};
use super::journal::{Line, Op, OwnLog};
use super::send::{Answer, Delivery, Outcome};

/// Counters of one route's hooks, for `/status` and `/metrics`.
#[derive(Default)]
pub struct HookStats {
    /// Calls the application answered.
    pub delivered: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Streams refused by the connect hook (401/403 from the application).
    pub refused: AtomicU64,
    /// Connects the application answered 403 after their stream had opened.
    pub refused_open: AtomicU64,
    /// Streams refused because the connect hook did not answer in time.
    pub timed_out: AtomicU64,
    /// Streams refused because the queue was full.
    pub queue_full: AtomicU64,
    /// Calls taken over from a process that died (its pending calls and the leaves of its
    /// streams).
    pub adopted: AtomicU64,
    /// Journal writes that failed.
    pub write_errors: AtomicU64,
    /// 1 while the last attempt failed.
    pub failing: AtomicBool,
}

/// A call waiting to be made.
struct Pending {
    call: Call,
    /// The sequence of the connect a leave must wait for, while that is pending.
    after: Option<u64>,
    in_flight: bool,
    attempts: u32,
    not_before: Instant,
}

#[derive(Default)]
struct State {
    seq: u64,
    pending: BTreeMap<u64, Pending>,
    /// Open streams: their connect, and its sequence while pending.
    open: HashMap<String, (Call, u64)>,
    /// Bytes held: pending calls and the room kept for each open stream's leave.
    bytes: usize,
    /// Bytes written to the file since it was last compacted, and the size that triggers one.
    file_bytes: usize,
    compact_at: usize,
}

/// Why a call was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is at `hook_queue_bytes`.
    Full,
    /// The process is stopping and its journal is closed.
    Closed,
}

/// A route's hooks in this process.
pub struct Store {
    /// The hooks folder.
    pub dir: PathBuf,
    log: OwnLog,
    state: Mutex<State>,
    written: watch::Receiver<u64>,
    wake: Notify,
    delivery: Mutex<Arc<Delivery>>,
    in_flight: AtomicUsize,
    started: AtomicBool,
    /// Orphaned files taken over, and the last sequence of what was taken from each: a file
    /// goes once that is written, and is never taken twice.
    taken: Mutex<HashMap<PathBuf, u64>>,
    /// Shut down: no new stream.
    closed: AtomicBool,
    /// Its counters.
    pub stats: Arc<HookStats>,
}

const MIN_COMPACT: usize = 1 << 20;
/// Most queued calls one pass of the sender looks at.
const SCAN: usize = 4096;
/// The least time between two passes of the sender when the last one sent nothing.
const IDLE_PASS: Duration = Duration::from_millis(20);

impl Store {
    /// Opens this process's journal in `dir` (blocking I/O: config time only).
    pub fn open(dir: PathBuf, fsync: bool, delivery: Arc<Delivery>) -> Result<Store, String> {
        let (tx, rx) = watch::channel(0);
        let stats = Arc::new(HookStats::default());
        let st = stats.clone();
        let route = delivery.route.clone();
        let log = OwnLog::create(&dir, fsync, tx, move |e| {
            st.write_errors.fetch_add(1, Relaxed);
            log::error!("route {route}: hook journal: {e}; calls wait until it can be written");
        })?;
        Ok(Store {
            dir,
            log,
            state: Mutex::new(State {
                compact_at: MIN_COMPACT,
                ..State::default()
            }),
            written: rx,
            wake: Notify::new(),
            delivery: Mutex::new(delivery),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            taken: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            stats,
        })
    }

    /// The delivery settings in force (a reload replaces them; queued calls keep their ids).
    pub fn delivery(&self) -> Arc<Delivery> {
        self.delivery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the settings of a reloaded config.
    pub fn set_delivery(&self, d: Arc<Delivery>) {
        *self.delivery.lock().unwrap_or_else(|p| p.into_inner()) = d;
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Journals `connect` and records its stream as open (keeping room for its leave);
    /// `sending` marks it as being sent by the caller. Returns its sequence.
    pub fn connect(&self, connect: Call, sending: bool) -> Result<u64, Refused> {
        let max = self.delivery().queue_bytes;
        let mut s = self.lock();
        if self.closed.load(Relaxed) {
            return Err(Refused::Closed);
        }
        // The connect, and the room its leave will take.
        let need = connect.size() + reserve(&connect);
        if s.bytes + need > max {
            self.stats.queue_full.fetch_add(1, Relaxed);
            return Err(Refused::Full);
        }
        s.bytes += need;
        let seq = self.push(&mut s, connect.clone(), None, sending);
        s.open.insert(connect.subscriber.clone(), (connect, seq));
        drop(s);
        self.wake.notify_one();
        Ok(seq)
    }

    /// Whether `bytes` more fit in the queue now.
    pub fn has_room(&self, bytes: usize) -> bool {
        let max = self.delivery().queue_bytes;
        !self.closed.load(Relaxed) && self.lock().bytes + bytes <= max
    }

    /// Journals and queues `call`, which belongs to no stream (a publish). It is taken even
    /// past the bound: room was looked for ([`Store::has_room`]) before what it tells was done.
    pub fn notify(&self, call: Call) -> Result<u64, Refused> {
        let mut s = self.lock();
        if self.closed.load(Relaxed) {
            return Err(Refused::Closed);
        }
        s.bytes += call.size();
        let seq = self.push(&mut s, call, None, false);
        drop(s);
        self.wake.notify_one();
        Ok(seq)
    }

    /// Queues the leave of stream `subscriber` for `reason` (nothing if it is not open);
    /// returns its sequence.
    pub fn leave(&self, subscriber: &str, reason: Reason) -> Option<u64> {
        let mut s = self.lock();
        let (connect, connect_seq) = s.open.remove(subscriber)?;
        s.bytes = s.bytes.saturating_sub(reserve(&connect));
        let leave = connect.leave(reason);
        s.bytes += leave.size();
        let after = s.pending.contains_key(&connect_seq).then_some(connect_seq);
        let seq = self.push(&mut s, leave, after, false);
        drop(s);
        self.wake.notify_one();
        Some(seq)
    }

    /// The application refused stream `subscriber` (its connect is made; no leave follows).
    pub fn refused(&self, subscriber: &str, seq: u64) {
        let mut s = self.lock();
        if let Some((connect, _)) = s.open.remove(subscriber) {
            s.bytes = s.bytes.saturating_sub(reserve(&connect));
        }
        let line = Line::Closed {
            subscriber: subscriber.to_string(),
        };
        let seq_now = s.seq;
        self.write(&mut s, line.encode(), seq_now);
        drop(s);
        self.done(seq);
    }

    fn push(&self, s: &mut State, call: Call, after: Option<u64>, in_flight: bool) -> u64 {
        s.seq += 1;
        let seq = s.seq;
        self.write(s, Line::Call { call: call.clone() }.encode(), seq);
        s.pending.insert(
            seq,
            Pending {
                call,
                after,
                in_flight,
                attempts: 0,
                not_before: Instant::now(),
            },
        );
        seq
    }

    fn write(&self, s: &mut State, bytes: Vec<u8>, seq: u64) {
        s.file_bytes += bytes.len();
        let _ = self.log.tx.send(Op::Append { bytes, seq });
    }

    /// Waits until call `seq` is in the journal, at most `deadline`.
    pub async fn written(&self, seq: u64, deadline: Duration) -> bool {
        let mut rx = self.written.clone();
        let ok = matches!(
            tokio::time::timeout(deadline, rx.wait_for(|w| *w >= seq)).await,
            Ok(Ok(_))
        );
        ok
    }

    /// Call `seq` was made: out of the queue, marked done in the journal.
    pub fn done(&self, seq: u64) {
        let mut s = self.lock();
        if let Some(p) = s.pending.remove(&seq) {
            s.bytes = s.bytes.saturating_sub(p.call.size());
            self.stats.delivered.fetch_add(1, Relaxed);
            self.write(&mut s, Line::Done { id: p.call.id }.encode(), seq);
        }
        if s.file_bytes > s.compact_at {
            self.compact(&mut s);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Call `seq` failed: it waits `backoff` (growing with its attempts) before the next.
    pub fn retry_later(&self, seq: u64) {
        let mut s = self.lock();
        if let Some(p) = s.pending.get_mut(&seq) {
            p.in_flight = false;
            p.attempts += 1;
            p.not_before = Instant::now() + backoff(p.attempts);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// The file rewritten as what is left: open streams whose connect was made, then the
    /// pending calls in order.
    fn compact(&self, s: &mut State) {
        let mut bytes = Vec::new();
        for (connect, seq) in s.open.values() {
            if !s.pending.contains_key(seq) {
                bytes.extend(
                    Line::Open {
                        call: connect.clone(),
                    }
                    .encode(),
                );
            }
        }
        for p in s.pending.values() {
            bytes.extend(
                Line::Call {
                    call: p.call.clone(),
                }
                .encode(),
            );
        }
        s.file_bytes = bytes.len();
        s.compact_at = MIN_COMPACT.max(bytes.len() * 2);
        let _ = self.log.tx.send(Op::Replace { bytes, seq: s.seq });
    }

    /// The calls to send now (marked in flight), at most `room`, and when the next one is due.
    /// The oldest first, and only [`SCAN`] calls that could go are looked at per pass (with
    /// the application down and a long queue, every pass would otherwise walk all of it); a
    /// call in flight, or a leave held back by its connect, does not count, up to [`SCAN`] × 4
    /// in all.
    fn pick(&self, room: usize) -> (Vec<(u64, Call)>, Option<Instant>) {
        let written = *self.written.borrow();
        let now = Instant::now();
        let mut guard = self.lock();
        let s = &mut *guard;
        let mut picked = Vec::new();
        let mut next: Option<Instant> = None;
        let mut looked = 0;
        let pending = &mut s.pending;
        let ids: Vec<u64> = pending
            .range(..=written)
            .take(SCAN * 4)
            .map(|(k, _)| *k)
            .collect();
        for seq in ids {
            if picked.len() >= room || looked >= SCAN {
                break;
            }
            let blocked = pending[&seq]
                .after
                .is_some_and(|a| pending.contains_key(&a));
            let Some(p) = pending.get_mut(&seq) else {
                continue;
            };
            if blocked || p.in_flight {
                continue;
            }
            looked += 1;
            if p.not_before > now {
                next = Some(next.map_or(p.not_before, |n| n.min(p.not_before)));
                continue;
            }
            p.in_flight = true;
            picked.push((seq, p.call.clone()));
        }
        (picked, next)
    }

    /// Calls waiting (not yet answered), and the bytes held.
    pub fn backlog(&self) -> (usize, usize, usize) {
        let s = self.lock();
        (s.pending.len(), s.bytes, s.open.len())
    }

    /// Starts the sender (once; needs a runtime) and takes over orphaned files now and every
    /// few seconds.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.started.store(false, Relaxed);
            return;
        };
        let me = self.clone();
        rt.spawn(async move { me.send_loop().await });
        let me = self.clone();
        rt.spawn(async move {
            loop {
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.adopt()).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    /// Makes calls as they come due, a few at once. A pass that found nothing to send is
    /// followed by the next only after [`IDLE_PASS`]: with the application down, each new
    /// stream's call would otherwise start a walk of the queue.
    async fn send_loop(self: Arc<Self>) {
        let mut written = self.written.clone();
        loop {
            let d = self.delivery();
            let room = d.concurrency.saturating_sub(self.in_flight.load(Relaxed));
            let (picked, next) = self.pick(room);
            let idle = picked.is_empty();
            for (seq, call) in picked {
                self.in_flight.fetch_add(1, Relaxed);
                let (me, d) = (self.clone(), d.clone());
                tokio::spawn(async move {
                    let outcome = d.send(&call).await;
                    me.in_flight.fetch_sub(1, Relaxed);
                    me.settle(seq, &call, outcome);
                });
            }
            let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(5));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = written.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            if idle {
                tokio::time::sleep(IDLE_PASS).await;
            }
        }
    }

    /// What an attempt's outcome does to its call.
    pub fn settle(&self, seq: u64, call: &Call, outcome: Outcome) {
        let outcome = match outcome {
            // The application refuses a stream that is already open (no `hook_connect_wait`,
            // or it passed): its answer is final, and the leave follows as for any stream.
            Outcome::Answered(a) if call.event == Event::Connect && a.status == 403 => {
                static LATE: crate::flood::Flood =
                    crate::flood::Flood::new("connects refused after their stream opened");
                self.stats.refused_open.fetch_add(1, Relaxed);
                LATE.warn(|| {
                    format!(
                        "route {}: the application answered 403 to connect {} of a stream already open (set hook_connect_wait for a refusal to refuse the stream); its leave follows",
                        call.route, call.id
                    )
                });
                Outcome::Answered(Answer { status: 200, ..a })
            }
            other => other.judged(),
        };
        match outcome {
            Outcome::Answered(_) => {
                if self.stats.failing.swap(false, Relaxed) {
                    // The application is back: what waits out a backoff goes now.
                    let now = Instant::now();
                    for p in self.lock().pending.values_mut() {
                        p.not_before = p.not_before.min(now);
                    }
                    log::info!(
                        "route {}: hook target answers again ({} calls waiting)",
                        call.route,
                        self.backlog().0
                    );
                }
                self.done(seq);
            }
            Outcome::Failed(why) => {
                static FAILING: crate::flood::Flood =
                    crate::flood::Flood::new("hook calls failed (retried)");
                self.stats.failed_attempts.fetch_add(1, Relaxed);
                self.stats.failing.store(true, Relaxed);
                let waiting = self.backlog().0;
                FAILING.warn(|| {
                    format!(
                        "route {}: hook {} {} failed, retried with backoff: {why} ({waiting} calls waiting)",
                        call.route,
                        call.event.as_str(),
                        call.id
                    )
                });
                self.retry_later(seq);
            }
        }
    }

    /// The subscriber ids of the streams open.
    pub fn open_streams(&self) -> Vec<String> {
        self.lock().open.keys().cloned().collect()
    }

    /// At shutdown: no new stream from now on; waits (at most `deadline`) until the journal
    /// holds everything; the files go when nothing is left to send and no stream is open.
    pub fn close(&self, deadline: Duration) {
        let last = {
            let s = self.lock();
            self.closed.store(true, Relaxed);
            s.seq
        };
        let mut rx = self.written.clone();
        let until = std::time::Instant::now() + deadline;
        while *rx.borrow_and_update() < last && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Under the lock: a leave queued now would otherwise go to a file already removed.
        let s = self.lock();
        if s.pending.is_empty() && s.open.is_empty() && *rx.borrow() >= s.seq {
            self.log.remove();
        }
    }
}

/// The room kept for a stream's leave while it is open.
fn reserve(connect: &Call) -> usize {
    connect.size() + 64
}

/// The wait before attempt `n + 1`: 1 s doubling to 60 s, with a random tenth added so that
/// routes and processes do not retry in step.
fn backoff(attempts: u32) -> Duration {
    let base =
        Duration::from_secs(1 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(60));
    base + crate::random::duration_below(base / 10)
}

#[path = "adopt.rs"]
mod adopt;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
