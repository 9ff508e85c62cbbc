//! The TOML configuration: types, defaults (the embedded default config), validation, and errors
//! that name the file, line and key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub mod de;
mod hooks;
mod journal;
mod route;
mod table;
mod validate;

pub use de::parse_duration;
use de::{de_duration, de_opt_any_duration, de_opt_duration, de_positive, de_positive_duration};

pub use hooks::{BodyFormat, HookConfig, OnTimeout};
pub use journal::{JournalBackend, JournalConfig};
pub use route::{HubConfig, Kinds, RouteConfig, RouteKind, RouteSettings};
pub use table::{field_names, RouteTable};

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A unix socket path (`unix:/run/fastsse.sock`).
    Unix(PathBuf),
    /// A TCP address (`127.0.0.1:9000`, `[::1]:9000`).
    Tcp(String),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "`unix:` needs a socket path, as in unix:/run/fastsse/fastsse.sock".into(),
                );
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        match s.parse::<std::net::SocketAddr>() {
            Ok(_) => Ok(ListenAddr::Tcp(s.to_string())),
            Err(_) => Err(format!(
                "`{s}` is neither unix:PATH nor HOST:PORT with a numeric host (127.0.0.1:9000, [::1]:9000)"
            )),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => f.write_str(a),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A list of addresses, or one written on its own (`listen = "unix:/run/x.sock"`).
fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ListenAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(x)) => vec![x],
        Ok(OneOrMany::Many(v)) => v,
        Err(_) => {
            return Err(serde::de::Error::custom(
                "expected an address (\"unix:/run/fastsse/fastsse.sock\" or \"127.0.0.1:9000\") or a list of them",
            ))
        }
    };
    list.iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = String::deserialize(d)?;
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 => Ok(Some(m)),
        _ => Err(serde::de::Error::custom(format!(
            "`{s}` is not an octal file mode such as \"0660\""
        ))),
    }
}

/// `[server]`: listening sockets and resource limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to listen on (`unix:PATH` or `HOST:PORT`): a list, or one address as a
    /// string. `--listen` replaces them.
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<ListenAddr>,
    /// Unix socket file mode, octal string.
    #[serde(deserialize_with = "de_mode")]
    pub socket_mode: Option<u32>,
    /// Unix socket owner (user name).
    pub socket_owner: Option<String>,
    /// Unix socket group (group name).
    pub socket_group: Option<String>,
    /// Most concurrent streams; one more gets `503` with `Retry-After`.
    #[serde(deserialize_with = "de_positive")]
    pub max_streams: usize,
    /// Most concurrent FastCGI connections; more are closed at once.
    #[serde(deserialize_with = "de_positive")]
    pub max_connections: usize,
    /// Most concurrent requests multiplexed on one connection.
    #[serde(deserialize_with = "de_positive")]
    pub max_requests_per_connection: usize,
    /// Most bytes of PARAMS (request headers and CGI variables) per request.
    #[serde(deserialize_with = "de_positive")]
    pub max_params_bytes: usize,
    /// Most name-value pairs per request.
    #[serde(deserialize_with = "de_positive")]
    pub max_params_pairs: usize,
    /// Most request body bytes (publish bodies).
    #[serde(deserialize_with = "de_positive")]
    pub max_body_bytes: usize,
    /// Most bytes of request input (PARAMS and bodies) buffered at once across every
    /// connection; a request that would go past it gets `503`.
    #[serde(deserialize_with = "de_positive")]
    pub max_input_bytes: usize,
    /// How long a connection may take to deliver a whole request (from its accept, or from the
    /// end of its previous request); a connection that takes longer is closed (a request half
    /// sent gets `408`). Connections with no request running are also the first closed when
    /// `max_connections` is reached.
    #[serde(deserialize_with = "de_positive_duration")]
    pub request_timeout: Duration,
    /// How long shutdown waits for streams to end before exiting anyway.
    #[serde(deserialize_with = "de_positive_duration")]
    pub shutdown_timeout: Duration,
    /// Peers allowed on TCP listeners (FCGI_WEB_SERVER_ADDRS); empty = any. The environment
    /// variable FCGI_WEB_SERVER_ADDRS, when set, is added.
    pub web_server_addrs: Vec<String>,
    /// A file to append one JSON line to per stream that ended; unset = no access log.
    pub access_log: Option<PathBuf>,
    /// Threads of the async runtime; 0 = half the cores (at least 1), leaving the rest to the
    /// web server in front, which does as much work per event as fastsse.
    pub worker_threads: usize,
    /// Worker processes sharing the listening sockets and the journals (a supervisor starts
    /// them). One process may hold only as many streams as it may open files (`ulimit -n`);
    /// more processes serve more. `max_streams`, `max_connections` and `worker_threads` are
    /// per process.
    #[serde(deserialize_with = "de_positive")]
    pub processes: usize,
}

