//! A route with hooks: the route answers as it always does; a stream it opens is held until
//! the route's connect hook is journaled (and, with `hook_connect_wait`, answered), then
//! carries the watch that sends its leave. A refusal from the application drops the stream
//! before a byte of it is written.

use std::sync::Arc;

use super::{Answer, Cx, Route};
use crate::hooks::Hooks;
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

/// `inner` with `hooks` on its streams.
pub(super) struct Hooked {
    pub(super) inner: Arc<dyn Route>,
    pub(super) hooks: Arc<Hooks>,
}

impl Route for Hooked {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        let answer = self.inner.handle(cx, req);
        Box::pin(async move {
            let mut stream = match answer.await {
                Response::Stream(s) => s,
                other => return other,
            };
            let who = self.inner.who(req);
            match self
                .hooks
                .admit(req, who.topics, who.user, who.expires)
                .await
            {
                Ok(watch) => {
                    stream.watch = Some(watch);
                    Response::Stream(stream)
                }
                Err(refusal) => refusal.into(),
            }
        })
    }

    fn hub(&self) -> Option<&Arc<Hub>> {
        self.inner.hub()
    }

    fn start(&self) {
        self.inner.start();
        self.hooks.start();
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
        Some(&self.hooks)
    }

    fn who(&self, req: &Request) -> Who {
        self.inner.who(req)
    }
}
