//! Subscribing to a hub: where a subscription starts ([`Resume`]: live, after an id, every
//! retained event, after a publisher's id), the replay and the registration taken under one
//! lock (no gap, no duplicate), and the `fastsse-reset` event for ids that cannot be resumed.

use std::collections::VecDeque;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;

use super::subscriber::Subscriber;
use super::topic_source::Replay;
use super::{topic_source, Hub, HubState, Interest, StoredEvent, TopicSource, RESET_EVENT};
use crate::sse::{EncodedEvent, Event};

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No `Last-Event-ID`: live events only.
    Live,
    /// Resume after this id.
    After(u64),
    /// A `Last-Event-ID` that is not an id this server issued.
    Invalid,
    /// Every retained event (Mercure's `earliest`).
    Earliest,
    /// After the event with this id as the publisher gave it (or as the hub generated it).
    Named(String),
}

impl Resume {
    /// Interprets a `Last-Event-ID` value (untrusted).
    pub fn parse(last_event_id: Option<&str>) -> Resume {
        match last_event_id {
            None | Some("") => Resume::Live,
            Some(s) if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map(Resume::After).unwrap_or(Resume::Invalid)
            }
            Some(_) => Resume::Invalid,
        }
    }
}

impl Hub {
    /// Subscribes with `interest`: replays what the client missed after `resume`, then live
    /// events, with no gap and no duplicate (both are taken under one lock).
    pub fn subscribe(self: &Arc<Self>, interest: Interest, resume: Resume) -> TopicSource {
        self.start_delivery_task();
        let (tx, rx) = super::queue::queue(self.settings.subscriber_queue);
        let mut st = self.lock();
        st.history.trim(&self.settings.history);
        let last_id = st.last_id;
        let newest = Self::newest_id(&st);
        // The replay is taken whole under the lock and filtered as it is sent, outside it
        // (topic_source::Replay): selectors cost nothing here.
        let wanted = |_: &StoredEvent| true;
        let asked = match &resume {
            Resume::Named(name) => Some(name.clone()),
            _ => None,
        };
        // A private event this subscriber may not see is, to it, an id that does not exist:
        // its answer must not tell whether one does.
        let visible = |e: &StoredEvent| !e.private || interest.may_see_private(&e.topics);
        let resume = match resume {
            Resume::Named(name) => match st.history.find_public(&name).filter(|e| visible(e)) {
                Some(ev) => Resume::After(ev.id),
                found => match Resume::parse(Some(&name)) {
                    Resume::After(seq) if found.is_none() => Resume::After(seq),
                    _ => {
                        let why = if st.history.was_evicted(&name) {
                            "expired"
                        } else {
                            "unknown"
                        };
                        let reset = self.reset_event(why, last_id, &newest);
                        return self.attach(
                            st,
                            interest,
                            (tx, rx),
                            (Some(reset), VecDeque::new()),
                            newest,
                            None,
                        );
                    }
                },
            },
            other => other,
        };
        // Shared backend: an id a little above ours may be another instance's newest.
        if let Resume::After(id) = resume {
            if id > last_id && self.shared {
                let from = asked.unwrap_or_else(|| id.to_string());
                let wait = tokio::time::Instant::now() + topic_source::UNVERIFIED_GRACE;
                return self.attach(
                    st,
                    interest,
                    (tx, rx),
                    (None, VecDeque::new()),
                    from,
                    Some((id, wait)),
                );
            }
        }
        let live = resume == Resume::Live;
        let (preamble, replay, from) = match resume {
            Resume::Live => (None, VecDeque::new(), newest.clone()),
            Resume::Earliest => (None, st.history.all(wanted), "earliest".to_string()),
            Resume::After(id) => match st.history.after(id, last_id, wanted) {
                Ok(replay) => (None, replay, asked.unwrap_or_else(|| id.to_string())),
                Err(why) => (
                    Some(self.reset_event(why.reason(), last_id, &newest)),
                    VecDeque::new(),
                    newest.clone(),
                ),
            },
            Resume::Invalid | Resume::Named(_) => (
                Some(self.reset_event("invalid", last_id, &newest)),
                VecDeque::new(),
                newest.clone(),
            ),
        };
        let mut source = self.attach(st, interest, (tx, rx), (preamble, replay), from, None);
        source.live = live;
        source
    }

    /// A stream that resumed after `id`, which never showed up: it gets the `unknown` reset and
    /// live events from now on.
    pub(super) fn give_up_on(&self, sid: u64, id: u64) -> Bytes {
        let mut st = self.lock();
        if let Some(sub) = st.subscribers.get_mut(&sid) {
            sub.min_id = 0;
        }
        log::info!("topics {}: resume id {id} never appeared; reset", self.name);
        let newest = Self::newest_id(&st);
        self.reset_event("unknown", st.last_id, &newest)
    }

    /// Registers a subscriber (under the lock the replay was taken with): its queue, what it
    /// gets first (reset, replay), and, when it resumed after an id not seen yet, that id and
    /// how long to wait for it.
    fn attach(
        self: &Arc<Self>,
        mut st: MutexGuard<'_, HubState>,
        interest: Interest,
        (tx, rx): (super::queue::QueueTx, super::queue::QueueRx),
        (preamble, replay): (Option<Bytes>, VecDeque<Arc<StoredEvent>>),
        resumed_after: String,
        unverified: Option<(u64, tokio::time::Instant)>,
    ) -> TopicSource {
        let sid = st.next_subscriber;
        st.next_subscriber += 1;
        for t in &interest.exact {
            st.by_topic.entry(t.clone()).or_default().push(sid);
        }
        if !interest.patterns.is_empty() {
            st.by_pattern.push(super::matching::Watcher {
                sid,
                patterns: interest.patterns.clone(),
                authorized: interest.authorized.clone(),
            });
        }
        let replay = (!replay.is_empty()).then(|| Box::new(Replay::new(replay, interest.clone())));
        let mut sub = Subscriber::new(interest, tx);
        sub.min_id = unverified.map_or(0, |(id, _)| id);
        st.subscribers.insert(sid, sub);
        drop(st);
        TopicSource {
            hub: self.clone(),
            sid,
            preamble,
            replay,
            rx,
            finished: false,
            direct: false,
            unverified: unverified.map(Box::new),
            resumed_after,
            live: false,
            busy: false,
        }
    }

    /// The id (as sent on the wire) of the newest event, `earliest` when there is none. A
    /// private event's own id is not told (a reset or a `Last-Event-ID` header reaches clients
    /// that may not read it): its sequence number is.
    pub(super) fn newest_id(st: &HubState) -> String {
        match st.history.newest() {
            Some(ev) if ev.id == st.last_id && !ev.private => {
                ev.public_id.clone().unwrap_or_else(|| ev.id.to_string())
            }
            _ if st.last_id == 0 => "earliest".to_string(),
            _ => st.last_id.to_string(),
        }
    }

    fn reset_event(&self, reason: &str, last_id: u64, newest: &str) -> Bytes {
        let data = serde_json::json!({ "reason": reason, "last_id": last_id }).to_string();
        let id = if newest == "earliest" {
            last_id.to_string()
        } else {
            newest.to_string()
        };
        Event::new()
            .event(RESET_EVENT)
            .id(id)
            .data(data)
            .encode()
            .map(EncodedEvent::into_bytes)
            .unwrap_or_default()
    }
}
