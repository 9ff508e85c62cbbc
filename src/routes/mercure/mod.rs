//! The `mercure` route: a Mercure hub speaking 0.x (as hub v0.24 and `symfony/mercure` speak
//! it) and 1.0 (access tokens from trusted issuers, `match` / `match_urlpattern`) on one topics
//! hub. This file routes a request and publishes: `POST` a form (`topic`…, `data`, `private`,
//! `id`, `type`, `retry`) with a publisher token; `OPTIONS` answers CORS preflights. Subscribing
//! (`GET`, `HEAD`, `QUERY`) is in `subscribe`, the subscriptions API in `subscriptions` (0.x)
//! and `subscriptions_v1`, the 1.0 settings in `issuers`, its matchers in `matchers`.

use std::sync::Arc;

use serde::Deserialize;

use super::journaled::{self, AuthConfig};
use super::{ready, settings, Answer, Build, BuildError, Cx, Kind, Route};
use crate::auth::RouteAuth;
use crate::config::de::de_positive;
use crate::config::{
    field_names, ConfigError, HubConfig, RouteConfig, RouteKind, RouteSettings, RouteTable,
};
use crate::hub::journal::Publication;
use crate::hub::Hub;
use crate::publish::{check_event_name, validate_topics};
use crate::request::{parse_form, Request};
use crate::response::{FullResponse, Response};

/// The response headers a cross-origin page may read: where a resumed stream started
/// (`Mercure-Last-Event-ID`, 0.x's `Last-Event-ID`), the `QUERY` body it takes, and how a
/// refusal asks for a token.
const EXPOSED: &str = "Mercure-Last-Event-ID, Last-Event-ID, Accept-Query, Link, WWW-Authenticate";

/// Longest publisher-chosen id.
const MAX_ID_BYTES: usize = 1024;

mod issuers;
mod matchers;
mod subscribe;
mod subscriptions;
mod subscriptions_v1;

/// The keys only a mercure route takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct MercureKeys {
    /// Most topics per subscription or publication.
    #[serde(deserialize_with = "de_positive")]
    max_topics: usize,
    /// Subscribers without a token are served public updates (else refused, 401).
    anonymous: bool,
    /// Origins (`https://app.example.com`) whose pages may subscribe and publish with
    /// credentials; `*` allows any origin without credentials.
    cors_origins: Vec<String>,
    /// Publish subscription events and serve the subscriptions API.
    subscriptions: bool,
}

impl Default for MercureKeys {
    fn default() -> Self {
        MercureKeys {
            max_topics: 16,
            anonymous: false,
            cors_origins: Vec::new(),
            subscriptions: false,
        }
    }
}

/// A mercure route's settings: its own keys, its hub, its authorization.
#[derive(Debug)]
struct MercureSettings {
    keys: MercureKeys,
    v1: issuers::V1Settings,
    hub: HubConfig,
    auth: AuthConfig,
    hooks: crate::config::HookConfig,
}

impl RouteSettings for MercureSettings {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn check(&self, t: &RouteTable, _: &crate::config::Config) -> Result<(), ConfigError> {
        self.auth.check(t)?;
        self.v1.check(t)
    }

    fn hub(&self) -> Option<&HubConfig> {
        Some(&self.hub)
    }

    fn hooks(&self) -> Option<&crate::config::HookConfig> {
        Some(&self.hooks)
    }

    fn describe(&self) -> String {
        "mercure hub".into()
    }
}

/// `type = "mercure"`: a Mercure hub (protocol as hub v0.24 speaks it): JWT authorization,
/// private updates, selectors and URI templates, CORS.
pub(super) struct MercureKind;

impl RouteKind for MercureKind {
    fn name(&self) -> &'static str {
        "mercure"
    }

    fn keys(&self) -> Vec<&'static str> {
        [
            field_names::<MercureKeys>(),
            field_names::<issuers::V1Keys>(),
            &["issuer"],
            field_names::<HubConfig>(),
            field_names::<AuthConfig>(),
            field_names::<crate::config::HookConfig>(),
        ]
        .concat()
    }

    fn read(&self, t: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(MercureSettings {
            keys: t.read()?,
            v1: issuers::V1Settings::read(t)?,
            hub: t.read()?,
            auth: t.read()?,
            hooks: t.read()?,
        }))
    }
}

