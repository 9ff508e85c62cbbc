//! The hook journal: what must reach the application, on disk before it is sent. Each process
//! writes its own file in the route's hooks folder (`<tag>.log`, JSON lines) and holds a lock
//! on `<tag>.lock` for its life; the kernel drops the lock when the process dies, however it
//! dies, so a live process that can take the lock knows the file is an orphan and adopts it
//! ([`read_orphan`]). Lines: a call to make, a call made (`done`), and — in a compacted file —
//! a stream still open whose connect was made. A writer thread does the blocking I/O and says
//! through a watch how far the file is written.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::call::Call;

/// One line of a hook journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Line {
    /// A call to make.
    Call {
        /// It.
        call: Call,
    },
    /// The call with this id was made (the application answered).
    Done {
        /// Its id.
        id: String,
    },
    /// The application refused this stream at its connect: it never opened, no leave follows.
    Closed {
        /// Its subscriber id.
        subscriber: String,
    },
    /// A stream still open whose connect was made (a compacted file's record of it).
    Open {
        /// Its connect.
        call: Call,
    },
}

impl Line {
    /// The line as written: JSON and a newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// What an orphaned file holds: the calls not made, in order, and the streams it left open
/// (their connects), in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Orphan {
    /// Calls written and never marked done.
    pub pending: Vec<Call>,
    /// Connects without a leave: streams the dead process held.
    pub open: Vec<Call>,
    /// Lines that did not parse (a torn last line is not counted).
    pub damaged: usize,
}

/// Replays `lines` (as written) into what they leave undone.
pub fn replay(text: &[u8]) -> Orphan {
    use std::collections::HashMap;
    // In order, with an index by id (pending) and by subscriber (open): linear in the file.
    let mut pending: Vec<Option<Call>> = Vec::new();
    let mut pending_at: HashMap<String, usize> = HashMap::new();
    let mut open: Vec<Option<Call>> = Vec::new();
    let mut open_at: HashMap<String, usize> = HashMap::new();
    let mut damaged = 0;
    let mut lines = text.split(|b| *b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        if raw.is_empty() {
            continue;
        }
        let line = match serde_json::from_slice::<Line>(raw) {
            Ok(l) => l,
            // The last line, unterminated: a write the process did not finish.
            Err(_) if lines.peek().is_none() => break,
            Err(_) => {
                damaged += 1;
                continue;
            }
        };
        match line {
            Line::Call { call } => {
                if call.event == super::call::Event::Connect {
                    open_at.insert(call.subscriber.clone(), open.len());
                    open.push(Some(call.clone()));
                } else if call.event == super::call::Event::Publish {
                    // Not a stream's: nothing to open or close.
                } else if let Some(i) = open_at.remove(&call.subscriber) {
                    open[i] = None;
                }
                pending_at.insert(call.id.clone(), pending.len());
                pending.push(Some(call));
            }
            Line::Done { id } => {
                if let Some(i) = pending_at.remove(&id) {
                    pending[i] = None;
                }
            }
            Line::Closed { subscriber } => {
                if let Some(i) = open_at.remove(&subscriber) {
                    open[i] = None;
                }
            }
            Line::Open { call } => {
                open_at.insert(call.subscriber.clone(), open.len());
                open.push(Some(call));
            }
        }
    }
    Orphan {
        pending: pending.into_iter().flatten().collect(),
        open: open.into_iter().flatten().collect(),
        damaged,
    }
}

/// What the writer thread is asked to do.
pub enum Op {
    /// Append these bytes; `seq` is the last call sequence they hold.
    Append { bytes: Vec<u8>, seq: u64 },
    /// Replace the file with these bytes (a compaction); `seq` as for `Append`.
    Replace { bytes: Vec<u8>, seq: u64 },
}

