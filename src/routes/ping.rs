//! The `ping` route: MDN's example — `event: ping` every `interval`, plain messages at
//! random intervals between.

use std::sync::Arc;
use std::time::Duration;

use super::{not_allowed, read_only, ready, Answer, Build, BuildError, Cx, Route};
use crate::config::RouteConfig;
use crate::request::Request;
use crate::source::PingSource;

/// MDN's ping example, every `interval`.
struct Ping {
    path: String,
    interval: Duration,
}

/// The route of a `type = "ping"` table.
pub(super) fn build(_: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
    Ok(Arc::new(Ping {
        path: r.path.get_ref().clone(),
        interval: r.interval,
    }))
}

impl Route for Ping {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        if !read_only(req) {
            return ready(not_allowed(&self.path, req, "GET, HEAD"));
        }
        let source = Box::new(PingSource::new(self.interval));
        ready(cx.streams.stream(cx.config(), &self.path, req, source))
    }
}
