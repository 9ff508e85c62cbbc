//! Reading a journal without its lock: [`read_all`] at start-up (streamed, one segment in memory
//! at a time) and [`JournalReader`], which follows appends made by any process. Both skip damage
//! and report it, so the hub can tell clients that resume across it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::record::{scan, Damage, Scan};
use super::{io_ctx, list_segments, log_damage, segment_name, CorruptionPolicy};
use super::{JournalError, JournalRecord};

/// Reads `f` (the segment at `path`) from `offset` to its end.
pub(super) fn read_file_from(
    f: &mut File,
    path: &Path,
    offset: u64,
) -> Result<Vec<u8>, JournalError> {
    io_ctx(f.seek(SeekFrom::Start(offset)), || {
        format!("seek {}", path.display())
    })?;
    let mut buf = Vec::new();
    io_ctx(f.read_to_end(&mut buf), || {
        format!("read {}", path.display())
    })?;
    Ok(buf)
}

/// Reads `path` from `offset` to its end; `None` when it is gone.
fn read_from(path: &Path, offset: u64) -> Result<Option<Vec<u8>>, JournalError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        // Deleted by another process's retention since the listing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return io_ctx(Err(e), || format!("open {}", path.display())),
    };
    read_file_from(&mut f, path, offset).map(Some)
}

/// The damage a non-newest segment's tail stands for: a segment followed by a newer one is
/// complete (writers append only to the newest, under the lock), so bytes left after its last
/// record are lost records, not a record still being written.
fn tail_damage(s: &Scan, buf_len: usize, prev_id: u64, next_segment: u64) -> Option<Damage> {
    (s.end < buf_len && next_segment > prev_id + 1).then_some(Damage {
        offset: s.end,
        len: buf_len - s.end,
        after_id: prev_id,
        next_id: next_segment,
    })
}

/// Reads every record in the journal, oldest first, handing each to `each` (so a large journal
/// is never in memory whole). Returns the damage skipped; with [`CorruptionPolicy::Refuse`] the
/// first damage is an error instead.
pub fn read_all(
    dir: &Path,
    policy: CorruptionPolicy,
    each: impl FnMut(JournalRecord),
) -> Result<Vec<Damage>, JournalError> {
    read_after(dir, policy, 0, each)
}

/// Like [`read_all`], but only records with an id above `after` reach `each`, and segments that
/// hold none are not read at all (a CGI request that resumes after `after` needs no more;
/// damage is looked for in the segments read).
pub fn read_after(
    dir: &Path,
    policy: CorruptionPolicy,
    after: u64,
    mut each: impl FnMut(JournalRecord),
) -> Result<Vec<Damage>, JournalError> {
    let segments = list_segments(dir)?;
    let mut damage = Vec::new();
    let mut prev_id = 0u64;
    for (i, &seg) in segments.iter().enumerate() {
        // Every id in this segment is below the next one's first.
        if segments.get(i + 1).is_some_and(|&next| next - 1 <= after) {
            continue;
        }
        let path = dir.join(segment_name(seg));
        let Some(buf) = read_from(&path, 0)? else {
            continue;
        };
        prev_id = prev_id.max(seg.saturating_sub(1));
        let s = scan(&buf, prev_id);
        let mut found = s.damage.clone();
        if let Some(&next) = segments.get(i + 1) {
            let last = s.records.last().map_or(prev_id, |r| r.id);
            found.extend(tail_damage(&s, buf.len(), last, next));
        }
        for d in found {
            if policy == CorruptionPolicy::Refuse {
                return Err(JournalError::Damaged {
                    segment: path,
                    offset: d.offset as u64,
                });
            }
            log_damage(&path, 0, &d);
            damage.push(d);
        }
        for r in s.records {
            prev_id = r.id;
            if r.id > after {
                each(r);
            }
        }
    }
    Ok(damage)
}

/// What one [`JournalReader::read_new`] found.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// New records, in id order.
    pub records: Vec<JournalRecord>,
    /// Damage skipped on the way (ids that will never be delivered).
    pub damage: Vec<Damage>,
}

/// Follows a journal from a position, returning records as they are appended by any process.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    segment: u64,
    offset: u64,
    last_id: u64,
}

impl JournalReader {
    /// A reader positioned at `offset` in `segment`, after the record with id `last_id` (a
    /// record boundary, e.g. from [`super::JournalWriter::position`], taken under the lock).
    pub fn at(dir: &Path, segment: u64, offset: u64, last_id: u64) -> JournalReader {
        JournalReader {
            dir: dir.to_path_buf(),
            segment,
            offset,
            last_id,
        }
    }

    /// Every whole record appended since the last call, in order. A record still being
    /// written is left for the next call. On an error, what was read so far is returned (the
    /// position only moves past records that are returned).
    pub fn read_new(&mut self) -> Result<ReadBatch, JournalError> {
        let mut out = ReadBatch::default();
        loop {
            // List first: a segment that is followed by a newer one is complete, so after
            // reading it to its end the reader may move on without missing a record.
            let next = match list_segments(&self.dir) {
                Ok(segs) => segs.into_iter().find(|&s| s > self.segment),
                Err(e) if out.records.is_empty() => return Err(e),
                Err(_) => return Ok(out),
            };
            let path = self.dir.join(segment_name(self.segment));
            match read_from(&path, self.offset) {
                Ok(Some(mut buf)) => {
                    let mut s = scan(&buf, self.last_id);
                    if !s.damage.is_empty() && next.is_none() {
                        // Bytes a writer is copying in right now can look bad for a moment:
                        // damage in the newest segment counts only if it is still there.
                        std::thread::sleep(Duration::from_millis(10));
                        if let Ok(Some(again)) = read_from(&path, self.offset) {
                            buf = again;
                            s = scan(&buf, self.last_id);
                        }
                    }
                    let last = s.records.last().map_or(self.last_id, |r| r.id);
                    let mut found = s.damage.clone();
                    if let Some(n) = next {
                        found.extend(tail_damage(&s, buf.len(), last, n));
                    }
                    for d in found {
                        log_damage(&path, self.offset, &d);
                        out.damage.push(d);
                    }
                    self.offset += s.end as u64;
                    self.last_id = last;
                    out.records.extend(s.records);
                }
                Ok(None) => {}
                Err(e) if out.records.is_empty() => return Err(e),
                Err(_) => return Ok(out),
            }
            match next {
                Some(n) => {
                    self.segment = n;
                    self.offset = 0;
                    self.last_id = self.last_id.max(n - 1);
                }
                None => return Ok(out),
            }
        }
    }
}
