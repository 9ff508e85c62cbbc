//! A route's authorization, the same for `topics` and `mercure` routes: who may publish (a
//! publisher token whose `mercure.publish` covers every topic; by cookie only from
//! `publish_origins`), who may read what (a subscriber token's `mercure.subscribe`, or the user
//! the web server names in a FastCGI param — `REMOTE_USER` after nginx `auth_request` or Apache
//! `Require valid-user` — for the `user_topics` templates with `{user}` filled in).

use std::sync::Arc;

use super::access::{self, Identity, Issuer, Role};
use super::selector::Selector;
use super::{origin_of, token_of, AuthError, Claims, TokenFrom, Verifier};
use crate::request::Request;

/// Checks `user_topics`: each entry a URI template in which the user is written exactly as
/// `{user}` or `{+user}`, at least once, and named nowhere else (`{/user}`, `{user:3}`,
/// `{user,x}`, `{username}`…). Anything else would leave the name unfilled — the template
/// would then select every user's topics — or guard one literal topic only.
pub fn check_user_topics(templates: &[String]) -> Result<(), String> {
    for t in templates {
        if !matches!(Selector::parse(t), Selector::Template(_)) {
            return Err(format!("user_topics entry `{t}` is not a URI template"));
        }
        let mut filled = false;
        for body in t.split('{').skip(1).filter_map(|r| r.split('}').next()) {
            let names = body.trim_start_matches(['+', '#', '.', '/', ';', '?', '&']);
            let names_user = names.split(',').any(|n| {
                n.trim_end_matches('*')
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .contains("user")
            });
            match body {
                "user" | "+user" => filled = true,
                _ if names_user => {
                    return Err(format!(
                        "user_topics entry `{t}`: write the user as {{user}} or {{+user}}, not {{{body}}}"
                    ))
                }
                _ => {}
            }
        }
        if !filled {
            return Err(format!(
                "user_topics entry `{t}` has no {{user}} (or {{+user}}) to fill in"
            ));
        }
    }
    Ok(())
}

/// A refusal: the status (401 or 403) and the reason for the client.
pub type Refused = (u16, String);

/// One route's keys and rules.
pub struct RouteAuth {
    /// Checks publishers' tokens; `None`: no publisher tokens on this route.
    pub publisher: Option<Verifier>,
    /// Checks subscribers' tokens; `None`: no subscriber tokens on this route.
    pub subscriber: Option<Verifier>,
    cookie_name: String,
    publish_origins: Vec<String>,
    user_param: Option<String>,
    user_topics: Vec<String>,
    /// The `user_topics` templates, parsed once.
    user_guards: Vec<Selector>,
    /// Mercure 1.0: the issuers whose access tokens (`typ: at+jwt`) count, and the hub's
    /// identity their `aud` must name.
    issuers: Vec<Issuer>,
    identity: Option<Identity>,
    /// Tokens that verified (`token_cache_bytes`).
    cache: super::cache::TokenCache,
    /// What URL Patterns in a token's claims resolve against (the hub's identity's, else
    /// `http://mercure.invalid/`).
    base: url::Url,
}

/// A route's authorization settings, as its config gives them.
pub struct AuthSettings<'a> {
    /// Publishers' key and its algorithm.
    pub publisher_key: Option<(&'a str, &'a str)>,
    /// Subscribers' key and its algorithm.
    pub subscriber_key: Option<(&'a str, &'a str)>,
    /// Audiences a token's `aud` must name one of (empty: any).
    pub jwt_audience: &'a [String],
    /// The cookie a browser's token comes in.
    pub cookie_name: &'a str,
    /// Origins a cookie-authorized publish may come from.
    pub publish_origins: &'a [String],
    /// The CGI variable naming the user (e.g. `REMOTE_USER`).
    pub user_param: Option<&'a str>,
    /// Topic templates private to the user they name.
    pub user_topics: &'a [String],
    /// Most bytes of verified tokens kept (`token_cache_bytes`; 0: none).
    pub token_cache_bytes: usize,
}

