//! The durable journal: segment files of checksummed records, appended under an exclusive
//! `flock` by any process on the host (daemon, `fastsse publish`, CGI), followed by every
//! process through inotify. A torn last record (a writer killed mid-write) is cut off at open,
//! logged, and never served.
//!
//! All of it is blocking file I/O: it runs on the hub's own threads or in a CLI process, never on
//! an async task.
//!
//! Record frame: `len: u32 LE | crc32: u32 LE | payload[len]`; payload: `id u64 | unix_ms u64 |
//! topics u16 (len u16, bytes)* | event len u16, bytes | retry_ms u64 (u64::MAX = none) | data`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

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
}

/// One journaled event.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// What a publisher hands the journal (the id and time are assigned on append).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Topics (at least one).
    pub topics: Vec<String>,
    /// Event name.
    pub event: Option<String>,
    /// `retry:` hint.
    pub retry_ms: Option<u64>,
    /// Data.
    pub data: String,
}

/// A journal failure.
#[derive(Debug)]
pub enum JournalError {
    /// A file operation failed.
    Io { what: String, source: io::Error },
    /// A record field is longer than the format allows.
    TooLarge(&'static str),
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { what, source } => write!(f, "journal: {what}: {source}"),
            JournalError::TooLarge(what) => write!(f, "journal: {what} too large for a record"),
        }
    }
}

impl std::error::Error for JournalError {}

fn io_ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T, JournalError> {
    r.map_err(|source| JournalError::Io {
        what: what(),
        source,
    })
}

/// CRC-32 (IEEE), bitwise-table-free but fast enough for journal records.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

const FRAME_HEADER: usize = 8;
/// Largest payload accepted when reading (anything larger is corruption).
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

fn put_str16(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), JournalError> {
    let len = u16::try_from(s.len()).map_err(|_| JournalError::TooLarge(what))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Encodes one record with its frame.
pub fn encode_record(r: &JournalRecord) -> Result<Vec<u8>, JournalError> {
    let mut p = Vec::with_capacity(64 + r.data.len());
    p.extend_from_slice(&r.id.to_le_bytes());
    p.extend_from_slice(&r.unix_ms.to_le_bytes());
    let n = u16::try_from(r.topics.len()).map_err(|_| JournalError::TooLarge("topic list"))?;
    p.extend_from_slice(&n.to_le_bytes());
    for t in &r.topics {
        put_str16(&mut p, t, "topic")?;
    }
    put_str16(&mut p, r.event.as_deref().unwrap_or(""), "event name")?;
    p.extend_from_slice(&r.retry_ms.unwrap_or(u64::MAX).to_le_bytes());
    p.extend_from_slice(r.data.as_bytes());
    if p.len() > MAX_PAYLOAD {
        return Err(JournalError::TooLarge("event"));
    }
    let mut out = Vec::with_capacity(FRAME_HEADER + p.len());
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&p).to_le_bytes());
    out.extend_from_slice(&p);
    Ok(out)
}

/// The result of decoding at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A record and the bytes it took.
    Record(JournalRecord, usize),
    /// Not enough bytes yet (or a record still being written).
    Incomplete,
    /// The bytes cannot be a record (bad length or checksum, malformed payload).
    Corrupt,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode_payload(p: &[u8]) -> Option<JournalRecord> {
    let mut c = Cursor(p);
    let id = c.u64()?;
    let unix_ms = c.u64()?;
    let n = c.u16()?;
    let topics = (0..n).map(|_| c.str16()).collect::<Option<Vec<_>>>()?;
    let event = c.str16()?;
    let retry = c.u64()?;
    let data = String::from_utf8(c.0.to_vec()).ok()?;
    Some(JournalRecord {
        id,
        unix_ms,
        topics,
        event: (!event.is_empty()).then_some(event),
        retry_ms: (retry != u64::MAX).then_some(retry),
        data,
    })
}

