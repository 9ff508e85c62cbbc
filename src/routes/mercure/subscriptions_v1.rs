//! Mercure 1.0's active subscriptions, beside 0.x's: a subscription made with `match` /
//! `match_urlpattern` is announced as a private `event: mercure` update on
//! `{hub}/subscriptions/{match_type}/{match}/{subscriber}` (each segment percent-encoded), and
//! `GET {hub}/subscriptions[/{match_type}[/{match}[/{subscriber}]]]` with an access token lists
//! the active ones its grants select, as `application/mercure+json` documents with lowercase
//! types. A 0.x token gets 0.x's documents (`subscriptions.rs`) at the same URLs.

use crate::auth::encode_component;
use crate::auth::selector::{any_matches, Selector};
use crate::hub::journal::Publication;
use crate::hub::Presence;
use crate::response::FullResponse;

/// The media type of the documents.
pub const MEDIA_TYPE: &str = "application/mercure+json";

/// The topic (and id) of one 1.0 subscription.
pub fn topic(hub_path: &str, match_type: &str, matcher: &str, subscriber: &str) -> String {
    format!(
        "{hub_path}/subscriptions/{}/{}/{}",
        encode_component(match_type),
        encode_component(matcher),
        encode_component(subscriber)
    )
}

/// The document of matcher `i` of `p`.
pub fn document(hub_path: &str, p: &Presence, i: usize, active: bool) -> serde_json::Value {
    let (matcher, match_type) = (&p.topics[i], &p.match_types[i]);
    serde_json::json!({
        "id": topic(hub_path, match_type, matcher, &p.subscriber),
        "type": "subscription",
        "subscriber": p.subscriber,
        "match": matcher,
        "match_type": match_type,
        "active": active,
        "payload": p.payload,
    })
}

/// The private updates that say `p` started or ended (one per matcher).
pub fn updates(hub_path: &str, p: &Presence, active: bool) -> Vec<Publication> {
    (0..p.topics.len().min(p.match_types.len()))
        .map(|i| Publication {
            topics: vec![topic(
                hub_path,
                &p.match_types[i],
                &p.topics[i],
                &p.subscriber,
            )],
            event: Some("mercure".into()),
            data: document(hub_path, p, i, active).to_string(),
            private: true,
            ..Publication::default()
        })
        .collect()
}

/// The answer to `GET {hub}/subscriptions…` for an access token granted `allowed`: `parts`
/// are the decoded segments after `/subscriptions` (match type, match, subscriber).
pub fn listing(
    hub_path: &str,
    parts: &[String],
    presences: &[std::sync::Arc<Presence>],
    allowed: &[Selector],
    last_event_id: String,
) -> FullResponse {
    if parts.len() > 3 {
        return FullResponse::text(404, "no such subscription resource");
    }
    if let Some(t) = parts.first() {
        if t != "exact" && t != "urlpattern" {
            return FullResponse::text(
                404,
                format!("no match type {t:?}: subscriptions/exact/… or subscriptions/urlpattern/…"),
            );
        }
    }
    if allowed.is_empty() {
        return FullResponse::text(403, "the token grants no subscribe action")
            .with_header("WWW-Authenticate", "Bearer error=\"insufficient_scope\"");
    }
    let mut docs = Vec::new();
    for p in presences {
        for i in 0..p.topics.len().min(p.match_types.len()) {
            let id = topic(hub_path, &p.match_types[i], &p.topics[i], &p.subscriber);
            let wanted = [&p.match_types[i], &p.topics[i], &p.subscriber];
            let selected = parts.iter().zip(wanted).all(|(want, have)| want == have);
            if !selected {
                continue;
            }
            if any_matches(allowed, &[id]) {
                docs.push(document(hub_path, p, i, true));
            }
        }
    }
    let body = if parts.len() == 3 {
        match docs.pop() {
            Some(d) => d,
            None => return FullResponse::text(404, "no such active subscription"),
        }
    } else {
        let mut id = format!("{hub_path}/subscriptions");
        for p in parts {
            id.push('/');
            id.push_str(&encode_component(p));
        }
        serde_json::json!({
            "id": id,
            "type": "subscriptions",
            "last_event_id": last_event_id,
            "subscriptions": docs,
        })
    };
    FullResponse {
        status: 200,
        headers: vec![
            ("Content-Type".into(), MEDIA_TYPE.into()),
            ("Cache-Control".into(), "no-cache".into()),
        ],
        body: bytes::Bytes::from(body.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_is_announced_at_its_match_type_match_and_subscriber() {
        let p = Presence {
            subscriber: "urn:uuid:1".into(),
            topics: vec!["https://ex.com/books/:id".into(), "*".into()],
            match_types: vec!["urlpattern".into(), "exact".into()],
            payload: serde_json::json!({"u": 1}),
        };
        let u = updates("/.well-known/mercure", &p, true);
        assert_eq!(u.len(), 2);
        assert_eq!(
            u[0].topics[0],
            "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fex.com%2Fbooks%2F%3Aid/urn%3Auuid%3A1"
        );
        assert_eq!(u[0].event.as_deref(), Some("mercure"));
        assert!(u[0].private);
        let doc: serde_json::Value = serde_json::from_str(&u[1].data).unwrap();
        assert_eq!(doc["type"], "subscription");
        assert_eq!(
            (doc["match"].as_str(), doc["match_type"].as_str()),
            (Some("*"), Some("exact"))
        );
        assert_eq!(doc["active"], true);
        assert_eq!(doc["payload"]["u"], 1);
    }
}