impl RouteAuth {
    /// The rules of a route with these settings (reads PEM key files: config time only).
    pub fn new(s: AuthSettings<'_>) -> Result<RouteAuth, String> {
        let verifier = |key: Option<(&str, &str)>| {
            key.map(|(key, alg)| {
                Verifier::from_config(alg, key).map(|v| v.with_audience(s.jwt_audience))
            })
            .transpose()
        };
        Ok(RouteAuth {
            publisher: verifier(s.publisher_key)?,
            subscriber: verifier(s.subscriber_key)?,
            cookie_name: s.cookie_name.to_string(),
            publish_origins: s.publish_origins.to_vec(),
            user_param: s.user_param.map(str::to_string),
            user_topics: s.user_topics.to_vec(),
            user_guards: s.user_topics.iter().map(|t| Selector::parse(t)).collect(),
            issuers: Vec::new(),
            identity: None,
            cache: super::cache::TokenCache::new(s.token_cache_bytes),
            base: super::pattern::base_for(None),
        })
    }

    /// Takes access tokens from `issuers`, naming the hub as `identity` says.
    pub fn with_issuers(mut self, issuers: Vec<Issuer>, identity: Identity) -> RouteAuth {
        self.issuers = issuers;
        self.base = identity.base.clone();
        self.identity = Some(identity);
        self
    }

    /// The request's tokens, in Mercure's order: the `Authorization` header, else the
    /// `authorization` parameter, else the cookies: `cookie_name` and, on a route with
    /// issuers, Mercure 1.0's `__Secure-mercure_access_token`. A browser moving to 1.0 may
    /// hold both cookies, one of them stale: each is tried (see [`RouteAuth::first_verified`]).
    fn tokens(&self, req: &Request) -> Vec<(String, TokenFrom)> {
        if let Some(t) = token_of(req, "").filter(|(_, from)| *from != TokenFrom::Cookie) {
            return vec![t];
        }
        let mut cookies = vec![self.cookie_name.as_str()];
        if !self.issuers.is_empty() && self.cookie_name != access::COOKIE {
            cookies.push(access::COOKIE);
        }
        cookies
            .into_iter()
            .filter_map(|name| super::cookie(req, name))
            .map(|c| (c, TokenFrom::Cookie))
            .collect()
    }

