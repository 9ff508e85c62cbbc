//! The `topics` route: `GET` subscribes (who may read which topics, the stream from the hub);
//! `POST` publishes: who may publish (a page of another site may not; then the
//! `publish_token` or a publisher JWT), the body parsed, the journal's answer — 200 with the
//! id only once stored, 500/503 with a reason when not.

use std::sync::Arc;

use serde::Deserialize;

use super::journaled::{self, AuthConfig};
use super::{not_allowed, ready, settings, Answer, Build, BuildError, Cx, Kind, Route};
use crate::auth::access::Role;
use crate::auth::RouteAuth;
use crate::config::de::de_positive;
use crate::config::{
    field_names, ConfigError, HubConfig, RouteConfig, RouteKind, RouteSettings, RouteTable,
};
use crate::hub::{Hub, HubError, Interest, Resume};
use crate::publish::{parse_publication, token_matches, validate_topics};
use crate::request::Request;
use crate::response::{FullResponse, Response};

/// The publishing keys of a topics route (and of a command's topic).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub(super) struct Publishing {
    /// When set, publishing needs `Authorization: Bearer <token>`.
    publish_token: Option<String>,
    /// Most topics per subscription or publication.
    #[serde(deserialize_with = "de_positive")]
    pub(super) max_topics: usize,
}

impl Default for Publishing {
    fn default() -> Self {
        Publishing {
            publish_token: None,
            max_topics: 16,
        }
    }
}

impl Publishing {
    /// A `publish_token` that is empty would let anyone publish.
    pub(super) fn check(&self, t: &RouteTable) -> Result<(), ConfigError> {
        if self
            .publish_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            let why = format!(
                "route {}: an empty publish_token would let anyone publish; set a token or \
                 remove the line",
                t.path.get_ref()
            );
            return Err(t.refuse("publish_token", why));
        }
        Ok(())
    }
}

/// A topics route's settings: publishing, its hub, its authorization.
#[derive(Debug)]
struct TopicsSettings {
    publishing: Publishing,
    hub: HubConfig,
    auth: AuthConfig,
    hooks: crate::config::HookConfig,
}

impl RouteSettings for TopicsSettings {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn check(&self, t: &RouteTable, _: &crate::config::Config) -> Result<(), ConfigError> {
        self.publishing.check(t)?;
        self.auth.check(t)
    }

    fn hub(&self) -> Option<&HubConfig> {
        Some(&self.hub)
    }

    fn hooks(&self) -> Option<&crate::config::HookConfig> {
        Some(&self.hooks)
    }

    fn max_topics(&self) -> Option<usize> {
        Some(self.publishing.max_topics)
    }

    fn describe(&self) -> String {
        "topics".into()
    }
}

/// `type = "topics"`: publish/subscribe topics with replay (`GET ?topic=` subscribes, `POST`
/// publishes).
pub(super) struct TopicsKind;

impl RouteKind for TopicsKind {
    fn name(&self) -> &'static str {
        "topics"
    }

    fn keys(&self) -> Vec<&'static str> {
        [
            field_names::<Publishing>(),
            field_names::<HubConfig>(),
            field_names::<AuthConfig>(),
            field_names::<crate::config::HookConfig>(),
        ]
        .concat()
    }

    fn read(&self, t: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(TopicsSettings {
            publishing: t.read()?,
            hub: t.read()?,
            auth: t.read()?,
            hooks: t.read()?,
        }))
    }
}

impl Kind for TopicsKind {
    fn build(&self, b: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        let s = settings::<TopicsSettings>(r)?;
        let hub = journaled::hub(b, r, None)?;
        Ok(Arc::new(Topics {
            rules: Rules::new(r.path.get_ref(), &s.publishing, &s.auth)?,
            hub,
        }))
    }
}

/// Who may read and publish on a hub's topics, and how many at once: a topics route's, a
/// command's topic's.
pub(super) struct Rules {
    path: String,
    publishing: Publishing,
    origins: Vec<String>,
    auth: Arc<RouteAuth>,
}

