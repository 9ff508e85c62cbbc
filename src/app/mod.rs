//! The application: routes, responses, the stream limit and counters. It knows nothing of
//! FastCGI or CGI: a transport hands it a [`Request`] and writes the [`Response`] it returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::access_log::{AccessLog, StreamLog};
use crate::auth::RouteAuth;
use crate::config::{Config, RouteConfig, RouteKind};
use crate::hub::replay::ReplayBounds;
use crate::hub::{Hub, HubSettings};
use crate::request::Request;
use crate::response::{stream_headers, FullResponse, Response, StreamResponse};
use crate::source::{ClockSource, PingSource, Source, StreamTiming};
use crate::stats::{ConnectionGuard, InputCharge, Stats, StreamPermit};
use command::{command_route, CommandKind, CommandRoute};

mod command;
mod documents;
mod figures;
mod mercure;
mod subscriptions;
mod topics;

/// Builds a source for one request to a custom route; an `Err` response is sent instead.
pub type SourceFactory = Arc<dyn Fn(&Request) -> Result<Box<dyn Source>, Response> + Send + Sync>;

#[derive(Clone)]
enum Handler {
    /// `/status`.
    Status,
    /// `/metrics`.
    Metrics,
    /// A clock ticking every interval.
    Clock(std::time::Duration),
    /// MDN's ping example, every interval.
    Ping(std::time::Duration),
    Topics(Arc<(RouteConfig, RouteAuth)>, Arc<Hub>),
    Mercure(Arc<mercure::MercureRoute>, Arc<Hub>),
    Command(Arc<CommandRoute>),
    /// A topics route whose journal could not be opened (CGI only: the daemon refuses to start).
    Unavailable(&'static str),
    Custom(SourceFactory),
}

impl Handler {
    /// The hub of a `topics` or `mercure` route, or of a `command` with a `topic`.
    fn hub(&self) -> Option<&Arc<Hub>> {
        match self {
            Handler::Topics(_, hub) | Handler::Mercure(_, hub) => Some(hub),
            Handler::Command(c) => match &c.kind {
                CommandKind::Shared(s) => s.hub().map(|(h, _)| h),
                CommandKind::PerStream(_) => None,
            },
            _ => None,
        }
    }
}

/// The hub of a route: the one in `keep` (a reload) when it is stored in the same place, else
/// newly opened.
fn route_hub(
    config: &Config,
    r: &RouteConfig,
    keep: &[Route],
    load_after: u64,
) -> Result<Arc<Hub>, crate::hub::journal::JournalError> {
    let path = r.path.get_ref();
    let storage = config.journal.storage_for(r);
    let kept = keep.iter().find_map(|o| match o.handler.hub() {
        Some(hub) if &o.path == path && hub.location() == storage.location() => Some(hub.clone()),
        _ => None,
    });
    match kept {
        Some(hub) => Ok(hub),
        None => Hub::open(path, storage, hub_settings(config, r, load_after)),
    }
}

#[derive(Clone)]
struct Route {
    path: String,
    handler: Handler,
}

/// What a reload replaces: the config and the routes built from it. A request takes the one in
/// force when it arrives and keeps it; open streams keep theirs.
struct Current {
    config: Arc<Config>,
    routes: Vec<Route>,
}

/// The application shared by every connection: config, routes and counters.
pub struct App {
    current: std::sync::RwLock<Arc<Current>>,
    /// The access log, when `[server] access_log` is set (opened at start).
    access_log: Option<Arc<AccessLog>>,
    stats: Arc<Stats>,
    started: Instant,
    /// Serving one CGI request: `[cgi] hold` applies.
    cgi: bool,
}

/// The hub settings of a topics route.
fn hub_settings(config: &Config, r: &RouteConfig, load_after: u64) -> HubSettings {
    HubSettings {
        history: ReplayBounds {
            events: r.history_events,
            bytes: r.history_bytes,
            age: r.history_age,
        },
        subscriber_queue: r.subscriber_queue,
        retry: config.stream.retry,
        publish_timeout: config.journal.lock_timeout,
        // Mercure's subscription events come and go with every connection: kept out of the
        // replay history, so that anonymous churn never pushes a real event out of it.
        unretained_prefix: (r.kind == crate::config::RouteKind::Mercure && r.subscriptions)
            .then(|| format!("{}/subscriptions/", r.path.get_ref())),
        load_after,
    }
}

/// The authorization rules of route `r` (reads PEM key files: config time only).
fn route_auth(r: &RouteConfig) -> Result<RouteAuth, String> {
    fn key<'a>(
        k: &'a Option<toml::Spanned<String>>,
        alg: &'a toml::Spanned<String>,
    ) -> Option<(&'a str, &'a str)> {
        k.as_ref()
            .map(|k| (k.get_ref().as_str(), alg.get_ref().as_str()))
    }
    RouteAuth::new(crate::auth::route::AuthSettings {
        publisher_key: key(&r.publisher_jwt_key, &r.publisher_jwt_alg),
        subscriber_key: key(&r.subscriber_jwt_key, &r.subscriber_jwt_alg),
        jwt_audience: &r.jwt_audience,
        cookie_name: &r.cookie_name,
        publish_origins: &r.publish_origins,
        user_param: r.user_param.as_deref(),
        user_topics: &r.user_topics,
    })
}

