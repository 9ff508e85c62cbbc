//! A route with hooks or presence: the route answers as it always does; a stream it opens is
//! held until the route's connect hook is journaled (and, with `hook_connect_wait`, answered),
//! then carries the watch that sends its leave and holds its seat in the route's presence. A
//! refusal from the application drops the stream before a byte of it is written.

use std::sync::Arc;

use super::{Answer, Cx, Route};
use crate::hooks::presence::Presence;
use crate::hooks::{Hooks, Watch};
use crate::hub::Hub;
use crate::request::Request;
use crate::response::Response;

/// What a stream's hooks say of its subscriber.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Who {
    /// The topics it asked for.
    pub topics: Vec<String>,
    /// The user (a token's `sub`, else the web server's `user_param`).
    pub user: Option<String>,
    /// When its token expires.
    pub expires: Option<std::time::SystemTime>,
}

/// A route's presence and what it publishes.
pub struct Board {
    /// Who is on which topic.
    pub presence: Arc<Presence>,
    /// `presence_topic`: changes are published there.
    pub topic: Option<String>,
    /// `presence_users`: users are named.
    pub users: bool,
}

/// `inner` with `hooks` and `board` on its streams.
pub(super) struct Hooked {
    pub(super) inner: Arc<dyn Route>,
    pub(super) hooks: Option<Arc<Hooks>>,
    pub(super) board: Option<Board>,
}

impl Route for Hooked {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        let answer = self.inner.handle(cx, req);
        Box::pin(async move {
            let mut stream = match answer.await {
                Response::Stream(s) => s,
                other => return other,
            };
            let who = self.inner.who(req).await;
            let mut watch = None;
            if let Some(hooks) = &self.hooks {
                let (topics, user) = (who.topics.clone(), who.user.clone());
                match hooks.admit(req, topics, user, who.expires).await {
                    Ok(w) => watch = Some(w),
                    Err(refusal) => return refusal.into(),
                }
            }
            if let Some(b) = &self.board {
                let user = who.user.filter(|_| b.users);
                let seat = b.presence.take_seat(who.topics, user);
                watch = Some(match watch {
                    Some(w) => w.with_seat(seat),
                    None => Watch::seated(seat),
                });
            }
            stream.watch = watch.map(Box::new);
            Response::Stream(stream)
        })
    }

    fn hub(&self) -> Option<&Arc<Hub>> {
        self.inner.hub()
    }

    fn start(&self) {
        self.inner.start();
        if let Some(h) = &self.hooks {
            h.start();
        }
    }

    fn applied(&self) {
        self.inner.applied();
        if let Some(h) = &self.hooks {
            h.apply();
            if let (true, Some(hub)) = (h.on_publish(), self.inner.hub()) {
                hub.set_publish_hook(Some(h.clone()));
            }
        }
        if let Some(b) = &self.board {
            let target = match (&b.topic, self.inner.hub()) {
                (Some(topic), Some(hub)) => Some(crate::hooks::presence::Target {
                    hub: hub.clone(),
                    topic: topic.clone(),
                    users: b.users,
                }),
                _ => None,
            };
            b.presence.publish_to(target);
        }
    }

    fn answers_below(&self, rest: &str) -> bool {
        self.inner.answers_below(rest)
    }

    fn figures(&self) -> Option<super::figures::RouteFigures> {
        self.inner.figures()
    }

    fn follow(&self) -> Option<crate::siblings::Follow> {
        self.inner.follow()
    }

    fn hooks(&self) -> Option<&Arc<Hooks>> {
        self.hooks.as_ref()
    }

    fn board(&self) -> Option<&Board> {
        self.board.as_ref()
    }

    fn who<'a>(&'a self, req: &'a Request) -> super::WhoAnswer<'a> {
        self.inner.who(req)
    }
}
