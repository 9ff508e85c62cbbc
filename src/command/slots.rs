//! The process slots of a per-stream route (`max_processes`), counted across reloads and across
//! the workers of `[server] processes`: slot `i` is the lock file `<dir>/<i>`, held with
//! `flock` while a program runs. A reloaded route opens the same files, so a lock taken through
//! the old route still counts; sibling workers see each other's locks; a lock ends with the
//! process that held it, so a crash leaks no slot. The files are opened when the route is built
//! (config time); taking or giving back a slot is a non-blocking `flock`.
//!
//! Where the data directory cannot hold them, the count is this process's only (logged).

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};

/// One slot: its lock file, and the lock while a program holds it.
enum State {
    /// Free here (the file, unlocked).
    Free(File),
    /// Held by a program of this process.
    Held(Flock<File>),
    /// Held by a program of this process (no lock files).
    HeldHere,
    /// Free (no lock files).
    FreeHere,
    /// Between the two (only while the mutex is held).
    Moving,
}

/// The slots of one per-stream route.
pub struct Slots {
    slots: Vec<Mutex<State>>,
    /// The lock files as `/proc/locks` names them (`MAJOR:MINOR:INODE`, hex, hex, decimal).
    files: Vec<String>,
}

/// A taken slot, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    index: usize,
}

impl Slots {
    /// `max` slots as lock files in `dir` (created); `Err` when `dir` cannot hold them.
    /// Blocking (file system): config time only.
    pub fn open(dir: &Path, max: usize) -> std::io::Result<Arc<Slots>> {
        use std::os::unix::fs::MetadataExt;
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::with_capacity(max);
        let slots = (0..max)
            .map(|i| {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(i.to_string()))?;
                let m = f.metadata()?;
                let (major, minor) = (
                    nix::sys::stat::major(m.dev()),
                    nix::sys::stat::minor(m.dev()),
                );
                files.push(format!("{major:02x}:{minor:02x}:{}", m.ino()));
                Ok(Mutex::new(State::Free(f)))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Arc::new(Slots { slots, files }))
    }

    /// `max` slots counted in this process only.
    pub fn in_process(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            slots: (0..max).map(|_| Mutex::new(State::FreeHere)).collect(),
            files: Vec::new(),
        })
    }

    /// A free slot (in this process and every other that shares the files), if any.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        (0..self.slots.len()).find_map(|index| {
            let mut s = self.slots[index].lock().unwrap_or_else(|p| p.into_inner());
            let taken = match std::mem::replace(&mut *s, State::Moving) {
                State::Free(f) => match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => (State::Held(lock), true),
                    Err((f, _)) => (State::Free(f), false),
                },
                State::FreeHere => (State::HeldHere, true),
                other => (other, false),
            };
            *s = taken.0;
            taken.1.then(|| Slot {
                slots: self.clone(),
                index,
            })
        })
    }

    /// How many slots there are (`max_processes`).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots held now, by the programs of this process and of every other sharing the files
    /// (a reloaded route's, a sibling worker's): the box's count, read from `/proc/locks`
    /// (served from memory by the kernel), so that counting never takes a slot itself.
    pub fn running(&self) -> usize {
        if self.files.is_empty() {
            return self
                .slots
                .iter()
                .filter(|s| {
                    matches!(
                        *s.lock().unwrap_or_else(|p| p.into_inner()),
                        State::HeldHere
                    )
                })
                .count();
        }
        let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
            return 0;
        };
        let held: std::collections::HashSet<&str> = locks
            .lines()
            .filter(|l| l.contains("FLOCK") && !l.contains("->"))
            .filter_map(|l| l.split_whitespace().nth(5))
            .collect();
        self.files
            .iter()
            .filter(|f| held.contains(f.as_str()))
            .count()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.slots[self.index]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *s = match std::mem::replace(&mut *s, State::Moving) {
            State::Held(lock) => match lock.unlock() {
                Ok(f) => State::Free(f),
                // Could not unlock: keep the lock (and the slot) rather than lose the file.
                Err((lock, _)) => State::Held(lock),
            },
            State::HeldHere => State::FreeHere,
            other => other,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_by_every_opening_of_the_same_files() {
        let dir = std::env::temp_dir().join(format!("fastsse-slots-{}", std::process::id()));
        let a = Slots::open(&dir, 2).unwrap();
        let one = a.try_take().unwrap();
        let two = a.try_take().unwrap();
        assert!(a.try_take().is_none());
        assert_eq!(a.running(), 2);
        // A reload opens the same files: the old route's programs still count.
        let b = Slots::open(&dir, 2).unwrap();
        assert!(b.try_take().is_none());
        drop(one);
        let three = b.try_take().unwrap();
        assert!(a.try_take().is_none() && b.try_take().is_none());
        assert_eq!(
            (a.running(), b.running()),
            (2, 2),
            "counted across openings"
        );
        drop((two, three));
        assert_eq!((a.running(), b.running()), (0, 0));
        assert!(a.try_take().is_some());
        let here = Slots::in_process(1);
        let h = here.try_take().unwrap();
        assert!(here.try_take().is_none());
        drop(h);
        assert!(here.try_take().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}
