//! The topic hub: publish/subscribe over a durable [`journal`], with a bounded in-memory
//! [`replay::ReplayBuffer`] for `Last-Event-ID` replay, bounded per-subscriber queues, and an
//! event encoded once and shared by every subscriber.
//!
//! Storage is a [`Backend`] ([`backend`]): [`local`] (the journal's appender and follower threads)
//! or `redis` (feature `redis`).
//! The ordering rule of each subscriber lives in [`subscriber`], replay history in [`replay`].
//! Async tasks only exchange messages with the backend; no lock is held across an `.await`.

pub mod backend;
mod error;
mod event;
pub mod interest;
pub mod journal;
pub mod local;
mod matching;
mod publish_hook;
pub mod queue;
#[cfg(feature = "redis")]
pub mod redis;
pub mod replay;
mod subscribe;
pub mod subscriber;
mod topic_source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use backend::{AppendJob, Backend};
use journal::{Damage, JournalError, JournalRecord, Publication};
use local::{LocalJournal, Opened};
use replay::{ReplayBounds, ReplayBuffer};
use subscriber::{Offer, Subscriber};

use matching::{Accepted, MATCH_WORK_PER_SLICE};
pub use publish_hook::PublishHook;

pub use backend::Storage;
pub use error::HubError;
pub use event::StoredEvent;
pub use interest::{Interest, Presence};
pub use subscribe::Resume;
pub use topic_source::TopicSource;

/// Subscribers written to between two yields of the delivery task.
const FAN_OUT_SLICE: usize = 512;

/// Name of the event sent when a subscriber's `Last-Event-ID` cannot be resumed from.
pub const RESET_EVENT: &str = "fastsse-reset";

/// Bounds of one hub.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Most events, bytes and age kept for replay.
    pub history: ReplayBounds,
    /// Events queued per subscriber before it is cut off as too slow.
    pub subscriber_queue: usize,
    /// `retry:` hint sent to a subscriber that is cut off.
    pub retry: Duration,
    /// Longest a publication waits for the journal before it is refused as busy (not stored).
    pub publish_timeout: Duration,
    /// Events whose every topic starts with this are delivered live (and journaled) but not
    /// kept for replay: Mercure's subscription events, which anonymous churn would otherwise
    /// use to push real events out of the history.
    pub unretained_prefix: Option<String>,
    /// Load only the journal's events after this id (0: all it retains). A CGI request, which
    /// opens the journal for itself, needs no more than what comes after its `Last-Event-ID`.
    pub load_after: u64,
}

impl HubSettings {
    /// Whether an event with `topics` is kept for replay.
    fn retains(&self, topics: &[String]) -> bool {
        self.unretained_prefix
            .as_deref()
            .is_none_or(|p| !topics.iter().all(|t| t.starts_with(p)))
    }
}

#[derive(Default)]
struct HubState {
    history: ReplayBuffer,
    last_id: u64,
    by_topic: HashMap<String, Vec<u64>>,
    /// Subscribers with selectors that are not exact topics (checked for every event), with
    /// what they may read of private events.
    by_pattern: Vec<matching::Watcher>,
    subscribers: HashMap<u64, Subscriber>,
    next_subscriber: u64,
}

/// Counters of one hub.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Events published through this process.
    pub published: AtomicU64,
    /// Events delivered into the hub (from any process).
    pub delivered: AtomicU64,
    /// Subscribers cut off for falling behind.
    pub lagged: AtomicU64,
    /// Deliveries written straight to a subscriber's socket by the fan-out.
    pub direct_writes: AtomicU64,
    /// Deliveries handed to a subscriber's task (socket busy, replay, or no direct writer).
    pub queued_writes: AtomicU64,
    /// Time to append a batch to the journal: the lock, the write, the fsync per policy.
    pub append_latency: crate::metrics::Latency,
    /// Publications the journal refused (each answered 5xx, not stored).
    pub append_failures: AtomicU64,
    /// Bytes of the journal on disk (updated by the appender about once a second).
    pub journal_bytes: AtomicU64,
    /// Whether the journal can be read by the follower (false while reads fail).
    pub backend_failing: std::sync::atomic::AtomicBool,
    /// Redis: ids issued (by any instance) that this one has not read yet, as of the reader's
    /// last idle second.
    pub backend_lag: AtomicU64,
    /// Redis: entries of the stream that are not fastsse records (written by another tool),
    /// skipped by the reader.
    pub unreadable: AtomicU64,
}