impl ServerConfig {
    /// The runtime's thread count: `worker_threads`, or half the cores.
    pub fn runtime_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .max(1)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Vec::new(),
            socket_mode: Some(0o660),
            socket_owner: None,
            socket_group: None,
            max_streams: 10_000,
            max_connections: 10_500,
            max_requests_per_connection: 100,
            max_params_bytes: 64 * 1024,
            max_params_pairs: 1024,
            max_body_bytes: 64 * 1024,
            max_input_bytes: 64 << 20,
            request_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(3),
            web_server_addrs: Vec::new(),
            access_log: None,
            worker_threads: 0,
            processes: 1,
        }
    }
}

/// `[stream]`: how every SSE stream behaves.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Interval of `:` heartbeat comments while a stream is idle.
    #[serde(deserialize_with = "de_positive_duration")]
    pub heartbeat: Duration,
    /// `retry:` hint sent at the start of every stream and before it is ended by the server.
    #[serde(deserialize_with = "de_positive_duration")]
    pub retry: Duration,
    /// Seconds in the `Retry-After` header of a 503 when the server is full.
    pub retry_after_secs: u32,
    /// End streams cleanly after this long (for CGI and mod_fcgid time limits); unset = never.
    #[serde(deserialize_with = "de_opt_duration")]
    pub max_lifetime: Option<Duration>,
    /// At shutdown each stream's `retry:` hint gets a random share of this on top of `retry`,
    /// so a restart's browsers reconnect spread over it ("0s": all at `retry`).
    #[serde(deserialize_with = "de_duration")]
    pub drain_period: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            retry_after_secs: 5,
            max_lifetime: None,
            drain_period: Duration::from_secs(5),
        }
    }
}

/// `[cgi]`: CGI mode.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgiConfig {
    /// The route served when PATH_INFO is empty (`/cgi-bin/events.cgi` with nothing after it).
    pub default_route: String,
    /// How long one CGI request may keep its process (a host's process limit counts each open
    /// stream): a stream ends after this, with what is due sent and a jittered `retry:`, and
    /// the browser comes back with `Last-Event-ID`. `"0s"`: SSE as polling — answer what is due
    /// after `Last-Event-ID` and end. Unset: streams last as long as `[stream] max_lifetime`.
    #[serde(deserialize_with = "de_opt_any_duration")]
    pub hold: Option<Duration>,
}

impl Default for CgiConfig {
    fn default() -> Self {
        CgiConfig {
            default_route: "/clock".into(),
            hold: None,
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[stream]`.
    pub stream: StreamConfig,
    /// `[journal]`.
    pub journal: JournalConfig,
    /// `[cgi]`.
    pub cgi: CgiConfig,
    /// `[[route]]` tables; the built-in demo routes when absent.
    pub routes: Vec<RouteConfig>,
}

/// The file's sections as serde reads them; `[[route]]` tables are read by their kinds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sections {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    stream: StreamConfig,
    #[serde(default)]
    journal: JournalConfig,
    #[serde(default)]
    cgi: CgiConfig,
    #[serde(default, rename = "route")]
    _route: Option<serde::de::IgnoredAny>,
}

impl Config {
    /// The embedded default config: demo routes, default limits, no listen address.
    pub fn embedded(kinds: &Kinds) -> Config {
        Config {
            server: ServerConfig::default(),
            stream: StreamConfig::default(),
            journal: JournalConfig::default(),
            cgi: CgiConfig::default(),
            routes: route::embedded(kinds),
        }
    }
}

/// A configuration error naming the file, line and key.
#[derive(Debug)]
pub struct ConfigError {
    /// The file (or `<embedded>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key at fault, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The line number (1-based) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key written on a `key = value` line, if the line has one.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line - 1)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('[')).then(|| k.trim_matches('"').to_string())
}

impl Config {
    /// Parses and validates config text, its routes read by `kinds`; `file` names it in errors.
    pub fn parse(text: &str, file: &str, kinds: &Kinds) -> Result<Config, ConfigError> {
        let sections: Sections = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let message = e.message().to_string();
            // serde names the key itself for unknown and missing fields; else take it from the line.
            let key = line.and_then(|l| key_on_line(text, l));
            ConfigError {
                file: file.to_string(),
                line,
                key,
                message,
            }
        })?;
        let doc = toml_edit::ImDocument::parse(text).map_err(|e| ConfigError {
            file: file.to_string(),
            line: e.span().map(|s| line_of(text, s.start)),
            key: None,
            message: e.message().to_string(),
        })?;
        let tables = route::tables(&doc, text, file)?;
        let routes = match &tables {
            Some(tables) => tables
                .iter()
                .map(|t| route::read(t, kinds))
                .collect::<Result<_, _>>()?,
            None => route::embedded(kinds),
        };
        let config = Config {
            server: sections.server,
            stream: sections.stream,
            journal: sections.journal,
            cgi: sections.cgi,
            routes,
        };
        config.validate(text, file, tables.as_deref().unwrap_or_default())?;
        Ok(config)
    }

    /// Reads and parses a config file, its routes read by `kinds`.
    pub fn load(path: &Path, kinds: &Kinds) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &path.display().to_string(), kinds)
    }
}

#[cfg(test)]
mod tests;
