//! One subscriber's stream out of a hub: the reset event (if any), the replay, then live
//! events (from its queue, or written straight to the socket by the fan-out); cut off with a
//! `retry:` hint when it falls behind. On a shared backend (Redis) a `Last-Event-ID` above the
//! newest id this instance has seen may have been issued by another instance that is a few
//! milliseconds ahead: the stream skips events up to it and calls it `unknown` only if no such
//! id shows up within [`UNVERIFIED_GRACE`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Hub, Interest, StoredEvent};
use crate::source::{DirectWriter, NextEvent, Source};
use crate::sse::EncodedEvent;

/// How long an id from another instance may take to reach this one.
pub const UNVERIFIED_GRACE: Duration = Duration::from_secs(2);

/// Events looked at between two yields while a replay is filtered.
const REPLAY_SLICE: usize = 64;

/// A replay, filtered as it is sent rather than under the hub's lock: the retained events after
/// the resume point, and the subscriber's interest, with what its selectors said of each topic
/// kept (one match per distinct topic, spread over the stream's own task).
pub(super) struct Replay {
    events: VecDeque<Arc<StoredEvent>>,
    interest: Interest,
    memo: HashMap<String, (bool, bool)>,
}

impl Replay {
    /// A replay of `events` (oldest first) for `interest`.
    pub(super) fn new(events: VecDeque<Arc<StoredEvent>>, interest: Interest) -> Replay {
        Replay {
            events,
            interest,
            memo: HashMap::new(),
        }
    }

    /// The next event the subscriber wants, looking at `budget` events at most: `None` when
    /// the budget ran out (more may follow) or the replay is over ([`Replay::is_done`]).
    fn next_wanted(&mut self, budget: usize) -> Option<Arc<StoredEvent>> {
        for _ in 0..budget {
            let ev = self.events.pop_front()?;
            if self.interest.wants_memo(&ev, &mut self.memo) {
                return Some(ev);
            }
        }
        None
    }

    fn is_done(&self) -> bool {
        self.events.is_empty()
    }
}

/// One subscriber's stream: reset event (if any), replay, then live events; cut off with a
/// `retry:` hint when it falls `subscriber_queue` events behind.
pub struct TopicSource {
    pub(super) hub: Arc<Hub>,
    pub(super) sid: u64,
    pub(super) preamble: Option<Bytes>,
    pub(super) replay: Option<Box<Replay>>,
    pub(super) rx: super::queue::QueueRx,
    pub(super) finished: bool,
    pub(super) direct: bool,
    /// A resume id above the newest this instance had seen, and when to stop waiting for it.
    /// Boxed: rare (a shared backend), and every open stream holds the field.
    pub(super) unverified: Option<Box<(u64, tokio::time::Instant)>>,
    /// The id this stream resumes after, as Mercure's `Last-Event-ID` response header says it:
    /// the event before the first one sent, `earliest`, or the newest when nothing is replayed.
    /// For the route's answer: emptied when the stream starts ([`Source::attach_direct`]).
    pub resumed_after: String,
    /// The subscription asked for live events only (no `Last-Event-ID`).
    pub(super) live: bool,
    /// An event came through the queue (its socket was full) since `park` last asked: the
    /// stream keeps its task until its next wake-up, so a stream that keeps up with a busy
    /// socket is not parked and resumed for every event.
    pub(super) busy: bool,
}

impl TopicSource {
    /// Opens a live-only stream with `id: <newest>` and no data: the browser's last event id is
    /// set (WHATWG: an id field takes effect at the blank line even when no event is fired),
    /// so when the stream ends before any event arrived — a CGI `hold`, a restart, the
    /// lifetime — its reconnect resumes from here and misses nothing published meanwhile.
    /// Before the first event, `0` (resume from the start of the history).
    pub fn marked(mut self) -> TopicSource {
        let fits = |id: &str| !id.contains(['\n', '\r', '\0']);
        if self.live && self.preamble.is_none() && fits(&self.resumed_after) {
            let id = match self.resumed_after.as_str() {
                "earliest" => "0",
                id => id,
            };
            self.preamble = Some(Bytes::from(format!("id: {id}\n\n")));
        }
        self
    }
}

