//! What one subscriber wants from a hub, and the rule for private events: the topics it asked
//! for (exact names, looked up through the hub's index, and selectors — `*` and URI templates —
//! checked per event), and the topics it is authorized for. A public event goes to a
//! subscriber that asked for one of its topics; a private one only if, besides, one of its
//! topics is among those the subscriber's token allows (Mercure's `mercure.subscribe`).

use std::collections::HashMap;

use super::StoredEvent;
use crate::auth::selector::{any_matches, Selector};

/// One subscriber's topics and authorization.
#[derive(Clone, Debug, Default)]
pub struct Interest {
    /// Exact topics (indexed by the hub).
    pub exact: Vec<String>,
    /// Selectors that are not exact topics (checked for every event, outside the hub's lock:
    /// shared with the hub's list of pattern subscribers).
    pub patterns: std::sync::Arc<[Selector]>,
    /// Topics whose private events it may receive; empty: public events only. Checked per
    /// private event outside the hub's lock (shared with the hub's snapshot, as `patterns`).
    pub authorized: std::sync::Arc<[Selector]>,
    /// Who it is, for hubs that list their subscriptions (Mercure's active subscriptions).
    pub presence: Option<std::sync::Arc<Presence>>,
}

/// A subscription as a hub that lists them shows it (and as workers of one box tell each
/// other, [`crate::siblings`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Presence {
    /// The subscriber's id (an IRI such as `urn:uuid:…`).
    pub subscriber: String,
    /// The selectors it subscribed with.
    pub topics: Vec<String>,
    /// Mercure 1.0: the type of each (`exact`, `urlpattern`); empty for a 0.x subscription.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_types: Vec<String>,
    /// Its token's `mercure.payload` (JSON null when none).
    pub payload: serde_json::Value,
}

impl Interest {
    /// Exact topics only, public events only (a `topics` route).
    pub fn topics(mut topics: Vec<String>) -> Interest {
        // `?topic=a&topic=a` is one subscription to `a`, not two deliveries of each event.
        topics.sort();
        topics.dedup();
        Interest {
            exact: topics,
            ..Interest::default()
        }
    }

    /// From Mercure selectors, with the selectors of a token's subscribe claim.
    pub fn selectors(selectors: &[String], authorized: Vec<Selector>) -> Interest {
        Interest::matchers(
            selectors.iter().map(|s| Selector::parse(s)).collect(),
            authorized,
        )
    }

    /// From parsed selectors (Mercure 1.0's matchers), with those of a token's grants.
    pub fn matchers(selectors: Vec<Selector>, authorized: Vec<Selector>) -> Interest {
        let mut i = Interest {
            authorized: authorized.into(),
            ..Interest::default()
        };
        let mut patterns = Vec::new();
        for s in selectors {
            match s {
                Selector::Exact(t) => i.exact.push(t),
                other if !patterns.contains(&other) => patterns.push(other),
                _ => {}
            }
        }
        i.exact.sort();
        i.exact.dedup();
        i.patterns = patterns.into();
        i
    }

    /// Whether one of `topics` is among those asked for by a selector (exact ones are the
    /// index's job, but this checks them too).
    pub fn asked_for(&self, topics: &[String]) -> bool {
        topics.iter().any(|t| self.exact.iter().any(|e| e == t))
            || any_matches(&self.patterns, topics)
    }

    /// Whether a private event with `topics` may reach this subscriber.
    pub fn may_see_private(&self, topics: &[String]) -> bool {
        any_matches(&self.authorized, topics)
    }

    /// The whole rule: asked for, and public or authorized.
    pub fn wants(&self, ev: &StoredEvent) -> bool {
        self.asked_for(&ev.topics) && (!ev.private || self.may_see_private(&ev.topics))
    }

    /// [`Interest::wants`] for many events (a replay): what the selectors say of each topic
    /// is kept in `memo` (asked for, authorized), so a history of thousands of events costs
    /// one match per distinct topic, not one per event.
    pub fn wants_memo(&self, ev: &StoredEvent, memo: &mut HashMap<String, (bool, bool)>) -> bool {
        let mut asked = false;
        let mut authorized = false;
        for t in &ev.topics {
            let (a, p) = *memo.entry(t.clone()).or_insert_with(|| {
                let one = std::slice::from_ref(t);
                (self.asked_for(one), self.may_see_private(one))
            });
            asked |= a;
            authorized |= p;
        }
        asked && (!ev.private || authorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(topics: &[&str], private: bool) -> StoredEvent {
        StoredEvent {
            id: 1,
            unix_ms: 0,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            private,
            public_id: None,
            wire: Bytes::new(),
        }
    }

    #[test]
    fn public_private_and_alternate_topics() {
        let alice = Interest::selectors(
            &["https://ex.com/users/alice/{x}".into(), "news".into()],
            vec![Selector::parse("https://ex.com/users/alice/{x}")],
        );
        let anonymous = Interest::selectors(&["*".into()], vec![]);
        let mine = ev(&["https://ex.com/users/alice/orders"], true);
        let bobs = ev(&["https://ex.com/users/bob/orders"], true);
        let public = ev(&["news"], false);
        // A private event whose alternate topic alice may read.
        let alternate = ev(
            &[
                "https://ex.com/orders/7",
                "https://ex.com/users/alice/orders",
            ],
            true,
        );
        assert!(alice.wants(&mine) && alice.wants(&public) && alice.wants(&alternate));
        let mut memo = HashMap::new();
        for e in [&mine, &bobs, &public, &alternate, &mine, &bobs] {
            assert_eq!(alice.wants_memo(e, &mut memo), alice.wants(e));
            assert_eq!(
                anonymous.wants_memo(e, &mut HashMap::new()),
                anonymous.wants(e)
            );
        }
        assert_eq!(memo.len(), 4, "one entry per distinct topic");
        assert!(!alice.wants(&bobs));
        assert!(anonymous.wants(&public));
        assert!(!anonymous.wants(&mine) && !anonymous.wants(&bobs) && !anonymous.wants(&alternate));
        let topics = Interest::topics(vec!["b".into(), "a".into(), "b".into()]);
        assert_eq!(topics.exact, ["a", "b"]);
        assert!(topics.wants(&ev(&["a"], false)) && !topics.wants(&ev(&["a"], true)));
    }
}
