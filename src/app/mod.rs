//! The application: the routes in force, their reload, and the counters of connections and
//! input. It knows nothing of FastCGI or CGI: a transport hands it a [`Request`] and writes the
//! [`Response`] it returns; what each route kind answers is in [`crate::routes`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::hub::Presence;
use crate::request::Request;
use crate::response::{FullResponse, Response};
use crate::routes::{Cx, RouteSet};
use crate::siblings::Reply;
use crate::stats::{ConnectionGuard, InputCharge, Stats};
use crate::streams::Streams;

pub use crate::routes::SourceFactory;

/// The application shared by every connection: the routes in force and the counters.
pub struct App {
    current: std::sync::RwLock<Arc<RouteSet>>,
    streams: Arc<Streams>,
}

impl App {
    /// An application serving the routes in `config`. Opens the journal of every topics route
    /// (blocking file I/O: call it before serving); one that cannot be opened is an error.
    pub fn new(config: Config) -> Result<Self, String> {
        App::build(config, true, 0)
    }

    /// The application of one CGI request: like [`App::new`], but a topics route whose journal
    /// cannot be opened (a data directory the web server's user cannot write, on shared
    /// hosting) answers `503` with a reason while every other route works, and `[cgi] hold`
    /// bounds each stream. Journals load only their events after `load_after` (what the
    /// request can be answered with: after its `Last-Event-ID`; `u64::MAX` for none).
    pub fn for_cgi(config: Config, load_after: u64) -> Result<Self, String> {
        App::build(config, false, load_after)
    }