/// A topic hub for one route.
pub struct Hub {
    pub(crate) name: String,
    /// Where its events are kept (a reload keeps the hub while it is unchanged).
    location: String,
    /// Other instances append too (Redis): this one may be a little behind the newest id.
    shared: bool,
    settings: HubSettings,
    state: Mutex<HubState>,
    backend: Box<dyn Backend>,
    /// Feeds the delivery task on the async runtime (started by the first subscriber); until
    /// then the follower thread delivers itself. One task keeps deliveries in order.
    delivery: std::sync::OnceLock<mpsc::UnboundedSender<Vec<JournalRecord>>>,
    /// Counters.
    pub stats: HubStats,
    /// Told of each publication a client makes (a route's `hook_publish`).
    publish_hook: std::sync::RwLock<Option<Arc<dyn PublishHook>>>,
}

/// A backend's threads, started once the hub exists.
enum Starter {
    Local(local::Threads),
    #[cfg(feature = "redis")]
    Redis(redis::Threads),
}

impl Hub {
    /// Opens the journal (recovering a torn tail, skipping damage per policy), loads the
    /// retained history, and starts the journal's threads.
    pub fn open(
        name: &str,
        storage: Storage,
        settings: HubSettings,
    ) -> Result<Arc<Hub>, JournalError> {
        let mut state = HubState::default();
        let each = |r: JournalRecord| {
            state.last_id = state.last_id.max(r.id);
            if settings.retains(&r.topics) {
                state
                    .history
                    .push(Arc::new(StoredEvent::from_record(r)), &settings.history);
            }
        };
        // What the backend opened, and (Redis) where its numbering starts.
        type OpenedBackend = (Box<dyn Backend>, u64, Vec<Damage>, Starter, Option<u64>);
        let (backend, last_id, damage, threads, numbering): OpenedBackend = match &storage {
            Storage::Local(journal) => {
                let Opened {
                    backend,
                    last_id,
                    damage,
                    threads,
                } = LocalJournal::open(journal.clone(), settings.load_after, each)?;
                let starter = Starter::Local(threads);
                (Box::new(backend), last_id, damage, starter, None)
            }
            #[cfg(feature = "redis")]
            Storage::Redis(r) => {
                let (backend, (last_id, begins), threads) =
                    redis::RedisJournal::open(r.clone(), each)?;
                let starter = Starter::Redis(threads);
                (Box::new(backend), last_id, Vec::new(), starter, begins)
            }
        };
        state.last_id = state.last_id.max(last_id);
        state.history.loaded(state.last_id);
        if let Some(start) = numbering {
            state.history.numbering_starts(start);
        }
        for d in &damage {
            state.history.add_hole(d.after_id, d.next_id);
        }
        log::info!(
            "topics {name}: journal {} at id {}, {} events ({} bytes) retained for replay{}",
            storage.location(),
            state.last_id,
            state.history.len(),
            state.history.bytes(),
            if damage.is_empty() {
                String::new()
            } else {
                format!(", {} damaged regions skipped", damage.len())
            }
        );
        let hub = Arc::new(Hub {
            name: name.to_string(),
            location: storage.location(),
            shared: storage.is_shared(),
            settings,
            state: Mutex::new(state),
            backend,
            delivery: std::sync::OnceLock::new(),
            stats: HubStats::default(),
            publish_hook: std::sync::RwLock::new(None),
        });
        match threads {
            Starter::Local(t) => t.start(&hub)?,
            #[cfg(feature = "redis")]
            Starter::Redis(t) => t.start(&hub)?,
        }
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends to the journal; resolves to the assigned id once it is stored (per fsync
    /// policy). An error means the event was not stored: the journal failed, or it stayed busy
    /// for `publish_timeout` (the appender refuses a publication whose deadline passed rather
    /// than store it after its publisher was told no).
    pub async fn publish(&self, publication: Publication) -> Result<u64, HubError> {
        let (reply, rx) = oneshot::channel();
        let job = AppendJob {
            publication,
            reply,
            deadline: Instant::now() + self.settings.publish_timeout,
        };
        self.backend.submit(job)?;
        // The backend answers by the deadline; this is the net under it.
        let wait = self.settings.publish_timeout + Duration::from_secs(1);
        let id = tokio::time::timeout(wait, rx)
            .await
            .map_err(|_| {
                HubError::Unknown(
                    "the store did not answer in time: the event may or may not be stored".into(),
                )
            })?
            .map_err(|_| HubError::Closed)??;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Records read from the journal by the follower: fanned out on the async runtime when a
    /// delivery task runs (its workers pick up socket readiness in batches, where this thread
    /// would wake a parked worker for every write), else delivered here.
    pub(crate) fn take_records(&self, records: Vec<JournalRecord>) {
        match self.delivery.get() {
            Some(tx) => {
                if let Err(e) = tx.send(records) {
                    self.deliver(e.0);
                }
            }
            None => self.deliver(records),
        }
    }

    /// Damage found while following: clients resuming across it get a reset, and every live
    /// subscriber (who may have missed the lost events) is ended with a `retry:` hint so that
    /// it resumes, and is told.
    pub(crate) fn on_damage(&self, damage: &[Damage]) {
        let lost: Vec<&Damage> = damage
            .iter()
            .filter(|d| d.next_id > d.after_id + 1)
            .collect();
        if lost.is_empty() {
            return;
        }
        let mut st = self.lock();
        for d in lost {
            st.history.add_hole(d.after_id, d.next_id);
        }
        let sids: Vec<u64> = st.subscribers.keys().copied().collect();
        for sid in sids {
            Self::remove(&mut st, sid);
        }
    }

    /// The backend numbers from `start` on (a Redis stream that started from the clock): ids
    /// below it were never issued.
    #[cfg(feature = "redis")]
    pub(crate) fn numbering_starts(&self, start: u64) {
        self.lock().history.numbering_starts(start);
    }

    /// Takes a record into the hub (last id, history) and returns the event with a snapshot of
    /// its subscribers: those of its exact topics, and those with selectors still to be
    /// matched ([`Accepted::select`], outside the lock); `None` for a record already seen.
    fn accept(&self, st: &mut HubState, r: JournalRecord) -> Option<Accepted> {
        if r.id <= st.last_id {
            return None;
        }
        st.last_id = r.id;
        let ev = Arc::new(StoredEvent::from_record(r));
        if self.settings.retains(&ev.topics) {
            st.history.push(ev.clone(), &self.settings.history);
        }
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        let exact = ev
            .topics
            .iter()
            .filter_map(|t| st.by_topic.get(t))
            .flatten()
            .copied();
        // A private event's readers are decided outside the lock: here only their grants are
        // taken (an Arc each).
        let (targets, guarded) = if ev.private {
            let guarded = exact
                .filter_map(|sid| {
                    Some((sid, st.subscribers.get(&sid)?.interest.authorized.clone()))
                })
                .collect();
            (Vec::new(), guarded)
        } else {
            (exact.collect(), Vec::new())
        };
        Some(Accepted::new(ev, targets, guarded, st.by_pattern.clone()))
    }

    /// Hands `ev` to those of `sids` still subscribed: straight to the socket when that keeps
    /// order and does not wait, else to the subscriber's queue; a full queue cuts it off.
    fn fan_out(&self, st: &mut HubState, ev: &Arc<StoredEvent>, sids: &[u64]) {
        let mut cut = Vec::new();
        for &sid in sids {
            let Some(sub) = st.subscribers.get_mut(&sid) else {
                continue;
            };
            match sub.offer(ev) {
                Offer::Written => self.stats.direct_writes.fetch_add(1, Ordering::Relaxed),
                Offer::Queued => self.stats.queued_writes.fetch_add(1, Ordering::Relaxed),
                Offer::Lagging => {
                    cut.push(sid);
                    self.stats.queued_writes.fetch_add(1, Ordering::Relaxed)
                }
                Offer::Skipped => 0,
            };
        }
        for sid in cut {
            if Self::remove(st, sid) {
                self.stats.lagged.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "topics {}: subscriber {sid} fell {} events behind; cut off",
                    self.name,
                    self.settings.subscriber_queue
                );
            }
        }
    }

    /// Delivers records (in id order) to history and subscribers, all under one lock; records
    /// already seen are skipped. Never blocks on a subscriber.
    fn deliver(&self, records: Vec<JournalRecord>) {
        for r in records {
            let Some(accepted) = self.accept(&mut self.lock(), r) else {
                continue;
            };
            let (ev, sids) = accepted.select();
            self.fan_out(&mut self.lock(), &ev, &sids);
        }
    }

    /// [`Hub::deliver`] for the delivery task: each event's fan-out goes in slices, yielding
    /// between them so that a runtime thread busy fanning out to thousands of sockets still
    /// serves publishers and new subscribers. Events stay in order: the next event is taken only
    /// after the previous one reached every subscriber of its snapshot. A subscriber that joins
    /// between slices has the event in its replay (history is updated first), not twice.
    async fn deliver_in_slices(&self, records: Vec<JournalRecord>) {
        for r in records {
            let accepted = self.accept(&mut self.lock(), r);
            let Some(mut accepted) = accepted else {
                continue;
            };
            while !accepted.matched_all() {
                accepted.match_some(MATCH_WORK_PER_SLICE);
                tokio::task::yield_now().await;
            }
            let (ev, sids) = accepted.select();
            for slice in sids.chunks(FAN_OUT_SLICE) {
                self.fan_out(&mut self.lock(), &ev, slice);
                if sids.len() > FAN_OUT_SLICE {
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    fn remove(st: &mut HubState, sid: u64) -> bool {
        let Some(sub) = st.subscribers.remove(&sid) else {
            return false;
        };
        for t in &sub.interest.exact {
            if let Some(v) = st.by_topic.get_mut(t) {
                v.retain(|&s| s != sid);
                if v.is_empty() {
                    st.by_topic.remove(t);
                }
            }
        }
        if !sub.interest.patterns.is_empty() {
            st.by_pattern.retain(|w| w.sid != sid);
        }
        true
    }

    /// Starts the delivery task on the current runtime, once.
    fn start_delivery_task(self: &Arc<Self>) {
        if self.delivery.get().is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<JournalRecord>>();
        if self.delivery.set(tx).is_err() {
            return;
        }
        let hub = Arc::downgrade(self);
        rt.spawn(async move {
            while let Some(records) = rx.recv().await {
                let Some(hub) = hub.upgrade() else { return };
                hub.deliver_in_slices(records).await;
            }
        });
    }

    /// Where its events are kept: the journal directory, or the Redis stream.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The subscriptions that say who they are ([`Interest::presence`]), oldest first.
    pub fn presences(&self) -> Vec<Arc<Presence>> {
        let st = self.lock();
        let mut v: Vec<(u64, Arc<Presence>)> = st
            .subscribers
            .iter()
            .filter_map(|(sid, s)| s.interest.presence.clone().map(|p| (*sid, p)))
            .collect();
        v.sort_by_key(|(sid, _)| *sid);
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// The id (as sent on the wire) of the newest event, `earliest` when there is none.
    pub fn newest_event_id(&self) -> String {
        Self::newest_id(&self.lock())
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// The last id delivered into the hub.
    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    /// Events retained for replay.
    pub fn retained(&self) -> usize {
        self.lock().history.len()
    }

    /// Bytes retained for replay.
    pub fn retained_bytes(&self) -> usize {
        self.lock().history.bytes()
    }
}