impl Source for TopicSource {
    fn attach_direct(&mut self, writer: Arc<dyn DirectWriter>) {
        // The stream starts: the route has read where it resumed (its response headers), and
        // the preamble says it; no need to keep it for the stream's life.
        self.resumed_after = String::new();
        let mut st = self.hub.lock();
        if let Some(sub) = st.subscribers.get_mut(&self.sid) {
            sub.attach(writer);
            self.direct = true;
        }
    }

    fn backlog(&self) -> bool {
        self.preamble.is_some()
            || self.replay.is_some()
            || self.unverified.is_some()
            || !self.rx.is_empty()
    }

    fn try_next(&mut self) -> Option<EncodedEvent> {
        // The preamble, and a resume id still unverified, are `next`'s to handle.
        if self.preamble.is_some() || self.unverified.is_some() {
            return None;
        }
        if let Some(r) = &mut self.replay {
            if let Some(ev) = r.next_wanted(REPLAY_SLICE) {
                return Some(EncodedEvent::from_shared(ev.wire.clone()));
            }
            if !r.is_done() {
                return None;
            }
            self.replay = None;
        }
        // Taken from the queue: `next` tells the hub when the queue is empty again.
        self.rx
            .try_recv()
            .map(|ev| EncodedEvent::from_shared(ev.wire.clone()))
    }

    /// Parks once the preamble, the replay and a pending resume id are done and nothing
    /// waits in the queue: live events then go straight to the socket (the hub is told so,
    /// as `next` would tell it before waiting), and a queued one wakes the connection.
    fn park(&mut self) -> bool {
        if std::mem::take(&mut self.busy) {
            return false;
        }
        if !self.direct
            || self.finished
            || self.preamble.is_some()
            || self.replay.is_some()
            || self.unverified.is_some()
        {
            return false;
        }
        let mut st = self.hub.lock();
        match st.subscribers.get_mut(&self.sid) {
            Some(sub) if self.rx.is_empty() => {
                sub.drained(true);
                true
            }
            _ => false,
        }
    }

    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.rx.poll_ready(cx)
    }

    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            if let Some(p) = self.preamble.take() {
                return Some(EncodedEvent::from_shared(p));
            }
            while let Some(r) = &mut self.replay {
                if let Some(ev) = r.next_wanted(REPLAY_SLICE) {
                    return Some(EncodedEvent::from_shared(ev.wire.clone()));
                }
                if r.is_done() {
                    self.replay = None;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            if self.direct {
                // Everything handed out so far has been written. If nothing waits in the queue,
                // the hub may write live events straight to the socket (checked and set under
                // the hub lock, which delivery also holds, so no event can overtake another).
                let mut st = self.hub.lock();
                if let Some(sub) = st.subscribers.get_mut(&self.sid) {
                    sub.drained(self.rx.is_empty());
                }
            }
            let received = match self.unverified.as_deref().copied() {
                None => self.rx.recv().await,
                Some((id, deadline)) => tokio::select! {
                    ev = self.rx.recv() => {
                        // Events up to `id` are skipped by the fan-out: this one proves it.
                        self.unverified = None;
                        ev
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        self.unverified = None;
                        if self.hub.last_id() >= id {
                            return self.next().await;
                        }
                        return Some(EncodedEvent::from_shared(self.hub.give_up_on(self.sid, id)));
                    }
                },
            };
            match received {
                Some(ev) => {
                    self.busy = true;
                    Some(EncodedEvent::from_shared(ev.wire.clone()))
                }
                // The hub dropped this subscriber for falling behind: tell the browser to come
                // back (it resumes from history with Last-Event-ID), then end.
                None if !self.finished => {
                    self.finished = true;
                    Some(EncodedEvent::retry_hint(
                        self.hub.settings.retry.as_millis() as u64,
                    ))
                }
                None => None,
            }
        })
    }
}

impl Drop for TopicSource {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        Hub::remove(&mut st, self.sid);
    }
}
