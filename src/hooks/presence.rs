//! Presence as data: who is on each topic of a route now — a count per topic and, where users
//! are known (a token's `sub`, the web server's user), their names. A stream takes a [`Seat`]
//! when it opens and gives it back when it ends (however it ends: the seat is a drop guard).
//! Memory follows the open streams (an entry per topic someone is on); what is shown is
//! bounded ([`SHOWN_TOPICS`], [`SHOWN_USERS`]). With `presence_topic`, changes are published
//! to that topic as `presence` events, at most once a second per topic; without it no change
//! is kept. A reload may set, change or drop the topic.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most topics `/status` lists per route (the busiest); `/metrics` as many.
pub const SHOWN_TOPICS: usize = 100;
/// Most users listed per topic.
pub const SHOWN_USERS: usize = 100;
/// Most presence events published per second per route.
const EVENTS_PER_TICK: usize = 100;

#[derive(Default)]
struct Here {
    subscribers: u64,
    users: HashMap<String, u32>,
}

#[derive(Default)]
struct Board {
    topics: HashMap<String, Here>,
    changed: HashSet<String>,
}

/// Every route's board in this process, by path: a reload keeps the counts of open streams.
static BOARDS: std::sync::LazyLock<Mutex<HashMap<String, Arc<Presence>>>> =
    std::sync::LazyLock::new(Default::default);

/// The board of the route at `path`.
pub fn board(path: &str) -> Arc<Presence> {
    let mut all = BOARDS.lock().unwrap_or_else(|p| p.into_inner());
    all.entry(path.to_string())
        .or_insert_with(Presence::new)
        .clone()
}

/// One route's presence.
pub struct Presence {
    board: Mutex<Board>,
    /// The publishing task runs (it is started once, and follows `target`).
    publishing: AtomicBool,
    /// Where changes go (`presence_topic`), when they do.
    target: Mutex<Option<Target>>,
    /// Changes are kept (there is a target).
    tracking: AtomicBool,
}

/// Where a route's presence changes are published.
#[derive(Clone)]
pub struct Target {
    /// The route's hub.
    pub hub: Arc<crate::hub::Hub>,
    /// `presence_topic`.
    pub topic: String,
    /// `presence_users`: the events name the users.
    pub users: bool,
}

/// One topic's presence as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPresence {
    /// The topic.
    pub topic: String,
    /// Streams on it.
    pub subscribers: u64,
    /// Distinct users among them (at most [`SHOWN_USERS`], sorted).
    pub users: Vec<String>,
    /// Distinct users in all.
    pub user_count: usize,
}

