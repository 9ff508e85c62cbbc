//! The boundary between a hub and where its events are stored, as Mercure's `transport.go` is
//! for its transports: a [`Backend`] takes each publication and answers it on its `reply`
//! (the id, or why it was not stored), and feeds every stored event — published through any
//! process or node — back to the hub in id order (`Hub::take_records`, and `Hub::on_damage`
//! for ids it lost). The local journal (`local`) and Redis (`redis`) each run an appender
//! thread fed by one [`JobQueue`] and batched by [`next_batch`].

use std::time::Instant;

use tokio::sync::oneshot;

use super::journal::Publication;
use super::HubError;

/// Publications waiting for an appender, at most.
const QUEUE: usize = 1024;

/// Where a hub's publications go. The hub knows nothing else of its storage.
pub trait Backend: Send + Sync {
    /// Takes a publication; refuses at once (busy, closed) rather than wait.
    fn submit(&self, job: AppendJob) -> Result<(), HubError>;
}

/// One publication waiting for the appender.
pub struct AppendJob {
    /// What to append.
    pub publication: Publication,
    /// Where its answer goes.
    pub reply: oneshot::Sender<Result<u64, HubError>>,
    /// Not written after this: the publisher is told "busy, not stored" instead.
    pub deadline: Instant,
}

/// The next publications to append: waits for one, takes up to `max` of those waiting, and
/// answers those whose deadline passed in the queue ("busy, not stored") itself. `None` when
/// the hub is gone. `store` names the storage in that answer.
pub fn next_batch(
    jobs: &std::sync::mpsc::Receiver<AppendJob>,
    max: usize,
    store: &str,
) -> Option<Vec<AppendJob>> {
    let mut batch = vec![jobs.recv().ok()?];
    while batch.len() < max {
        match jobs.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
    let now = Instant::now();
    let (late, batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(|j| now > j.deadline);
    for j in late {
        let _ = j.reply.send(Err(HubError::Busy(format!(
            "{store} is behind (publish queue wait exceeded lock_timeout); not stored"
        ))));
    }
    Some(batch)
}

/// The hub's end of an appender thread's queue: the [`Backend`] of every storage.
pub struct JobQueue {
    jobs: std::sync::mpsc::SyncSender<AppendJob>,
    /// The storage, as refusals name it ("the journal", "Redis").
    store: &'static str,
}

impl JobQueue {
    /// A queue of [`QUEUE`] publications for the appender of `store`, and the appender's end.
    pub fn new(store: &'static str) -> (JobQueue, std::sync::mpsc::Receiver<AppendJob>) {
        let (jobs, rx) = std::sync::mpsc::sync_channel(QUEUE);
        (JobQueue { jobs, store }, rx)
    }
}

impl Backend for JobQueue {
    fn submit(&self, job: AppendJob) -> Result<(), HubError> {
        // A full queue means the storage is far behind: refuse now rather than wait unbounded.
        self.jobs.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                HubError::Busy(format!("too many publications waiting for {}", self.store))
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => HubError::Closed,
        })
    }
}

/// Where a hub keeps its events.
#[derive(Clone, Debug)]
pub enum Storage {
    /// The local journal.
    Local(super::journal::JournalSettings),
    /// A Redis stream shared by every instance.
    #[cfg(feature = "redis")]
    Redis(super::redis::RedisSettings),
}

impl Storage {
    /// Where, for logs and for telling whether a reload changed it.
    pub fn location(&self) -> String {
        match self {
            Storage::Local(j) => j.dir.display().to_string(),
            #[cfg(feature = "redis")]
            Storage::Redis(r) => format!("redis {}", r.key),
        }
    }

    /// Shared by several instances (ids issued elsewhere may show up).
    pub fn is_shared(&self) -> bool {
        match self {
            Storage::Local(_) => false,
            #[cfg(feature = "redis")]
            Storage::Redis(_) => true,
        }
    }
}