/// This process's journal file: the lock held for its life, the writer thread's channel.
pub struct OwnLog {
    /// The writer thread's queue.
    pub tx: mpsc::Sender<Op>,
    /// The log's path.
    pub path: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl OwnLog {
    /// Creates this process's files in `dir` (tag: pid and a random part) and starts the
    /// writer; `written` learns the last sequence on disk, `failed` each write error.
    pub fn create(
        dir: &Path,
        fsync: bool,
        written: tokio::sync::watch::Sender<u64>,
        failed: impl Fn(String) + Send + 'static,
    ) -> Result<OwnLog, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let tag = format!("{}-{:08x}", std::process::id(), crate::random::u64() as u32);
        let lock_path = dir.join(format!("{tag}.lock"));
        let lock = lock_file(&lock_path)?
            .ok_or_else(|| format!("{}: locked by another process", lock_path.display()))?;
        let path = dir.join(format!("{tag}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        std::thread::Builder::new()
            .name("fastsse-hooks".into())
            .spawn(move || write_loop(file, &p, fsync, rx, written, failed))
            .map_err(|e| format!("thread: {e}"))?;
        Ok(OwnLog {
            tx,
            path,
            lock_path,
            _lock: lock,
        })
    }

    /// Removes the files (nothing left to do: no pending call, no open stream).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// The lock on `path` (created if need be), or `None` while a live process holds it.
fn lock_file(path: &Path) -> Result<Option<Flock<File>>, String> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(format!("lock {}: {e}", path.display())),
    }
}

/// Writes what comes, a batch at a time (one fsync per batch when asked), and publishes the
/// last sequence written. A failed write is cut back to the last whole line and retried with
/// the next batch.
fn write_loop(
    mut file: File,
    path: &Path,
    fsync: bool,
    rx: mpsc::Receiver<Op>,
    written: tokio::sync::watch::Sender<u64>,
    failed: impl Fn(String),
) {
    let mut held: Vec<u8> = Vec::new();
    let mut held_seq = 0;
    loop {
        let first = if held.is_empty() {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            }
        } else {
            rx.recv_timeout(std::time::Duration::from_secs(1)).ok()
        };
        for op in first.into_iter().chain(rx.try_iter()) {
            match op {
                Op::Append { bytes, seq } => {
                    held.extend_from_slice(&bytes);
                    held_seq = held_seq.max(seq);
                }
                // The snapshot already holds what was appended before it was taken (the
                // appends in `held` came first on this channel): they are not written again.
                Op::Replace { bytes, seq } => match replace(path, &bytes) {
                    Ok(f) => {
                        file = f;
                        held.clear();
                        held_seq = held_seq.max(seq);
                    }
                    Err(e) => failed(e),
                },
            }
        }
        if held.is_empty() {
            // Not `send_replace(…borrow()…)`: the borrow would be held while sending.
            let mark = held_seq.max(*written.borrow());
            written.send_replace(mark);
            continue;
        }
        match append(&mut file, &held, fsync) {
            Ok(()) => {
                held.clear();
                written.send_replace(held_seq);
            }
            Err(e) => failed(format!("write {}: {e}", path.display())),
        }
    }
}

fn append(file: &mut File, bytes: &[u8], fsync: bool) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let r = file
        .write_all(bytes)
        .and_then(|()| if fsync { file.sync_data() } else { Ok(()) });
    if r.is_err() {
        // A line cut short would make the next one unreadable: back to the last whole line.
        let _ = file.set_len(len);
    }
    r
}

/// The compacted file (`bytes`) in place of the old.
fn replace(path: &Path, bytes: &[u8]) -> Result<File, String> {
    let tmp = path.with_extension("log.new");
    let write = || -> std::io::Result<File> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        OpenOptions::new().append(true).open(path)
    };
    write().map_err(|e| format!("compact {}: {e}", path.display()))
}

/// The orphaned files in `dir` other than `own`: each one whose lock no live process holds is
/// read and handed to `adopt`; when `adopt` says its contents are safe elsewhere, the files
/// are removed (the lock is held until then, so no second process adopts them).
pub fn adopt_orphans(
    dir: &Path,
    own: &Path,
    mut adopt: impl FnMut(&Path, Orphan) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return problems;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "log") || path == own {
            continue;
        }
        let lock_path = path.with_extension("lock");
        let lock = match lock_file(&lock_path) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let orphan = match read_file(&path) {
            Ok(Some(o)) => o,
            // Removed by the process that adopted it just before us.
            Ok(None) => {
                let _ = std::fs::remove_file(&lock_path);
                continue;
            }
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if adopt(&path, orphan) {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&lock_path);
        }
        drop(lock);
    }
    problems
}

fn read_file(path: &Path) -> Result<Option<Orphan>, String> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let mut text = Vec::new();
    let mut r = BufReader::new(f);
    loop {
        let n = r
            .read_until(b'\n', &mut text)
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
    }
    Ok(Some(replay(&text)))
}

