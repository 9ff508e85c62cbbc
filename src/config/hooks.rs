//! The hook keys every streaming route takes (`hook_url` or `hook_fastcgi` + `hook_script`,
//! the body, deadlines, the queue's bound): read and checked here, made into calls by
//! `crate::hooks`.

use std::time::Duration;

use serde::Deserialize;

use super::de::{de_opt_duration, de_positive, de_positive_duration};
use super::{ConfigError, RouteTable};

/// How the application gets a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`, lists as `topics[]=` (PHP's `$_POST`).
    #[default]
    Form,
    /// `application/json`.
    Json,
}

/// What the connect hook's silence means when `hook_connect_wait` passes (or the application
/// cannot be reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The stream is refused (an EventSource is told to come back later); its connect and a
    /// leave (`hook_timeout`) are still delivered when the application is back.
    #[default]
    Refuse,
    /// The stream opens; its connect is delivered when the application is back.
    Allow,
}

/// The hook keys of a route.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct HookConfig {
    /// `http://…` or `https://…`: calls are POSTed there.
    pub hook_url: Option<String>,
    /// `unix:/run/php/php8.2-fpm.sock` or `host:port`: calls are FastCGI requests to this
    /// pool, for `hook_script`.
    pub hook_fastcgi: Option<String>,
    /// The PHP script (absolute path, as php-fpm sees it) that gets `hook_fastcgi` calls.
    pub hook_script: Option<String>,
    /// `form` (PHP's `$_POST`; lists as `topics[]`) or `json`.
    pub hook_body: BodyFormat,
    /// Longest one attempt may take.
    #[serde(deserialize_with = "de_positive_duration")]
    pub hook_timeout: Duration,
    /// When set, a stream opens only after the application answered its connect (within
    /// this long): 2xx opens it, 401/403 refuses it with the application's answer.
    #[serde(deserialize_with = "de_opt_duration")]
    pub hook_connect_wait: Option<Duration>,
    /// What happens when `hook_connect_wait` passes without an answer: `refuse` or `allow`.
    pub hook_on_timeout: OnTimeout,
    /// Most bytes of calls held (waiting, and the room kept for open streams' leaves); a
    /// stream that would go past it is refused with 503, never dropped silently.
    #[serde(deserialize_with = "de_positive")]
    pub hook_queue_bytes: usize,
    /// Most calls in flight at once.
    #[serde(deserialize_with = "de_positive")]
    pub hook_concurrency: usize,
    /// Sent as `Authorization: Bearer <secret>` with every call.
    pub hook_secret: Option<String>,
    /// Also call the application for each publication the route takes (`event=publish`): at
    /// least once, after it is stored; a publish is refused (503, not stored) while the hook
    /// queue is full.
    pub hook_publish: bool,
    /// Count who is on each topic (in `/status` and `/metrics`).
    pub presence: bool,
    /// Publish each change of a topic's presence to this topic, as a `presence` event
    /// (implies `presence`).
    pub presence_topic: Option<String>,
    /// Name the users in `/status` and in presence events (else counts only).
    pub presence_users: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            hook_url: None,
            hook_fastcgi: None,
            hook_script: None,
            hook_body: BodyFormat::Form,
            hook_timeout: Duration::from_secs(5),
            hook_connect_wait: None,
            hook_on_timeout: OnTimeout::Refuse,
            hook_queue_bytes: 16 << 20,
            hook_concurrency: 4,
            hook_secret: None,
            hook_publish: false,
            presence: false,
            presence_topic: None,
            presence_users: false,
        }
    }
}

impl HookConfig {
    /// Whether hooks are on.
    pub fn enabled(&self) -> bool {
        self.hook_url.is_some() || self.hook_fastcgi.is_some()
    }

    /// Whether presence is counted.
    pub fn presence_on(&self) -> bool {
        self.presence || self.presence_topic.is_some()
    }

    /// One target, and everything it needs; no hook key without one.
    pub fn check(&self, t: &RouteTable) -> Result<(), ConfigError> {
        let path = t.path.get_ref();
        let refuse = |key: &str, why: &str| Err(t.refuse(key, format!("route {path}: {why}")));
        match (&self.hook_url, &self.hook_fastcgi, &self.hook_script) {
            (Some(_), Some(_), _) => {
                return refuse("hook_fastcgi", "set hook_url or hook_fastcgi, not both")
            }
            (None, Some(_), None) => {
                return refuse(
                    "hook_fastcgi",
                    "hook_fastcgi needs hook_script (the PHP file's path as php-fpm sees it)",
                )
            }
            (_, None, Some(_)) => return refuse("hook_script", "hook_script needs hook_fastcgi"),
            (_, Some(_), Some(s)) if !s.starts_with('/') => {
                return refuse("hook_script", "hook_script must be an absolute path")
            }
            (Some(u), None, _) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                return refuse("hook_url", "hook_url must be an http:// or https:// URL")
            }
            _ => {}
        }
        if !self.enabled() {
            let d = HookConfig::default();
            let set = [
                ("hook_body", self.hook_body != d.hook_body),
                ("hook_timeout", self.hook_timeout != d.hook_timeout),
                ("hook_connect_wait", self.hook_connect_wait.is_some()),
                ("hook_on_timeout", self.hook_on_timeout != d.hook_on_timeout),
                (
                    "hook_queue_bytes",
                    self.hook_queue_bytes != d.hook_queue_bytes,
                ),
                (
                    "hook_concurrency",
                    self.hook_concurrency != d.hook_concurrency,
                ),
                ("hook_secret", self.hook_secret.is_some()),
                ("hook_publish", self.hook_publish),
            ];
            if let Some((key, _)) = set.iter().find(|(_, s)| *s) {
                return refuse(key, "no hook target: set hook_url or hook_fastcgi");
            }
        }
        if self.presence_users && !self.presence_on() {
            return refuse(
                "presence_users",
                "presence_users needs presence = true (or presence_topic)",
            );
        }
        if self
            .presence_topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return refuse("presence_topic", "presence_topic is empty");
        }
        if self
            .hook_secret
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return refuse(
                "hook_secret",
                "an empty hook_secret proves nothing; set one or remove the line",
            );
        }
        Ok(())
    }
}
