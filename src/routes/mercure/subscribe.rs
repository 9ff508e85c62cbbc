//! A mercure route's subscriptions: `GET` / `HEAD` with the parameters in the query string,
//! or Mercure 1.0's `QUERY` (RFC 10008) with them in an `application/x-www-form-urlencoded`
//! body (merged with the query string, as the reference hub merges them: a long matcher list
//! needs no long URL). 0.x's `topic` selectors or 1.0's `match` / `match_urlpattern`
//! matchers; the subscriber's token decides which private updates it reads; resuming from
//! `Last-Event-ID` (header), `last_event_id`, 0.x's `lastEventID` or the older `Last-Event-ID`
//! parameter, answered with where it resumed in `Mercure-Last-Event-ID` (1.0) and
//! `Last-Event-ID` (0.x).

use std::borrow::Cow;
use std::sync::Arc;

use super::{matchers, refuse, subscriptions, Mercure, MAX_ID_BYTES};
use crate::auth::access::Role;
use crate::auth::Claims;
use crate::hub::{Interest, Presence, Resume};
use crate::publish::validate_topics;
use crate::request::{parse_form, Request};
use crate::response::{FullResponse, Response};
use crate::routes::Cx;
use crate::source::expiring::Expiring;
use crate::source::Source;

/// The one body a `QUERY` subscription may carry, as `Accept-Query` says (RFC 10008).
pub(super) const FORM: &str = "application/x-www-form-urlencoded";

/// The subscription's parameters: the query string, and for `QUERY` its form body after it.
/// A `QUERY` without a media type is a 400, with another one a 415 (RFC 10008, 2.3).
pub(super) fn params(req: &Request) -> Result<Cow<'_, str>, FullResponse> {
    if req.method != "QUERY" {
        return Ok(Cow::Borrowed(&req.query));
    }
    let given = req.var("CONTENT_TYPE").unwrap_or("");
    let mime = given.split(';').next().unwrap_or("").trim();
    if !mime.contains('/') {
        return Err(refuse(
            400,
            format!("a QUERY subscription carries its parameters as Content-Type: {FORM}"),
        ));
    }
    if !mime.eq_ignore_ascii_case(FORM) {
        return Err(refuse(
            415,
            format!("a QUERY subscription is a form ({FORM}), not {mime}"),
        )
        .with_header("Accept-Query", FORM));
    }
    let body = std::str::from_utf8(&req.body)
        .map_err(|_| refuse(400, "the QUERY subscription's form is not UTF-8"))?;
    Ok(match (req.query.is_empty(), body.is_empty()) {
        (_, true) => Cow::Borrowed(&req.query),
        (true, false) => Cow::Borrowed(body),
        (false, false) => Cow::Owned(format!("{}&{body}", req.query)),
    })
}

/// Decoded values of parameter `key` in `params`, in order.
pub(super) fn values(params: &str, key: &str) -> Vec<String> {
    let mut v: Vec<String> = parse_form(params)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    // Kept for a stream's life (its topics): no spare room.
    v.shrink_to_fit();
    v
}

/// What a subscription asks for: 0.x topics or 1.0 matchers, as written.
struct Asked {
    topics: Vec<String>,
    selectors: Option<Vec<crate::auth::Selector>>,
    match_types: Vec<String>,
}