impl Rules {
    /// The rules of the route at `path` (reads PEM key files: config time only).
    pub(super) fn new(
        path: &str,
        publishing: &Publishing,
        auth: &AuthConfig,
    ) -> Result<Rules, BuildError> {
        Ok(Rules {
            path: path.to_string(),
            publishing: publishing.clone(),
            origins: auth.publish_origins.clone(),
            auth: Arc::new(auth.rules()?),
        })
    }

    /// The path of the route they guard.
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// Who a stream of `req` is for: `topics`, the token's `sub` (else the web server's
    /// user) and the token's expiry.
    pub(super) async fn who(&self, req: &Request, topics: Vec<String>) -> super::Who {
        who(&self.auth, req, topics).await
    }
}

/// Who a stream of `req` is for under `auth` (see [`Rules::who`]); the token is checked off the
/// runtime thread unless it was verified before (the route's own check, a moment ago).
pub(super) async fn who(auth: &Arc<RouteAuth>, req: &Request, topics: Vec<String>) -> super::Who {
    let claims = auth.verified(req, Role::Subscriber).await.ok().flatten();
    let expires = claims.as_ref().and_then(|c| c.expires);
    let user = claims.and_then(|c| c.subject).or_else(|| auth.user(req));
    super::Who {
        topics,
        user,
        expires,
    }
}

/// A topics route: its rules and its hub.
struct Topics {
    rules: Rules,
    hub: Arc<Hub>,
}

impl Route for Topics {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        match req.method.as_str() {
            "POST" => Box::pin(async move { self.rules.publish(&self.hub, req).await.into() }),
            "GET" | "HEAD" => Box::pin(self.subscribe(cx, req)),
            _ => ready(not_allowed(&self.rules.path, req, "GET, HEAD, POST")),
        }
    }

    fn hub(&self) -> Option<&Arc<Hub>> {
        Some(&self.hub)
    }

    /// Clears a publish hook a replaced route set (the hooks wrapper sets this config's).
    fn applied(&self) {
        self.hub.set_publish_hook(None);
    }

    fn who<'a>(&'a self, req: &'a Request) -> super::WhoAnswer<'a> {
        Box::pin(self.rules.who(req, req.query_values("topic")))
    }
}

impl Topics {
    /// `GET` (or `HEAD`): authorise the topics, then a stream of them from the hub (with the
    /// replay after `Last-Event-ID`).
    async fn subscribe(&self, cx: &Cx, req: &Request) -> Response {
        let path = &self.rules.path;
        let topics = req.query_values("topic");
        if let Err(refusal) = validate_topics(&topics, self.rules.publishing.max_topics) {
            return FullResponse::from(refusal).into();
        }
        if let Err((status, why)) = self.rules.auth.may_subscribe(req, &topics).await {
            log::info!(
                "req={} route={path} peer={}: subscription refused ({status}): {why}",
                req.id,
                req.peer
            );
            return FullResponse::text(status, why).into();
        }
        if req.is_head() {
            return crate::streams::head_only();
        }
        // The slot first: subscribing registers the stream with the hub.
        let Some(permit) = cx.streams.try_acquire(cx.config()) else {
            return cx.streams.refuse_full(cx.config(), path, req);
        };
        let resume = Resume::parse(req.last_event_id().as_deref());
        let source = self
            .hub
            .subscribe(Interest::topics(topics), resume)
            .marked();
        cx.streams
            .open(cx.config(), path, Box::new(source), permit, req)
    }
}

