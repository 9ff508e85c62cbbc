//! Appending to a journal shared with other processes: the `flock` (with a deadline), recovery
//! of the newest segment under that lock (a torn tail is cut and the ids it may have held are
//! never reissued), writes that are rolled back when they fail (so an error means "not stored"),
//! segment rolling and retention, and noticing that the directory was deleted or replaced.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags, Flock, FlockArg};

use super::record::{decode_record, encode_record, ids_in, scan, Decoded};
use super::Publication;
use super::{io_ctx, list_segments, log_damage, now_ms, segment_name};
use super::{CorruptionPolicy, FsyncPolicy, JournalError, JournalRecord, JournalSettings};

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
        io_ctx(f.seek(SeekFrom::Start(from)), || {
            format!("seek {}", path.display())
        })?;
        let mut buf = Vec::new();
        io_ctx(f.read_to_end(&mut buf), || {
            format!("read {}", path.display())
        })?;
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

    /// Appends a batch, assigning consecutive ids. Each publication gets its own answer, and an
    /// answer is the truth: `Ok(id)` means its record is in the journal (synced per the fsync
    /// policy), an error means it is not. Other processes' appends are accounted for (the lock
    /// serialises all writers).
    pub fn append(&mut self, batch: &[Publication]) -> Vec<Result<u64, JournalError>> {
        let guard = match self.prepare() {
            Ok(g) => g,
            Err(e) => return batch.iter().map(|_| Err(e.duplicate())).collect(),
        };
        let now = now_ms();
        let mut answers: Vec<Option<Result<u64, JournalError>>> =
            (0..batch.len()).map(|_| None).collect();
        // Encode first; a publication that cannot be encoded fails alone and takes no id.
        let mut encoded: Vec<(usize, u64, Vec<u8>)> = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            let id = self.last_id + 1 + encoded.len() as u64;
            let rec = JournalRecord {
                id,
                unix_ms: now,
                topics: p.topics.clone(),
                event: p.event.clone(),
                retry_ms: p.retry_ms,
                data: p.data.clone(),
            };
            match encode_record(&rec) {
                Ok(bytes) => encoded.push((i, id, bytes)),
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        if self.settings.fsync == FsyncPolicy::Always {
            let mut failed: Option<JournalError> = None;
            for entry in &encoded {
                let (i, id, bytes) = entry;
                if let Some(e) = &failed {
                    answers[*i] = Some(Err(e.duplicate()));
                    continue;
                }
                match self.write_out(bytes, true) {
                    Ok(()) => {
                        self.last_id = *id;
                        answers[*i] = Some(Ok(*id));
                    }
                    Err(f) => {
                        let stored = self.settle_failed(&f, std::slice::from_ref(entry));
                        answers[*i] = Some(if *id <= stored {
                            Ok(*id)
                        } else {
                            Err(f.error.duplicate())
                        });
                        failed = Some(f.error);
                    }
                }
            }
        } else if !encoded.is_empty() {
            let bytes: Vec<u8> = encoded
                .iter()
                .flat_map(|(_, _, b)| b.iter().copied())
                .collect();
            let sync = self.settings.fsync == FsyncPolicy::Batch;
            match self.write_out(&bytes, sync) {
                Ok(()) => {
                    for (i, id, _) in &encoded {
                        answers[*i] = Some(Ok(*id));
                    }
                    self.last_id = encoded.last().map_or(self.last_id, |e| e.1);
                }
                Err(f) => {
                    let stored = self.settle_failed(&f, &encoded);
                    for (i, id, _) in &encoded {
                        answers[*i] = Some(if *id <= stored {
                            Ok(*id)
                        } else {
                            Err(f.error.duplicate())
                        });
                    }
                }
            }
        }
        if self.deleted_meanwhile() && answers.iter().any(|a| matches!(a, Some(Ok(_)))) {
            // The directory went away during the write: these events are in files no one will
            // read. They are not stored; their ids stay used.
            log::error!(
                "journal {}: the directory was deleted during a write; answering not stored",
                self.settings.dir.display()
            );
            for a in answers.iter_mut().filter(|a| matches!(a, Some(Ok(_)))) {
                *a = Some(Err(JournalError::Io {
                    what: format!("{} deleted during the write", self.settings.dir.display()),
                    source: io::Error::from(io::ErrorKind::NotFound),
                }));
            }
        }
        drop(guard);
        answers
            .into_iter()
            .map(|a| a.expect("every publication answered"))
            .collect()
    }

    /// Takes the lock of the current journal, catches up, and rolls when the segment is full.
    fn prepare(&mut self) -> Result<Flock<File>, JournalError> {
        let guard = self.lock_current()?;
        self.catch_up(false)?;
        if self.file.is_none() || self.must_roll || self.offset >= self.settings.segment_bytes {
            self.roll()?;
        }
        Ok(guard)
    }

    /// After a failed write of `batch`: what of it is whole in the file is stored (only when
    /// the write could not be cut back). Returns the last stored id. When bytes may have reached
    /// the file, the batch's ids are used up (a reader may have delivered them before the cut)
    /// and the next append starts a new segment, so no reader is left mid-record and no id is
    /// issued twice.
    fn settle_failed(&mut self, f: &WriteFailure, batch: &[(usize, u64, Vec<u8>)]) -> u64 {
        if !f.landed {
            return self.last_id;
        }
        let mut stored = self.last_id;
        let path = self.settings.dir.join(segment_name(self.segment));
        if !f.rolled_back {
            if let Some(file) = self.file.as_mut() {
                let mut buf = Vec::new();
                if file.seek(SeekFrom::Start(self.offset)).is_ok()
                    && file.read_to_end(&mut buf).is_ok()
                {
                    let s = scan(&buf, self.last_id);
                    if let Some(last) = s.records.last() {
                        if batch.iter().any(|(_, id, _)| *id == last.id) {
                            stored = last.id;
                        }
                    }
                }
            }
            // Rescan the segment from its start next time (which cuts any torn remainder).
            self.file = None;
        }
        let attempted = batch.last().map_or(self.last_id, |e| e.1);
        log::error!(
            "journal {}: a write failed after reaching the file ({}); ids up to {stored} are stored, ids up to {attempted} are not reused",
            path.display(),
            if f.rolled_back { "cut back" } else { "could not be cut back" }
        );
        self.last_id = self.last_id.max(attempted);
        self.must_roll = true;
        stored
    }

    /// Whether the lock file was unlinked (the directory deleted) while this writer held it:
    /// what was just written is in files no one will read.
    fn deleted_meanwhile(&self) -> bool {
        self.lock.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// Writes `bytes` at the end of the current segment (syncing when asked). On failure the
    /// segment is cut back to where it was, so nothing of the write is stored.
    fn write_out(&mut self, bytes: &[u8], sync: bool) -> Result<(), WriteFailure> {
        let path = self.settings.dir.join(segment_name(self.segment));
        let start = self.offset;
        let f = self.file.as_mut().expect("segment open");
        let fail = |what: String, source: io::Error| JournalError::Io { what, source };
        // Reserve the space first: a full disk then fails before a byte is written.
        match fallocate(
            f.as_raw_fd(),
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            start as i64,
            bytes.len() as i64,
        ) {
            Err(Errno::ENOSPC) | Err(Errno::EDQUOT) => {
                return Err(WriteFailure {
                    error: fail(
                        format!("reserve {} bytes in {}", bytes.len(), path.display()),
                        io::Error::from(Errno::ENOSPC),
                    ),
                    landed: false,
                    rolled_back: true,
                })
            }
            // Not supported by the file system (or another error a write will report too).
            _ => {}
        }
        let result = f
            .write_all(bytes)
            .map_err(|e| fail(format!("append to {}", path.display()), e))
            .and_then(|()| {
                if sync {
                    f.sync_data()
                        .map_err(|e| fail(format!("fsync {}", path.display()), e))
                } else {
                    Ok(())
                }
            });
        match result {
            Ok(()) => {
                self.offset += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                let rolled_back = f.set_len(start).is_ok() && (!sync || f.sync_data().is_ok());
                Err(WriteFailure {
                    error,
                    landed: true,
                    rolled_back,
                })
            }
        }
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

    /// The journal's directory.
    pub fn dir(&self) -> &PathBuf {
        &self.settings.dir
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{publication, settings, tmp};
    use super::super::{read_all, JournalReader};
    use super::*;
    use std::path::Path;

    fn ids(r: Vec<Result<u64, JournalError>>) -> Vec<u64> {
        r.into_iter().map(|r| r.unwrap()).collect()
    }

    fn all(dir: &Path) -> Vec<JournalRecord> {
        let mut v = Vec::new();
        read_all(dir, CorruptionPolicy::Skip, |r| v.push(r)).unwrap();
        v
    }

    fn data(dir: &Path) -> Vec<String> {
        all(dir).into_iter().map(|r| r.data).collect()
    }

    fn newest_segment(dir: &Path) -> PathBuf {
        let segs = list_segments(dir).unwrap();
        dir.join(segment_name(*segs.last().unwrap()))
    }

    #[test]
    fn ids_continue_across_reopen_and_a_torn_tail_is_cut_without_reusing_its_ids() {
        let dir = tmp("reopen");
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(
            ids(w.append(&[publication("1"), publication("2")])),
            vec![1, 2]
        );
        drop(w);
        // A writer killed mid-record leaves half a record behind.
        let half = encode_record(&JournalRecord {
            id: 3,
            unix_ms: 0,
            topics: vec!["a".into()],
            event: None,
            retry_ms: None,
            data: "torn".into(),
        })
        .unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(segment_name(1)))
            .unwrap();
        f.write_all(&half[..half.len() - 2]).unwrap();
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        // Id 3 may have reached a subscriber before the writer died: it is not issued again.
        assert!(w.last_id() >= 3, "last id {}", w.last_id());
        let next = ids(w.append(&[publication("3")]))[0];
        assert!(next > 3);
        assert_eq!(data(&dir), vec!["1", "2", "3"]);
        // The reservation holds for a process that opens the journal afterwards.
        let mut other = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(ids(other.append(&[publication("4")])), vec![next + 1]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flipped_byte_mid_segment_is_skipped_and_no_later_id_is_reissued() {
        let dir = tmp("flip");
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        let batch: Vec<Publication> = (0..40)
            .map(|i| publication(&format!("event {i}")))
            .collect();
        assert_eq!(ids(w.append(&batch)), (1..=40).collect::<Vec<_>>());
        drop(w);
        let seg = newest_segment(&dir);
        let mut bytes = std::fs::read(&seg).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(w.last_id(), 40, "the records after the damage still count");
        assert_eq!(ids(w.append(&[publication("next")])), vec![41]);
        let kept = all(&dir);
        assert_eq!(
            kept.len(),
            40,
            "one record lost to the flipped byte, 39 + 1 kept"
        );
        assert_eq!(kept.last().unwrap().id, 41);
        let mut refuse = settings(&dir);
        refuse.on_corruption = CorruptionPolicy::Refuse;
        match JournalWriter::open(refuse) {
            Err(JournalError::Damaged { offset, .. }) => assert!(offset > 0),
            other => panic!("expected Damaged, got {:?}", other.map(|w| w.last_id())),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_writers_interleave_without_reusing_ids_and_a_reader_follows_segments() {
        let dir = tmp("two");
        let mut s = settings(&dir);
        s.segment_bytes = 200;
        let mut a = JournalWriter::open(s.clone()).unwrap();
        let mut b = JournalWriter::open(s).unwrap();
        let mut reader = JournalReader::at(&dir, 0, 0, 0);
        let mut got = Vec::new();
        for i in 0..20 {
            let w = if i % 3 == 0 { &mut b } else { &mut a };
            got.extend(ids(w.append(&[publication(&format!("{i}"))])));
        }
        assert_eq!(got, (1..=20).collect::<Vec<_>>());
        assert!(list_segments(&dir).unwrap().len() > 2);
        let batch = reader.read_new().unwrap();
        assert!(batch.damage.is_empty());
        let seen: Vec<u64> = batch.records.iter().map(|r| r.id).collect();
        assert_eq!(seen, got);
        assert!(reader.read_new().unwrap().records.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_newest_segment_reserves_the_ids_before_its_name() {
        let dir = tmp("empty-newest");
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        let three = [publication("1"), publication("2"), publication("3")];
        assert_eq!(ids(w.append(&three)), vec![1, 2, 3]);
        // Another writer rolled to a segment starting at id 10 and died before writing to it.
        File::create(dir.join(segment_name(10))).unwrap();
        assert_eq!(ids(w.append(&[publication("x")])), vec![10]);
        let mut fresh = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(ids(fresh.append(&[publication("y")])), vec![11]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reader_started_at_the_writers_position_sees_every_later_record() {
        let dir = tmp("position");
        let mut s = settings(&dir);
        s.segment_bytes = 120;
        let mut w = JournalWriter::open(s.clone()).unwrap();
        w.append(&[publication("before")]);
        let (seg, off) = w.position();
        let mut reader = JournalReader::at(&dir, seg, off, w.last_id());
        let mut other = JournalWriter::open(s).unwrap();
        let mut want = Vec::new();
        let mut seen = Vec::new();
        for i in 0..30 {
            want.extend(ids(other.append(&[publication(&format!("after {i}"))])));
            if i % 7 == 0 {
                seen.extend(reader.read_new().unwrap().records.into_iter().map(|r| r.id));
            }
        }
        seen.extend(reader.read_new().unwrap().records.into_iter().map(|r| r.id));
        assert_eq!(seen, want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_by_size_keeps_the_newest_segments() {
        let dir = tmp("retain");
        let mut s = settings(&dir);
        s.segment_bytes = 100;
        s.max_bytes = 300;
        let mut w = JournalWriter::open(s).unwrap();
        for i in 0..50 {
            w.append(&[publication(&format!("event {i}"))]);
        }
        let kept = all(&dir);
        assert!(
            kept.len() < 50 && kept.last().unwrap().id == 50,
            "{} kept",
            kept.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_held_lock_makes_appends_fail_as_busy_after_the_timeout_and_store_nothing() {
        let dir = tmp("lock");
        let mut s = settings(&dir);
        s.lock_timeout = Duration::from_millis(200);
        let mut w = JournalWriter::open(s.clone()).unwrap();
        let holder = File::open(dir.join(LOCK_FILE)).unwrap();
        let held = Flock::lock(holder, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        let t = Instant::now();
        let r = w.append(&[publication("a"), publication("b")]);
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(r
            .iter()
            .all(|r| matches!(r, Err(JournalError::LockTimeout(_)))));
        drop(held);
        assert_eq!(ids(w.append(&[publication("c")])), vec![1]);
        assert_eq!(data(&dir), vec!["c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_replaced_directory_is_reopened_and_ids_continue() {
        let dir = tmp("replaced");
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(
            ids(w.append(&[publication("1"), publication("2")])),
            vec![1, 2]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let next = ids(w.append(&[publication("after")]))[0];
        assert!(next > 2, "id {next} reissued");
        assert_eq!(data(&dir), vec!["after"]);
        // Another process (the CLI) opening the new directory continues after it too.
        let mut cli = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(ids(cli.append(&[publication("cli")])), vec![next + 1]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_floor_reserves_ids_for_every_later_writer() {
        let dir = tmp("floor");
        drop(JournalWriter::open_at_least(settings(&dir), 500).unwrap());
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(ids(w.append(&[publication("x")])), vec![501]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Mounts a 256 KiB tmpfs at `dir` for the life of the guard (root only).
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path) -> Option<Tmpfs> {
            let root = nix::unistd::Uid::effective().is_root();
            if !root {
                assert!(
                    std::env::var_os("FASTSSE_REQUIRE_PEERS").is_none(),
                    "mounting a tmpfs needs root"
                );
                return None;
            }
            std::fs::create_dir_all(dir).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
                .arg(dir)
                .status()
                .unwrap();
            assert!(ok.success());
            Some(Tmpfs(dir.to_path_buf()))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_batch_that_meets_a_full_disk_is_stored_whole_or_not_at_all() {
        for policy in [FsyncPolicy::Batch, FsyncPolicy::Never, FsyncPolicy::Always] {
            let dir = tmp(&format!("full-{policy:?}"));
            let Some(_mnt) = Tmpfs::mount(&dir) else {
                return;
            };
            let mut s = settings(&dir);
            s.fsync = policy;
            let mut w = JournalWriter::open(s).unwrap();
            // Leave a little room, then append batches of 2 KiB events until refused.
            std::fs::write(dir.join("filler"), vec![0u8; 200 * 1024]).unwrap_or(());
            let mut answered = Vec::new();
            for round in 0..40 {
                let batch: Vec<Publication> = (0..8)
                    .map(|i| publication(&format!("{round}-{i}-{}", "d".repeat(2048))))
                    .collect();
                let results = w.append(&batch);
                let refused = results.iter().any(|r| r.is_err());
                answered.extend(batch.into_iter().zip(results));
                if refused {
                    break;
                }
            }
            let refused: Vec<&Publication> = answered
                .iter()
                .filter(|(_, r)| r.is_err())
                .map(|(p, _)| p)
                .collect();
            assert!(!refused.is_empty(), "{policy:?}: the disk never filled");
            let stored: Vec<(u64, String)> = answered
                .iter()
                .filter_map(|(p, r)| r.as_ref().ok().map(|id| (*id, p.data.clone())))
                .collect();
            // Free the disk so a fresh open can read everything back.
            std::fs::remove_file(dir.join("filler")).unwrap();
            let kept: Vec<(u64, String)> = all(&dir).into_iter().map(|r| (r.id, r.data)).collect();
            assert_eq!(
                kept, stored,
                "{policy:?}: the journal holds other events than the acknowledged ones"
            );
            // And the writer goes on: the next append is stored and takes a new id.
            let next = ids(w.append(&[publication("after")]))[0];
            assert!(next > stored.last().map_or(0, |s| s.0));
        }
    }

    #[test]
    fn a_damaged_last_record_is_kept_as_damage_and_reported_as_a_hole() {
        let dir = tmp("last-damaged");
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        let five: Vec<Publication> = (0..5).map(|i| publication(&format!("e{i}"))).collect();
        assert_eq!(ids(w.append(&five)), vec![1, 2, 3, 4, 5]);
        drop(w);
        let seg = dir.join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        *bytes.last_mut().unwrap() ^= 0x20;
        std::fs::write(&seg, &bytes).unwrap();
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert!(w.last_id() >= 5);
        assert_eq!(
            std::fs::read(&seg).unwrap().len(),
            bytes.len(),
            "damage is kept, not cut"
        );
        let next = ids(w.append(&[publication("next")]))[0];
        assert!(next > 5);
        let mut got = Vec::new();
        let damage = read_all(&dir, CorruptionPolicy::Skip, |r| got.push(r.id)).unwrap();
        assert_eq!(got, vec![1, 2, 3, 4, next]);
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].after_id, 4);
        assert!(damage[0].next_id > 5);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
