//! Mercure 1.0 tokens: OAuth 2.0 access tokens as RFC 9068 shapes them (header `typ: at+jwt`),
//! from trusted issuers. A token names its issuer (`iss`, matched exactly against an issuer's
//! `id`), is checked with that issuer's publisher or subscriber key — never another issuer's —
//! must hold `exp` and name the hub in `aud`, and carries its rights in
//! `authorization_details`: `[{type, actions: ["publish"|"subscribe"], topics: [{match,
//! match_type: "exact"|"urlpattern"}], payload}]`. One malformed Mercure entry refuses the
//! whole token; entries of another `type` are another API's and are skipped. The 0.x `mercure`
//! claim grants nothing in such a token.

use serde::Deserialize;
use serde_json::Value;

use super::pattern::Pattern;
use super::{check_dates, expiry, AuthError, Claims, Selector, Verifier, MAX_TOKEN_BYTES};

/// The `type` of a Mercure authorization detail (Mercure's documentation), and the short
/// form earlier 1.0 builds of the hub used.
pub const DETAIL_TYPES: [&str; 2] = ["https://mercure.rocks/authorization-detail", "mercure"];
/// The cookie a browser's access token comes in (Mercure 1.0's name).
pub const COOKIE: &str = "__Secure-mercure_access_token";
/// Most Mercure authorization details, and most topics over all of them, in one token.
pub const MAX_DETAILS: usize = 100;

/// A trusted issuer: its id (the `iss` of its tokens) and its keys, one per role.
#[derive(Debug)]
pub struct Issuer {
    /// The `iss` its tokens carry.
    pub id: String,
    /// Checks its publishers' tokens (`None`: its tokens may not publish).
    pub publisher: Option<Keys>,
    /// Checks its subscribers' tokens (`None`: its tokens may not subscribe).
    pub subscriber: Option<Keys>,
}

/// An issuer's keys for one role: one configured key, or its JWK Set.
#[derive(Debug)]
pub enum Keys {
    /// `*_jwt_key` with `*_jwt_alg`.
    Key(Verifier),
    /// `*_jwks_uri`: the key the token's `kid` names.
    Set(std::sync::Arc<super::jwks::KeySet>),
}

impl Keys {
    /// What checks `token`'s signature.
    fn verifier(&self, token: &str) -> Result<std::borrow::Cow<'_, Verifier>, AuthError> {
        match self {
            Keys::Key(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Keys::Set(set) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
                set.verifier(&header).map(std::borrow::Cow::Owned)
            }
        }
    }
}

/// What a token is presented for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A publish.
    Publisher,
    /// A subscription (or the subscriptions API).
    Subscriber,
}

/// Whether `token`'s header says it is an RFC 9068 access token (`typ` `at+jwt`, in any case,
/// with or without `application/`).
pub fn is_access_token(token: &str) -> bool {
    if token.len() > MAX_TOKEN_BYTES {
        return false;
    }
    let Ok(h) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    h.typ.is_some_and(|t| {
        let t = t.trim();
        let t = match t.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
            _ => t,
        };
        t.eq_ignore_ascii_case("at+jwt")
    })
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<Value>,
}

#[derive(Deserialize)]
struct AccessClaims {
    iss: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    aud: Option<Value>,
    sub: Option<Value>,
    authorization_details: Option<Value>,
}