impl Presence {
    /// An empty board.
    pub fn new() -> Arc<Presence> {
        Arc::new(Presence {
            board: Mutex::new(Board::default()),
            publishing: AtomicBool::new(false),
            target: Mutex::new(None),
            tracking: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn target(&self) -> Option<Target> {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether changes are kept (for `presence_topic`).
    fn tracking(&self) -> bool {
        self.tracking.load(Relaxed)
    }

    /// A stream on `topics` for `user` opened: its seat, given back when dropped.
    pub fn take_seat(self: &Arc<Self>, topics: Vec<String>, user: Option<String>) -> Seat {
        let tracking = self.tracking();
        let mut b = self.lock();
        for t in dedup(&topics) {
            let here = b.topics.entry(t.clone()).or_default();
            here.subscribers += 1;
            if let Some(u) = &user {
                *here.users.entry(u.clone()).or_default() += 1;
            }
            if tracking {
                b.changed.insert(t.clone());
            }
        }
        Seat {
            presence: self.clone(),
            topics,
            user,
        }
    }

    fn give_back(&self, topics: &[String], user: Option<&str>) {
        let tracking = self.tracking();
        let mut b = self.lock();
        for t in dedup(topics) {
            let Some(here) = b.topics.get_mut(t) else {
                continue;
            };
            here.subscribers = here.subscribers.saturating_sub(1);
            if let Some(u) = user {
                if let Some(n) = here.users.get_mut(u) {
                    *n -= 1;
                    if *n == 0 {
                        here.users.remove(u);
                    }
                }
            }
            if here.subscribers == 0 {
                b.topics.remove(t);
            }
            if tracking {
                b.changed.insert(t.clone());
            }
        }
    }

    /// Topics with someone on them.
    pub fn topic_count(&self) -> usize {
        self.lock().topics.len()
    }

    /// The busiest `limit` topics, busiest first (then by name).
    pub fn busiest(&self, limit: usize) -> Vec<TopicPresence> {
        let b = self.lock();
        let mut all: Vec<(&String, &Here)> = b.topics.iter().collect();
        all.sort_by(|a, b| b.1.subscribers.cmp(&a.1.subscribers).then(a.0.cmp(b.0)));
        all.into_iter()
            .take(limit)
            .map(|(t, h)| shown(t, Some(h)))
            .collect()
    }

    /// The topics changed since the last call (at most `limit`; the rest wait), as they are now.
    fn take_changed(&self, limit: usize) -> Vec<TopicPresence> {
        let mut b = self.lock();
        let mut picked: Vec<String> = b.changed.iter().take(limit).cloned().collect();
        picked.sort();
        for t in &picked {
            b.changed.remove(t);
        }
        picked.iter().map(|t| shown(t, b.topics.get(t))).collect()
    }

    /// Publishes changes to `target` (`None`: no more, and none kept) once a second; the
    /// task starts with the first target and follows the ones a reload sets.
    pub fn publish_to(self: &Arc<Self>, target: Option<Target>) {
        let on = target.is_some();
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
        self.tracking.store(on, Relaxed);
        if !on {
            self.lock().changed.clear();
            return;
        }
        if self.publishing.swap(true, Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.publishing.store(false, Relaxed);
            return;
        };
        let board = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(p) = board.upgrade() else { return };
                let Some(to) = p.target() else { continue };
                for t in p.take_changed(EVENTS_PER_TICK) {
                    let publication = crate::hub::journal::Publication {
                        topics: vec![to.topic.clone()],
                        event: Some("presence".into()),
                        retry_ms: None,
                        data: event_data(&t, to.users),
                        private: false,
                        public_id: None,
                    };
                    if let Err(e) = to.hub.publish(publication).await {
                        log::warn!("presence event for {} not stored: {e}", to.topic);
                    }
                }
            }
        });
    }
}

/// The `data:` of a presence event: the topic, its subscribers, and (when `users`) who.
pub fn event_data(t: &TopicPresence, users: bool) -> String {
    let mut v = serde_json::json!({"topic": t.topic, "subscribers": t.subscribers});
    if users {
        v["users"] = t.users.clone().into();
    }
    v.to_string()
}

fn shown(topic: &str, here: Option<&Here>) -> TopicPresence {
    let mut users: Vec<String> = here
        .map(|h| h.users.keys().cloned().collect())
        .unwrap_or_default();
    users.sort();
    let user_count = users.len();
    users.truncate(SHOWN_USERS);
    TopicPresence {
        topic: topic.to_string(),
        subscribers: here.map_or(0, |h| h.subscribers),
        users,
        user_count,
    }
}

fn dedup(topics: &[String]) -> Vec<&String> {
    let mut seen = HashSet::new();
    topics.iter().filter(|t| seen.insert(*t)).collect()
}

/// A stream's place on the board; dropping it gives it back.
pub struct Seat {
    presence: Arc<Presence>,
    topics: Vec<String>,
    user: Option<String>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.presence.give_back(&self.topics, self.user.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_count_streams_and_name_users_once() {
        let p = Presence::new();
        // Changes are kept only for a publisher (a hub is not needed to keep them).
        p.tracking.store(true, Relaxed);
        let s = |t: &[&str], u: Option<&str>| {
            p.take_seat(
                t.iter().map(|x| x.to_string()).collect(),
                u.map(str::to_string),
            )
        };
        let a = s(&["chat", "chat", "news"], Some("alice"));
        let a2 = s(&["chat"], Some("alice"));
        let b = s(&["chat"], Some("bob"));
        let anon = s(&["news"], None);
        let chat = &p.busiest(10)[0];
        assert_eq!((chat.topic.as_str(), chat.subscribers), ("chat", 3));
        assert_eq!(chat.users, vec!["alice", "bob"]);
        let changed = p.take_changed(10);
        assert_eq!(changed.len(), 2);
        drop((a2, b));
        let now = p.busiest(10);
        let chat = now.iter().find(|t| t.topic == "chat").unwrap();
        assert_eq!(
            (chat.subscribers, chat.users.clone()),
            (1, vec!["alice".to_string()])
        );
        assert_eq!(p.take_changed(10).len(), 1);
        drop((a, anon));
        // Nobody left: no entry kept, and the change is there to publish (0 subscribers).
        assert_eq!(p.topic_count(), 0);
        let gone = p.take_changed(10);
        assert!(gone.iter().all(|t| t.subscribers == 0), "{gone:?}");
        assert_eq!(
            event_data(&gone[0], false),
            format!("{{\"subscribers\":0,\"topic\":\"{}\"}}", gone[0].topic)
        );
    }

    #[test]
    fn without_a_topic_no_change_is_kept() {
        let p = Presence::new();
        let a = p.take_seat(vec!["chat".into()], None);
        drop(a);
        let _b = p.take_seat(vec!["news".into()], None);
        assert!(p.lock().changed.is_empty());
        assert_eq!(p.topic_count(), 1);
    }
}
