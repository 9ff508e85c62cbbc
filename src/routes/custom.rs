//! Routes added in code ([`crate::app::App::add_source`]): a [`Source`] factory per request.

use std::sync::Arc;

use super::{not_allowed, read_only, ready, Answer, Cx, Route};
use crate::request::Request;
use crate::response::Response;
use crate::source::Source;

/// Builds a source for one request to a custom route; an `Err` response is sent instead.
pub type SourceFactory = Arc<dyn Fn(&Request) -> Result<Box<dyn Source>, Response> + Send + Sync>;

/// A route serving the sources its factory makes.
pub(super) struct Custom {
    pub(super) path: String,
    pub(super) factory: SourceFactory,
}

impl Route for Custom {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        if !read_only(req) {
            return ready(not_allowed(&self.path, req, "GET, HEAD"));
        }
        ready(match (self.factory)(req) {
            Ok(source) => cx.streams.stream(cx.config(), &self.path, req, source),
            Err(resp) => resp,
        })
    }

    fn is_custom(&self) -> bool {
        true
    }
}
