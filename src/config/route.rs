//! `[[route]]` tables: what each route type serves and the settings it takes, with their
//! defaults, and the built-in routes of the embedded default config.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{de_duration, de_positive, de_positive_duration};

/// What a route serves.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// The server time every `interval`, with an `id:`.
    Clock,
    /// The MDN example: `event: ping` every `interval`, plain messages at random intervals.
    Ping,
    /// JSON counters and limits.
    Status,
    /// The same figures for Prometheus (text exposition format).
    Metrics,
    /// Publish/subscribe topics with replay (`GET ?topic=` subscribes, `POST` publishes).
    Topics,
    /// A Mercure hub (protocol as hub v0.24 speaks it): JWT authorization, private updates,
    /// selectors and URI templates, CORS.
    Mercure,
    /// A program's output as events: one process for every subscriber (`shared`) or one per
    /// stream (`per-stream`), e.g. an unchanged PHP SSE loop.
    Command,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// The keys of a hub (history kept for replay, the subscriber queue).
const HUB_KEYS: &[&str] = &[
    "history_events",
    "history_bytes",
    "history_age",
    "subscriber_queue",
];
/// The keys of a route's authorization (tokens, cookie, origins, users).
const AUTH_KEYS: &[&str] = &[
    "publisher_jwt_key",
    "publisher_jwt_alg",
    "subscriber_jwt_key",
    "subscriber_jwt_alg",
    "jwt_audience",
    "cookie_name",
    "publish_origins",
    "user_param",
    "user_topics",
];
/// The keys of a program.
const COMMAND_KEYS: &[&str] = &[
    "command",
    "mode",
    "format",
    "start",
    "idle_stop",
    "working_dir",
    "env",
    "user",
    "max_processes",
    "kill_grace",
    "max_event_bytes",
    "topic",
];

impl RouteKind {
    /// The keys a route of this kind takes, beside `path` and `type`: any other key in its
    /// table is refused (it would do nothing).
    pub fn keys(self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = match self {
            RouteKind::Clock | RouteKind::Ping => vec!["interval"],
            RouteKind::Status | RouteKind::Metrics => vec![],
            RouteKind::Topics => vec!["publish_token", "max_topics"],
            RouteKind::Mercure => vec!["max_topics", "anonymous", "cors_origins", "subscriptions"],
            // With a `topic`, its hub and the POSTs to it as on a topics route.
            RouteKind::Command => [COMMAND_KEYS, &["publish_token", "max_topics"]].concat(),
        };
        if matches!(
            self,
            RouteKind::Topics | RouteKind::Mercure | RouteKind::Command
        ) {
            keys.extend_from_slice(HUB_KEYS);
            keys.extend_from_slice(AUTH_KEYS);
        }
        keys
    }

    /// The name written in `type = "…"`.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Clock => "clock",
            RouteKind::Ping => "ping",
            RouteKind::Status => "status",
            RouteKind::Metrics => "metrics",
            RouteKind::Topics => "topics",
            RouteKind::Mercure => "mercure",
            RouteKind::Command => "command",
        }
    }
}

