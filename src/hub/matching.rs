//! Which subscribers an event goes to beyond its exact topics' (Mercure selectors, URI
//! templates), and which may read a private one (the grants of their tokens): decided outside
//! the hub's lock, once per distinct selector per event, in slices of bounded work between
//! which the delivery task yields (the hub's `deliver_in_slices`).

use std::collections::HashMap;
use std::sync::Arc;

use super::StoredEvent;
use crate::auth::selector::Selector;

/// A subscriber with selectors that are not exact topics, as the hub lists it.
#[derive(Clone)]
pub(super) struct Watcher {
    /// The subscriber.
    pub(super) sid: u64,
    /// What it asked for.
    pub(super) patterns: Arc<[Selector]>,
    /// What it may read of private events.
    pub(super) authorized: Arc<[Selector]>,
}

/// An event taken into the hub, with the subscribers it may go to: `targets` so far,
/// `patterns` still to be matched and, for a private event, `guarded` ones whose grants are
/// still to be checked. Each distinct selector is matched once per event (a thousand streams
/// with the same template, or the same grant, cost one match), in slices between which the
/// delivery task yields; each match is linear in the topic's length.
pub(super) struct Accepted {
    ev: Arc<StoredEvent>,
    targets: Vec<u64>,
    patterns: Vec<Watcher>,
    guarded: Vec<(u64, Arc<[Selector]>)>,
    /// Outcome per selector (by a keyed hash of its text: 8 bytes each), for this event.
    seen: HashMap<u64, bool>,
    hasher: std::collections::hash_map::RandomState,
}

/// Work between two yields of the delivery task: a subscriber looked at costs 1, a selector
/// matched (linear in the topic) 16.
pub(super) const MATCH_WORK_PER_SLICE: usize = 4096;

impl Accepted {
    /// `ev`, going to `targets`, to those of `guarded` whose grants allow it (a private event's
    /// exact subscribers) and to those of `patterns` whose selectors match (and, for a private
    /// event, whose grants allow it).
    pub(super) fn new(
        ev: Arc<StoredEvent>,
        targets: Vec<u64>,
        guarded: Vec<(u64, Arc<[Selector]>)>,
        patterns: Vec<Watcher>,
    ) -> Accepted {
        Accepted {
            ev,
            targets,
            patterns,
            guarded,
            seen: HashMap::new(),
            hasher: Default::default(),
        }
    }

    /// Whether every subscriber has been decided.
    pub(super) fn matched_all(&self) -> bool {
        self.patterns.is_empty() && self.guarded.is_empty()
    }

    /// Whether one of `selectors` matches one of the event's topics, each distinct selector
    /// matched once per event; `budget` pays for the matches made.
    fn any_match(&mut self, selectors: &[Selector], budget: &mut usize) -> bool {
        use std::hash::BuildHasher;
        for s in selectors {
            // By kind, text and base: a URI template and a URL Pattern may be written alike,
            // and one pattern text compiled against two bases (across a reload) differs.
            let key = self.hasher.hash_one(s.identity());
            let ev = &self.ev;
            let hit = *self.seen.entry(key).or_insert_with(|| {
                *budget = budget.saturating_sub(16);
                ev.topics.iter().any(|t| s.matches(t))
            });
            if hit {
                return true;
            }
        }
        false
    }

    /// Decides subscribers (pattern ones, then guarded ones, from the end of each list) until
    /// `budget` is spent (see [`MATCH_WORK_PER_SLICE`]).
    pub(super) fn match_some(&mut self, mut budget: usize) {
        while budget > 0 {
            if let Some(w) = self.patterns.pop() {
                budget = budget.saturating_sub(1);
                if self.any_match(&w.patterns, &mut budget) {
                    if self.ev.private {
                        self.guarded.push((w.sid, w.authorized));
                    } else {
                        self.targets.push(w.sid);
                    }
                }
                continue;
            }
            let Some((sid, grants)) = self.guarded.pop() else {
                return;
            };
            budget = budget.saturating_sub(1);
            if self.any_match(&grants, &mut budget) {
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
        let none: Arc<[Selector]> = Vec::new().into();
        let watcher = |sid: u64, patterns: &Arc<[Selector]>| Watcher {
            sid,
            patterns: patterns.clone(),
            authorized: none.clone(),
        };
        let mut patterns: Vec<Watcher> = (0..1000)
            .map(|sid| watcher(sid, if sid % 2 == 0 { &books } else { &other }))
            .collect();
        patterns.push(watcher(1000, &vec![Selector::parse("*")].into()));
        let mut a = Accepted::new(ev, vec![5000], Vec::new(), patterns);
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

    #[test]
    fn a_private_event_reaches_only_those_whose_grants_allow_it_each_grant_matched_once() {
        let ev = Arc::new(StoredEvent {
            id: 1,
            unix_ms: 0,
            topics: vec!["https://ex.com/books/1".into()],
            private: true,
            public_id: None,
            wire: Bytes::new(),
        });
        let sel = |s: &str| -> Arc<[Selector]> { vec![Selector::parse(s)].into() };
        let (books, other, none) = (
            sel("https://ex.com/books/{id}"),
            sel("https://ex.com/x"),
            Arc::from(Vec::new()),
        );
        // Exact subscribers: 1 is granted, 2 is not, 3 has no grants.
        let guarded = vec![(1, books.clone()), (2, other.clone()), (3, none)];
        // Pattern subscribers that match: 10 is granted, 11 is not; 12 does not match.
        let w = |sid, patterns: &Arc<[Selector]>, authorized: &Arc<[Selector]>| Watcher {
            sid,
            patterns: patterns.clone(),
            authorized: authorized.clone(),
        };
        let patterns = vec![
            w(10, &sel("*"), &books),
            w(11, &books, &other),
            w(12, &other, &books),
        ];
        let mut a = Accepted::new(ev, Vec::new(), guarded, patterns);
        a.match_some(usize::MAX);
        assert_eq!(
            a.seen.len(),
            3,
            "*, the books template and x: each matched once"
        );
        let (_, targets) = a.select();
        assert_eq!(targets, [1, 10]);
    }
}