impl Kind for MercureKind {
    /// Reads PEM key files: config time only.
    fn build(&self, b: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        let s = settings::<MercureSettings>(r)?;
        let path = r.path.get_ref();
        // Subscription events come and go with every connection: kept out of the replay
        // history, so that anonymous churn never pushes a real event out of it.
        let unretained = s
            .keys
            .subscriptions
            .then(|| format!("{path}/subscriptions/"));
        let hub = journaled::hub(b, r, unretained)?;
        let (issuers, identity) =
            s.v1.build(path, &b.config.journal.dir)
                .map_err(BuildError::Invalid)?;
        let base = identity.base.clone();
        Ok(Arc::new(Mercure {
            path: path.clone(),
            auth: Arc::new(s.auth.rules()?.with_issuers(issuers, identity)),
            conf: s.keys.clone(),
            hub,
            base,
        }))
    }
}

/// A `mercure` route: its path, keys, authorization and hub.
struct Mercure {
    path: String,
    conf: MercureKeys,
    auth: Arc<RouteAuth>,
    hub: Arc<Hub>,
    /// What `match_urlpattern` patterns and topics resolve against.
    base: url::Url,
}

impl Route for Mercure {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        let own = &self.path;
        let below = req.path.strip_prefix(own.as_str());
        if below.is_some_and(|rest| self.answers_below(rest)) {
            return Box::pin(async move { self.subscriptions(cx, req).await.into() });
        }
        let cors = self.cors(req);
        let answer: Answer<'a> = match req.method.as_str() {
            "OPTIONS" => ready(preflight(req, &cors)),
            "POST" => Box::pin(async move { self.publish(req).await.into() }),
            "GET" | "HEAD" | "QUERY" => Box::pin(async move { self.subscribe(cx, req).await }),
            other => ready(
                refuse(405, format!("{own} does not accept {other}"))
                    .with_header("Allow", "GET, HEAD, QUERY, POST, OPTIONS"),
            ),
        };
        Box::pin(async move {
            let mut response = answer.await;
            match &mut response {
                Response::Full(f) => f.headers.extend(cors),
                Response::Stream(s) => s.extra_headers.extend(cors),
            }
            response
        })
    }

    fn hub(&self) -> Option<&Arc<Hub>> {
        Some(&self.hub)
    }

    /// Starts refreshing the issuers' JWK Sets (fetched once already, while built); clears a
    /// publish hook a replaced route set (the hooks wrapper sets this config's).
    fn applied(&self) {
        self.hub.set_publish_hook(None);
        #[cfg(feature = "client")]
        for set in self.auth.key_sets() {
            crate::auth::jwks::start(set);
        }
    }

    fn who<'a>(&'a self, req: &'a Request) -> super::WhoAnswer<'a> {
        Box::pin(super::topics::who(&self.auth, req, self.asked_topics(req)))
    }

    /// The subscriptions API: `{hub}/subscriptions[/{topic}[/{subscriber}]]`.
    fn answers_below(&self, rest: &str) -> bool {
        rest.strip_prefix("/subscriptions")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl Mercure {
    /// CORS response headers for the request's `Origin`, if it is allowed.
    fn cors(&self, req: &Request) -> Vec<(String, String)> {
        let Some(origin) = req.header("Origin") else {
            return Vec::new();
        };
        let origins = &self.conf.cors_origins;
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        if crate::auth::origin_listed(origin.trim_end_matches('/'), origins) {
            vec![
                pair("Access-Control-Allow-Origin", origin),
                pair("Access-Control-Allow-Credentials", "true"),
                pair("Vary", "Origin"),
                pair("Access-Control-Expose-Headers", EXPOSED),
            ]
        } else if origins.iter().any(|o| o == "*") {
            vec![
                pair("Access-Control-Allow-Origin", "*"),
                pair("Access-Control-Expose-Headers", EXPOSED),
            ]
        } else {
            Vec::new()
        }
    }
}

/// A refusal; a 401 says how to authenticate (RFC 6750): a bare `Bearer` challenge when no
/// token came, `error="invalid_token"` when one did and does not verify.
fn refuse(status: u16, why: impl Into<String>) -> FullResponse {
    let why = why.into();
    if status != 401 {
        return FullResponse::text(status, why);
    }
    let missing = why.starts_with("no token") || why.starts_with("this hub needs a token");
    let challenge = if missing {
        "Bearer"
    } else {
        "Bearer error=\"invalid_token\""
    };
    FullResponse::text(status, why).with_header("WWW-Authenticate", challenge)
}

impl Mercure {
    /// `POST`: a publish form with a publisher token.
    async fn publish(&self, req: &Request) -> FullResponse {
        let m = self;
        let path = &m.path;
        let refused = |status: u16, why: String| {
            log::warn!(
                "req={} route={path} peer={}: publish refused ({status}): {why}",
                req.id,
                req.peer
            );
            refuse(status, why)
        };
        let claims = match m
            .auth
            .verified(req, crate::auth::access::Role::Publisher)
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return refused(401, crate::auth::AuthError::Missing.to_string()),
            Err((status, why)) => return refused(status, why),
        };
        let publication = match parse_update(req, m.conf.max_topics) {
            Ok(p) => p,
            Err(why) => return refused(400, why),
        };
        if let Err((status, why)) = RouteAuth::may_publish(&claims, &publication.topics) {
            return refused(status, why)
                .with_header("WWW-Authenticate", "Bearer error=\"insufficient_scope\"");
        }
        let public_id = publication.public_id.clone();
        let by = claims.subject.as_deref();
        match self.hub.publish_from_client(publication, by).await {
            Ok(seq) => FullResponse::text(200, public_id.unwrap_or_else(|| seq.to_string()))
                .with_header("Cache-Control", "no-cache"),
            Err(e) => super::topics::not_stored(e, req, path),
        }
    }
}