/// One `[[route]]`. Which keys its kind takes is [`RouteKind::keys`] (checked after parsing,
/// so that a refusal lists that kind's keys, not every route's).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RouteConfig {
    /// Request path, starting with `/`.
    pub path: toml::Spanned<String>,
    /// What the route serves (`type = "clock"`).
    #[serde(rename = "type")]
    pub kind: RouteKind,
    /// Tick interval of `clock` and `ping`.
    #[serde(default = "one_second", deserialize_with = "de_positive_duration")]
    pub interval: Duration,
    /// `topics`: most events kept for Last-Event-ID replay.
    #[serde(default = "default_history_events", deserialize_with = "de_positive")]
    pub history_events: usize,
    /// `topics`: oldest event kept for replay.
    #[serde(
        default = "default_history_age",
        deserialize_with = "de_positive_duration"
    )]
    pub history_age: Duration,
    /// `topics`: most bytes of events kept for replay (their encoded size).
    #[serde(default = "default_history_bytes", deserialize_with = "de_positive")]
    pub history_bytes: usize,
    /// `topics`: events queued per subscriber before it is cut off as too slow.
    #[serde(default = "default_subscriber_queue", deserialize_with = "de_positive")]
    pub subscriber_queue: usize,
    /// `topics`: most topics per subscription or publication.
    #[serde(default = "default_max_topics", deserialize_with = "de_positive")]
    pub max_topics: usize,
    /// `topics`: when set, publishing needs `Authorization: Bearer <token>`.
    #[serde(default)]
    pub publish_token: Option<String>,
    /// `mercure`: the key publishers' tokens are checked with (HMAC secret, or a PEM public key
    /// or its path); without it the route refuses every publish.
    #[serde(default)]
    pub publisher_jwt_key: Option<toml::Spanned<String>>,
    /// `mercure`: the only algorithm accepted for publishers' tokens.
    #[serde(default = "default_jwt_alg")]
    pub publisher_jwt_alg: toml::Spanned<String>,
    /// `mercure`: the key subscribers' tokens are checked with; without it no subscriber is
    /// authorized for private updates.
    #[serde(default)]
    pub subscriber_jwt_key: Option<toml::Spanned<String>>,
    /// `mercure`: the only algorithm accepted for subscribers' tokens.
    #[serde(default = "default_jwt_alg")]
    pub subscriber_jwt_alg: toml::Spanned<String>,
    /// `topics`, `mercure`: audiences a token's `aud` may name; a token with an `aud` that
    /// names none of them is refused (401), and so is any token with `aud` when this is empty.
    #[serde(default)]
    pub jwt_audience: Vec<String>,
    /// `mercure`: subscribers without a token are served public updates (else refused, 401).
    #[serde(default)]
    pub anonymous: bool,
    /// `mercure`: origins (`https://app.example.com`) whose pages may subscribe and publish
    /// with credentials; `*` allows any origin without credentials.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// `mercure`: origins a publish authorized by the cookie may come from (CSRF guard).
    #[serde(default)]
    pub publish_origins: Vec<String>,
    /// `mercure`: the cookie holding a browser's token.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// `mercure`: publish subscription events and serve the subscriptions API.
    #[serde(default)]
    pub subscriptions: bool,
    /// `topics`, `mercure`: the FastCGI param naming the user the web server authenticated
    /// (`REMOTE_USER`, or one set from nginx `auth_request`); unset: no user is trusted.
    #[serde(default)]
    pub user_param: Option<String>,
    /// `topics`, `mercure`: topic templates with `{user}` (`user/{user}`) that only that user
    /// may read (and, on a `mercure` route, whose private updates that user receives).
    #[serde(default)]
    pub user_topics: Vec<String>,
    /// `command`: the program and its arguments (an argv list, never a shell).
    #[serde(default)]
    pub command: Vec<String>,
    /// `command`: `shared` (one process for every subscriber) or `per-stream`.
    #[serde(default)]
    pub mode: crate::command::Mode,
    /// `command`: `sse` (what a PHP SSE loop prints) or `lines` (each line one event).
    #[serde(default)]
    pub format: crate::command::output::Format,
    /// `command`, shared: `on-demand` (with the first subscriber) or `always` (at start).
    #[serde(default)]
    pub start: crate::command::Start,
    /// `command`, shared: how long the process runs on after its last subscriber left.
    #[serde(default = "default_idle_stop", deserialize_with = "de_duration")]
    pub idle_stop: Duration,
    /// `command`: the program's working directory (default: the daemon's).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// `command`: names of the daemon's environment variables the program gets (besides PATH;
    /// nothing else is passed).
    #[serde(default)]
    pub env: Vec<String>,
    /// `command`: the user to run the program as when fastsse runs as root.
    #[serde(default)]
    pub user: Option<String>,
    /// `command`, per-stream: most programs at once; past it, 503.
    #[serde(
        default = "default_max_processes",
        deserialize_with = "de_max_processes"
    )]
    pub max_processes: usize,
    /// `command`: after SIGTERM, how long a program has before SIGKILL.
    #[serde(
        default = "default_kill_grace",
        deserialize_with = "de_positive_duration"
    )]
    pub kill_grace: Duration,
    /// `command`: the largest event a program may print, in bytes (its lines added up); a
    /// larger one (or a loop that never prints the blank line) is dropped whole, counted in
    /// `/status` and logged.
    #[serde(default = "default_max_event_bytes", deserialize_with = "de_positive")]
    pub max_event_bytes: usize,
    /// `command`, shared: publish the program's events to this topic of the route's own hub
    /// (journal, ids, Last-Event-ID replay, POST from elsewhere too); unset: live only.
    #[serde(default)]
    pub topic: Option<String>,
}