impl Mercure {
    /// The topics (or matchers, as written) a subscription names, for hooks and presence:
    /// read, not compiled (the subscription itself compiles and checks them).
    pub(super) fn asked_topics(&self, req: &Request) -> Vec<String> {
        let Ok(q) = params(req) else {
            return Vec::new();
        };
        let pairs = parse_form(&q);
        let matchers: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "match" | "match_exact" | "match_urlpattern"))
            .map(|(_, v)| v.clone())
            .collect();
        if !matchers.is_empty() {
            return matchers;
        }
        values(&q, "topic")
    }

    /// What `params` asks for, or the 400 saying why it cannot be served.
    fn asked(&self, params: &str) -> Result<Asked, FullResponse> {
        let max = self.conf.max_topics;
        let asked = match matchers::from_query(params, &self.base, max) {
            Ok(Some(m)) => Asked {
                topics: m.texts,
                selectors: Some(m.selectors),
                match_types: m.types,
            },
            Ok(None) => Asked {
                topics: values(params, "topic"),
                selectors: None,
                match_types: Vec::new(),
            },
            Err(why) => return Err(refuse(400, why)),
        };
        if asked.topics.is_empty() {
            return Err(refuse(
                400,
                "missing topic parameter (?topic=<selector>, or Mercure 1.0's ?match=<topic> / ?match_urlpattern=<pattern>)",
            ));
        }
        if asked.selectors.is_none() {
            validate_topics(&asked.topics, max).map_err(|r| refuse(400, r.reason))?;
        }
        Ok(asked)
    }

    /// `GET`, `HEAD` or `QUERY`: a subscription.
    pub(super) async fn subscribe(&self, cx: &Cx, req: &Request) -> Response {
        let path = &self.path;
        let params = match params(req) {
            Ok(p) => p,
            Err(refusal) => return refusal.into(),
        };
        // Who first: a client's patterns are compiled only for a subscriber the hub takes.
        let user = self.auth.user(req);
        let claims = match self.subscriber(req, user.is_some()).await {
            Ok(c) => c,
            Err(refusal) => return refusal.into(),
        };
        let asked = match self.asked(&params) {
            Ok(a) => a,
            Err(refusal) => return refusal.into(),
        };
        if req.is_head() {
            return crate::streams::head_only();
        }
        let Some(permit) = cx.streams.try_acquire(cx.config()) else {
            return cx.streams.refuse_full(cx.config(), path, req);
        };
        let cursor = req.last_event_id().or_else(|| {
            ["last_event_id", "lastEventID", "Last-Event-ID"]
                .iter()
                .find_map(|k| values(&params, k).into_iter().next())
        });
        let mut authorized = claims.subscribe.clone().unwrap_or_default();
        if let Some(u) = &user {
            authorized.extend(self.auth.user_selectors(u));
        }
        let mut interest = match asked.selectors {
            Some(selectors) => Interest::matchers(selectors, authorized),
            None => Interest::selectors(&asked.topics, authorized),
        };
        let presence = self.conf.subscriptions.then(|| {
            Arc::new(Presence {
                subscriber: subscriptions::new_subscriber_id(),
                topics: asked.topics,
                match_types: asked.match_types,
                payload: claims.payload.clone().unwrap_or_default(),
            })
        });
        interest.presence = presence.clone();
        let mut source = self.hub.subscribe(interest, resume_from(cursor.as_deref()));
        if cx.streams.held(cx.config()) {
            // Mercure clients resume from the `Last-Event-ID` header too; a held CGI stream
            // that ends before any event also needs the id in the stream (see `marked`).
            source = source.marked();
        }
        let resumed_after = source.resumed_after.clone();
        let source = self.wrap(cx, Box::new(source), presence, &claims);
        let mut response = cx.streams.open(cx.config(), path, source, permit, req);
        if let Response::Stream(s) = &mut response {
            s.extra_headers.push(("Accept-Query".into(), FORM.into()));
            if cursor.is_some() {
                // Where the stream resumed: the id asked for when the history holds it, else
                // the id before the first event sent (`earliest`: before everything).
                s.extra_headers
                    .push(("Mercure-Last-Event-ID".into(), resumed_after.clone()));
                s.extra_headers
                    .push(("Last-Event-ID".into(), resumed_after));
            }
        }
        response
    }

    /// The subscriber's claims: from its token; none (public updates only) when anonymous
    /// subscribers or a user the web server authenticated are allowed; else a refusal.
    async fn subscriber(&self, req: &Request, has_user: bool) -> Result<Claims, FullResponse> {
        match self.auth.verified(req, Role::Subscriber).await {
            Ok(Some(c)) => Ok(c),
            Err((status, why)) => Err(refuse(status, why)),
            Ok(None) if self.conf.anonymous || has_user => Ok(Claims::default()),
            Ok(None) if self.auth.takes(Role::Subscriber) => Err(refuse(
                401,
                "this hub needs a token to subscribe (anonymous = false)",
            )),
            Ok(None) => Err(refuse(
                403,
                "this hub takes no subscribers: it has no subscriber_jwt_key and anonymous = false",
            )),
        }
    }

    /// The subscription's source as the stream serves it: announced (subscription events)
    /// while `presence` is set, ended when the token expires.
    fn wrap(
        &self,
        cx: &Cx,
        mut source: Box<dyn Source>,
        presence: Option<Arc<Presence>>,
        claims: &Claims,
    ) -> Box<dyn Source> {
        let hub = &self.hub;
        if let Some(presence) = presence {
            let hub_path = self.path.clone();
            subscriptions::announce(hub.clone(), hub_path.clone(), presence.clone(), true);
            source = Box::new(subscriptions::Announced {
                inner: source,
                hub: hub.clone(),
                hub_path,
                presence,
            });
        }
        if let Some(left) = claims.remaining() {
            let retry = cx.config().stream.retry.as_millis() as u64;
            source = Box::new(Expiring::new(
                source,
                tokio::time::Instant::now() + left,
                retry,
            ));
        }
        source
    }
}

/// Where a subscription resumes: the id asked for (`earliest`: the whole history).
fn resume_from(asked: Option<&str>) -> Resume {
    match asked {
        None | Some("") => Resume::Live,
        Some("earliest") => Resume::Earliest,
        Some(id) if id.len() > MAX_ID_BYTES || id.contains('\u{FFFD}') => Resume::Invalid,
        Some(id) => Resume::Named(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(method: &str, query: &str, ct: Option<&str>, body: &str) -> Request {
        let mut vars = vec![
            ("REQUEST_METHOD", method.to_string()),
            ("REQUEST_URI", format!("/hub?{query}")),
            ("QUERY_STRING", query.to_string()),
        ];
        if let Some(ct) = ct {
            vars.push(("CONTENT_TYPE", ct.to_string()));
        }
        let vars = vars
            .into_iter()
            .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
            .collect();
        Request::from_vars(
            vars,
            Bytes::from(body.to_string()),
            crate::request::PathFrom::RequestUri,
        )
    }

    #[test]
    fn a_query_subscription_merges_its_form_after_the_query_string() {
        let r = req("QUERY", "match=a", Some(FORM), "match=b&last_event_id=7");
        let p = params(&r).unwrap();
        assert_eq!(values(&p, "match"), ["a", "b"]);
        assert_eq!(values(&p, "last_event_id"), ["7"]);
        let r = req(
            "QUERY",
            "",
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            "match=b",
        );
        assert_eq!(values(&params(&r).unwrap(), "match"), ["b"]);
        // GET ignores a body.
        let r = req("GET", "match=a", Some(FORM), "match=b");
        assert_eq!(values(&params(&r).unwrap(), "match"), ["a"]);
    }

    #[test]
    fn a_query_subscription_names_its_media_type() {
        assert_eq!(
            params(&req("QUERY", "", None, "match=b"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            params(&req("QUERY", "", Some("form"), "match=b"))
                .unwrap_err()
                .status,
            400
        );
        let e = params(&req("QUERY", "", Some("application/json"), "{}")).unwrap_err();
        assert_eq!(e.status, 415);
        assert!(e
            .headers
            .iter()
            .any(|(k, v)| k == "Accept-Query" && v == FORM));
    }
}
