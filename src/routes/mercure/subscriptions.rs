//! Mercure's active subscriptions (`subscriptions = true` on a `mercure` route): a private
//! update on `{hub}/subscriptions/{topic}/{subscriber}` whenever a subscription starts or ends
//! (a JSON-LD `Subscription` document), and `GET {hub}/subscriptions[/{topic}[/{subscriber}]]`
//! listing the active ones for a token whose `mercure.subscribe` selects them.

use std::sync::Arc;

use super::Mercure;
use crate::auth::encode_component;
use crate::auth::selector::any_matches;
use crate::hub::journal::Publication;
use crate::hub::{Hub, Presence};
use crate::request::{percent_decode, Request};
use crate::response::FullResponse;
use crate::routes::Cx;
use crate::source::{DirectWriter, NextEvent, Source};

/// A new subscriber IRI: `urn:uuid:` and a random (version 4) UUID.
pub(super) fn new_subscriber_id() -> String {
    crate::random::uuid_urn()
}

/// The topic (and JSON-LD id) of one subscription.
fn subscription_topic(hub_path: &str, topic: &str, subscriber: &str) -> String {
    format!(
        "{hub_path}/subscriptions/{}/{}",
        encode_component(topic),
        encode_component(subscriber)
    )
}

fn document(hub_path: &str, p: &Presence, topic: &str, active: bool) -> serde_json::Value {
    serde_json::json!({
        "@context": "https://mercure.rocks/",
        "id": subscription_topic(hub_path, topic, &p.subscriber),
        "type": "Subscription",
        "topic": topic,
        "subscriber": p.subscriber,
        "active": active,
        "payload": p.payload,
    })
}

/// Publishes (private) that `p` started or ended, one update per topic; in the background.
pub(super) fn announce(hub: Arc<Hub>, hub_path: String, p: Arc<Presence>, active: bool) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let updates: Vec<Publication> = if p.match_types.is_empty() {
            p.topics
                .iter()
                .map(|t| Publication {
                    topics: vec![subscription_topic(&hub_path, t, &p.subscriber)],
                    data: document(&hub_path, &p, t, active).to_string(),
                    private: true,
                    ..Publication::default()
                })
                .collect()
        } else {
            super::subscriptions_v1::updates(&hub_path, &p, active)
        };
        for publication in updates {
            if let Err(e) = hub.publish(publication).await {
                log::warn!(
                    "route {hub_path}: subscription update for {} not stored: {e}",
                    p.subscriber
                );
            }
        }
    });
}

/// A subscriber's source that announces the end of its subscription when the stream ends.
pub(super) struct Announced {
    pub(super) inner: Box<dyn Source>,
    pub(super) hub: Arc<Hub>,
    pub(super) hub_path: String,
    pub(super) presence: Arc<Presence>,
}

impl Source for Announced {
    fn next(&mut self) -> NextEvent<'_> {
        self.inner.next()
    }

    fn attach_direct(&mut self, writer: Arc<dyn DirectWriter>) {
        self.inner.attach_direct(writer);
    }

    fn try_next(&mut self) -> Option<crate::sse::EncodedEvent> {
        self.inner.try_next()
    }

    fn backlog(&self) -> bool {
        self.inner.backlog()
    }

    fn park(&mut self) -> bool {
        self.inner.park()
    }

    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.inner.poll_wake(cx)
    }

    fn wake_at(&self) -> Option<tokio::time::Instant> {
        self.inner.wake_at()
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        announce(
            self.hub.clone(),
            self.hub_path.clone(),
            self.presence.clone(),
            false,
        );
    }
}

impl Mercure {
    /// The route's active subscriptions on the whole box: this process's and, under
    /// `[server] processes`, every sibling worker's.
    async fn box_presences(&self, cx: &Cx) -> Vec<Arc<Presence>> {
        let path = &self.path;
        let mut all = self.hub.presences();
        let config = cx.config();
        if let (Some(me), true) = (crate::process::worker_number(), config.server.processes > 1) {
            all.extend(
                crate::siblings::presences(&config.journal.dir, config.server.processes, me, path)
                    .await,
            );
        }
        all
    }

    /// `GET {hub}/subscriptions[/{topic}[/{subscriber}]]` (0.x), or with an access token
    /// `…/subscriptions[/{match_type}[/{match}[/{subscriber}]]]` (1.0).
    pub(super) async fn subscriptions(&self, cx: &Cx, req: &Request) -> FullResponse {
        let (m, hub) = (self, &self.hub);
        let hub_path = &m.path;
        if !m.conf.subscriptions {
            return FullResponse::text(404, format!("{hub_path}: subscriptions = false"));
        }
        if req.method != "GET" {
            return FullResponse::text(405, "the subscriptions API is read-only (GET)")
                .with_header("Allow", "GET");
        }
        let claims = match m
            .auth
            .verified(req, crate::auth::access::Role::Subscriber)
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return super::refuse(401, crate::auth::AuthError::Missing.to_string()),
            Err((status, why)) => return super::refuse(status, why),
        };
        let allowed = claims.subscribe.unwrap_or_default();
        // Segments are matched encoded (a topic holds slashes): from the raw request URI.
        let prefix = format!("{hub_path}/subscriptions");
        let raw = req.var("REQUEST_URI").unwrap_or(&req.path);
        let raw = raw.split('?').next().unwrap_or("");
        let rest = raw.strip_prefix(&prefix).unwrap_or("");
        let parts: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        if claims.access {
            let presences = self.box_presences(cx).await;
            return super::subscriptions_v1::listing(
                hub_path,
                &parts,
                &presences,
                &allowed,
                hub.newest_event_id(),
            );
        }
        if parts.len() > 2 {
            return FullResponse::text(404, "no such subscription resource");
        }
        let mut docs = Vec::new();
        // 0.x subscriptions only: a 1.0 one is announced and listed as 1.0's.
        for p in self.box_presences(cx).await {
            if !p.match_types.is_empty() {
                continue;
            }
            for t in &p.topics {
                let id = subscription_topic(hub_path, t, &p.subscriber);
                let selected = parts.first().is_none_or(|want| want == t)
                    && parts.get(1).is_none_or(|want| *want == p.subscriber);
                if selected && any_matches(&allowed, &[id]) {
                    docs.push(document(hub_path, &p, t, true));
                }
            }
        }
        let body = if parts.len() == 2 {
            match docs.pop() {
                Some(d) => d,
                None => return FullResponse::text(404, "no such active subscription"),
            }
        } else {
            serde_json::json!({
                "@context": "https://mercure.rocks/",
                "id": format!("{prefix}{rest}"),
                "type": "Subscriptions",
                "lastEventID": hub.newest_event_id(),
                "subscriptions": docs,
            })
        };
        FullResponse {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/ld+json".into()),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            body: bytes::Bytes::from(body.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_ids_are_distinct_v4_uuids() {
        let a = new_subscriber_id();
        let b = new_subscriber_id();
        assert_ne!(a, b);
        let u = a.strip_prefix("urn:uuid:").unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
    }

    #[test]
    fn topics_are_encoded_as_one_segment() {
        assert_eq!(
            subscription_topic(
                "/.well-known/mercure",
                "https://ex.com/b/{id}",
                "urn:uuid:1"
            ),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fex.com%2Fb%2F%7Bid%7D/urn%3Auuid%3A1"
        );
    }
}
