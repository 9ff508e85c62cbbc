//! `[[route]]` tables: the path, the kind (`type = "…"`) and the kind's own settings. The
//! kinds live in `crate::routes`, one module each: a kind says which keys its table takes and
//! reads them into its own struct. This module finds the tables, refuses a key the kind does
//! not take, and hands each table to its kind; it knows no kind itself.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::table::RouteTable;
use super::{de_positive, de_positive_duration, line_of, Config, ConfigError};

/// A kind of route, as `type = "…"` names it.
pub trait RouteKind: Send + Sync + 'static {
    /// The name written in `type = "…"`.
    fn name(&self) -> &'static str;
    /// The keys its table takes beside `path` and `type`; any other is refused.
    fn keys(&self) -> Vec<&'static str>;
    /// Reads its settings from its table (each struct with [`RouteTable::read`]).
    fn read(&self, table: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError>;
}

/// A route's settings as its kind read them.
pub trait RouteSettings: fmt::Debug + Send + Sync + Any {
    /// For the kind that made them: `settings.as_any().downcast_ref::<Its>()`.
    fn as_any(&self) -> &dyn Any;
    /// What its types cannot say, with the whole config at hand; refusals through
    /// [`RouteTable::refuse`] name the line of the key.
    fn check(&self, table: &RouteTable, config: &Config) -> Result<(), ConfigError> {
        let _ = (table, config);
        Ok(())
    }
    /// The history and queue of the route's hub, when it keeps a journal.
    fn hub(&self) -> Option<&HubConfig> {
        None
    }
    /// Its hook keys, where the route streams (topics, mercure, command).
    fn hooks(&self) -> Option<&super::HookConfig> {
        None
    }
    /// Most topics per publication, where the route takes publications.
    fn max_topics(&self) -> Option<usize> {
        None
    }
    /// What it serves, in a few words (`fastsse check-config` lists the routes).
    fn describe(&self) -> String;
}

/// The kinds a config may use (`crate::routes::kinds()`).
pub type Kinds = [&'static dyn RouteKind];

/// One `[[route]]`.
#[derive(Clone)]
pub struct RouteConfig {
    /// Request path, starting with `/`.
    pub path: toml::Spanned<String>,
    /// What the route serves.
    pub kind: &'static dyn RouteKind,
    /// Its kind's settings.
    pub settings: Arc<dyn RouteSettings>,
}

impl fmt::Debug for RouteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteConfig")
            .field("path", self.path.get_ref())
            .field("type", &self.kind.name())
            .field("settings", &self.settings)
            .finish()
    }
}

impl RouteConfig {
    /// Its settings as `T`, when its kind's are `T`.
    pub fn settings<T: 'static>(&self) -> Option<&T> {
        self.settings.as_any().downcast_ref()
    }

    /// Whether the route keeps a journal (`topics`, `mercure`, a `command` with a `topic`).
    pub fn has_journal(&self) -> bool {
        self.settings.hub().is_some()
    }

    /// The folder name of this route's journal: the path without slashes (`/events` -> `events`).
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

/// The hub of a journaled route: the history kept for replay, the subscriber queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct HubConfig {
    /// Most events kept for Last-Event-ID replay.
    #[serde(deserialize_with = "de_positive")]
    pub history_events: usize,
    /// Oldest event kept for replay.
    #[serde(deserialize_with = "de_positive_duration")]
    pub history_age: Duration,
    /// Most bytes of events kept for replay (their encoded size).
    #[serde(deserialize_with = "de_positive")]
    pub history_bytes: usize,
    /// Events queued per subscriber before it is cut off as too slow.
    #[serde(deserialize_with = "de_positive")]
    pub subscriber_queue: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_events: 10_000,
            history_age: Duration::from_secs(3600),
            history_bytes: 64 << 20,
            subscriber_queue: 1024,
        }
    }
}

/// The built-in routes: `/clock`, `/ping`, `/status`, `/events` (topics).
const EMBEDDED: &str = r#"
[[route]]
path = "/clock"
type = "clock"

[[route]]
path = "/ping"
type = "ping"

[[route]]
path = "/status"
type = "status"

[[route]]
path = "/events"
type = "topics"
"#;

/// The `[[route]]` tables of a parsed config text: `None` when it has no `route` key.
pub(super) fn tables<'a>(
    doc: &'a toml_edit::ImDocument<&'a str>,
    text: &'a str,
    file: &'a str,
) -> Result<Option<Vec<RouteTable<'a>>>, ConfigError> {
    let Some(item) = doc.get("route") else {
        return Ok(None);
    };
    let not_tables = || ConfigError {
        file: file.to_string(),
        line: item.span().map(|s| line_of(text, s.start)),
        key: Some("route".into()),
        message: "routes are [[route]] tables (or a list of inline tables)".into(),
    };
    let mut out = Vec::new();
    if let Some(array) = item.as_array_of_tables() {
        for t in array.iter() {
            out.push(RouteTable::new(text, file, t, t.span())?);
        }
    } else if let Some(array) = item.as_array() {
        for v in array.iter() {
            let t = v.as_inline_table().ok_or_else(not_tables)?;
            out.push(RouteTable::new(text, file, t, v.span())?);
        }
    } else {
        return Err(not_tables());
    }
    Ok(Some(out))
}

/// The route of `table`, read by its kind among `kinds`.
pub(super) fn read(table: &RouteTable, kinds: &Kinds) -> Result<RouteConfig, ConfigError> {
    let name = table.kind.get_ref();
    let Some(kind) = kinds.iter().find(|k| k.name() == name) else {
        let names: Vec<String> = kinds.iter().map(|k| format!("`{}`", k.name())).collect();
        let why = format!(
            "unknown route type `{name}`, expected one of {}",
            names.join(", ")
        );
        return Err(table.refuse("type", why));
    };
    let path = table.path.get_ref();
    let allowed = kind.keys();
    for (key, _) in table.keys() {
        if key == "path" || key == "type" || allowed.contains(&key.as_str()) {
            continue;
        }
        let why = if allowed.is_empty() {
            format!("route {path}: a {name} route takes no key but path and type")
        } else {
            format!(
                "route {path}: a {name} route does not take `{key}` (it takes: path, type, {})",
                allowed.join(", ")
            )
        };
        return Err(table.refuse(&key, why));
    }
    Ok(RouteConfig {
        path: table.path.clone(),
        kind: *kind,
        settings: kind.read(table)?,
    })
}

/// The built-in routes, read by `kinds`.
pub(super) fn embedded(kinds: &Kinds) -> Vec<RouteConfig> {
    let doc = toml_edit::ImDocument::parse(EMBEDDED).expect("the embedded routes parse");
    let tables = tables(&doc, EMBEDDED, "<embedded>")
        .expect("the embedded routes are tables")
        .unwrap_or_default();
    tables
        .iter()
        .map(|t| {
            let mut r = read(t, kinds).expect("the embedded routes are valid");
            // Not written in the file being read.
            r.path = toml::Spanned::new(0..0, r.path.into_inner());
            r
        })
        .collect()
}