/// Decodes the record at the start of `buf`.
pub fn decode_record(buf: &[u8]) -> Decoded {
    if buf.len() < FRAME_HEADER {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    if buf.len() < FRAME_HEADER + len {
        return Decoded::Incomplete;
    }
    let payload = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32(payload) != crc {
        return Decoded::Corrupt;
    }
    match decode_payload(payload) {
        Some(r) => Decoded::Record(r, FRAME_HEADER + len),
        None => Decoded::Corrupt,
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn segment_name(first_id: u64) -> String {
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

/// Reads records from `file` starting at `offset`; returns them, the offset after the last
/// whole record, and whether the bytes after it are corrupt (rather than merely incomplete).
fn scan_from(
    file: &mut File,
    offset: u64,
    path: &Path,
) -> Result<(Vec<JournalRecord>, u64, bool), JournalError> {
    io_ctx(file.seek(SeekFrom::Start(offset)), || {
        format!("seek {}", path.display())
    })?;
    let mut buf = Vec::new();
    io_ctx(file.read_to_end(&mut buf), || {
        format!("read {}", path.display())
    })?;
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        match decode_record(&buf[pos..]) {
            Decoded::Record(r, n) => {
                out.push(r);
                pos += n;
            }
            Decoded::Incomplete => return Ok((out, offset + pos as u64, false)),
            Decoded::Corrupt => return Ok((out, offset + pos as u64, true)),
        }
    }
}

/// Follows a journal from a position, returning records as they are appended by any process.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    segment: u64,
    offset: u64,
}

impl JournalReader {
    /// A reader positioned at `offset` in `segment` (a record boundary, e.g. from
    /// [`JournalWriter::position`], which is taken under the lock).
    pub fn at(dir: &Path, segment: u64, offset: u64) -> JournalReader {
        JournalReader {
            dir: dir.to_path_buf(),
            segment,
            offset,
        }
    }

    /// Every whole record appended since the last call, in order. A record still being
    /// written is left for the next call. On an error, what was read so far is returned (the
    /// position only moves past records that are returned).
    pub fn read_new(&mut self) -> Result<Vec<JournalRecord>, JournalError> {
        let mut out = Vec::new();
        loop {
            // List first: a segment that is followed by a newer one is complete (writers append
            // only to the newest segment, under the lock), so after reading it to its end the
            // reader may move on without missing a record appended in between.
            let next = match list_segments(&self.dir) {
                Ok(segs) => segs.into_iter().find(|&s| s > self.segment),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => return Ok(out),
            };
            let path = self.dir.join(segment_name(self.segment));
            if let Ok(mut f) = File::open(&path) {
                match scan_from(&mut f, self.offset, &path) {
                    Ok((recs, end, corrupt)) => {
                        if corrupt {
                            log::warn!("journal {}: unreadable bytes at offset {end}; waiting for the writer", path.display());
                        }
                        self.offset = end;
                        out.extend(recs);
                    }
                    Err(e) if out.is_empty() => return Err(e),
                    Err(_) => return Ok(out),
                }
            }
            match next {
                Some(n) => {
                    self.segment = n;
                    self.offset = 0;
                }
                None => return Ok(out),
            }
        }
    }
}

/// Reads every record in the journal (oldest first), for loading history at start-up.
pub fn read_all(dir: &Path) -> Result<Vec<JournalRecord>, JournalError> {
    let mut out = Vec::new();
    for s in list_segments(dir)? {
        let path = dir.join(segment_name(s));
        let mut f = match File::open(&path) {
            Ok(f) => f,
            // Deleted by another process's retention since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(JournalError::Io {
                    what: format!("open {}", path.display()),
                    source: e,
                })
            }
        };
        out.extend(scan_from(&mut f, 0, &path)?.0);
    }
    Ok(out)
}

/// Appends to a journal shared with other processes.
pub struct JournalWriter {
    settings: JournalSettings,
    lock: File,
    segment: u64,
    file: Option<File>,
    offset: u64,
    last_id: u64,
}

