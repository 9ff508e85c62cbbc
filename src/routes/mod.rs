//! Route kinds. Each kind is one room: `ticks.rs` (`clock` and `ping`), `status.rs` (`/status`
//! and `/metrics`), `topics.rs`, `mercure/` and `command.rs` each read their `[[route]]` table into
//! their own settings struct (the keys they take, the checks they make), build their route and
//! answer its requests. This file only dispatches: the [`Kind`] and [`Route`] traits, the one
//! list of kinds ([`KINDS`]: adding a kind is a module here and a line there), and finding the
//! route of a request ([`RouteSet::find`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use crate::config::{Config, Kinds, RouteConfig, RouteKind};
use crate::hub::Hub;
use crate::request::Request;
use crate::response::{FullResponse, Response};
use crate::streams::Streams;

mod box_figures;
mod command;
mod custom;
mod figures;
mod hooked;
mod journaled;
mod mercure;
mod status;
mod ticks;
mod topics;

pub use custom::SourceFactory;
pub use hooked::{Board, Who};
pub(crate) use status::{own_metrics, own_status};

/// A route's answer, once it is ready.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// Who a stream is for, once the token (if any) is checked.
pub type WhoAnswer<'a> = Pin<Box<dyn Future<Output = Who> + Send + 'a>>;

/// An answer that is ready now.
fn ready<'a>(r: impl Into<Response>) -> Answer<'a> {
    Box::pin(std::future::ready(r.into()))
}

/// What a route answers a request with: the routes and config in force when it arrived, and
/// the process's streams.
pub struct Cx {
    /// The routes (and their config) the request arrived under; a reload changes them for
    /// later requests only.
    pub set: Arc<RouteSet>,
    /// The process's streams: their limit, counters and access log.
    pub streams: Arc<Streams>,
}

impl Cx {
    /// The config in force for this request.
    pub fn config(&self) -> &Config {
        &self.set.config
    }
}

/// A built route: what one `[[route]]` table (or a source added in code) serves.
pub trait Route: Send + Sync {
    /// Answers a request to this route (or, where [`Route::answers_below`] says so, below it).
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a>;

    /// The route's hub (a topics or mercure route, a command with a `topic`): a reload keeps
    /// it when its storage is unchanged, and `/status` reports it.
    fn hub(&self) -> Option<&Arc<Hub>> {
        None
    }

    /// Starts what runs without a request (a shared program with `start = "always"`); called
    /// once a runtime is up.
    fn start(&self) {}

    /// The route's config is now the one in force (at start, and after a reload that was
    /// accepted): settings it shares with the route it replaced (a hook queue, a presence
    /// board) take its values now, not when it was built.
    fn applied(&self) {}

    /// Whether the route also answers the path `rest` below its own (Mercure's
    /// subscriptions API: `/subscriptions…`).
    fn answers_below(&self, rest: &str) -> bool {
        let _ = rest;
        false
    }

    /// This route's own figures for `/status` and `/metrics`, beside its hub's.
    fn figures(&self) -> Option<figures::RouteFigures> {
        None
    }

    /// The live feed a sibling worker follows (a shared program this worker runs for the box).
    fn follow(&self) -> Option<crate::siblings::Follow> {
        None
    }

    /// The route's hooks, when it has them.
    fn hooks(&self) -> Option<&Arc<crate::hooks::Hooks>> {
        None
    }

    /// The route's presence, when it counts it.
    fn board(&self) -> Option<&Board> {
        None
    }

    /// Who a stream of `req` is for, as its hooks tell the application: the topics asked
    /// for (`?topic=`), and where the route knows them the user and the token's expiry.
    fn who<'a>(&'a self, req: &'a Request) -> WhoAnswer<'a> {
        Box::pin(std::future::ready(Who {
            topics: req.query_values("topic"),
            ..Who::default()
        }))
    }

    /// Whether it was added in code ([`custom::Custom`]): a reload keeps it.
    fn is_custom(&self) -> bool {
        false
    }
}

/// A route and the path it answers.
#[derive(Clone)]
pub struct RouteEntry {
    /// The request path (`/events`).
    pub path: String,
    /// What serves it.
    pub route: Arc<dyn Route>,
}

/// The routes built from one config: what a reload replaces. A request takes the set in force
/// when it arrives and keeps it; open streams keep theirs.
pub struct RouteSet {
    /// The config the routes were built from.
    pub config: Arc<Config>,
    /// The routes, in config order.
    pub routes: Vec<RouteEntry>,
}

impl RouteSet {
    /// The route of `req`: its path, else its PATH_INFO (CGI, `SCRIPT_NAME` + route), else a
    /// route that answers below its own path.
    pub fn find(&self, req: &Request) -> Option<&RouteEntry> {
        let exact = |path: &str| self.routes.iter().find(|r| r.path == path);
        exact(&req.path)
            .or_else(|| {
                (!req.path_info.is_empty())
                    .then(|| exact(&req.path_info))
                    .flatten()
            })
            .or_else(|| {
                self.routes.iter().find(|r| {
                    req.path
                        .strip_prefix(r.path.as_str())
                        .is_some_and(|rest| r.route.answers_below(rest))
                })
            })
    }

    /// The route at `path`.
    pub fn get(&self, path: &str) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| r.path == path)
    }
}

/// Why a route could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// What it stands on is not there now (its journal, its program): the daemon refuses to
    /// start; one CGI request answers `503` on this route with `reason` and serves the others.
    Unavailable {
        /// What the client is told.
        reason: &'static str,
        /// What the log says.
        detail: String,
    },
    /// The config is wrong (a key file that does not parse): always an error.
    Invalid(String),
}

