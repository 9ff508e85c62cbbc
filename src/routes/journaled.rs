//! What the journaled kinds (topics, mercure, a command with a `topic`) share: their hub —
//! kept across a reload when it is stored in the same place, else opened — and the keys of
//! their authorization (tokens, cookie, origins, users), read and checked the same way for
//! every kind that takes them.

use std::sync::Arc;

use serde::Deserialize;

use super::{Build, BuildError};
use crate::auth::RouteAuth;
use crate::config::{ConfigError, RouteConfig, RouteTable};
use crate::hub::replay::ReplayBounds;
use crate::hub::{Hub, HubSettings};

/// The hub of route `r`: the one in `b.keep` (a reload) when it is stored in the same place,
/// else newly opened (blocking file I/O: config time only). Topics under `unretained_prefix`
/// are not kept for replay.
pub(super) fn hub(
    b: &Build,
    r: &RouteConfig,
    unretained_prefix: Option<String>,
) -> Result<Arc<Hub>, BuildError> {
    let path = r.path.get_ref();
    let storage = b.config.journal.storage_for(r);
    let kept = b.keep.iter().find_map(|o| match o.route.hub() {
        Some(hub) if &o.path == path && hub.location() == storage.location() => Some(hub.clone()),
        _ => None,
    });
    if let Some(hub) = kept {
        return Ok(hub);
    }
    let h = r.settings.hub().cloned().unwrap_or_default();
    let settings = HubSettings {
        history: ReplayBounds {
            events: h.history_events,
            bytes: h.history_bytes,
            age: h.history_age,
        },
        subscriber_queue: h.subscriber_queue,
        retry: b.config.stream.retry,
        publish_timeout: b.config.journal.lock_timeout,
        unretained_prefix,
        load_after: b.load_after,
    };
    Hub::open(path, storage, settings).map_err(|e| BuildError::Unavailable {
        reason: e.public_reason(),
        detail: format!("journal unavailable: {e}"),
    })
}

/// The authorization keys of a journaled route.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub(super) struct AuthConfig {
    /// The key publishers' tokens are checked with (HMAC secret, or a PEM public key or its
    /// path); on a mercure route without it every publish is refused.
    publisher_jwt_key: Option<toml::Spanned<String>>,
    /// The only algorithm accepted for publishers' tokens.
    publisher_jwt_alg: toml::Spanned<String>,
    /// The key subscribers' tokens are checked with; without it no subscriber is authorized
    /// for private updates.
    subscriber_jwt_key: Option<toml::Spanned<String>>,
    /// The only algorithm accepted for subscribers' tokens.
    subscriber_jwt_alg: toml::Spanned<String>,
    /// Audiences a token's `aud` may name; a token with an `aud` that names none of them is
    /// refused (401), and so is any token with `aud` when this is empty.
    jwt_audience: Vec<String>,
    /// The cookie holding a browser's token.
    cookie_name: String,
    /// Origins a publish may come from (a page of another site may not: CSRF guard).
    pub(super) publish_origins: Vec<String>,
    /// The FastCGI param naming the user the web server authenticated (`REMOTE_USER`, or one
    /// set from nginx `auth_request`); unset: no user is trusted.
    user_param: Option<String>,
    /// Topic templates with `{user}` (`user/{user}`) that only that user may read (and, on a
    /// `mercure` route, whose private updates that user receives).
    user_topics: Vec<String>,
    /// Most bytes of verified tokens kept, so a reconnecting subscriber's token is not checked
    /// (and its URL Pattern grants compiled) again: each counted as its length plus 16 KiB per
    /// pattern, kept until its exp or 5 minutes. 0 keeps none.
    token_cache_bytes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let hs256 = || toml::Spanned::new(0..0, "HS256".to_string());
        AuthConfig {
            publisher_jwt_key: None,
            publisher_jwt_alg: hs256(),
            subscriber_jwt_key: None,
            subscriber_jwt_alg: hs256(),
            jwt_audience: Vec::new(),
            cookie_name: "mercureAuthorization".into(),
            publish_origins: Vec::new(),
            user_param: None,
            user_topics: Vec::new(),
            token_cache_bytes: 16 << 20,
        }
    }
}

impl AuthConfig {
    /// Keys that are what their algorithm needs, and `user_topics` that hold `{user}`.
    pub(super) fn check(&self, t: &RouteTable) -> Result<(), ConfigError> {
        let path = t.path.get_ref();
        for (key, alg, name) in [
            (
                &self.publisher_jwt_key,
                &self.publisher_jwt_alg,
                "publisher_jwt_key",
            ),
            (
                &self.subscriber_jwt_key,
                &self.subscriber_jwt_alg,
                "subscriber_jwt_key",
            ),
        ] {
            if let Some(key) = key {
                if let Err(why) = crate::auth::Verifier::from_config(alg.get_ref(), key.get_ref()) {
                    let why = format!("route {path}: {why} (algorithm {})", alg.get_ref());
                    return Err(t.refuse(name, why));
                }
            }
        }
        if let Err(why) = crate::auth::route::check_user_topics(&self.user_topics) {
            return Err(t.refuse("user_topics", format!("route {path}: {why}")));
        }
        Ok(())
    }

    /// The rules these keys make (reads PEM key files: config time only).
    pub(super) fn rules(&self) -> Result<RouteAuth, BuildError> {
        fn key<'a>(
            k: &'a Option<toml::Spanned<String>>,
            alg: &'a toml::Spanned<String>,
        ) -> Option<(&'a str, &'a str)> {
            k.as_ref()
                .map(|k| (k.get_ref().as_str(), alg.get_ref().as_str()))
        }
        RouteAuth::new(crate::auth::route::AuthSettings {
            publisher_key: key(&self.publisher_jwt_key, &self.publisher_jwt_alg),
            subscriber_key: key(&self.subscriber_jwt_key, &self.subscriber_jwt_alg),
            jwt_audience: &self.jwt_audience,
            cookie_name: &self.cookie_name,
            publish_origins: &self.publish_origins,
            user_param: self.user_param.as_deref(),
            user_topics: &self.user_topics,
            token_cache_bytes: self.token_cache_bytes,
        })
        .map_err(BuildError::Invalid)
    }
}