impl JournalWriter {
    /// Opens (creating) the journal, recovers from a torn last record, and learns the last id.
    pub fn open(settings: JournalSettings) -> Result<JournalWriter, JournalError> {
        let dir = settings.dir.clone();
        io_ctx(std::fs::create_dir_all(&dir), || {
            format!("create {}", dir.display())
        })?;
        let lock_path = dir.join("journal.lock");
        let lock = io_ctx(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&lock_path),
            || format!("open {}", lock_path.display()),
        )?;
        let mut w = JournalWriter {
            settings,
            lock,
            segment: 0,
            file: None,
            offset: 0,
            last_id: 0,
        };
        let guard = w.lock()?;
        w.catch_up()?;
        drop(guard);
        Ok(w)
    }

    /// Where the journal ends (segment, offset), as of the last append or open — a record
    /// boundary, since it is taken under the lock.
    pub fn position(&self) -> (u64, u64) {
        (self.segment, self.offset)
    }

    /// The last id appended by anyone, as of the last append or open.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    fn lock(&self) -> Result<Flock<File>, JournalError> {
        let f = io_ctx(self.lock.try_clone(), || "dup lock file".into())?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| JournalError::Io {
            what: "flock journal.lock".into(),
            source: io::Error::from(e),
        })
    }

    /// Under the lock: find the newest segment and its last record, cutting a torn tail.
    fn catch_up(&mut self) -> Result<(), JournalError> {
        let dir = self.settings.dir.clone();
        let segs = list_segments(&dir)?;
        let Some(&newest) = segs.last() else {
            self.segment = self.last_id + 1;
            self.file = None;
            self.offset = 0;
            return Ok(());
        };
        let from = if newest == self.segment && self.file.is_some() {
            self.offset
        } else {
            0
        };
        let path = dir.join(segment_name(newest));
        let mut f = io_ctx(
            OpenOptions::new().read(true).append(true).open(&path),
            || format!("open {}", path.display()),
        )?;
        let (recs, end, corrupt) = scan_from(&mut f, from, &path)?;
        let len = io_ctx(f.metadata(), || format!("stat {}", path.display()))?.len();
        if let Some(r) = recs.last() {
            self.last_id = r.id;
        }
        // A segment is named after the first id it holds: whatever is in it, every id before
        // that name is taken (this matters when the newest segment is still empty).
        self.last_id = self.last_id.max(newest.saturating_sub(1));
        if end < len {
            // Holding the lock, nobody is writing: the bytes after the last whole record are a
            // torn record from a writer that died. Cut them off so they are never served.
            log::warn!(
                "journal {}: cutting {} bytes of a torn record at offset {end}{}",
                path.display(),
                len - end,
                if corrupt {
                    " (bad checksum)"
                } else {
                    " (incomplete)"
                }
            );
            io_ctx(f.set_len(end), || format!("truncate {}", path.display()))?;
        }
        self.segment = newest;
        self.file = Some(f);
        self.offset = end;
        Ok(())
    }

    /// Appends a batch, assigning consecutive ids; returns the ids. Other processes' appends
    /// in between are accounted for (the lock serialises all writers).
    pub fn append(&mut self, batch: &[Publication]) -> Result<Vec<u64>, JournalError> {
        let guard = self.lock()?;
        self.catch_up()?;
        if self.file.is_none() || self.offset >= self.settings.segment_bytes {
            self.roll()?;
        }
        let now = now_ms();
        let mut ids = Vec::with_capacity(batch.len());
        let mut bytes = Vec::new();
        for p in batch {
            let id = self.last_id + 1 + ids.len() as u64;
            let rec = JournalRecord {
                id,
                unix_ms: now,
                topics: p.topics.clone(),
                event: p.event.clone(),
                retry_ms: p.retry_ms,
                data: p.data.clone(),
            };
            let enc = encode_record(&rec)?;
            if self.settings.fsync == FsyncPolicy::Always {
                self.write_out(&enc, true)?;
                // Written and synced: the id is taken even if a later record fails.
                self.last_id = id;
            } else {
                bytes.extend_from_slice(&enc);
            }
            ids.push(id);
        }
        if !bytes.is_empty() {
            self.write_out(&bytes, self.settings.fsync == FsyncPolicy::Batch)?;
        }
        if let Some(&last) = ids.last() {
            self.last_id = last;
        }
        drop(guard);
        Ok(ids)
    }

    fn write_out(&mut self, bytes: &[u8], sync: bool) -> Result<(), JournalError> {
        let path = self.settings.dir.join(segment_name(self.segment));
        let f = self.file.as_mut().expect("segment open");
        io_ctx(f.write_all(bytes), || {
            format!("append to {}", path.display())
        })?;
        if sync {
            io_ctx(f.sync_data(), || format!("fsync {}", path.display()))?;
        }
        self.offset += bytes.len() as u64;
        Ok(())
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
        self.retain()
    }

    /// Deletes the oldest segments (never the current one) past `max_bytes` or `max_age`.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> JournalSettings {
        JournalSettings {
            dir: dir.to_path_buf(),
            fsync: FsyncPolicy::Never,
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(3600),
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fastsse-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn publication(data: &str) -> Publication {
        Publication {
            topics: vec!["a".into()],
            event: None,
            retry_ms: None,
            data: data.into(),
        }
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_and_every_prefix_is_incomplete() {
        let r = JournalRecord {
            id: 42,
            unix_ms: 7,
            topics: vec!["a".into(), "b/c".into()],
            event: Some("e".into()),
            retry_ms: Some(1500),
            data: "line1\nline2".into(),
        };
        let enc = encode_record(&r).unwrap();
        assert_eq!(decode_record(&enc), Decoded::Record(r.clone(), enc.len()));
        for cut in 0..enc.len() {
            assert_eq!(decode_record(&enc[..cut]), Decoded::Incomplete, "cut {cut}");
        }
        let mut bad = enc.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode_record(&bad), Decoded::Corrupt);
    }

    #[test]
    fn ids_continue_across_reopen_and_torn_tails_are_cut() {
        let dir = tmp("reopen");
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(
            w.append(&[publication("1"), publication("2")]).unwrap(),
            vec![1, 2]
        );
        drop(w);
        // A writer killed mid-record leaves half a record behind.
        let seg = dir.join(segment_name(1));
        let half = encode_record(&JournalRecord {
            id: 3,
            unix_ms: 0,
            topics: vec!["a".into()],
            event: None,
            retry_ms: None,
            data: "torn".into(),
        })
        .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&half[..half.len() - 2]).unwrap();
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(w.last_id(), 2);
        assert_eq!(w.append(&[publication("3")]).unwrap(), vec![3]);
        let all = read_all(&dir).unwrap();
        assert_eq!(
            all.iter().map(|r| r.data.as_str()).collect::<Vec<_>>(),
            vec!["1", "2", "3"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_writers_interleave_without_reusing_ids_and_a_reader_follows_segments() {
        let dir = tmp("two");
        let mut s = settings(&dir);
        s.segment_bytes = 200;
        let mut a = JournalWriter::open(s.clone()).unwrap();
        let mut b = JournalWriter::open(s).unwrap();
        let mut reader = JournalReader::at(&dir, 0, 0);
        let mut ids = Vec::new();
        for i in 0..20 {
            let w = if i % 3 == 0 { &mut b } else { &mut a };
            ids.extend(w.append(&[publication(&format!("{i}"))]).unwrap());
        }
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        assert!(list_segments(&dir).unwrap().len() > 2);
        let seen: Vec<u64> = reader.read_new().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(seen, ids);
        assert!(reader.read_new().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_newest_segment_reserves_the_ids_before_its_name() {
        let dir = tmp("empty-newest");
        let mut w = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(
            w.append(&[publication("1"), publication("2"), publication("3")])
                .unwrap(),
            vec![1, 2, 3]
        );
        // Another writer rolled to a segment starting at id 10 and died before writing to it.
        File::create(dir.join(segment_name(10))).unwrap();
        assert_eq!(w.append(&[publication("x")]).unwrap(), vec![10]);
        let mut fresh = JournalWriter::open(settings(&dir)).unwrap();
        assert_eq!(fresh.append(&[publication("y")]).unwrap(), vec![11]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reader_started_at_the_writers_position_sees_every_later_record() {
        let dir = tmp("position");
        let mut s = settings(&dir);
        s.segment_bytes = 120;
        let mut w = JournalWriter::open(s.clone()).unwrap();
        w.append(&[publication("before")]).unwrap();
        let (seg, off) = w.position();
        let mut reader = JournalReader::at(&dir, seg, off);
        let mut other = JournalWriter::open(s).unwrap();
        let mut ids = Vec::new();
        let mut seen = Vec::new();
        for i in 0..30 {
            ids.extend(other.append(&[publication(&format!("after {i}"))]).unwrap());
            if i % 7 == 0 {
                seen.extend(reader.read_new().unwrap().into_iter().map(|r| r.id));
            }
        }
        seen.extend(reader.read_new().unwrap().into_iter().map(|r| r.id));
        assert_eq!(seen, ids);
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
            w.append(&[publication(&format!("event {i}"))]).unwrap();
        }
        let all = read_all(&dir).unwrap();
        assert!(
            all.len() < 50 && all.last().unwrap().id == 50,
            "{} kept",
            all.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
