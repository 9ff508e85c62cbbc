//! The `clock` route: the server time every `interval`, each event with an `id:`. Its settings
//! ([`Ticks`]) are the `ping` route's too.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{not_allowed, read_only, ready, settings, Answer, Build, BuildError, Cx, Kind, Route};
use crate::config::de::de_positive_duration;
use crate::config::{field_names, ConfigError, RouteConfig, RouteKind, RouteSettings, RouteTable};
use crate::request::Request;
use crate::source::ClockSource;

/// The settings of a route that ticks (`clock`, `ping`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub(super) struct Ticks {
    /// How often it ticks.
    #[serde(deserialize_with = "de_positive_duration")]
    pub(super) interval: Duration,
    /// The kind's name, for `check-config`.
    #[serde(skip)]
    name: &'static str,
}

impl Default for Ticks {
    fn default() -> Self {
        Ticks {
            interval: Duration::from_secs(1),
            name: "",
        }
    }
}

impl Ticks {
    /// The ticks of the table `t` of kind `name`.
    pub(super) fn read(t: &RouteTable, name: &'static str) -> Result<Ticks, ConfigError> {
        Ok(Ticks { name, ..t.read()? })
    }
}

impl RouteSettings for Ticks {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        format!("{} every {:?}", self.name, self.interval)
    }
}

/// `type = "clock"`.
pub(super) struct ClockKind;

impl RouteKind for ClockKind {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn keys(&self) -> Vec<&'static str> {
        field_names::<Ticks>().to_vec()
    }

    fn read(&self, t: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(Ticks::read(t, "Clock")?))
    }
}

impl Kind for ClockKind {
    fn build(&self, _: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        Ok(Arc::new(Clock {
            path: r.path.get_ref().clone(),
            interval: settings::<Ticks>(r)?.interval,
        }))
    }
}

/// A clock ticking every `interval`.
struct Clock {
    path: String,
    interval: Duration,
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