/// The `OPTIONS` preflight: allowed origins get the methods and headers a subscriber or a
/// publisher sends.
fn preflight(req: &Request, cors: &[(String, String)]) -> FullResponse {
    if cors.is_empty() {
        let why = match req.header("Origin") {
            Some(o) => format!("origin {o} is not in cors_origins"),
            None => "OPTIONS is for CORS preflight requests (no Origin)".into(),
        };
        return refuse(403, why);
    }
    FullResponse {
        status: 204,
        headers: vec![
            (
                "Access-Control-Allow-Methods".into(),
                "GET, HEAD, QUERY, POST, OPTIONS".into(),
            ),
            (
                "Access-Control-Allow-Headers".into(),
                "Authorization, Content-Type, Last-Event-ID, Cache-Control".into(),
            ),
            ("Access-Control-Max-Age".into(), "600".into()),
        ],
        body: bytes::Bytes::new(),
    }
}

/// Parses a Mercure publish form into a publication, or says what is wrong.
fn parse_update(req: &Request, max_topics: usize) -> Result<Publication, String> {
    let mime = req.var("CONTENT_TYPE").unwrap_or("");
    let mime = mime.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(format!(
            "a publish is a form: Content-Type application/x-www-form-urlencoded, not `{mime}`"
        ));
    }
    let body = std::str::from_utf8(&req.body).map_err(|_| "the form is not UTF-8".to_string())?;
    let mut p = Publication::default();
    for (k, v) in parse_form(body) {
        match k.as_str() {
            "topic" => p.topics.push(v),
            "data" => p.data = v,
            "private" => p.private = true,
            "id" => p.public_id = Some(v),
            "type" => p.event = Some(v),
            "retry" => {
                p.retry_ms =
                    Some(v.parse().map_err(|_| {
                        format!("retry must be a number of milliseconds, not `{v}`")
                    })?)
            }
            _ => {}
        }
    }
    validate_topics(&p.topics, max_topics).map_err(|r| r.reason)?;
    check_event_name(p.event.as_deref()).map_err(|r| r.reason)?;
    if p.event.as_deref() == Some("mercure") {
        // Mercure 1.0 sends its subscription events as `event: mercure`.
        return Err("\"type\" field uses the reserved value \"mercure\"".into());
    }
    if let Some(id) = &p.public_id {
        if id.starts_with('#') {
            return Err("an id must not start with # (reserved)".into());
        }
        if id.is_empty() || id.len() > MAX_ID_BYTES || id.contains(['\r', '\n', '\0']) {
            return Err(format!(
                "an id must be 1 to {MAX_ID_BYTES} bytes with no CR, LF or NUL"
            ));
        }
    }
    Ok(p)
}
