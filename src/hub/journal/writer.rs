//! Appending to a journal shared with other processes: the `flock` (with a deadline), recovery
//! of the newest segment under that lock (a torn tail is cut and the ids it may have held are
//! never reissued), writes that are rolled back when they fail (so an error means "not stored"),
//! segment rolling and retention, and noticing that the directory was deleted or replaced.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::reader::read_file_from;
use super::record::{decode_record, ids_in, scan, Decoded};
use super::{io_ctx, list_segments, log_damage, segment_name};
use super::{CorruptionPolicy, FsyncPolicy, JournalError, JournalSettings};

const LOCK_FILE: &str = "journal.lock";

/// Appends to a journal shared with other processes.
pub struct JournalWriter {
    settings: JournalSettings,
    lock: File,
    /// (device, inode) of the lock file this writer opened: when the path names another file,
    /// the directory was deleted or replaced.
    lock_identity: (u64, u64),
    segment: u64,
    file: Option<File>,
    offset: u64,
    last_id: u64,
    /// The highest id known to be issued, in this journal or an earlier incarnation of its
    /// directory: a replacement directory continues after it.
    floor: u64,
    /// A failed write may have been seen by readers: the next append starts a new segment.
    must_roll: bool,
}

/// How a failed write left the file.
struct WriteFailure {
    error: JournalError,
    /// Bytes may have reached the file (and readers): the ids attempted are used up.
    landed: bool,
    /// The file is back as it was before the write (nothing of it is stored).
    rolled_back: bool,
}

impl JournalWriter {
    /// Opens (creating) the journal, recovers the newest segment, and learns the last id.
    pub fn open(settings: JournalSettings) -> Result<JournalWriter, JournalError> {
        JournalWriter::open_at_least(settings, 0)
    }