    /// The claims of the first of the request's tokens that verifies for `role`, else the
    /// first one's refusal; `None` without a token.
    fn first_verified(&self, req: &Request, role: Role) -> Option<Result<Claims, Refused>> {
        let mut first_refusal = None;
        for (token, _) in self.tokens(req) {
            match self.claims_of(req, &token, role) {
                Ok(c) => return Some(Ok(c)),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        first_refusal.map(Err)
    }

    /// The JWK Sets the route's issuers fetch their keys from.
    pub fn key_sets(&self) -> impl Iterator<Item = &std::sync::Arc<super::jwks::KeySet>> {
        self.issuers
            .iter()
            .flat_map(|i| [&i.publisher, &i.subscriber])
            .filter_map(|k| match k {
                Some(access::Keys::Set(s)) => Some(s),
                _ => None,
            })
    }

    /// Whether some key checks tokens for `role` (a 0.x key, or an issuer's).
    pub fn takes(&self, role: Role) -> bool {
        let own = match role {
            Role::Publisher => self.publisher.is_some(),
            Role::Subscriber => self.subscriber.is_some(),
        };
        own || self.issuers.iter().any(|i| match role {
            Role::Publisher => i.publisher.is_some(),
            Role::Subscriber => i.subscriber.is_some(),
        })
    }

    /// The claims of `token` for `role`: an access token (`typ: at+jwt`) by its issuer, any
    /// other by the route's own key (Mercure 0.x).
    fn claims_of(&self, req: &Request, token: &str, role: Role) -> Result<Claims, Refused> {
        let access = access::is_access_token(token);
        let (audience, base) = match (&self.identity, access) {
            (Some(identity), true) if !self.issuers.is_empty() => {
                (identity.audience(req)?, Some(&identity.base))
            }
            (_, true) => {
                return Err((
                    401,
                    "an access token (typ at+jwt) needs a trusted issuer: this route has no [[route.issuer]]".into(),
                ))
            }
            (_, false) => (String::new(), None),
        };
        if let Some(c) = self.cache.get(role, &audience, token) {
            return Ok(c);
        }
        let claims = if let Some(base) = base {
            access::verify(token, &self.issuers, role, &audience, base)
                .map_err(|e| (e.status(), e.to_string()))?
        } else {
            let own = match role {
                Role::Publisher => &self.publisher,
                Role::Subscriber => &self.subscriber,
            };
            match own {
                Some(v) => v.verify(token, &self.base).map_err(|e| (401, e.to_string()))?,
                None => return Err((
                    401,
                    "this hub takes access tokens (typ at+jwt) from its issuers; a Mercure 0.x token needs the route's publisher_jwt_key or subscriber_jwt_key".into(),
                )),
            }
        };
        self.cache.put(role, &audience, token, &claims);
        Ok(claims)
    }

    /// The claims of the publisher's token, or why there is none that counts.
    pub fn publisher_claims(&self, req: &Request) -> Result<Claims, Refused> {
        if !self.takes(Role::Publisher) {
            return Err((
                403,
                "publishing is off on this hub: it has no publisher_jwt_key".into(),
            ));
        }
        let tokens = self.tokens(req);
        let Some((_, from)) = tokens.first() else {
            return Err((401, AuthError::Missing.to_string()));
        };
        if *from == TokenFrom::Cookie {
            // A browser sends the cookie on its own, from any page: only listed origins.
            let origin = origin_of(req);
            let listed = origin
                .as_deref()
                .is_some_and(|o| super::origin_listed(o, &self.publish_origins));
            if !listed {
                return Err((
                    403,
                    format!(
                        "a publish authorized by the {} cookie must come from an origin in publish_origins (this one came from {})",
                        self.cookie_name,
                        origin.as_deref().unwrap_or("no Origin or Referer")
                    ),
                ));
            }
        }
        self.first_verified(req, Role::Publisher)
            .unwrap_or_else(|| Err((401, AuthError::Missing.to_string())))
    }

    /// Whether `claims` may publish to every one of `topics`.
    pub fn may_publish(claims: &Claims, topics: &[String]) -> Result<(), Refused> {
        let Some(allowed) = &claims.publish else {
            return Err((403, "the token has no mercure.publish claim".into()));
        };
        match topics
            .iter()
            .find(|t| !allowed.iter().any(|s| s.matches(t)))
        {
            Some(t) => Err((
                403,
                format!("topic {t} is not among the token's publish grants (mercure.publish, or its authorization_details)"),
            )),
            None => Ok(()),
        }
    }

    /// The claims of the subscriber's token: `None` without a token (or with no subscriber key
    /// on this route), `Err` with the refusal for one that does not verify.
    pub fn subscriber_claims(&self, req: &Request) -> Result<Option<Claims>, Refused> {
        if !self.takes(Role::Subscriber) {
            return Ok(None);
        }
        self.first_verified(req, Role::Subscriber).transpose()
    }

    /// The subscriber's claims when they take no work: `Ok(None)` without a token (or without
    /// subscriber keys), the claims of a token verified before; `None` when the token is to be
    /// verified ([`RouteAuth::subscriber_claims`]).
    pub fn subscriber_claims_at_hand(
        &self,
        req: &Request,
    ) -> Option<Result<Option<Claims>, Refused>> {
        if !self.takes(Role::Subscriber) {
            return Some(Ok(None));
        }
        let tokens = self.tokens(req);
        if tokens.is_empty() {
            return Some(Ok(None));
        }
        for (token, _) in &tokens {
            let audience = match (&self.identity, access::is_access_token(token)) {
                (Some(identity), true) if !self.issuers.is_empty() => {
                    identity.audience(req).ok()?
                }
                (_, true) => return None,
                (_, false) => String::new(),
            };
            if let Some(c) = self.cache.get(Role::Subscriber, &audience, token) {
                return Some(Ok(Some(c)));
            }
        }
        None
    }

    /// The claims of the request's token for `role` (`None` without one), checked on a
    /// blocking thread: a signature check, and for a token seen for the first time perhaps up
    /// to 100 URL Patterns to compile (tens of milliseconds), must not hold up the streams this
    /// runtime thread serves. A subscriber without a token, or with one verified before, is
    /// answered here.
    pub async fn verified(
        self: &Arc<Self>,
        req: &Request,
        role: Role,
    ) -> Result<Option<Claims>, Refused> {
        if role == Role::Subscriber {
            if let Some(at_hand) = self.subscriber_claims_at_hand(req) {
                return at_hand;
            }
        }
        let (auth, req) = (self.clone(), req.clone());
        let check = move || match role {
            Role::Subscriber => auth.subscriber_claims(&req),
            Role::Publisher => auth.publisher_claims(&req).map(Some),
        };
        tokio::task::spawn_blocking(check)
            .await
            .unwrap_or_else(|_| Err((500, "the token check failed".into())))
    }

    /// The user the web server vouches for (`user_param`), if it names one.
    pub fn user(&self, req: &Request) -> Option<String> {
        let name = self.user_param.as_deref()?;
        req.var(name).filter(|u| !u.is_empty()).map(str::to_string)
    }

    /// The `user_topics` templates with the user filled in, encoded as the template's
    /// expansion would write it: `{user}` percent-encodes all but unreserved characters
    /// (`alice@example.com` → `alice%40example.com`), `{+user}` keeps reserved ones (`@`, `/`,
    /// `+`…). Either way `%` is encoded, so two names never give the same topic.
    pub fn user_selectors(&self, user: &str) -> Vec<Selector> {
        let simple = super::encode_component(user);
        let reserved = super::encode_reserved(user);
        self.user_topics
            .iter()
            .map(|t| Selector::parse(&t.replace("{user}", &simple).replace("{+user}", &reserved)))
            .collect()
    }

    /// Whether `topic` is some user's own: it has the shape of a `user_topics` template with
    /// anything in place of its expressions, however the name in it is written (a raw
    /// `user/alice@example.com` is as guarded as `user/alice%40example.com`). Never falls
    /// through to public for a name the template's own encoding would not produce.
    pub fn is_user_topic(&self, topic: &str) -> bool {
        self.user_guards.iter().any(|g| g.covers(topic))
    }

    /// For a `topics` route (no private flag: a topic is open or guarded): whether `req` may
    /// subscribe to `topics`. With a subscriber key every topic is guarded; a `user_topics`
    /// topic is guarded always. A guarded topic needs the token's `mercure.subscribe` or the
    /// web server's user to allow it. The token, when one is needed, is checked as
    /// [`RouteAuth::verified`] says.
    pub async fn may_subscribe(
        self: &Arc<Self>,
        req: &Request,
        topics: &[String],
    ) -> Result<(), Refused> {
        let guarded: Vec<&String> = topics
            .iter()
            .filter(|t| self.subscriber.is_some() || self.is_user_topic(t))
            .collect();
        if guarded.is_empty() {
            return Ok(());
        }
        let claims = self.verified(req, Role::Subscriber).await?;
        let user = self.user(req);
        if claims.is_none() && user.is_none() {
            return Err((
                401,
                format!(
                    "topic {} needs a subscriber token{}",
                    guarded[0],
                    if self.user_param.is_some() {
                        " or a signed-in user"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let mut allowed = claims.and_then(|c| c.subscribe).unwrap_or_default();
        if let Some(u) = &user {
            allowed.extend(self.user_selectors(u));
        }
        match guarded
            .iter()
            .find(|t| !allowed.iter().any(|s| s.matches(t)))
        {
            Some(t) => Err((403, format!("topic {t} is not yours to read"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