/// Builds the routes of `config`. A topics route reuses the hub in `keep` (by path) when its
/// journal directory is the same, else opens its journal (loading the events after
/// `load_after`): an error when `strict`, else the route answers 503.
fn build_routes(
    config: &Config,
    strict: bool,
    keep: &[Route],
    load_after: u64,
) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    for r in &config.routes {
        let path = r.path.get_ref();
        let handler = match r.kind {
            RouteKind::Command => match command_route(config, r, keep, load_after) {
                Ok(c) => Handler::Command(Arc::new(c)),
                Err(e) if !strict => {
                    log::error!("route {path}: unavailable, the route answers 503: {e}");
                    Handler::Unavailable("its program or journal is unavailable")
                }
                Err(e) => return Err(format!("route {path}: {e}")),
            },
            RouteKind::Topics | RouteKind::Mercure => {
                match route_hub(config, r, keep, load_after) {
                    Ok(hub) if r.kind == RouteKind::Topics => match route_auth(r) {
                        Ok(auth) => Handler::Topics(Arc::new((r.clone(), auth)), hub),
                        Err(e) => return Err(format!("route {path}: {e}")),
                    },
                    Ok(hub) => match mercure::MercureRoute::new(r) {
                        Ok(m) => Handler::Mercure(Arc::new(m), hub),
                        Err(e) => return Err(format!("route {path}: {e}")),
                    },
                    Err(e) if !strict => {
                        log::error!(
                            "route {path}: journal unavailable, the route answers 503: {e}"
                        );
                        Handler::Unavailable(e.public_reason())
                    }
                    Err(e) => return Err(format!("route {path}: {e}")),
                }
            }
            RouteKind::Status => Handler::Status,
            RouteKind::Metrics => Handler::Metrics,
            RouteKind::Clock => Handler::Clock(r.interval),
            RouteKind::Ping => Handler::Ping(r.interval),
        };
        routes.push(Route {
            path: path.clone(),
            handler,
        });
    }
    Ok(routes)
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
        let routes = build_routes(&config, strict, &[], load_after)?;
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
            access_log,
            current: std::sync::RwLock::new(Arc::new(Current {
                config: Arc::new(config),
                routes,
            })),
            stats: Arc::new(Stats::default()),
            started: Instant::now(),
            cgi,
        })
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a new configuration to new requests (SIGHUP): new and changed routes, limits,
    /// timings and tokens. Open streams keep streaming under the old one. Topics routes whose
    /// journal directory is unchanged keep their hub (history, subscribers); a new one opens its
    /// journal (blocking I/O: call it off the runtime). On an error nothing changes. Listen
    /// addresses and `worker_threads` apply at the next start.
    /// Starts the supervisors of shared commands (call it on the runtime: those with
    /// `start = "always"` start their program now, the others wait for a subscriber).
    pub fn start_commands(&self) {
        for r in &self.current().routes {
            if let Handler::Command(c) = &r.handler {
                if let CommandKind::Shared(s) = &c.kind {
                    s.ensure_started();
                }
            }
        }
    }

    pub fn reload(&self, config: Config) -> Result<usize, String> {
        let old = self.current();
        let mut routes = build_routes(&config, true, &old.routes, 0)?;
        // Routes added in code (add_source) are not in the file: they stay.
        for r in &old.routes {
            if matches!(r.handler, Handler::Custom(_)) && !routes.iter().any(|n| n.path == r.path) {
                routes.push(r.clone());
            }
        }
        if config.server.listen != old.config.server.listen
            || config.server.worker_threads != old.config.server.worker_threads
        {
            log::warn!("reload: [server] listen and worker_threads apply at the next start");
        }
        let n = routes.len();
        if let Some(log) = &self.access_log {
            // After logrotate moved it; a changed path applies at the next start.
            log.reopen();
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Current {
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
        routes.push(Route {
            path: path.to_string(),
            handler: Handler::Custom(factory),
        });
        *current = Arc::new(Current {
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
        &self.stats
    }

    /// Counts a transport connection until the guard is dropped: `None` when
    /// `max_connections` are open, unless `force` (a connection was evicted to make room, and
    /// the count falls back as soon as it has closed).
    pub fn try_open_connection(&self, force: bool) -> Option<ConnectionGuard> {
        let max = self.config().server.max_connections;
        let mut cur = self.stats.active_connections.load(Ordering::Acquire);
        loop {
            if cur >= max && !force {
                return None;
            }
            match self.stats.active_connections.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        if force {
            self.stats
                .evicted_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        Some(ConnectionGuard(self.stats.clone()))
    }

    /// Counts a connection refused because every one of `max_connections` was busy.
    pub fn connection_refused(&self) {
        self.stats
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A new, empty charge against `max_input_bytes`.
    pub fn input_charge(&self) -> InputCharge {
        InputCharge {
            stats: self.stats.clone(),
            bytes: 0,
            max: self.config().server.max_input_bytes,
        }
    }

    /// Streams of this CGI request end after `[cgi] hold`.
    fn held(&self) -> bool {
        self.cgi && self.config().cgi.hold.is_some()
    }

    fn timing(&self) -> StreamTiming {
        let c = self.config();
        let hold = c.cgi.hold.filter(|_| self.cgi);
        let max_lifetime = match (c.stream.max_lifetime, hold) {
            (Some(life), Some(hold)) => Some(life.min(hold)),
            (life, hold) => life.or(hold),
        };
        StreamTiming {
            heartbeat: c.stream.heartbeat,
            retry: c.stream.retry,
            max_lifetime,
            drain: c.stream.drain_period,
            // Held CGI streams end all the time: their browsers come back spread over a
            // quarter of `retry`, not in step.
            end_jitter: hold.map_or(std::time::Duration::ZERO, |_| c.stream.retry / 4),
        }
    }

    /// Takes a stream slot, or `None` when `max_streams` are open.
    fn try_acquire_stream(&self) -> Option<StreamPermit> {
        let max = self.config().server.max_streams;
        let mut cur = self.stats.active_streams.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return None;
            }
            match self.stats.active_streams.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.stats.total_streams.fetch_add(1, Ordering::Relaxed);
                    return Some(StreamPermit(self.stats.clone()));
                }
                Err(now) => cur = now,
            }
        }
    }

    /// The `503` sent when every stream slot is taken.
    pub fn server_full(&self) -> FullResponse {
        let secs = self.config().stream.retry_after_secs;
        FullResponse::text(
            503,
            format!(
                "server full: {} streams open (max_streams); retry after {secs} s",
                self.stats.active_streams()
            ),
        )
        .with_header("Retry-After", secs.to_string())
        .with_header("Cache-Control", "no-cache")
    }

    /// Routes a request to its response.
    pub async fn handle(&self, req: &Request) -> Response {
        let current = self.current();
        let route = current
            .routes
            .iter()
            .find(|r| r.path == req.path)
            .or_else(|| {
                (!req.path_info.is_empty())
                    .then(|| current.routes.iter().find(|r| r.path == req.path_info))
                    .flatten()
            });
        let Some(route) = route else {
            // A Mercure hub's subscriptions API lives under the hub's path.
            let api = current.routes.iter().find_map(|r| match &r.handler {
                Handler::Mercure(m, hub) => req
                    .path
                    .strip_prefix(r.path.as_str())
                    .and_then(|rest| rest.strip_prefix("/subscriptions"))
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                    .map(|_| (m, hub)),
                _ => None,
            });
            if let Some((m, hub)) = api {
                return self.mercure_subscriptions(m, hub, req).await.into();
            }
            return FullResponse::text(404, format!("no route for {}", req.path)).into();
        };
        let read_only = || req.method == "GET" || req.method == "HEAD";
        match &route.handler {
            Handler::Topics(route_auth, hub) => {
                let (conf, auth) = &**route_auth;
                match req.method.as_str() {
                    "POST" => self.publish(conf, auth, hub, req).await.into(),
                    "GET" | "HEAD" => self.subscribe(route, conf, auth, hub, req),
                    _ => not_allowed(route, req, "GET, HEAD, POST"),
                }
            }
            Handler::Mercure(m, hub) => self.mercure(route, m, hub, req).await,
            Handler::Command(c) => self.command(route, c, req).await,
            Handler::Unavailable(reason) => FullResponse::text(
                503,
                format!(
                    "{} is unavailable: {reason} (see the server's error log)",
                    route.path
                ),
            )
            .with_header("Retry-After", "60")
            .into(),
            _ if !read_only() => not_allowed(route, req, "GET, HEAD"),
            Handler::Status => self.status().await.into(),
            Handler::Metrics => self.metrics().await.into(),
            Handler::Clock(every) => self.stream(route, req, Box::new(ClockSource::new(*every))),
            Handler::Ping(every) => self.stream(route, req, Box::new(PingSource::new(*every))),
            Handler::Custom(factory) => match factory(req) {
                Ok(source) => self.stream(route, req, source),
                Err(resp) => resp,
            },
        }
    }

    /// A stream of `source` for `req` (headers only for HEAD), if a stream slot is free.
    fn stream(&self, route: &Route, req: &Request, source: Box<dyn Source>) -> Response {
        if req.is_head() {
            return self.stream_head_only();
        }
        let Some(permit) = self.try_acquire_stream() else {
            return self.refuse_full(route, req);
        };
        self.open_stream(route, source, permit, req)
    }

    fn stream_head_only(&self) -> Response {
        FullResponse {
            status: 200,
            headers: stream_headers(),
            body: Bytes::new(),
        }
        .into()
    }

    /// Every stream slot is taken. An `EventSource` (it sends `Accept: text/event-stream`)
    /// gets a `200` stream holding only a `retry:` hint, spread over a second so that a crowd
    /// does not come back at once — any other status would make it close for good. Other
    /// clients get `503` with `Retry-After`.
    fn refuse_full(&self, route: &Route, req: &Request) -> Response {
        self.stats.rejected_streams.fetch_add(1, Ordering::Relaxed);
        let max = self.config().server.max_streams;
        let event_source = req
            .header("Accept")
            .is_some_and(|a| a.contains("text/event-stream"));
        if !event_source {
            log::warn!(
                "req={} route={} peer={}: 503, all {max} stream slots taken",
                req.id,
                route.path,
                req.peer
            );
            return self.server_full().into();
        }
        let spread = crate::random::below(1000);
        let retry_ms = self.config().stream.retry_after_secs as u64 * 1000 + spread;
        log::warn!(
            "req={} route={} peer={}: all {max} stream slots taken; EventSource told to retry in {retry_ms} ms",
            req.id,
            route.path,
            req.peer
        );
        FullResponse {
            status: 200,
            headers: stream_headers(),
            body: Bytes::from(format!(
                ": server full ({max} streams open); come back in {retry_ms} ms\nretry: {retry_ms}\n\n"
            )),
        }
        .into()
    }

    fn open_stream(
        &self,
        route: &Route,
        source: Box<dyn Source>,
        permit: StreamPermit,
        req: &Request,
    ) -> Response {
        let access = self.access_log.as_ref().map(|log| {
            Box::new((
                log.clone(),
                StreamLog {
                    req: req.id.clone(),
                    route: route.path.clone(),
                    uri: crate::access_log::redact_uri(req.var("REQUEST_URI").unwrap_or(&req.path)),
                    peer: req.peer.clone(),
                    started: Instant::now(),
                },
            ))
        });
        Response::Stream(StreamResponse {
            source,
            timing: self.timing(),
            route: route.path.clone(),
            permit,
            access,
            extra_headers: Vec::new(),
        })
    }
}

/// `405` for a method `route` does not take, with the ones it does.
fn not_allowed(route: &Route, req: &Request, allow: &'static str) -> Response {
    FullResponse::text(
        405,
        format!("{} does not accept {}", route.path, req.method),
    )
    .with_header("Allow", allow)
    .into()
}

#[cfg(test)]
mod tests;
