//! The `clock` route: the server time every `interval`, each event with an `id:`.

use std::sync::Arc;
use std::time::Duration;

use super::{not_allowed, read_only, ready, Answer, Build, BuildError, Cx, Route};
use crate::config::RouteConfig;
use crate::request::Request;
use crate::source::ClockSource;

/// A clock ticking every `interval`.
struct Clock {
    path: String,
    interval: Duration,
}

/// The route of a `type = "clock"` table.
pub(super) fn build(_: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
    Ok(Arc::new(Clock {
        path: r.path.get_ref().clone(),
        interval: r.interval,
    }))
}

impl Route for Clock {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        if !read_only(req) {
            return ready(not_allowed(&self.path, req, "GET, HEAD"));
        }
        let source = Box::new(ClockSource::new(self.interval));
        ready(cx.streams.stream(cx.config(), &self.path, req, source))
    }
}