    /// [`JournalWriter::open`], and makes sure the next id is above `floor` (an empty segment
    /// named after it reserves the ids below, for every process).
    pub fn open_at_least(
        settings: JournalSettings,
        floor: u64,
    ) -> Result<JournalWriter, JournalError> {
        let dir = settings.dir.clone();
        io_ctx(std::fs::create_dir_all(&dir), || {
            format!("create {}", dir.display())
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = io_ctx(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&lock_path),
            || format!("open {}", lock_path.display()),
        )?;
        let meta = io_ctx(lock.metadata(), || format!("stat {}", lock_path.display()))?;
        let mut w = JournalWriter {
            settings,
            lock,
            lock_identity: (meta.dev(), meta.ino()),
            segment: 0,
            file: None,
            offset: 0,
            last_id: 0,
            floor,
            must_roll: false,
        };
        let guard = w.lock()?;
        w.catch_up(true)?;
        w.reserve_floor()?;
        drop(guard);
        Ok(w)
    }

    /// Where the journal ends (segment, offset), as of the last append or open — a record
    /// boundary, since it is taken under the lock.
    pub fn position(&self) -> (u64, u64) {
        (self.segment, self.offset)
    }

    /// The last id issued by anyone, as of the last append or open.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Tells the writer that `id` was issued (seen by this process's reader), so that a
    /// replacement directory continues after it.
    pub fn raise_floor(&mut self, id: u64) {
        self.floor = self.floor.max(id);
    }

    /// Takes the lock, polling until `lock_timeout`: a process stopped while holding it (a
    /// suspended `fastsse publish`) makes appends fail as busy instead of waiting forever.
    fn lock(&self) -> Result<Flock<File>, JournalError> {
        let deadline = Instant::now() + self.settings.lock_timeout;
        let mut pause = Duration::from_millis(1);
        let mut f = io_ctx(self.lock.try_clone(), || "dup journal.lock".into())?;
        loop {
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => return Ok(guard),
                Err((back, Errno::EWOULDBLOCK)) | Err((back, Errno::EINTR)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(JournalError::LockTimeout(self.settings.lock_timeout));
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(20));
                    f = back;
                }
                Err((_, e)) => {
                    return Err(JournalError::Io {
                        what: "flock journal.lock".into(),
                        source: io::Error::from(e),
                    })
                }
            }
        }
    }

    /// Whether the lock file on disk is no longer the one this writer holds: the directory was
    /// deleted, renamed or replaced since it was opened.
    fn replaced(&self) -> bool {
        match std::fs::metadata(self.settings.dir.join(LOCK_FILE)) {
            Ok(m) => (m.dev(), m.ino()) != self.lock_identity,
            Err(_) => true,
        }
    }

    /// Takes the lock of the journal that is at the configured path now, reopening it (and
    /// continuing after every id issued so far) when the directory was replaced.
    fn lock_current(&mut self) -> Result<Flock<File>, JournalError> {
        let guard = self.lock()?;
        if !self.replaced() {
            return Ok(guard);
        }
        drop(guard);
        let floor = self.floor.max(self.last_id);
        log::error!(
            "journal {}: the directory was deleted or replaced while in use; reopening it, ids continue after {floor}",
            self.settings.dir.display()
        );
        *self = JournalWriter::open_at_least(self.settings.clone(), floor)?;
        self.lock()
    }

    /// Under the lock: after every id below `floor` is taken, start a segment above it.
    fn reserve_floor(&mut self) -> Result<(), JournalError> {
        if self.last_id < self.floor {
            log::warn!(
                "journal {}: last id {} is below {} issued before; new ids continue after it",
                self.settings.dir.display(),
                self.last_id,
                self.floor
            );
            self.last_id = self.floor;
            self.roll()?;
        }
        Ok(())
    }

    /// Under the lock: find the newest segment and its last record. Damage is skipped (or
    /// refused at open, per policy); a torn tail is cut, and the ids it may have held are
    /// reserved by starting a new segment after them.
    fn catch_up(&mut self, opening: bool) -> Result<(), JournalError> {
        let dir = self.settings.dir.clone();
        let segs = list_segments(&dir)?;
        let Some(&newest) = segs.last() else {
            self.segment = self.last_id + 1;
            self.file = None;
            self.offset = 0;
            return Ok(());
        };
        let (from, prev) = if newest == self.segment && self.file.is_some() {
            (self.offset, self.last_id)
        } else {
            (0, newest.saturating_sub(1))
        };
        let path = dir.join(segment_name(newest));
        let mut f = io_ctx(
            OpenOptions::new().read(true).append(true).open(&path),
            || format!("open {}", path.display()),
        )?;
        let buf = read_file_from(&mut f, &path, from)?;
        let s = scan(&buf, prev);
        for d in &s.damage {
            if opening && self.settings.on_corruption == CorruptionPolicy::Refuse {
                return Err(JournalError::Damaged {
                    segment: path,
                    offset: from + d.offset as u64,
                });
            }
            if opening {
                log_damage(&path, from, d);
            }
        }
        let found = s.records.last().map_or(prev, |r| r.id);
        // A segment is named after the first id it may hold: every id before its name is taken.
        self.last_id = self.last_id.max(found).max(newest.saturating_sub(1));
        self.segment = newest;
        self.offset = from + s.end as u64;
        self.file = Some(f);
        let tail = buf.len() - s.end;
        if tail > 0 {
            // Holding the lock, nobody is writing: bytes with no valid record after them were
            // left by a writer that died, or are a damaged last record. Either way the ids they
            // may have held are never reissued (a subscriber may have one): a new segment is
            // started after them.
            let rest = &buf[s.end..];
            let reserved = found + ids_in(tail);
            let torn = rest.iter().all(|&b| b == 0) || decode_record(rest) == Decoded::Incomplete;
            if torn {
                // A record cut short (or zeros a crash left): never acknowledged as whole.
                log::warn!(
                    "journal {}: cutting {tail} bytes of a torn record at offset {}; ids continue after {reserved}",
                    path.display(),
                    self.offset
                );
                let f = self.file.as_mut().expect("segment open");
                io_ctx(f.set_len(self.offset), || {
                    format!("truncate {}", path.display())
                })?;
            } else {
                // A whole record that fails its checksum: damage. It stays where it is; once a
                // newer segment follows, every reader reports it as a hole.
                if opening && self.settings.on_corruption == CorruptionPolicy::Refuse {
                    return Err(JournalError::Damaged {
                        segment: path,
                        offset: self.offset,
                    });
                }
                log::error!(
                    "journal {}: the last record (offset {}, {tail} bytes) is damaged; kept and skipped, ids {} to {reserved} may be lost",
                    path.display(),
                    self.offset,
                    found + 1
                );
            }
            self.last_id = self.last_id.max(reserved);
            self.roll()?;
        }
        Ok(())
    }

    /// Takes the lock of the current journal, catches up, and rolls when the segment is full.
    pub(super) fn prepare(&mut self) -> Result<Flock<File>, JournalError> {
        let guard = self.lock_current()?;
        self.catch_up(false)?;
        if self.file.is_none() || self.must_roll || self.offset >= self.settings.segment_bytes {
            self.roll()?;
        }
        Ok(guard)
    }

    /// Starts a new segment named after the next id, then applies retention.
    fn roll(&mut self) -> Result<(), JournalError> {
        let first = self.last_id + 1;
        let path = self.settings.dir.join(segment_name(first));
        let f = io_ctx(
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path),
            || format!("create {}", path.display()),
        )?;
        if self.settings.fsync != FsyncPolicy::Never {
            if let Ok(d) = File::open(&self.settings.dir) {
                let _ = d.sync_all();
            }
        }
        self.segment = first;
        self.file = Some(f);
        self.offset = 0;
        self.must_roll = false;
        self.retain()
    }

    /// Deletes the oldest segments (never the two newest) past `max_bytes` or `max_age`.
    fn retain(&mut self) -> Result<(), JournalError> {
        let dir = &self.settings.dir;
        let segs = list_segments(dir)?;
        let mut sizes: Vec<(u64, u64, SystemTime)> = segs
            .iter()
            .filter_map(|&s| {
                let m = std::fs::metadata(dir.join(segment_name(s))).ok()?;
                Some((s, m.len(), m.modified().unwrap_or(SystemTime::now())))
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|s| s.1).sum();
        let now = SystemTime::now();
        // Never the two newest: followers in other processes may still be finishing the one
        // before the current segment.
        while sizes.len() > 2 {
            let (seg, size, modified) = sizes[0];
            let too_old = now.duration_since(modified).unwrap_or_default() > self.settings.max_age;
            if total <= self.settings.max_bytes && !too_old {
                break;
            }
            let path = dir.join(segment_name(seg));
            io_ctx(std::fs::remove_file(&path), || {
                format!("remove {}", path.display())
            })?;
            log::info!("journal: removed segment {} (retention)", path.display());
            total -= size;
            sizes.remove(0);
        }
        Ok(())
    }

    /// Bytes of every segment on disk now (a directory listing and a stat per segment).
    pub fn journal_bytes(&self) -> u64 {
        list_segments(&self.settings.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|&s| std::fs::metadata(self.settings.dir.join(segment_name(s))).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The journal's directory.
    pub fn dir(&self) -> &PathBuf {
        &self.settings.dir
    }
}

#[path = "append.rs"]
mod append;

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
