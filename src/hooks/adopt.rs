//! Taking over the journals of processes that died: their pending calls (with their ids), and
//! a leave (`process_died`) for each stream they held — whose id is derived from its connect's
//! ([`super::super::call::leave_id`]), so that a leave sent twice is one call. What is taken is
//! journaled here before the orphan's files go; a file whose takeover is not written yet is
//! kept, remembered, and removed by a later pass, never taken twice by this process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{Call, Event, Reason, State, Store};
use crate::hooks::journal::{adopt_orphans, Orphan};

/// How long one pass waits for a takeover to be written before it leaves the file for the next.
const WRITE_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// Takes over the orphaned files in the hooks folder (blocking I/O: off the runtime).
    pub(super) fn adopt(&self) {
        let route = self.delivery().route.clone();
        let problems = adopt_orphans(&self.dir, &self.log.path, |path, orphan| {
            let taken = self.taken_lock().get(path).copied();
            let last = match taken {
                Some(last) => last,
                None => {
                    let last = self.take_over(&route, path, orphan);
                    self.taken_lock().insert(path.to_path_buf(), last);
                    last
                }
            };
            let safe = self.wait_written(last);
            if safe {
                self.taken_lock().remove(path);
            }
            safe
        });
        for p in problems {
            log::warn!("route {route}: hooks: {p}");
        }
    }

    fn taken_lock(&self) -> std::sync::MutexGuard<'_, HashMap<std::path::PathBuf, u64>> {
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this process's journal holds everything up to `last`, waiting [`WRITE_WAIT`].
    fn wait_written(&self, last: u64) -> bool {
        let mut rx = self.written.clone();
        let deadline = std::time::Instant::now() + WRITE_WAIT;
        while *rx.borrow_and_update() < last {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Queues what `o` left undone; returns the last sequence queued.
    fn take_over(&self, route: &str, path: &Path, o: Orphan) -> u64 {
        let (calls, streams) = (o.pending.len(), o.open.len());
        if o.damaged > 0 {
            log::error!(
                "route {route}: hook journal {}: {} unreadable lines skipped",
                path.display(),
                o.damaged
            );
        }
        let mut last = 0;
        {
            let mut s = self.lock();
            // A leave waits for its stream's connect when that is among the calls taken over.
            let mut connects: HashMap<String, u64> = HashMap::new();
            let mut take = |s: &mut State, call: Call| {
                s.bytes += call.size();
                let after = match call.event {
                    Event::Connect | Event::Publish => None,
                    Event::Leave => connects.get(&call.subscriber).copied(),
                };
                let (sub, event) = (call.subscriber.clone(), call.event);
                let seq = self.push(s, call, after, false);
                if event == Event::Connect {
                    connects.insert(sub, seq);
                }
                seq
            };
            for call in o.pending {
                last = take(&mut s, call);
            }
            for connect in o.open {
                last = take(&mut s, connect.leave(Reason::ProcessDied));
            }
            if last == 0 {
                last = s.seq;
            }
        }
        self.stats
            .adopted
            .fetch_add((calls + streams) as u64, Relaxed);
        if calls + streams > 0 {
            log::warn!(
                "route {route}: took over {calls} hook calls and {streams} open streams (leaves: process_died) from {}, left by a process that is gone",
                path.display()
            );
        }
        self.wake.notify_one();
        last
    }
}
