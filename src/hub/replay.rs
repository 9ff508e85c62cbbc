//! The replay buffer: recent events kept in memory for `Last-Event-ID` resumption, bounded by
//! count, bytes and age, and the holes (ids lost to journal damage) a resumption must not cross
//! silently.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::Duration;

use super::StoredEvent;
use crate::hub::journal::now_ms;

/// Bounds of the replay buffer.
#[derive(Clone, Copy, Debug)]
pub struct ReplayBounds {
    /// Most events kept.
    pub events: usize,
    /// Most bytes kept (the events' wire bytes).
    pub bytes: usize,
    /// Oldest event kept.
    pub age: Duration,
}

/// Why a `Last-Event-ID` cannot be resumed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresumable {
    /// Older than the retained history.
    Expired,
    /// Larger than any id issued.
    Unknown,
    /// Events after it were lost to journal damage.
    Lost,
}

impl Unresumable {
    /// The `reason` of the reset event.
    pub fn reason(self) -> &'static str {
        match self {
            Unresumable::Expired => "expired",
            Unresumable::Unknown => "unknown",
            Unresumable::Lost => "lost",
        }
    }
}

/// Recent events, oldest first.
#[derive(Debug, Default)]
pub struct ReplayBuffer {
    events: VecDeque<Arc<StoredEvent>>,
    bytes: usize,
    /// Highest id no longer retained (everything at or below it may have been dropped).
    evicted_up_to: u64,
    /// Ids lost to damage: every id strictly between the two of a pair.
    holes: Vec<(u64, u64)>,
    /// Ids below this were never issued (a numbering that started from the clock); 0: none.
    begins: u64,
    /// Hashes of the publisher ids of public events no longer retained, newest last (as many
    /// as events are retained, 8 bytes each): a resume from one is `expired`, not `unknown`.
    /// Private events' ids are not kept: whether one exists is nobody's business.
    evicted_ids: VecDeque<u64>,
    evicted_set: HashSet<u64>,
}

impl ReplayBuffer {
    /// After loading history at start-up: ids before the first retained event (or, with none,
    /// up to `last_id`) cannot be replayed (the journal's retention removed them).
    pub fn loaded(&mut self, last_id: u64) {
        self.evicted_up_to = match self.events.front() {
            Some(first) => self.evicted_up_to.max(first.id - 1),
            None => last_id,
        };
    }

    /// Ids below `start` were never issued: a resume from one is told `lost`, and a resume
    /// from `0` (from the start) replays everything from `start` on.
    pub fn numbering_starts(&mut self, start: u64) {
        self.begins = start;
        if self.evicted_up_to == start.saturating_sub(1)
            && self.events.front().is_none_or(|f| f.id == start)
        {
            self.evicted_up_to = 0;
        }
    }

    /// Adds the newest event and trims to the bounds.
    pub fn push(&mut self, ev: Arc<StoredEvent>, b: &ReplayBounds) {
        self.bytes += ev.wire.len();
        self.events.push_back(ev);
        self.trim(b);
    }

    /// Drops events past the bounds, oldest first.
    pub fn trim(&mut self, b: &ReplayBounds) {
        let oldest_ok = now_ms().saturating_sub(b.age.as_millis() as u64);
        while let Some(front) = self.events.front() {
            if self.events.len() <= b.events && self.bytes <= b.bytes && front.unix_ms >= oldest_ok
            {
                break;
            }
            self.evicted_up_to = front.id;
            self.bytes -= front.wire.len();
            if let (Some(id), false) = (&front.public_id, front.private) {
                let h = id_hash(id);
                if self.evicted_set.insert(h) {
                    self.evicted_ids.push_back(h);
                }
                while self.evicted_ids.len() > b.events {
                    if let Some(old) = self.evicted_ids.pop_front() {
                        self.evicted_set.remove(&old);
                    }
                }
            }
            self.events.pop_front();
        }
        let evicted = self.evicted_up_to;
        self.holes.retain(|&(_, next)| next - 1 > evicted);
    }

    /// Records that the ids strictly between `after` and `next` were lost.
    pub fn add_hole(&mut self, after: u64, next: u64) {
        if next > after + 1 {
            self.holes.push((after, next));
        }
    }

    /// Events after `id` that `wanted` keeps, oldest first; or why they cannot be given.
    pub fn after(
        &self,
        id: u64,
        last_id: u64,
        wanted: impl Fn(&StoredEvent) -> bool,
    ) -> Result<VecDeque<Arc<StoredEvent>>, Unresumable> {
        if id > last_id {
            return Err(Unresumable::Unknown);
        }
        if id < self.evicted_up_to {
            return Err(Unresumable::Expired);
        }
        if (id > 0 && id < self.begins) || self.holes.iter().any(|&(_, next)| next - 1 > id) {
            return Err(Unresumable::Lost);
        }
        let start = self.events.partition_point(|e| e.id <= id);
        Ok(self
            .events
            .range(start..)
            .filter(|e| wanted(e))
            .cloned()
            .collect())
    }

