//! Which pattern subscribers (Mercure selectors, URI templates) an event goes to: matched
//! outside the hub's lock, once per distinct selector per event, in slices of bounded work
//! between which the delivery task yields (the hub's `deliver_in_slices`).

use std::collections::HashMap;
use std::sync::Arc;

use super::StoredEvent;
use crate::auth::selector::Selector;

/// An event taken into the hub, with the subscribers it may go to: `targets` so far, and
/// `patterns` still to be matched. Matching happens outside the hub's lock, once per distinct
/// selector per event (a thousand streams with the same template cost one match), in slices
/// between which the delivery task yields; each match is linear in the topic's length.
pub(super) struct Accepted {
    ev: Arc<StoredEvent>,
    targets: Vec<u64>,
    patterns: Vec<(u64, Arc<[Selector]>)>,
    /// Outcome per selector (by a keyed hash of its text: 8 bytes each), for this event.
    seen: HashMap<u64, bool>,
    hasher: std::collections::hash_map::RandomState,
}

/// Work between two yields of the delivery task: a subscriber looked at costs 1, a selector
/// matched (linear in the topic) 16.
pub(super) const MATCH_WORK_PER_SLICE: usize = 4096;

impl Accepted {
    /// `ev`, going to `targets` (its exact topics' subscribers) and to those of `patterns`
    /// whose selectors match.
    pub(super) fn new(
        ev: Arc<StoredEvent>,
        targets: Vec<u64>,
        patterns: Vec<(u64, Arc<[Selector]>)>,
    ) -> Accepted {
        Accepted {
            ev,
            targets,
            patterns,
            seen: HashMap::new(),
            hasher: Default::default(),
        }
    }

    /// Whether every pattern subscriber has been matched.
    pub(super) fn matched_all(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Matches pattern subscribers (from the end of the list) until `budget` is spent (see
    /// [`MATCH_WORK_PER_SLICE`]).
    pub(super) fn match_some(&mut self, mut budget: usize) {
        use std::hash::BuildHasher;
        while budget > 0 {
            let Some((sid, selectors)) = self.patterns.pop() else {
                return;
            };
            budget = budget.saturating_sub(1);
            let mut wanted = false;
            for s in selectors.iter() {
                // By kind and text: a URI template and a URL Pattern may be written alike.
                let key = self.hasher.hash_one((std::mem::discriminant(s), s.text()));
                let hit = *self.seen.entry(key).or_insert_with(|| {
                    budget = budget.saturating_sub(16);
                    self.ev.topics.iter().any(|t| s.matches(t))
                });
                if hit {
                    wanted = true;
                    break;
                }
            }
            if wanted {
                self.targets.push(sid);
            }
        }
    }

    /// Matches what is left and gives the event with its subscribers in order, each once (an
    /// event may reach one through several topics).
    pub(super) fn select(mut self) -> (Arc<StoredEvent>, Vec<u64>) {
        self.match_some(usize::MAX);
        self.targets.sort_unstable();
        self.targets.dedup();
        (self.ev, self.targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn each_distinct_selector_is_matched_once_per_event_and_work_is_sliced() {
        let ev = Arc::new(StoredEvent {
            id: 1,
            unix_ms: 0,
            topics: vec!["https://ex.com/books/1".into()],
            private: false,
            public_id: None,
            wire: Bytes::new(),
        });
        let books: Arc<[Selector]> = vec![Selector::parse("https://ex.com/books/{id}")].into();
        let other: Arc<[Selector]> = vec![Selector::parse("https://ex.com/authors/{id}")].into();
        let mut patterns: Vec<(u64, Arc<[Selector]>)> = (0..1000)
            .map(|sid| {
                (
                    sid,
                    if sid % 2 == 0 {
                        books.clone()
                    } else {
                        other.clone()
                    },
                )
            })
            .collect();
        patterns.push((1000, vec![Selector::parse("*")].into()));
        let mut a = Accepted::new(ev, vec![5000], patterns);
        a.match_some(100);
        assert!(
            a.patterns.len() < 1001 && a.patterns.len() > 850,
            "{}",
            a.patterns.len()
        );
        let (_, targets) = a.select();
        assert_eq!(targets.len(), 500 + 1 + 1);
        assert!(targets.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
        assert!(targets.contains(&1000) && targets.contains(&5000) && targets.contains(&0));
        assert!(!targets.contains(&1));
    }
}
