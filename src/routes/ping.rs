//! The `ping` route: MDN's example — `event: ping` every `interval`, plain messages at random
//! intervals between.

use std::sync::Arc;
use std::time::Duration;

use super::clock::Ticks;
use super::{not_allowed, read_only, ready, settings, Answer, Build, BuildError, Cx, Kind, Route};
use crate::config::{field_names, ConfigError, RouteConfig, RouteKind, RouteSettings, RouteTable};
use crate::request::Request;
use crate::source::PingSource;

/// `type = "ping"`.
pub(super) struct PingKind;

impl RouteKind for PingKind {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn keys(&self) -> Vec<&'static str> {
        field_names::<Ticks>().to_vec()
    }

    fn read(&self, t: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(Ticks::read(t, "Ping")?))
    }
}

impl Kind for PingKind {
    fn build(&self, _: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        Ok(Arc::new(Ping {
            path: r.path.get_ref().clone(),
            interval: settings::<Ticks>(r)?.interval,
        }))
    }
}

/// MDN's ping example, every `interval`.
struct Ping {
    path: String,
    interval: Duration,
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
