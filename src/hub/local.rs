//! The local journal behind a hub: the appender thread (owns the [`JournalWriter`], group
//! commit, one truthful answer per publication) and the follower thread (wakes on inotify and
//! hands whatever any process appended to the hub; notices a deleted or replaced directory and
//! reattaches to the new one, continuing after every id issued).
//!
//! Both are blocking threads; async tasks only exchange messages with them through the hub's
//! [`JobQueue`](super::backend::JobQueue).

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::backend::{next_batch, AppendJob, JobQueue};
use super::journal::{
    Damage, JournalError, JournalReader, JournalRecord, JournalSettings, JournalWriter,
    Publication, ReadBatch,
};
use super::{Hub, HubError};

/// Most publications written in one group commit.
const BATCH: usize = 512;
/// How often the follower checks that its directory is still the one at the configured path.
const IDENTITY_CHECK: Duration = Duration::from_secs(1);

fn hub_error(e: JournalError) -> HubError {
    match e {
        JournalError::LockTimeout(_) => HubError::Busy(e.public_reason().to_string()),
        e => HubError::Journal(e),
    }
}

/// The appender: takes up to [`BATCH`] waiting publications, appends them with one write (and
/// one fsync under `batch`), and answers each with its own outcome.
pub fn append_loop(
    name: &str,
    mut writer: JournalWriter,
    jobs: std::sync::mpsc::Receiver<AppendJob>,
    hub: Weak<Hub>,
) {
    let mut last_size = Instant::now() - Duration::from_secs(60);
    if let Some(h) = hub.upgrade() {
        h.stats
            .journal_bytes
            .store(writer.journal_bytes(), std::sync::atomic::Ordering::Relaxed);
    }
    while let Some(batch) = next_batch(&jobs, BATCH, "the journal") {
        if batch.is_empty() {
            continue;
        }
        if let Some(h) = hub.upgrade() {
            writer.raise_floor(h.last_id());
        }
        let (publications, replies): (Vec<Publication>, Vec<_>) =
            batch.into_iter().map(|j| (j.publication, j.reply)).unzip();
        let started = Instant::now();
        let results = writer.append(&publications);
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            log::error!("topics {name}: append failed: {e}");
        }
        if let Some(h) = hub.upgrade() {
            h.stats.append_latency.record(started.elapsed());
            h.stats
                .append_failures
                .fetch_add(failed, std::sync::atomic::Ordering::Relaxed);
            if last_size.elapsed() >= Duration::from_secs(1) {
                last_size = Instant::now();
                h.stats
                    .journal_bytes
                    .store(writer.journal_bytes(), std::sync::atomic::Ordering::Relaxed);
            }
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result.map_err(hub_error));
        }
    }
}

fn watch(inotify: &Inotify, dir: &Path) -> Result<(), JournalError> {
    inotify
        .add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )
        .map(|_| ())
        .map_err(|e| JournalError::Io {
            what: format!("inotify watch {}", dir.display()),
            source: e.into(),
        })
}

fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// The follower's inotify instance, watching the journal directory.
pub struct Follower {
    inotify: Inotify,
    identity: Option<(u64, u64)>,
}

impl Follower {
    /// Watches `dir` (which exists: the writer created it).
    pub fn new(dir: &Path) -> Result<Follower, JournalError> {
        let inotify =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| {
                JournalError::Io {
                    what: "inotify_init".into(),
                    source: e.into(),
                }
            })?;
        watch(&inotify, dir)?;
        Ok(Follower {
            inotify,
            identity: identity(dir),
        })
    }

    /// Waits for a change (or [`IDENTITY_CHECK`]); true when the directory itself is gone or
    /// another one stands at its path.
    fn wait(&mut self, dir: &Path) -> bool {
        let ready = {
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(IDENTITY_CHECK).unwrap_or(PollTimeout::MAX);
            matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
        };
        let mut gone = false;
        if ready {
            if let Ok(events) = self.inotify.read_events() {
                gone = events.iter().any(|e| {
                    e.mask.intersects(
                        AddWatchFlags::IN_DELETE_SELF
                            | AddWatchFlags::IN_MOVE_SELF
                            | AddWatchFlags::IN_IGNORED,
                    )
                });
            }
        }
        gone || identity(dir) != self.identity
    }
}