    fn build(config: Config, strict: bool, load_after: u64) -> Result<Self, String> {
        let cgi = !strict;
        let routes = crate::routes::build(&config, strict, &[], load_after)?;
        let access_log = match &config.server.access_log {
            Some(path) => match AccessLog::open(path.clone()) {
                Ok(log) => Some(log),
                Err(e) if !strict => {
                    log::error!("{e}; no access log");
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        Ok(App {
            current: std::sync::RwLock::new(Arc::new(RouteSet {
                config: Arc::new(config),
                routes,
            })),
            streams: Arc::new(Streams {
                stats: Arc::new(Stats::default()),
                access_log,
                started: Instant::now(),
                cgi,
                shared_timing: Default::default(),
            }),
        })
    }

    pub(crate) fn current(&self) -> Arc<RouteSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts what routes run without a request (call it on the runtime: shared programs with
    /// `start = "always"` start now, the others wait for a subscriber).
    pub fn start_commands(&self) {
        for r in &self.current().routes {
            r.route.applied();
            r.route.start();
        }
    }

    /// Applies a new configuration to new requests (SIGHUP): new and changed routes, limits,
    /// timings and tokens. Open streams keep streaming under the old one. Journaled routes whose
    /// storage is unchanged keep their hub (history, subscribers); a new one opens its journal
    /// (blocking I/O: call it off the runtime). On an error nothing changes. Listen addresses
    /// and `worker_threads` apply at the next start.
    pub fn reload(&self, config: Config) -> Result<usize, String> {
        let old = self.current();
        let mut routes = crate::routes::build(&config, true, &old.routes, 0)?;
        // Routes added in code (add_source) are not in the file: they stay.
        for r in &old.routes {
            if r.route.is_custom() && !routes.iter().any(|n| n.path == r.path) {
                routes.push(r.clone());
            }
        }
        if config.server.listen != old.config.server.listen
            || config.server.worker_threads != old.config.server.worker_threads
        {
            log::warn!("reload: [server] listen and worker_threads apply at the next start");
        }
        let n = routes.len();
        if let Some(log) = &self.streams.access_log {
            // After logrotate moved it; a changed path applies at the next start.
            log.reopen();
        }
        for r in &routes {
            r.route.applied();
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(RouteSet {
            config: Arc::new(config),
            routes,
        });
        Ok(n)
    }

    /// Adds (or replaces) a route served by a custom [`Source`].
    pub fn add_source(&mut self, path: &str, factory: SourceFactory) {
        let current = self.current.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut routes = current.routes.clone();
        routes.retain(|r| r.path != path);
        routes.push(crate::routes::custom(path, factory));
        *current = Arc::new(RouteSet {
            config: current.config.clone(),
            routes,
        });
    }

    /// The configuration in force (a reload replaces it for what comes next).
    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.streams.stats
    }

    /// The active subscriptions of the route at `path` held by this process.
    pub fn presences_on(&self, path: &str) -> Vec<Arc<Presence>> {
        self.current()
            .get(path)
            .and_then(|r| r.route.hub().map(|h| h.presences()))
            .unwrap_or_default()
    }

    /// Under `processes > 1`: whether this worker has 7/8 of its `max_streams` or
    /// `max_connections` taken, and should leave new connections to its siblings for a moment.
    /// The kernel hands a shared socket's connections to whichever worker accepts first, not
    /// to the emptiest: 50,000 streams over 4 workers measured 14,377, 14,131, 12,546 and 9,010,
    /// and a run where one worker reached its `max_streams` told browsers to come back while
    /// the others had thousands of slots free. nginx's workers do the same
    /// (`ngx_accept_disabled`, at 7/8 of `worker_connections`).
    pub fn leaves_accepts_to_siblings(&self) -> bool {
        let config = self.config();
        let server = &config.server;
        if server.processes <= 1 {
            return false;
        }
        let stats = &self.streams.stats;
        let near = |open: usize, max: usize| open.saturating_mul(8) >= max.saturating_mul(7);
        near(
            stats.active_connections.load(Ordering::Acquire),
            server.max_connections,
        ) || near(stats.active_streams(), server.max_streams)
    }

    /// Counts a transport connection until the guard is dropped: `None` when
    /// `max_connections` are open, unless `force` (a connection was evicted to make room, and
    /// the count falls back as soon as it has closed).
    pub fn try_open_connection(&self, force: bool) -> Option<ConnectionGuard> {
        let max = self.config().server.max_connections;
        let mut cur = self
            .streams
            .stats
            .active_connections
            .load(Ordering::Acquire);
        loop {
            if cur >= max && !force {
                return None;
            }
            match self.streams.stats.active_connections.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.streams
            .stats
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        if force {
            self.streams
                .stats
                .evicted_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        Some(ConnectionGuard(self.streams.stats.clone()))
    }

    /// Counts a connection refused because every one of `max_connections` was busy.
    pub fn connection_refused(&self) {
        self.streams
            .stats
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A new, empty charge against `max_input_bytes`.
    pub fn input_charge(&self) -> InputCharge {
        InputCharge {
            stats: self.streams.stats.clone(),
            bytes: 0,
            max: self.config().server.max_input_bytes,
        }
    }

    /// The `503` sent when every stream slot is taken.
    pub fn server_full(&self) -> FullResponse {
        self.streams.server_full(&self.config())
    }

    /// This worker's answer to a sibling's question ([`crate::siblings`]): a route's
    /// subscriptions, its own `/status` or `/metrics`, or a shared program's live feed;
    /// nothing for another question.
    pub async fn answer_sibling(&self, question: &str) -> Reply {
        let cx = Cx {
            set: self.current(),
            streams: self.streams.clone(),
        };
        Reply::Body(match question.split_once(' ') {
            Some(("presences", route)) => {
                crate::siblings::presences_answer(&self.presences_on(route))
            }
            Some(("follow", route)) => match cx.set.get(route).and_then(|r| r.route.follow()) {
                Some(f) => return Reply::Follow(f),
                None => Vec::new(),
            },
            _ if question == "status" => {
                serde_json::Value::Object(crate::routes::own_status(&cx).await)
                    .to_string()
                    .into_bytes()
            }
            _ if question == "metrics" => crate::routes::own_metrics(&cx).await.into_bytes(),
            _ => Vec::new(),
        })
    }

    /// Routes a request to its response.
    pub async fn handle(&self, req: &Request) -> Response {
        let set = self.current();
        let Some(entry) = set.find(req) else {
            return FullResponse::text(404, format!("no route for {}", req.path)).into();
        };
        let route = entry.route.clone();
        let cx = Cx {
            set,
            streams: self.streams.clone(),
        };
        route.handle(&cx, req).await
    }
}

#[cfg(test)]
mod tests;