fn default_max_event_bytes() -> usize {
    crate::command::output::DEFAULT_MAX_EVENT
}
fn default_idle_stop() -> Duration {
    Duration::from_secs(30)
}
/// Most `max_processes`: each slot is a lock file held open (an fd) by every worker.
pub const MAX_PROCESSES: usize = 4096;

fn de_max_processes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=MAX_PROCESSES).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "must be 1 to {MAX_PROCESSES} (each is a lock file kept open)"
        )));
    }
    Ok(v)
}

fn default_max_processes() -> usize {
    100
}
fn default_kill_grace() -> Duration {
    Duration::from_secs(2)
}

fn default_jwt_alg() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "HS256".to_string())
}
fn default_cookie_name() -> String {
    "mercureAuthorization".to_string()
}

fn default_history_events() -> usize {
    10_000
}
fn default_history_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_history_bytes() -> usize {
    64 << 20
}
fn default_subscriber_queue() -> usize {
    1024
}
fn default_max_topics() -> usize {
    16
}

impl RouteConfig {
    /// The folder name of this route's journal: the path without slashes (`/events` -> `events`).
    /// Whether the route keeps a journal (`topics`, `mercure`, a `command` with a `topic`).
    pub fn has_journal(&self) -> bool {
        matches!(self.kind, RouteKind::Topics | RouteKind::Mercure)
            || (self.kind == RouteKind::Command && self.topic.is_some())
    }

    pub fn journal_name(&self) -> String {
        let name: String = self
            .path
            .get_ref()
            .trim_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() {
            "root".into()
        } else {
            name
        }
    }
}

fn route(path: &str, kind: RouteKind) -> RouteConfig {
    RouteConfig {
        path: toml::Spanned::new(0..0, path.to_string()),
        kind,
        interval: one_second(),
        history_events: default_history_events(),
        history_age: default_history_age(),
        history_bytes: default_history_bytes(),
        subscriber_queue: default_subscriber_queue(),
        max_topics: default_max_topics(),
        publish_token: None,
        publisher_jwt_key: None,
        publisher_jwt_alg: default_jwt_alg(),
        subscriber_jwt_key: None,
        subscriber_jwt_alg: default_jwt_alg(),
        anonymous: false,
        cors_origins: Vec::new(),
        publish_origins: Vec::new(),
        jwt_audience: Vec::new(),
        cookie_name: default_cookie_name(),
        subscriptions: false,
        user_param: None,
        user_topics: Vec::new(),
        command: Vec::new(),
        mode: crate::command::Mode::default(),
        format: crate::command::output::Format::default(),
        start: crate::command::Start::default(),
        idle_stop: default_idle_stop(),
        working_dir: None,
        env: Vec::new(),
        user: None,
        max_processes: default_max_processes(),
        max_event_bytes: default_max_event_bytes(),
        kill_grace: default_kill_grace(),
        topic: None,
    }
}

/// The built-in routes: `/clock`, `/ping`, `/status`, `/events` (topics).
pub fn default_routes() -> Vec<RouteConfig> {
    vec![
        route("/clock", RouteKind::Clock),
        route("/ping", RouteKind::Ping),
        route("/status", RouteKind::Status),
        route("/events", RouteKind::Topics),
    ]
}