/// What building a route may use: the whole config, the routes of the config it replaces
/// (their hubs are kept), and which journal events to load.
pub struct Build<'a> {
    /// The config being built.
    pub config: &'a Config,
    /// The routes of the config in force before (a reload), else none.
    pub keep: &'a [RouteEntry],
    /// Load only the journal events after this id (one CGI request: its `Last-Event-ID`).
    pub load_after: u64,
    /// Building for one CGI request (which cannot deliver hooks later).
    pub cgi: bool,
}

/// A route kind: how its table is read and checked ([`RouteKind`]) and how its route is
/// built.
pub trait Kind: RouteKind {
    /// The route of `r`, whose settings this kind read.
    fn build(&self, b: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError>;

    /// The `/status` group and the list of the figures its routes report of their own
    /// ([`Route::figures`]): `/status` and `/metrics` show them (empty) even while no route of
    /// the kind exists.
    fn figures(&self) -> Option<(&'static str, Vec<figures::About>)> {
        None
    }
}

/// Every route kind. Adding one: its module in this folder and a line here.
static KINDS: &[&dyn Kind] = &[
    &ticks::CLOCK,
    &ticks::PING,
    &status::StatusKind,
    &status::MetricsKind,
    &topics::TopicsKind,
    &mercure::MercureKind,
    &command::CommandKind,
];

/// The kinds a config may name, to read it with ([`Config::parse`]).
pub fn kinds() -> &'static Kinds {
    static ALL: LazyLock<Vec<&'static dyn RouteKind>> =
        LazyLock::new(|| KINDS.iter().map(|k| *k as &dyn RouteKind).collect());
    &ALL
}

/// The settings of `r` as `T`: those its kind read (a route's kind is the one asking).
fn settings<T: 'static>(r: &RouteConfig) -> Result<&T, BuildError> {
    r.settings().ok_or_else(|| {
        BuildError::Invalid(format!("settings of another kind than {}", r.kind.name()))
    })
}

/// Builds the route of `r` by its kind.
fn build_one(b: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
    let name = r.kind.name();
    let route = match KINDS.iter().find(|k| k.name() == name) {
        Some(kind) => kind.build(b, r)?,
        None => return Err(BuildError::Invalid(format!("no route kind {name}"))),
    };
    let Some(hc) = r.settings.hooks() else {
        return Ok(route);
    };
    let hooks = crate::hooks::Hooks::build(hc, b.config, r, b.cgi).map_err(|detail| {
        BuildError::Unavailable {
            reason: "its hooks are unavailable",
            detail,
        }
    })?;
    // One CGI request's counts would be its own stream: no presence there.
    let board = (hc.presence_on() && !b.cgi).then(|| Board {
        presence: crate::hooks::presence::board(r.path.get_ref()),
        topic: hc.presence_topic.clone(),
        users: hc.presence_users,
    });
    if hooks.is_none() && board.is_none() {
        return Ok(route);
    }
    Ok(Arc::new(hooked::Hooked {
        inner: route,
        hooks,
        board,
    }))
}

/// Builds the routes of `config`. A journaled route reuses the hub in `keep` (by path) when its
/// storage is the same, else opens its journal (loading the events after `load_after`). A
/// route that cannot be built now is an error when `strict`, else it answers `503`.
pub fn build(
    config: &Config,
    strict: bool,
    keep: &[RouteEntry],
    load_after: u64,
) -> Result<Vec<RouteEntry>, String> {
    let b = Build {
        config,
        keep,
        load_after,
        cgi: !strict,
    };
    let mut routes = Vec::new();
    for r in &config.routes {
        let path = r.path.get_ref();
        let route = match build_one(&b, r) {
            Ok(route) => route,
            Err(BuildError::Unavailable { reason, detail }) if !strict => {
                log::error!("route {path}: unavailable, the route answers 503: {detail}");
                Arc::new(Unavailable {
                    path: path.clone(),
                    reason,
                })
            }
            Err(BuildError::Unavailable { detail, .. }) | Err(BuildError::Invalid(detail)) => {
                return Err(format!("route {path}: {detail}"))
            }
        };
        routes.push(RouteEntry {
            path: path.clone(),
            route,
        });
    }
    Ok(routes)
}

/// A custom route serving `factory`'s sources at `path`.
pub fn custom(path: &str, factory: SourceFactory) -> RouteEntry {
    RouteEntry {
        path: path.to_string(),
        route: Arc::new(custom::Custom {
            path: path.to_string(),
            factory,
        }),
    }
}

/// A route that could not be built (CGI only: the daemon refuses to start instead).
struct Unavailable {
    path: String,
    reason: &'static str,
}

impl Route for Unavailable {
    fn handle<'a>(&'a self, _: &'a Cx, _: &'a Request) -> Answer<'a> {
        let why = format!(
            "{} is unavailable: {} (see the server's error log)",
            self.path, self.reason
        );
        ready(FullResponse::text(503, why).with_header("Retry-After", "60"))
    }
}

/// `405` for a method the route at `path` does not take, with the ones it does.
fn not_allowed(path: &str, req: &Request, allow: &'static str) -> Response {
    FullResponse::text(405, format!("{path} does not accept {}", req.method))
        .with_header("Allow", allow)
        .into()
}

/// Whether `req` only reads (`GET`, `HEAD`).
fn read_only(req: &Request) -> bool {
    req.method == "GET" || req.method == "HEAD"
}