/// Verifies access token `token` for `role` against `issuers`; it must name `audience`.
/// URL patterns in its grants resolve against `base`.
pub fn verify(
    token: &str,
    issuers: &[Issuer],
    role: Role,
    audience: &str,
    base: &url::Url,
) -> Result<Claims, AuthError> {
    let invalid = |why: String| AuthError::Invalid(why);
    // Which issuer: from the claims before the signature is checked (with that issuer's key,
    // then, so a token cannot pick a key by naming another issuer).
    let iss = unverified_iss(token)?;
    let Some(issuer) = issuers.iter().find(|i| i.id == iss) else {
        let shown: String = iss.chars().take(200).collect();
        return Err(invalid(format!("untrusted issuer {shown:?}")));
    };
    let verifier = match role {
        Role::Publisher => issuer.publisher.as_ref(),
        Role::Subscriber => issuer.subscriber.as_ref(),
    };
    let Some(verifier) = verifier else {
        let what = match role {
            Role::Publisher => {
                "publisher_jwt_key (or publisher_jwks_uri): its tokens may not publish"
            }
            Role::Subscriber => {
                "subscriber_jwt_key (or subscriber_jwks_uri): its tokens may not subscribe"
            }
        };
        return Err(invalid(format!("issuer {iss:?} has no {what}")));
    };
    let c: AccessClaims = verifier.verifier(token)?.decode(token)?;
    if c.iss.as_ref().and_then(Value::as_str) != Some(iss.as_str()) {
        return Err(invalid("iss changed under the signature".into()));
    }
    if c.exp.is_none() {
        return Err(invalid("an access token must hold exp".into()));
    }
    let exp = check_dates(c.exp.as_ref(), c.nbf.as_ref())?;
    check_audience(c.aud.as_ref(), audience)?;
    let grants = grants(c.authorization_details.as_ref(), base).map_err(invalid)?;
    Ok(Claims {
        publish: Some(grants.publish),
        subscribe: Some(grants.subscribe),
        payload: grants.payload,
        subject: c.sub.as_ref().and_then(Value::as_str).map(str::to_string),
        expires: expiry(exp),
        access: true,
    })
}

/// The token's `iss`, read without checking its signature.
fn unverified_iss(token: &str) -> Result<String, AuthError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.insecure_disable_signature_validation();
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let key = jsonwebtoken::DecodingKey::from_secret(&[]);
    let data = jsonwebtoken::decode::<Unverified>(token, &key, &v)
        .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
    match data.claims.iss {
        Some(Value::String(s)) => Ok(s),
        None => Err(AuthError::Invalid(
            "untrusted issuer \"\": an access token must name its issuer (iss)".into(),
        )),
        Some(_) => Err(AuthError::Invalid("iss must be a string".into())),
    }
}

/// `aud` (a string or a list of them) must name `audience`, exactly.
fn check_audience(aud: Option<&Value>, audience: &str) -> Result<(), AuthError> {
    let named: Vec<&str> = match aud {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if named.contains(&audience) {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "the token's audience (aud) must name this hub: {audience}"
        )))
    }
}

/// The rights of a token.
#[derive(Debug, Default)]
pub struct Grants {
    /// Topics it may publish to.
    pub publish: Vec<Selector>,
    /// Topics whose private updates it may receive.
    pub subscribe: Vec<Selector>,
    /// The first subscribe entry's `payload`.
    pub payload: Option<Value>,
}

/// Reads `authorization_details`; an error says which entry is wrong and how.
pub fn grants(details: Option<&Value>, base: &url::Url) -> Result<Grants, String> {
    let mut g = Grants::default();
    let Some(details) = details else {
        return Ok(g);
    };
    let Value::Array(entries) = details else {
        return Err("authorization_details must be a list".into());
    };
    let (mut count, mut topics_seen) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let Value::Object(e) = e else {
            return Err(format!("authorization_details[{i}] must be an object"));
        };
        let kind = e.get("type").and_then(Value::as_str);
        if !kind.is_some_and(|k| DETAIL_TYPES.contains(&k)) {
            continue; // another API's entry
        }
        count += 1;
        if count > MAX_DETAILS {
            return Err(format!(
                "more than {MAX_DETAILS} Mercure authorization details"
            ));
        }
        let at = |what: &str| format!("authorization_details[{i}]: {what}");
        let actions = actions(e.get("actions")).map_err(|w| at(&w))?;
        let Some(Value::Array(list)) = e.get("topics") else {
            return Err(at("topics must be a list of {match, match_type}"));
        };
        if list.is_empty() {
            return Err(at("topics must not be empty"));
        }
        topics_seen += list.len();
        if topics_seen > MAX_DETAILS {
            return Err(format!(
                "more than {MAX_DETAILS} topics in authorization_details"
            ));
        }
        let mut selectors = Vec::with_capacity(list.len());
        for t in list {
            selectors.push(matcher(t, base).map_err(|w| at(&w))?);
        }
        let (publish, subscribe) = actions;
        if subscribe && g.payload.is_none() {
            g.payload = e.get("payload").cloned();
        }
        if publish {
            g.publish.extend(selectors.iter().cloned());
        }
        if subscribe {
            g.subscribe.extend(selectors);
        }
    }
    Ok(g)
}

