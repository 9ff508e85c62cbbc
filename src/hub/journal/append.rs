//! Appending to the journal: a batch's records encoded with the ids they take, written (each
//! synced alone, or together), and the truth told for each — what a failed write left in the
//! file is settled, a segment cut back where it can be, ids never issued twice.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::fcntl::fallocate;
use nix::fcntl::FallocateFlags;

use super::{JournalWriter, WriteFailure};
use crate::hub::journal::record::{encode_record, scan};
use crate::hub::journal::Publication;
use crate::hub::journal::{now_ms, segment_name, FsyncPolicy, JournalError, JournalRecord};

/// Each publication's answer, by its place in the batch; `None` until it has one.
type Answers = Vec<Option<Result<u64, JournalError>>>;
/// A record to write: its place in the batch, its id, its bytes.
type Encoded = (usize, u64, Vec<u8>);

impl JournalWriter {
    /// Appends a batch, assigning consecutive ids. Each publication gets its own answer, and an
    /// answer is the truth: `Ok(id)` means its record is in the journal (synced per the fsync
    /// policy), an error means it is not. Other processes' appends are accounted for (the lock
    /// serialises all writers).
    pub fn append(&mut self, batch: &[Publication]) -> Vec<Result<u64, JournalError>> {
        let guard = match self.prepare() {
            Ok(g) => g,
            Err(e) => return batch.iter().map(|_| Err(e.duplicate())).collect(),
        };
        let mut answers: Answers = (0..batch.len()).map(|_| None).collect();
        let encoded = self.encode(batch, &mut answers);
        if self.settings.fsync == FsyncPolicy::Always {
            self.write_each(&encoded, &mut answers);
        } else if !encoded.is_empty() {
            self.write_together(&encoded, &mut answers);
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

    /// The batch's records with the ids they take; a publication that cannot be encoded fails
    /// alone and takes no id.
    fn encode(&self, batch: &[Publication], answers: &mut Answers) -> Vec<Encoded> {
        let now = now_ms();
        let mut encoded: Vec<Encoded> = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            let id = self.last_id + 1 + encoded.len() as u64;
            match encode_record(&JournalRecord::of(p, id, now)) {
                Ok(bytes) => encoded.push((i, id, bytes)),
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        encoded
    }

    /// `fsync = "always"`: each record written and synced on its own; after a failure the
    /// rest are not written.
    fn write_each(&mut self, encoded: &[Encoded], answers: &mut Answers) {
        let mut failed: Option<JournalError> = None;
        for entry in encoded {
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
    }

    /// Otherwise: the batch in one write (synced once under `fsync = "batch"`).
    fn write_together(&mut self, encoded: &[Encoded], answers: &mut Answers) {
        let bytes: Vec<u8> = encoded
            .iter()
            .flat_map(|(_, _, b)| b.iter().copied())
            .collect();
        let sync = self.settings.fsync == FsyncPolicy::Batch;
        match self.write_out(&bytes, sync) {
            Ok(()) => {
                for (i, id, _) in encoded {
                    answers[*i] = Some(Ok(*id));
                }
                self.last_id = encoded.last().map_or(self.last_id, |e| e.1);
            }
            Err(f) => {
                let stored = self.settle_failed(&f, encoded);
                for (i, id, _) in encoded {
                    answers[*i] = Some(if *id <= stored {
                        Ok(*id)
                    } else {
                        Err(f.error.duplicate())
                    });
                }
            }
        }
    }

    /// After a failed write of `batch`: what of it is whole in the file is stored (only when
    /// the write could not be cut back). Returns the last stored id. When bytes may have reached
    /// the file, the batch's ids are used up (a reader may have delivered them before the cut)
    /// and the next append starts a new segment, so no reader is left mid-record and no id is
    /// issued twice.
    fn settle_failed(&mut self, f: &WriteFailure, batch: &[Encoded]) -> u64 {
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
}