/// The follower: delivers every record any process appends, in id order, and reattaches when
/// the directory is replaced.
pub fn follow_loop(
    hub: Weak<Hub>,
    settings: JournalSettings,
    mut reader: JournalReader,
    mut follower: Follower,
) {
    let dir = settings.dir.clone();
    let mut failing = false;
    loop {
        let Some(h) = hub.upgrade() else { return };
        match reader.read_new() {
            Ok(ReadBatch { records, damage }) => {
                failing = false;
                h.stats
                    .backend_failing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                if !damage.is_empty() {
                    h.on_damage(&damage);
                }
                if !records.is_empty() {
                    h.take_records(records);
                }
            }
            // One line per outage, not one per wake-up.
            Err(e) if !failing => {
                failing = true;
                h.stats
                    .backend_failing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                log::error!("journal {}: {e}", dir.display());
            }
            Err(_) => {}
        }
        drop(h);
        if follower.wait(&dir) {
            let Some(h) = hub.upgrade() else { return };
            match reattach(&settings, h.last_id()) {
                Ok((r, f)) => {
                    reader = r;
                    follower = f;
                }
                Err(e) => {
                    log::error!("journal {}: cannot reattach: {e}", dir.display());
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

/// Opens the journal now at the configured path (creating it if it was deleted), continuing
/// after `last_id`, and a reader and watch for it. The reader starts at the new directory's
/// beginning: this process's appender may already have written there (the hub skips ids it has
/// delivered).
fn reattach(
    settings: &JournalSettings,
    last_id: u64,
) -> Result<(JournalReader, Follower), JournalError> {
    log::error!(
        "journal {}: the directory was deleted or replaced while in use; reopening it, ids continue after {last_id}",
        settings.dir.display()
    );
    drop(JournalWriter::open_at_least(settings.clone(), last_id)?);
    let follower = Follower::new(&settings.dir)?;
    Ok((JournalReader::at(&settings.dir, 0, 0, 0), follower))
}

/// A local journal opened and loaded, whose threads start once the hub exists.
pub struct Opened {
    /// The backend to give the hub.
    pub backend: JobQueue,
    /// The last id issued (at least that of the last record loaded).
    pub last_id: u64,
    /// Damage skipped while loading (ids that will never be replayed).
    pub damage: Vec<Damage>,
    /// The threads to start.
    pub threads: Threads,
}

/// The appender and follower threads of a local journal, not yet started.
pub struct Threads {
    writer: JournalWriter,
    jobs: std::sync::mpsc::Receiver<AppendJob>,
    settings: JournalSettings,
}

/// The local journal as a hub's storage: [`LocalJournal::open`] loads it and makes its
/// threads.
pub struct LocalJournal;

impl LocalJournal {
    /// Opens (recovering) the journal, handing every retained record with an id above `after`
    /// to `each`, oldest first.
    pub fn open(
        settings: JournalSettings,
        after: u64,
        each: impl FnMut(JournalRecord),
    ) -> Result<Opened, JournalError> {
        let writer = JournalWriter::open(settings.clone())?;
        let damage =
            super::journal::read_after(&settings.dir, settings.on_corruption, after, each)?;
        let (backend, rx) = JobQueue::new("the journal");
        Ok(Opened {
            backend,
            last_id: writer.last_id(),
            damage,
            threads: Threads {
                writer,
                jobs: rx,
                settings,
            },
        })
    }
}

impl Threads {
    /// Starts the appender and follower threads of `hub`.
    pub fn start(self, hub: &Arc<Hub>) -> Result<(), JournalError> {
        let Threads {
            writer,
            jobs,
            settings,
        } = self;
        let (segment, offset) = writer.position();
        let reader = JournalReader::at(&settings.dir, segment, offset, writer.last_id());
        let follower = Follower::new(&settings.dir)?;
        let spawn_err = |what: &str| {
            let what = what.to_string();
            move |source| JournalError::Io { what, source }
        };
        let name = hub.name.clone();
        let weak = Arc::downgrade(hub);
        std::thread::Builder::new()
            .name(format!("journal-append {name}"))
            .spawn(move || append_loop(&name, writer, jobs, weak))
            .map_err(spawn_err("spawn appender thread"))?;
        let weak = Arc::downgrade(hub);
        std::thread::Builder::new()
            .name(format!("journal-follow {}", hub.name))
            .spawn(move || follow_loop(weak, settings, reader, follower))
            .map_err(spawn_err("spawn follower thread"))?;
        Ok(())
    }
}
