//! The durable journal: segment files of checksummed records ([`record`]), appended under an
//! exclusive `flock` by any process on the host ([`writer`]: the daemon, `fastsse publish`, CGI),
//! and followed by every process ([`reader`]).
//!
//! What it guarantees:
//! - An append either stores an event (its id is returned) or does not (an error is returned
//!   for it): a failed write is rolled back before the error is reported.
//! - Ids strictly increase and are never issued twice, also after a torn tail is cut, after
//!   damage, or after the directory was deleted or replaced under a running process.
//! - Damage (bad bytes followed by valid records) is skipped with a log line and reported as a
//!   hole; only bytes with nothing valid after them are a torn tail, cut at open.
//!
//! All of it is blocking file I/O: it runs on the hub's own threads or in a CLI process, never on
//! an async task.

pub mod reader;
pub mod record;
pub mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use reader::{read_after, read_all, JournalReader, ReadBatch};
pub use record::{crc32, decode_record, encode_record, Damage, Decoded};
pub use writer::JournalWriter;

/// When appended records are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every record.
    Always,
    /// Once per batch of records appended together (group commit).
    Batch,
    /// Never (the OS writes back when it likes).
    Never,
}

/// What opening a journal does about damage (bad records followed by good ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorruptionPolicy {
    /// Skip the damaged bytes with a log line; clients resuming across them get a reset.
    Skip,
    /// Refuse to open the journal, naming the segment and offset.
    Refuse,
}

/// Journal settings.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// Directory of this journal's segments.
    pub dir: PathBuf,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// A new segment is started when the current one passes this size.
    pub segment_bytes: u64,
    /// Oldest segments are deleted while the journal is larger than this.
    pub max_bytes: u64,
    /// Segments whose last write is older than this are deleted.
    pub max_age: Duration,
    /// Longest wait for the journal lock before an append fails as busy.
    pub lock_timeout: Duration,
    /// What opening does about damage.
    pub on_corruption: CorruptionPolicy,
}

/// One journaled event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalRecord {
    /// Server-assigned id, strictly increasing across the journal's life.
    pub id: u64,
    /// Publish time, milliseconds since the unix epoch.
    pub unix_ms: u64,
    /// Topics it was published to.
    pub topics: Vec<String>,
    /// Event name (`event:`), if any.
    pub event: Option<String>,
    /// `retry:` hint, if any.
    pub retry_ms: Option<u64>,
    /// Data.
    pub data: String,
    /// Only for subscribers authorized for one of its topics (Mercure's `private`).
    pub private: bool,
    /// The publisher's id (Mercure's `id`), sent as `id:` instead of the sequence number.
    pub public_id: Option<String>,
}

impl JournalRecord {
    /// The record of publication `p` with id `id`, published at `unix_ms`: the one place a
    /// publication becomes a record, for every backend.
    pub fn of(p: &Publication, id: u64, unix_ms: u64) -> JournalRecord {
        JournalRecord {
            id,
            unix_ms,
            topics: p.topics.clone(),
            event: p.event.clone(),
            retry_ms: p.retry_ms,
            data: p.data.clone(),
            private: p.private,
            public_id: p.public_id.clone(),
        }
    }
}

/// What a publisher hands the journal (the id and time are assigned on append).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publication {
    /// Topics (at least one): the first is the canonical one, the others alternates.
    pub topics: Vec<String>,
    /// Event name.
    pub event: Option<String>,
    /// `retry:` hint.
    pub retry_ms: Option<u64>,
    /// Data.
    pub data: String,
    /// Only for subscribers authorized for one of its topics.
    pub private: bool,
    /// The publisher's own id for the event.
    pub public_id: Option<String>,
}

/// A journal failure. Every variant means "not stored" for the event it is reported for.
#[derive(Debug)]
pub enum JournalError {
    /// A file operation failed.
    Io { what: String, source: io::Error },
    /// A record field is longer than the format allows.
    TooLarge(&'static str),
    /// Another process held the lock longer than `lock_timeout`.
    LockTimeout(Duration),
    /// Opening found damage and the policy is `refuse`.
    Damaged { segment: PathBuf, offset: u64 },
}

impl JournalError {
    /// A copy for each of several publishers that share one failure.
    pub fn duplicate(&self) -> JournalError {
        match self {
            JournalError::Io { what, source } => JournalError::Io {
                what: what.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            JournalError::TooLarge(w) => JournalError::TooLarge(w),
            JournalError::LockTimeout(d) => JournalError::LockTimeout(*d),
            JournalError::Damaged { segment, offset } => JournalError::Damaged {
                segment: segment.clone(),
                offset: *offset,
            },
        }
    }

    /// A short reason for an HTTP client: no paths, no OS error text.
    pub fn public_reason(&self) -> &'static str {
        match self {
            JournalError::Io { source, .. } if source.raw_os_error() == Some(28) => {
                "the journal's disk is full"
            }
            JournalError::Io { .. } => "the journal could not be written",
            JournalError::TooLarge(_) => "the event is too large for a journal record",
            JournalError::LockTimeout(_) => {
                "the journal is locked by another process (fastsse publish, a CGI request)"
            }
            JournalError::Damaged { .. } => "the journal is damaged",
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { what, source } => write!(f, "{what}: {source}"),
            JournalError::TooLarge(what) => write!(f, "{what} too large for a record"),
            JournalError::LockTimeout(d) => write!(
                f,
                "journal.lock held by another process for over {d:?} (lock_timeout)"
            ),
            JournalError::Damaged { segment, offset } => write!(
                f,
                "{} is damaged at offset {offset} and [journal] on_corruption = \"refuse\"; \
                 move the segment away or set on_corruption = \"skip\"",
                segment.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

pub(crate) fn io_ctx<T>(
    r: io::Result<T>,
    what: impl FnOnce() -> String,
) -> Result<T, JournalError> {
    r.map_err(|source| JournalError::Io {
        what: what(),
        source,
    })
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A segment's file name: the first id it may hold.
pub fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

/// Segment first-ids in the directory, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut ids = Vec::new();
    for e in io_ctx(std::fs::read_dir(dir), || format!("read {}", dir.display()))? {
        let e = io_ctx(e, || format!("read {}", dir.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Logs damage found in a segment, once per process: the writer's open, the history load and
/// the tail reader all pass over the same bytes (later passes log at debug level).
fn log_damage(path: &Path, base: u64, d: &Damage) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    // Bounded: past this many places, damage is logged every time again.
    const REMEMBERED: usize = 4096;
    static SEEN: Mutex<Option<HashSet<(std::path::PathBuf, u64)>>> = Mutex::new(None);
    let at = base + d.offset as u64;
    let first = {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.get_or_insert_with(HashSet::new);
        seen.len() >= REMEMBERED || seen.insert((path.to_path_buf(), at))
    };
    let level = if first {
        log::Level::Error
    } else {
        log::Level::Debug
    };
    log::log!(
        level,
        "journal {}: {} damaged bytes at offset {} skipped (ids {} to {} may be lost); \
         clients resuming across them get a fastsse-reset",
        path.display(),
        d.len,
        at,
        d.after_id + 1,
        d.next_id - 1
    );
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn settings(dir: &Path) -> JournalSettings {
        JournalSettings {
            dir: dir.to_path_buf(),
            fsync: FsyncPolicy::Never,
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(2),
            on_corruption: CorruptionPolicy::Skip,
        }
    }

    pub fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fastsse-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    pub fn publication(data: &str) -> Publication {
        Publication {
            topics: vec!["a".into()],
            event: None,
            retry_ms: None,
            data: data.into(),
            ..Default::default()
        }
    }
}
