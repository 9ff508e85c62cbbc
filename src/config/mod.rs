//! The TOML configuration: types, defaults (the embedded default config), validation, and errors
//! that name the file, line and key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod journal;
mod route;

pub use journal::{JournalBackend, JournalConfig};
pub use route::{default_routes, RouteConfig, RouteKind};

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

/// Parses `"15s"`, `"500ms"`, `"2m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: \"15s\", \"500ms\", \"2m\")"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(d)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn de_positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = de_duration(d)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("must be greater than zero"));
    }
    Ok(v)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_positive_duration(d).map(Some)
}

fn de_opt_any_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(v)
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
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[stream]`.
    #[serde(default)]
    pub stream: StreamConfig,
    /// `[journal]`.
    #[serde(default)]
    pub journal: JournalConfig,
    /// `[cgi]`.
    #[serde(default)]
    pub cgi: CgiConfig,
    /// `[[route]]` tables; the built-in demo routes when absent.
    #[serde(default = "default_routes", rename = "route")]
    pub routes: Vec<RouteConfig>,
}

impl Default for Config {
    /// The embedded default config: demo routes, default limits, no listen address.
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            stream: StreamConfig::default(),
            journal: JournalConfig::default(),
            cgi: CgiConfig::default(),
            routes: default_routes(),
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

/// Where keys are written in a config text, for errors raised after parsing.
struct KeyLines<'a> {
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> KeyLines<'a> {
    fn of(text: &'a str) -> KeyLines<'a> {
        KeyLines {
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    fn line_in(&self, table: &dyn toml_edit::TableLike, key: &str) -> Option<usize> {
        let (k, _) = table.get_key_value(key)?;
        Some(line_of(self.text, k.span()?.start))
    }

    /// The line of `key` in the top-level `[table]`.
    fn key(&self, table: &str, key: &str) -> Option<usize> {
        let t = self.doc.as_ref()?.get(table)?.as_table_like()?;
        self.line_in(t, key)
    }

    /// The line of `key` in the `index`th `[[route]]`.
    fn route_key(&self, index: usize, key: &str) -> Option<usize> {
        let routes = self.doc.as_ref()?.get("route")?.as_array_of_tables()?;
        self.line_in(routes.get(index)?, key)
    }
}

/// The key written on a `key = value` line, if the line has one.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line - 1)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('[')).then(|| k.trim_matches('"').to_string())
}

impl Config {
    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
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
        config.validate(text, file)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let lines = KeyLines::of(text);
        let err = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError {
            file: file.to_string(),
            line: Some(line_of(text, span.start)),
            key: Some(key.to_string()),
            message,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (index, r) in self.routes.iter().enumerate() {
            let path = r.path.get_ref().as_str();
            if !path.starts_with('/') {
                return Err(err(
                    r.path.span(),
                    "path",
                    format!("route path `{path}` must start with `/`"),
                ));
            }
            if seen.contains(&path) {
                return Err(err(
                    r.path.span(),
                    "path",
                    format!("route path `{path}` is configured twice"),
                ));
            }
            seen.push(path);
            for (key, alg, name) in [
                (
                    &r.publisher_jwt_key,
                    &r.publisher_jwt_alg,
                    "publisher_jwt_key",
                ),
                (
                    &r.subscriber_jwt_key,
                    &r.subscriber_jwt_alg,
                    "subscriber_jwt_key",
                ),
            ] {
                if let Some(key) = key {
                    if let Err(why) =
                        crate::auth::Verifier::from_config(alg.get_ref(), key.get_ref())
                    {
                        return Err(err(
                            key.span(),
                            name,
                            format!("route {path}: {why} (algorithm {})", alg.get_ref()),
                        ));
                    }
                }
            }
            if let Err(why) = crate::auth::route::check_user_topics(&r.user_topics) {
                return Err(err(
                    r.path.span(),
                    "user_topics",
                    format!("route {path}: {why}"),
                ));
            }
            if r.kind == RouteKind::Command {
                if let Err(why) = crate::command::check(r) {
                    return Err(ConfigError {
                        file: file.to_string(),
                        line: lines.route_key(index, "command"),
                        key: Some("command".into()),
                        message: format!("route {path}: {why}"),
                    });
                }
            }
            let n = self.server.processes;
            if r.kind == RouteKind::Command
                && r.mode == crate::command::Mode::Shared
                && r.topic.is_some()
                && n > 1
            {
                return Err(err(
                    r.path.span(),
                    "path",
                    format!(
                        "route {path}: a shared command with `topic` would run in each of the {n} \
                         processes ([server] processes) and publish every event {n} times; drop \
                         `topic` (each process then feeds its own streams), or publish from one \
                         program with `fastsse publish`"
                    ),
                ));
            }
            if let Some(token) = &r.publish_token {
                if token.trim().is_empty() {
                    return Err(ConfigError {
                        file: file.to_string(),
                        line: lines.route_key(index, "publish_token"),
                        key: Some("publish_token".into()),
                        message: format!(
                            "route {path}: an empty publish_token would let anyone publish; \
                             set a token or remove the line"
                        ),
                    });
                }
            }
        }
        let topic_routes: Vec<&RouteConfig> =
            self.routes.iter().filter(|r| r.has_journal()).collect();
        for (i, a) in topic_routes.iter().enumerate() {
            if let Some(b) = topic_routes[..i]
                .iter()
                .find(|b| b.journal_name() == a.journal_name())
            {
                return Err(err(
                    a.path.span(),
                    "path",
                    format!(
                        "topics routes {} and {} would share the journal folder `{}`",
                        b.path.get_ref(),
                        a.path.get_ref(),
                        a.journal_name()
                    ),
                ));
            }
        }
        if self.journal.backend == JournalBackend::Redis {
            let line = lines.key("journal", "backend");
            let url_err = |line: Option<usize>, message: String| ConfigError {
                file: file.to_string(),
                line,
                key: Some("journal.url".into()),
                message,
            };
            match &self.journal.url {
                None => {
                    return Err(url_err(
                        line,
                        "backend = \"redis\" needs url = \"redis://host:6379/0\"".into(),
                    ))
                }
                #[cfg(feature = "redis")]
                Some(url) => {
                    if let Err(e) = crate::hub::redis::check_url(url.get_ref()) {
                        return Err(url_err(Some(line_of(text, url.span().start)), e));
                    }
                }
                #[cfg(not(feature = "redis"))]
                Some(_) => {
                    return Err(url_err(
                        line,
                        "this fastsse was built without Redis (cargo feature `redis`): use backend = \"local\" or a build with it".into(),
                    ))
                }
            }
        }
        if self.server.max_connections < self.server.max_streams {
            return Err(ConfigError {
                file: file.to_string(),
                line: lines
                    .key("server", "max_connections")
                    .or_else(|| lines.key("server", "max_streams")),
                key: Some("server.max_connections".into()),
                message: format!(
                    "max_connections ({}) must be at least max_streams ({}): each stream needs a connection",
                    self.server.max_connections, self.server.max_streams
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_default() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.routes, default_routes());
        assert_eq!(c.stream.heartbeat, Duration::from_secs(15));
        assert_eq!(c.server.max_streams, 10_000);
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../../conf/fastsse.toml");
        let c = Config::parse(text, "conf/fastsse.toml").unwrap();
        assert!(!c.server.listen.is_empty());
        assert!(c.routes.len() >= 3);
    }

    #[test]
    fn a_topic_command_under_several_processes_is_refused_with_the_reason() {
        let text = |processes: usize| {
            format!(
                "[server]\nprocesses = {processes}\n\n[[route]]\npath = \"/p\"\ntype = \"command\"\n\
                 command = [\"/bin/cat\"]\ntopic = \"prices\"\n"
            )
        };
        assert!(Config::parse(&text(1), "t.toml").is_ok());
        let e = Config::parse(&text(4), "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("t.toml:5") && e.contains("every event 4 times"),
            "{e}"
        );
        let e = Config::parse("[server]\nprocesses = 0\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("processes"), "{e}");
    }

    #[test]
    fn full_config() {
        let text = r#"
[server]
listen = ["unix:/tmp/x.sock", "127.0.0.1:9000"]
socket_mode = "0600"
max_streams = 5
max_connections = 6

[stream]
heartbeat = "500ms"
retry = 2
max_lifetime = "4m"

[[route]]
path = "/t"
type = "clock"
interval = "250ms"
"#;
        let c = Config::parse(text, "t.toml").unwrap();
        assert_eq!(
            c.server.listen,
            vec![
                ListenAddr::Unix("/tmp/x.sock".into()),
                ListenAddr::Tcp("127.0.0.1:9000".into())
            ]
        );
        assert_eq!(c.server.socket_mode, Some(0o600));
        assert_eq!(c.stream.heartbeat, Duration::from_millis(500));
        assert_eq!(c.stream.retry, Duration::from_secs(2));
        assert_eq!(c.stream.max_lifetime, Some(Duration::from_secs(240)));
        assert_eq!(c.routes[0].kind, RouteKind::Clock);
        assert_eq!(c.routes[0].interval, Duration::from_millis(250));
    }

    fn error_of(text: &str) -> ConfigError {
        Config::parse(text, "bad.toml").unwrap_err()
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = error_of("[server]\n\nmax_streams = 0\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("max_streams")));
        assert!(
            e.to_string().starts_with("bad.toml:3: key `max_streams`: "),
            "{e}"
        );

        let e = error_of("[stream]\nheartbeat = \"10 parsecs\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("heartbeat")));
        assert!(e.message.contains("unit"), "{e}");

        let one = Config::parse("[server]\nlisten = \"unix:/tmp/one.sock\"\n", "t").unwrap();
        assert_eq!(
            one.server.listen,
            vec![ListenAddr::Unix(PathBuf::from("/tmp/one.sock"))]
        );
        let e = error_of("[server]\nlisten = [\"nowhere\"]\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("listen")));
        assert!(e.to_string().contains("`nowhere` is neither"), "{e}");
        let e = error_of("[server]\nlisten = 9000\n");
        assert!(e.to_string().contains("or a list of them"), "{e}");

        let e = error_of("[server]\nmax_stream = 3\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("unknown field `max_stream`"), "{e}");

        let e = error_of("[[route]]\npath = \"/a\"\ntype = \"clock\"\n[[route]]\npath = \"/a\"\ntype = \"ping\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("path")));

        let e = error_of("[[route]]\npath = \"a\"\ntype = \"clock\"\n");
        assert_eq!(e.line, Some(2));

        let e = error_of("[[route]]\npath = \"/a\"\ntype = \"teleport\"\n");
        assert!(e.message.contains("teleport"), "{e}");

        let e = error_of("[server]\nmax_streams = 10\nmax_connections = 5\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("server.max_connections"))
        );

        let e = error_of("[server\n");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn checks_after_parsing_name_the_line_of_the_key_itself() {
        // Two routes with a publish_token: the empty one is the second, on line 9 (scanning
        // the text for `publish_token` found the first); a key in an inline table.
        let text = "[[route]]\npath = \"/a\"\ntype = \"topics\"\npublish_token = \"x\"\n\n\
                    [[route]]\npath = \"/b\"\ntype = \"topics\"\npublish_token = \" \"\n";
        let e = error_of(text);
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(9), Some("publish_token")),
            "{e}"
        );
        let e = error_of("server = { max_streams = 10, max_connections = 5 }\n");
        assert_eq!(e.line, Some(1), "{e}");
        let e = error_of("# max_connections = 1\n[server]\nmax_streams = 20000\n");
        assert_eq!(e.line, Some(3), "{e}");
        let e = error_of("# backend = \"redis\"\n[journal]\nbackend = \"redis\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("journal.url")),
            "{e}"
        );
    }

    #[test]
    fn cgi_hold_is_a_duration_zero_included() {
        let c = Config::parse("[cgi]\nhold = \"0s\"\n", "t").unwrap();
        assert_eq!(c.cgi.hold, Some(Duration::ZERO));
        let c = Config::parse("[cgi]\nhold = \"25s\"\n", "t").unwrap();
        assert_eq!(c.cgi.hold, Some(Duration::from_secs(25)));
        assert_eq!(Config::parse("", "t").unwrap().cgi.hold, None);
        let e = error_of("[cgi]\ndefault_route = \"/clock\"\nhold = \"briefly\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("hold")));
        assert!(e.message.contains("not a duration"), "{e}");
    }
}