#[cfg(test)]
mod tests {
    use super::super::call::{Event, Reason};
    use super::*;

    fn connect(sub: &str) -> Call {
        Call {
            id: format!("c-{sub}"),
            event: Event::Connect,
            route: "/r".into(),
            topics: vec![],
            user: None,
            subscriber: sub.into(),
            remote_addr: None,
            reason: None,
            time_ms: 1,
            connected_ms: None,
            published: None,
        }
    }

    #[test]
    fn replay_leaves_what_was_not_done_and_who_was_not_left() {
        let (a, b, c) = (connect("a"), connect("b"), connect("c"));
        let la = a.leave(Reason::BrowserLeft);
        let mut text = Vec::new();
        for l in [
            Line::Call { call: a.clone() },
            Line::Call { call: b.clone() },
            Line::Done { id: a.id.clone() },
            Line::Call { call: la.clone() },
            Line::Done { id: b.id.clone() },
            Line::Open { call: c.clone() },
        ] {
            text.extend(l.encode());
        }
        text.extend_from_slice(b"not json\n");
        text.extend(Line::Done { id: la.id.clone() }.encode());
        // A torn last line: not damage.
        text.extend_from_slice(b"{\"op\":\"do");
        let o = replay(&text);
        assert_eq!(o.pending, vec![]);
        assert_eq!(o.open, vec![b.clone(), c]);
        assert_eq!(o.damaged, 1);
    }

    #[test]
    fn a_compaction_is_the_file_and_its_mark_is_published() {
        let dir =
            std::env::temp_dir().join(format!("fastsse-hookcompact-{}", crate::random::u64()));
        let (tx, rx) = tokio::sync::watch::channel(0);
        let own = OwnLog::create(&dir, false, tx, |_| {}).unwrap();
        // Appends then the snapshot of what they left, sent at once: the writer takes them in
        // one batch, and the appends must not be written after the snapshot.
        let mut snapshot = Vec::new();
        for i in 0..2000u64 {
            let c = connect(&i.to_string());
            let line = Line::Call { call: c.clone() }.encode();
            if i % 2 == 0 {
                snapshot.extend(Line::Open { call: c }.encode());
            }
            own.tx
                .send(Op::Append {
                    bytes: line,
                    seq: i + 1,
                })
                .unwrap();
        }
        own.tx
            .send(Op::Replace {
                bytes: snapshot.clone(),
                seq: 2000,
            })
            .unwrap();
        // The mark comes (the writer published it after a compaction that left nothing held).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while *rx.borrow() < 2000 {
            assert!(
                std::time::Instant::now() < until,
                "mark stuck at {}",
                *rx.borrow()
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        own.tx
            .send(Op::Replace {
                bytes: snapshot.clone(),
                seq: 2001,
            })
            .unwrap();
        while *rx.borrow() < 2001 {
            assert!(
                std::time::Instant::now() < until,
                "mark stuck at {}",
                *rx.borrow()
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(std::fs::read(&own.path).unwrap(), snapshot);
        assert_eq!(replay(&snapshot).open.len(), 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_orphan_is_adopted_once_and_a_live_file_never() {
        let dir = std::env::temp_dir().join(format!("fastsse-hooklog-{}", crate::random::u64()));
        let (tx, _rx) = tokio::sync::watch::channel(0);
        let live = OwnLog::create(&dir, false, tx, |_| {}).unwrap();
        let (tx2, mut rx2) = tokio::sync::watch::channel(0);
        let dead = OwnLog::create(&dir, false, tx2, |_| {}).unwrap();
        let a = connect("a");
        dead.tx
            .send(Op::Append {
                bytes: Line::Call { call: a.clone() }.encode(),
                seq: 1,
            })
            .unwrap();
        while *rx2.borrow_and_update() < 1 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let dead_path = dead.path.clone();
        drop(dead); // its lock goes, as when a process dies
        let mut seen = Vec::new();
        adopt_orphans(&dir, &live.path, |p, o| {
            seen.push((p.to_path_buf(), o.open.clone()));
            true
        });
        assert_eq!(seen, vec![(dead_path.clone(), vec![a])]);
        assert!(!dead_path.exists());
        // Nothing else to adopt; the live file is never touched.
        let mut again = 0;
        adopt_orphans(&dir, &live.path, |_, _| {
            again += 1;
            true
        });
        assert_eq!(again, 0);
        assert!(live.path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
