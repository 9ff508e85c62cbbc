//! What a config must satisfy beyond its types, checked once it parsed: route paths, each
//! route's keys (JWT keys for their algorithm, `user_topics`, a command's program, a publish
//! token), journals that routes would share, the Redis URL, and limits that contradict each
//! other. Every refusal names the file, the line where the key is written and the key.

use std::ops::Range;

use super::{line_of, Config, ConfigError, JournalBackend, RouteConfig, RouteKind};

/// Where keys are written in a config text (the spans toml's own parser keeps).
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
        self.line_in(self.route(index)?, key)
    }

    fn route(&self, index: usize) -> Option<&toml_edit::Table> {
        self.doc
            .as_ref()?
            .get("route")?
            .as_array_of_tables()?
            .get(index)
    }

    /// The keys written in the `index`th `[[route]]`, with their lines.
    fn route_keys(&self, index: usize) -> Vec<(String, Option<usize>)> {
        let Some(table) = self.route(index) else {
            return Vec::new();
        };
        table
            .iter()
            .map(|(k, _)| (k.to_string(), self.line_in(table, k)))
            .collect()
    }
}

/// The text being checked, to make refusals with.
struct Refusals<'a> {
    text: &'a str,
    file: &'a str,
    lines: KeyLines<'a>,
}

impl Refusals<'_> {
    /// A refusal of `key`, written at `span`.
    fn at(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        self.on_line(Some(line_of(self.text, span.start)), key, message)
    }

    /// A refusal of `key`, written on `line` (when known).
    fn on_line(&self, line: Option<usize>, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line,
            key: Some(key.to_string()),
            message,
        }
    }
}

impl Config {
    /// Checks what the types cannot say; `text` and `file` locate the refusal.
    pub(super) fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let r = Refusals {
            text,
            file,
            lines: KeyLines::of(text),
        };
        let mut seen: Vec<&str> = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            let path = route.path.get_ref().as_str();
            if !path.starts_with('/') {
                let why = format!("route path `{path}` must start with `/`");
                return Err(r.at(route.path.span(), "path", why));
            }
            if seen.contains(&path) {
                let why = format!("route path `{path}` is configured twice");
                return Err(r.at(route.path.span(), "path", why));
            }
            seen.push(path);
            self.check_route(&r, index, route)?;
        }
        self.check_shared_journals(&r)?;
        self.check_backend(&r)?;
        self.check_limits(&r)
    }

    /// One route's keys.
    fn check_route(
        &self,
        r: &Refusals,
        index: usize,
        route: &RouteConfig,
    ) -> Result<(), ConfigError> {
        let path = route.path.get_ref();
        let allowed = route.kind.keys();
        for (key, line) in r.lines.route_keys(index) {
            if key == "path" || key == "type" || allowed.contains(&key.as_str()) {
                continue;
            }
            let kind = route.kind.name();
            let why = if allowed.is_empty() {
                format!("route {path}: a {kind} route takes no key but path and type")
            } else {
                format!(
                    "route {path}: a {kind} route does not take `{key}` (it takes: path, type, {})",
                    allowed.join(", ")
                )
            };
            return Err(r.on_line(line, &key, why));
        }
        for (key, alg, name) in [
            (
                &route.publisher_jwt_key,
                &route.publisher_jwt_alg,
                "publisher_jwt_key",
            ),
            (
                &route.subscriber_jwt_key,
                &route.subscriber_jwt_alg,
                "subscriber_jwt_key",
            ),
        ] {
            if let Some(key) = key {
                if let Err(why) = crate::auth::Verifier::from_config(alg.get_ref(), key.get_ref()) {
                    let why = format!("route {path}: {why} (algorithm {})", alg.get_ref());
                    return Err(r.at(key.span(), name, why));
                }
            }
        }
        if let Err(why) = crate::auth::route::check_user_topics(&route.user_topics) {
            return Err(r.at(
                route.path.span(),
                "user_topics",
                format!("route {path}: {why}"),
            ));
        }
        if route.kind == RouteKind::Command {
            let program = (&route.command, route.working_dir.as_deref());
            if let Err(why) = crate::command::check(program.0, program.1, route.user.as_deref()) {
                let line = r.lines.route_key(index, "command");
                return Err(r.on_line(line, "command", format!("route {path}: {why}")));
            }
            if route.topic.is_some() && route.mode == crate::command::Mode::PerStream {
                let why = "topic is for shared commands (a per-stream program serves one browser)";
                let line = r.lines.route_key(index, "topic");
                return Err(r.on_line(line, "topic", format!("route {path}: {why}")));
            }
        }
        let n = self.server.processes;
        if route.kind == RouteKind::Command
            && route.mode == crate::command::Mode::Shared
            && route.topic.is_some()
            && n > 1
        {
            let why = format!(
                "route {path}: a shared command with `topic` would run in each of the {n} \
                 processes ([server] processes) and publish every event {n} times; drop \
                 `topic` (each process then feeds its own streams), or publish from one \
                 program with `fastsse publish`"
            );
            return Err(r.at(route.path.span(), "path", why));
        }
        if route
            .publish_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            let why = format!(
                "route {path}: an empty publish_token would let anyone publish; set a token or \
                 remove the line"
            );
            let line = r.lines.route_key(index, "publish_token");
            return Err(r.on_line(line, "publish_token", why));
        }
        Ok(())
    }

    /// Two routes whose journals would be one folder.
    fn check_shared_journals(&self, r: &Refusals) -> Result<(), ConfigError> {
        let journaled: Vec<&RouteConfig> = self.routes.iter().filter(|r| r.has_journal()).collect();
        for (i, a) in journaled.iter().enumerate() {
            if let Some(b) = journaled[..i]
                .iter()
                .find(|b| b.journal_name() == a.journal_name())
            {
                let why = format!(
                    "topics routes {} and {} would share the journal folder `{}`",
                    b.path.get_ref(),
                    a.path.get_ref(),
                    a.journal_name()
                );
                return Err(r.at(a.path.span(), "path", why));
            }
        }
        Ok(())
    }

    /// `backend = "redis"` needs a usable URL (and a build with Redis).
    fn check_backend(&self, r: &Refusals) -> Result<(), ConfigError> {
        if self.journal.backend != JournalBackend::Redis {
            return Ok(());
        }
        let line = r.lines.key("journal", "backend");
        match &self.journal.url {
            None => Err(r.on_line(
                line,
                "journal.url",
                "backend = \"redis\" needs url = \"redis://host:6379/0\"".into(),
            )),
            #[cfg(feature = "redis")]
            Some(url) => match crate::hub::redis::check_url(url.get_ref()) {
                Ok(()) => Ok(()),
                Err(e) => Err(r.at(url.span(), "journal.url", e)),
            },
            #[cfg(not(feature = "redis"))]
            Some(_) => Err(r.on_line(
                line,
                "journal.url",
                "this fastsse was built without Redis (cargo feature `redis`): use backend = \
                 \"local\" or a build with it"
                    .into(),
            )),
        }
    }

    /// Limits that contradict each other.
    fn check_limits(&self, r: &Refusals) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.max_connections < s.max_streams {
            let line = r
                .lines
                .key("server", "max_connections")
                .or_else(|| r.lines.key("server", "max_streams"));
            let why = format!(
                "max_connections ({}) must be at least max_streams ({}): each stream needs a \
                 connection",
                s.max_connections, s.max_streams
            );
            return Err(r.on_line(line, "server.max_connections", why));
        }
        Ok(())
    }
}