    /// The newest retained event.
    pub fn newest(&self) -> Option<&Arc<StoredEvent>> {
        self.events.back()
    }

    /// Every retained event that `wanted` keeps (Mercure's `earliest`).
    pub fn all(&self, wanted: impl Fn(&StoredEvent) -> bool) -> VecDeque<Arc<StoredEvent>> {
        self.events.iter().filter(|e| wanted(e)).cloned().collect()
    }

    /// The sequence number of the newest retained event the publisher named `public_id`.
    pub fn find_public(&self, public_id: &str) -> Option<&Arc<StoredEvent>> {
        self.events
            .iter()
            .rev()
            .find(|e| e.public_id.as_deref() == Some(public_id))
    }

    /// Whether `public_id` was a public event's id that is no longer retained.
    pub fn was_evicted(&self, public_id: &str) -> bool {
        self.evicted_set.contains(&id_hash(public_id))
    }

    /// Events retained.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes retained.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A publisher id's hash (fixed keys: the same in every process).
fn id_hash(id: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(id: u64, size: usize) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            id,
            unix_ms: now_ms(),
            topics: vec!["t".into()],
            private: false,
            public_id: Some(format!("urn:ev:{id}")),
            wire: Bytes::from(vec![b'x'; size]),
        })
    }

    fn bounds(events: usize, bytes: usize) -> ReplayBounds {
        ReplayBounds {
            events,
            bytes,
            age: Duration::from_secs(3600),
        }
    }

    fn ids(r: Result<VecDeque<Arc<StoredEvent>>, Unresumable>) -> Vec<u64> {
        r.unwrap().iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_numbering_that_starts_from_the_clock_replays_from_zero_and_calls_older_ids_lost() {
        let start = 1_796_000_000_000_000;
        let mut r = ReplayBuffer::default();
        for id in start..start + 3 {
            r.push(ev(id, 10), &bounds(100, 1 << 20));
        }
        r.loaded(start + 2);
        assert!(matches!(
            r.after(0, start + 2, |_| true),
            Err(Unresumable::Expired)
        ));
        r.numbering_starts(start);
        assert_eq!(
            ids(r.after(0, start + 2, |_| true)),
            [start, start + 1, start + 2]
        );
        assert!(matches!(
            r.after(2, start + 2, |_| true),
            Err(Unresumable::Lost)
        ));
        assert_eq!(
            ids(r.after(start, start + 2, |_| true)),
            [start + 1, start + 2]
        );
    }

    #[test]
    fn bounded_by_bytes_as_well_as_count() {
        let b = bounds(100, 1000);
        let mut r = ReplayBuffer::default();
        for id in 1..=10 {
            r.push(ev(id, 300), &b);
        }
        assert_eq!((r.len(), r.bytes()), (3, 900));
        let t = |e: &StoredEvent| e.topics[0] == "t";
        assert_eq!(ids(r.after(8, 10, t)), vec![9, 10]);
        assert_eq!(r.after(8, 10, |_| false).unwrap().len(), 0);
        assert_eq!(r.all(t).len(), 3);
        assert_eq!(r.find_public("urn:ev:9").map(|e| e.id), Some(9));
        assert!(r.find_public("urn:ev:2").is_none(), "evicted");
        assert!(r.was_evicted("urn:ev:2") && !r.was_evicted("urn:ev:9"));
        assert!(!r.was_evicted("urn:ev:never"));
        assert_eq!(r.after(6, 10, t).unwrap_err(), Unresumable::Expired);
        assert_eq!(ids(r.after(7, 10, t)), vec![8, 9, 10]);
        assert_eq!(r.after(11, 10, t).unwrap_err(), Unresumable::Unknown);
    }

    #[test]
    fn resuming_across_a_hole_is_refused_until_the_hole_is_evicted() {
        let b = bounds(5, 1 << 20);
        let mut r = ReplayBuffer::default();
        let t = |_: &StoredEvent| true;
        for id in [1, 2, 3, 6, 7] {
            r.push(ev(id, 10), &b);
        }
        r.add_hole(3, 6);
        assert_eq!(r.after(1, 7, t).unwrap_err(), Unresumable::Lost);
        assert_eq!(r.after(4, 7, t).unwrap_err(), Unresumable::Lost);
        assert_eq!(ids(r.after(5, 7, t)), vec![6, 7]);
        assert_eq!(ids(r.after(6, 7, t)), vec![7]);
        for id in 8..=12 {
            r.push(ev(id, 10), &b);
        }
        assert_eq!(ids(r.after(7, 12, t)), vec![8, 9, 10, 11, 12]);
        r.add_hole(12, 13);
        assert_eq!(
            ids(r.after(11, 12, t)),
            vec![12],
            "an empty hole loses nothing"
        );
    }
}
