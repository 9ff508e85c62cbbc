//! What the journaled kinds (topics, mercure, a command with a `topic`) are built on: their hub
//! — kept across a reload when it is stored in the same place, else opened — and their
//! authorization rules.

use std::sync::Arc;

use super::{Build, BuildError};
use crate::auth::RouteAuth;
use crate::config::{Config, RouteConfig, RouteKind};
use crate::hub::replay::ReplayBounds;
use crate::hub::{Hub, HubSettings};

/// The hub of route `r`: the one in `b.keep` (a reload) when it is stored in the same place,
/// else newly opened (blocking file I/O: config time only).
pub(super) fn hub(b: &Build, r: &RouteConfig) -> Result<Arc<Hub>, BuildError> {
    let path = r.path.get_ref();
    let storage = b.config.journal.storage_for(r);
    let kept = b.keep.iter().find_map(|o| match o.route.hub() {
        Some(hub) if &o.path == path && hub.location() == storage.location() => Some(hub.clone()),
        _ => None,
    });
    match kept {
        Some(hub) => Ok(hub),
        None => Hub::open(path, storage, settings(b.config, r, b.load_after)).map_err(|e| {
            BuildError::Unavailable {
                reason: e.public_reason(),
                detail: format!("journal unavailable: {e}"),
            }
        }),
    }
}

/// The hub settings of route `r`.
fn settings(config: &Config, r: &RouteConfig, load_after: u64) -> HubSettings {
    HubSettings {
        history: ReplayBounds {
            events: r.history_events,
            bytes: r.history_bytes,
            age: r.history_age,
        },
        subscriber_queue: r.subscriber_queue,
        retry: config.stream.retry,
        publish_timeout: config.journal.lock_timeout,
        // Mercure's subscription events come and go with every connection: kept out of the
        // replay history, so that anonymous churn never pushes a real event out of it.
        unretained_prefix: (r.kind == RouteKind::Mercure && r.subscriptions)
            .then(|| format!("{}/subscriptions/", r.path.get_ref())),
        load_after,
    }
}

/// The authorization rules of route `r` (reads PEM key files: config time only).
pub(super) fn auth(r: &RouteConfig) -> Result<RouteAuth, BuildError> {
    fn key<'a>(
        k: &'a Option<toml::Spanned<String>>,
        alg: &'a toml::Spanned<String>,
    ) -> Option<(&'a str, &'a str)> {
        k.as_ref()
            .map(|k| (k.get_ref().as_str(), alg.get_ref().as_str()))
    }
    RouteAuth::new(crate::auth::route::AuthSettings {
        publisher_key: key(&r.publisher_jwt_key, &r.publisher_jwt_alg),
        subscriber_key: key(&r.subscriber_jwt_key, &r.subscriber_jwt_alg),
        jwt_audience: &r.jwt_audience,
        cookie_name: &r.cookie_name,
        publish_origins: &r.publish_origins,
        user_param: r.user_param.as_deref(),
        user_topics: &r.user_topics,
    })
    .map_err(BuildError::Invalid)
}
