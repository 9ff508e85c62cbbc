//! What a config must satisfy beyond its types, checked once it parsed: route paths, what each
//! route's kind checks of its own settings ([`super::RouteSettings::check`]), journals that
//! routes would share, the Redis URL, and limits that contradict each other. Every refusal
//! names the file, the line where the key is written and the key.

use std::ops::Range;

use super::{line_of, Config, ConfigError, JournalBackend, RouteConfig, RouteTable};

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
    /// Checks what the types cannot say; `text` and `file` locate the refusal, `tables` are
    /// the `[[route]]` tables written in it (none: the built-in routes).
    pub(super) fn validate(
        &self,
        text: &str,
        file: &str,
        tables: &[RouteTable],
    ) -> Result<(), ConfigError> {
        let r = Refusals {
            text,
            file,
            lines: KeyLines::of(text),
        };
        let mut seen: Vec<&str> = Vec::new();
        for (route, table) in self.routes.iter().zip(tables) {
            let path = route.path.get_ref().as_str();
            if !path.starts_with('/') {
                let why = format!("route path `{path}` must start with `/`");
                return Err(table.refuse("path", why));
            }
            if seen.contains(&path) {
                let why = format!("route path `{path}` is configured twice");
                return Err(table.refuse("path", why));
            }
            seen.push(path);
            route.settings.check(table, self)?;
            if let Some(h) = route.settings.hooks() {
                h.check(table)?;
                if h.presence_topic.is_some() && route.settings.hub().is_none() {
                    let why = format!(
                        "route {path}: presence_topic needs the route's journal (a command route needs a topic)"
                    );
                    return Err(table.refuse("presence_topic", why));
                }
                if h.presence_topic.is_some() && self.server.processes > 1 {
                    let why = format!(
                        "route {path}: presence_topic would publish each worker's own counts under [server] processes = {}; read /status (it sums the workers) instead",
                        self.server.processes
                    );
                    return Err(table.refuse("presence_topic", why));
                }
            }
        }
        self.check_shared_journals(&r)?;
        self.check_backend(&r)?;
        self.check_limits(&r)
    }

    /// Two routes whose journals (or hook journals) would be one folder.
    fn check_shared_journals(&self, r: &Refusals) -> Result<(), ConfigError> {
        let hooked = |c: &&RouteConfig| {
            c.settings
                .hooks()
                .is_some_and(|h| h.hook_url.is_some() || h.hook_fastcgi.is_some())
        };
        self.no_shared_folder(r, hooked, "routes", ".hooks", "hook journal folder")?;
        let journaled = |c: &&RouteConfig| c.has_journal();
        self.no_shared_folder(r, journaled, "topics routes", "", "journal folder")
    }

    /// Among the routes `which` selects, two whose `journal_name` + `suffix` would be one
    /// folder (`what`).
    fn no_shared_folder(
        &self,
        r: &Refusals,
        which: impl Fn(&&RouteConfig) -> bool,
        kind: &str,
        suffix: &str,
        what: &str,
    ) -> Result<(), ConfigError> {
        let routes: Vec<&RouteConfig> = self.routes.iter().filter(which).collect();
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[..i]
                .iter()
                .find(|b| b.journal_name() == a.journal_name())
            {
                let why = format!(
                    "{kind} {} and {} would share the {what} `{}{suffix}`",
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