impl Rules {
    /// `POST` to a topics route: authorise, parse, journal, answer with the id.
    pub(super) async fn publish(&self, hub: &Hub, req: &Request) -> FullResponse {
        let (path, auth, conf) = (&self.path, &self.auth, &self.publishing);
        // Every refusal: logged with the request, answered with the reason.
        let refused = |status: u16, why: String| {
            log::warn!(
                "req={} route={path} peer={}: publish refused ({status}): {why}",
                req.id,
                req.peer
            );
            let r = FullResponse::text(status, why);
            if status == 401 {
                r.with_header("WWW-Authenticate", "Bearer")
            } else {
                r
            }
        };
        if let Some(origin) = cross_origin(req, &self.origins) {
            return refused(
                403,
                format!("a publish from a page on {origin} is refused: that origin is not in publish_origins"),
            );
        }
        let presented = req
            .header("Authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim();
        let token_ok = conf
            .publish_token
            .as_deref()
            .is_some_and(|t| token_matches(presented, t));
        // A publisher JWT is needed unless the publish_token was presented.
        let jwt = match (&auth.publisher, &conf.publish_token) {
            (Some(_), _) if !token_ok => match auth.verified(req, Role::Publisher).await {
                Ok(Some(c)) => Some(c),
                Ok(None) => return refused(401, crate::auth::AuthError::Missing.to_string()),
                Err((status, why)) => return refused(status, why),
            },
            (None, Some(_)) if !token_ok => {
                return refused(
                    401,
                    "publishing needs Authorization: Bearer <publish_token>".into(),
                )
            }
            _ => None,
        };
        let publication = match parse_publication(req, conf.max_topics) {
            Ok(p) => p,
            Err(refusal) => return refusal.into(),
        };
        if let Some(claims) = &jwt {
            if let Err((status, why)) = RouteAuth::may_publish(claims, &publication.topics) {
                return refused(status, why);
            }
        }
        let by = jwt.as_ref().and_then(|c| c.subject.as_deref());
        match hub.publish_from_client(publication, by).await {
            Ok(id) => {
                FullResponse::text(200, id.to_string()).with_header("Cache-Control", "no-cache")
            }
            Err(e) => not_stored(e, req, path),
        }
    }
}

/// The origin of a browser request from a page on another site (`Origin`, else `Referer`),
/// unless it is listed in `allowed`. Hosts are compared without ports (nginx passes `Host`
/// without one); requests without either header (curl, a PHP backend) are not cross-origin;
/// `Origin: null` always is.
fn cross_origin(req: &Request, allowed: &[String]) -> Option<String> {
    let origin = crate::auth::origin_of(req)?;
    if origin == "null" {
        return Some(origin);
    }
    if crate::auth::origin_listed(&origin, allowed) {
        return None;
    }
    let host_of = |s: &str| {
        let s = s.rsplit("://").next().unwrap_or(s);
        let s = s.split('/').next().unwrap_or(s);
        match s.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6).to_ascii_lowercase(),
            None => s.split(':').next().unwrap_or(s).to_ascii_lowercase(),
        }
    };
    let host = req.header("Host")?;
    (host_of(&origin) != host_of(host)).then_some(origin)
}

/// The answer to a publish the hub did not store: 500 when the journal failed or the store
/// refused it, 503 (retry) when it was busy or closing, or gave no answer in time (then the
/// body says it may or may not be stored). The log gets the whole story; the client a reason and the
/// request id to find it by.
pub(super) fn not_stored(e: HubError, req: &Request, route: &str) -> FullResponse {
    log::error!(
        "req={} route={route} peer={}: publish failed, not stored: {e}",
        req.id,
        req.peer
    );
    let reason = e.public_reason();
    match e {
        HubError::Journal(_) | HubError::Refused(_) => {
            FullResponse::text(500, format!("not stored: {reason} (request {})", req.id))
        }
        HubError::Busy(_) | HubError::Closed => FullResponse::text(
            503,
            format!("not stored: {reason}; retry (request {})", req.id),
        )
        .with_header("Retry-After", "1"),
        HubError::Unknown(_) => {
            FullResponse::text(503, format!("{reason}; retry (request {})", req.id))
                .with_header("Retry-After", "1")
        }
    }
}