/// `actions`: a non-empty list of `publish` and `subscribe`.
fn actions(v: Option<&Value>) -> Result<(bool, bool), String> {
    let Some(Value::Array(list)) = v else {
        return Err("actions must be a list of \"publish\" and \"subscribe\"".into());
    };
    if list.is_empty() {
        return Err("actions must not be empty".into());
    }
    let (mut publish, mut subscribe) = (false, false);
    for a in list {
        match a.as_str() {
            Some("publish") => publish = true,
            Some("subscribe") => subscribe = true,
            _ => return Err(format!("unsupported action {a}")),
        }
    }
    Ok((publish, subscribe))
}

/// One `{match, match_type}` as a selector: `*` is every topic; `exact` (the default) that
/// topic alone — never a URI template; `urlpattern` a URL Pattern.
pub(crate) fn matcher(t: &Value, base: &url::Url) -> Result<Selector, String> {
    let Value::Object(t) = t else {
        return Err("each topic must be an object {match, match_type}".into());
    };
    let Some(m) = t
        .get("match")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return Err("each topic needs a non-empty match".into());
    };
    match t.get("match_type").map(|v| v.as_str()) {
        None | Some(Some("exact" | "urlpattern")) if m == "*" => Ok(Selector::Any),
        None | Some(Some("exact")) => Ok(Selector::Exact(m.to_string())),
        Some(Some("urlpattern")) => Pattern::parse(m, base).map(Selector::UrlPattern),
        Some(other) => Err(format!(
            "match_type must be \"exact\" or \"urlpattern\", not {}",
            other.map_or_else(|| "a non-string".to_string(), |s| format!("{s:?}"))
        )),
    }
}

/// The hub's identity for access tokens: the resource identifier their `aud` must name —
/// pinned (`resource_identifier`), else the request's scheme and host with the route's path —
/// and the origins it answers for (`public_urls`; empty: any).
#[derive(Debug, Clone)]
pub struct Identity {
    /// `resource_identifier`.
    pub pinned: Option<String>,
    /// The origins of `public_urls` (`https://example.com`).
    pub public_origins: Vec<String>,
    /// The route's path.
    pub path: String,
    /// What URL patterns resolve against.
    pub base: url::Url,
}

impl Identity {
    /// The resource identifier for `req`, or the refusal: 421 when the request came to an
    /// origin not in `public_urls`, 401 when there is nothing to derive one from.
    pub fn audience(&self, req: &crate::request::Request) -> Result<String, (u16, String)> {
        let host = req.var("HTTP_HOST").filter(|h| !h.is_empty());
        let Some(host) = host.or(self.pinned.as_ref().map(|_| "")) else {
            return Err((
                400,
                "the request names no host to derive this hub's resource identifier from".into(),
            ));
        };
        let https = req
            .var("HTTPS")
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("off"));
        let scheme = match req.var("REQUEST_SCHEME") {
            _ if https => "https",
            Some("https") => "https",
            _ => "http",
        };
        // Debian's fastcgi_params passes `HTTP_HOST` as nginx's `$host`, without the port:
        // the port the request came to is `SERVER_PORT` then.
        let port = req
            .var("SERVER_PORT")
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let host = match port {
            Some(p) if !has_port && !host.is_empty() => format!("{host}:{p}"),
            _ => host.to_string(),
        };
        // As the URL parser writes it: lowercase, a default port left out.
        let origin = url::Url::parse(&format!("{scheme}://{host}"))
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| format!("{scheme}://{host}"));
        let listed = self.public_origins.contains(&origin);
        if !host.is_empty() && !self.public_origins.is_empty() && !listed {
            return Err((
                421,
                format!(
                    "this hub answers for {}, not {origin} (public_urls)",
                    self.public_origins.join(", ")
                ),
            ));
        }
        match &self.pinned {
            Some(r) => Ok(r.clone()),
            None => Ok(format!("{origin}{}", self.path)),
        }
    }
}

/// The origin (`scheme://host[:port]`) of `public_urls` entry `u`, or why it has none.
pub fn origin_of_url(u: &str) -> Result<String, String> {
    let url = url::Url::parse(u).map_err(|e| format!("`{u}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{u}` is not an http(s) URL with a host"));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
