//! What each bench subscriber saw: the sequence numbers it received (a bitmap, so duplicates
//! and order are counted exactly), the fields the bench reads out of event data, and the run's
//! delivery figures summed over subscribers.

use std::time::{Duration, Instant};

/// What one subscriber saw.
#[derive(Default)]
pub(super) struct Seen {
    bits: Vec<u64>,
    pub(super) received: u64,
    pub(super) duplicated: u64,
    pub(super) out_of_order: u64,
    last_seq: u64,
    pub(super) first_seq: Option<u64>,
}

impl Seen {
    pub(super) fn add(&mut self, seq: u64) {
        self.received += 1;
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicated += 1;
            return;
        }
        self.bits[w] |= 1 << b;
        if seq < self.last_seq {
            self.out_of_order += 1;
        }
        self.last_seq = self.last_seq.max(seq);
        self.first_seq.get_or_insert(seq);
    }
    /// Every sequence number received, in order.
    pub(super) fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64u64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
    pub(super) fn unique_in(&self, from: u64, to: u64) -> u64 {
        (from..=to)
            .filter(|&s| {
                self.bits
                    .get((s / 64) as usize)
                    .is_some_and(|w| w & (1 << (s % 64)) != 0)
            })
            .count() as u64
    }
}

/// Extracts `"t":<µs>` and `"seq":<n>` from event data (any JSON-ish text).
pub(super) fn field(data: &str, name: &str) -> Option<u64> {
    let at = data.find(name)? + name.len();
    let rest = data[at..].trim_start_matches([':', ' ', '"']).as_bytes();
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    // The digits only (ASCII, so a str); parse() refuses none and overflow.
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// What one subscriber task hands back at the end of the run.
pub(crate) struct Outcome {
    pub(super) seen: Seen,
    /// Connected before the first publish (so it should see every event).
    pub(super) before_publishing: bool,
    /// When (ms after the run began) it came back after the server ended its stream.
    pub(super) comebacks_ms: Vec<u64>,
    /// When a stage ended it (it is not expected to see what came after).
    pub(super) left_at: Option<Instant>,
    /// Its index: with several topics, it subscribed to topic `idx % topics`.
    pub(super) idx: usize,
}

/// Delivery figures summed over the subscribers.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) expected: u64,
    pub(super) lost: u64,
    pub(super) duplicated: u64,
    pub(super) out_of_order: u64,
    /// Events of another topic than the subscriber's (several `--publish-url`).
    pub(super) misrouted: u64,
    pub(super) comebacks: Vec<u64>,
}

impl Tally {
    /// Adds one subscriber: it should have seen every acknowledged event from the first one it
    /// got (or from the start, when it connected before publishing), up to `drain` before a
    /// stage ended it — of its own topic's events, when there are several.
    pub(super) fn add(
        &mut self,
        o: Outcome,
        acked: &[u64],
        sent_at: &[Instant],
        drain: Duration,
        topics: usize,
    ) {
        let topics = topics.max(1) as u64;
        let mine = |q: u64| q > 0 && (q - 1) % topics == o.idx as u64 % topics;
        if topics > 1 {
            self.misrouted += o.seen.seqs().filter(|&q| !mine(q)).count() as u64;
        }
        self.comebacks.extend(o.comebacks_ms);
        self.duplicated += o.seen.duplicated;
        self.out_of_order += o.seen.out_of_order;
        // A late joiner is expected to see its topic's events from the first of them it got.
        let from = if o.before_publishing {
            1
        } else if topics > 1 {
            o.seen.seqs().find(|&q| mine(q)).unwrap_or(u64::MAX)
        } else {
            o.seen.first_seq.unwrap_or(u64::MAX)
        };
        let until = |q: u64| match (o.left_at, sent_at.get(q as usize - 1)) {
            (Some(left), Some(&sent)) => sent + drain <= left,
            _ => true,
        };
        for &q in acked.iter().filter(|&&q| q >= from && mine(q) && until(q)) {
            self.expected += 1;
            if o.seen.unique_in(q, q) == 0 {
                self.lost += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert_eq!(field("{\"t\":123,\"seq\":7}", "\"t\""), Some(123));
        assert_eq!(field("{\"t\": 9, \"seq\": 7}", "\"seq\""), Some(7));
        assert_eq!(field("no numbers", "\"t\""), None);
    }

    #[test]
    fn with_topics_a_subscriber_expects_its_own_and_other_topics_events_are_counted() {
        // Two topics: odd events go to topic 0 (subscriber 2's), even ones to topic 1.
        let mut seen = Seen::default();
        for q in [3, 4, 7] {
            seen.add(q);
        }
        let o = Outcome {
            seen,
            before_publishing: false,
            comebacks_ms: Vec::new(),
            left_at: None,
            idx: 2,
        };
        let acked: Vec<u64> = (1..=8).collect();
        let mut t = Tally::default();
        t.add(o, &acked, &[], Duration::ZERO, 2);
        // From its first own event (3): 3, 5, 7 expected, 5 lost; 4 was another topic's.
        assert_eq!((t.expected, t.lost, t.misrouted), (3, 1, 1));
    }

    #[test]
    fn seen_counts_duplicates_and_order() {
        let mut s = Seen::default();
        for q in [1, 2, 4, 3, 4, 70] {
            s.add(q);
        }
        assert_eq!((s.received, s.duplicated, s.out_of_order), (6, 1, 1));
        assert_eq!(s.unique_in(1, 5), 4);
        assert_eq!(s.unique_in(70, 70), 1);
    }
}
