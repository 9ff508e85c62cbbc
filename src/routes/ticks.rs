//! The routes that tick: `clock` (the server time every `interval`, each event with an `id:`)
//! and `ping` (MDN's example: `event: ping` every `interval`, plain messages at random
//! intervals between). One settings struct, one route; the kinds differ by their source.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{not_allowed, read_only, ready, settings, Answer, Build, BuildError, Cx, Kind, Route};
use crate::config::de::de_positive_duration;
use crate::config::{field_names, ConfigError, RouteConfig, RouteKind, RouteSettings, RouteTable};
use crate::request::Request;
use crate::source::{ClockSource, PingSource, Source};

/// The settings of a route that ticks.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct Ticks {
    /// How often it ticks.
    #[serde(deserialize_with = "de_positive_duration")]
    interval: Duration,
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

impl RouteSettings for Ticks {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        format!("{} every {:?}", self.name, self.interval)
    }
}

/// A kind of route that ticks: its name and the source each stream gets.
pub(super) struct TickKind {
    name: &'static str,
    /// What `check-config` calls it.
    shown: &'static str,
    source: fn(Duration) -> Box<dyn Source>,
}

/// `type = "clock"`.
pub(super) const CLOCK: TickKind = TickKind {
    name: "clock",
    shown: "Clock",
    source: |every| Box::new(ClockSource::new(every)),
};

/// `type = "ping"`.
pub(super) const PING: TickKind = TickKind {
    name: "ping",
    shown: "Ping",
    source: |every| Box::new(PingSource::new(every)),
};

impl RouteKind for TickKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn keys(&self) -> Vec<&'static str> {
        field_names::<Ticks>().to_vec()
    }

    fn read(&self, t: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(Ticks {
            name: self.shown,
            ..t.read()?
        }))
    }
}

impl Kind for TickKind {
    fn build(&self, _: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        Ok(Arc::new(Ticking {
            path: r.path.get_ref().clone(),
            interval: settings::<Ticks>(r)?.interval,
            source: self.source,
        }))
    }
}

/// A route ticking every `interval`.
struct Ticking {
    path: String,
    interval: Duration,
    source: fn(Duration) -> Box<dyn Source>,
}

impl Route for Ticking {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        if !read_only(req) {
            return ready(not_allowed(&self.path, req, "GET, HEAD"));
        }
        let source = (self.source)(self.interval);
        ready(cx.streams.stream(cx.config(), &self.path, req, source))
    }
}
