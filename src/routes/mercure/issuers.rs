//! A mercure route's Mercure 1.0 keys, with Mercure's own names: `[[route.issuer]]` tables
//! (`id`, `publisher_jwt_key` / `publisher_jwt_alg`, `subscriber_jwt_key` /
//! `subscriber_jwt_alg`) for the issuers whose access tokens count, `resource_identifier` (the
//! `aud` those tokens must name; derived from each request when unset) and `public_urls` (the
//! origins the hub answers for). The route-level keys stay the 0.x hub's single implicit
//! issuer.

use serde::Deserialize;

use crate::auth::access::{origin_of_url, Identity, Issuer};
use crate::auth::pattern::base_for;
use crate::auth::Verifier;
use crate::config::{ConfigError, RouteTable};

/// One `[[route.issuer]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub(super) struct IssuerConfig {
    /// The `iss` its tokens carry, matched exactly.
    id: toml::Spanned<String>,
    /// The key its publishers' tokens are checked with (none: they may not publish).
    publisher_jwt_key: Option<String>,
    /// Its publishers' algorithm.
    publisher_jwt_alg: String,
    /// The key its subscribers' tokens are checked with (none: they may not subscribe).
    subscriber_jwt_key: Option<String>,
    /// Its subscribers' algorithm.
    subscriber_jwt_alg: String,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        IssuerConfig {
            id: toml::Spanned::new(0..0, String::new()),
            publisher_jwt_key: None,
            publisher_jwt_alg: "HS256".into(),
            subscriber_jwt_key: None,
            subscriber_jwt_alg: "HS256".into(),
        }
    }
}

/// The 1.0 keys of a mercure route.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct V1Keys {
    /// The resource identifier access tokens must name in `aud` (the hub's URL).
    resource_identifier: Option<String>,
    /// The URLs (origins) the hub is reached at; a request to another gets 421.
    public_urls: Vec<String>,
}

/// The route's 1.0 settings as read.
#[derive(Clone, Debug, Default)]
pub(super) struct V1Settings {
    pub(super) keys: V1Keys,
    pub(super) issuers: Vec<IssuerConfig>,
}

impl V1Settings {
    /// Reads them from the route's table.
    pub(super) fn read(t: &RouteTable) -> Result<V1Settings, ConfigError> {
        Ok(V1Settings {
            keys: t.read()?,
            issuers: t.read_list("issuer")?,
        })
    }

    /// Ids present and distinct, each issuer with a key that is what its algorithm needs, a
    /// resource identifier and public URLs that are http(s) URLs.
    pub(super) fn check(&self, t: &RouteTable) -> Result<(), ConfigError> {
        let path = t.path.get_ref();
        let mut seen: Vec<&str> = Vec::new();
        for i in &self.issuers {
            let id = i.id.get_ref().as_str();
            let at = |key: &str, why: String| {
                t.refuse_at(
                    i.id.span(),
                    &format!("issuer.{key}"),
                    format!("route {path}: {why}"),
                )
            };
            if id.is_empty() {
                return Err(t.refuse(
                    "issuer",
                    format!("route {path}: every issuer needs an id (the iss of its tokens)"),
                ));
            }
            if seen.contains(&id) {
                return Err(at("id", format!("issuer {id:?} is listed twice")));
            }
            seen.push(id);
            if i.publisher_jwt_key.is_none() && i.subscriber_jwt_key.is_none() {
                return Err(at(
                    "id",
                    format!("issuer {id:?} has neither publisher_jwt_key nor subscriber_jwt_key"),
                ));
            }
            for (key, alg, name) in [
                (
                    &i.publisher_jwt_key,
                    &i.publisher_jwt_alg,
                    "publisher_jwt_key",
                ),
                (
                    &i.subscriber_jwt_key,
                    &i.subscriber_jwt_alg,
                    "subscriber_jwt_key",
                ),
            ] {
                if let Some(k) = key {
                    if let Err(why) = Verifier::from_config(alg, k) {
                        return Err(at(name, format!("issuer {id:?}: {why} (algorithm {alg})")));
                    }
                }
            }
        }
        if !self.issuers.is_empty()
            && self.keys.resource_identifier.is_none()
            && self.keys.public_urls.is_empty()
        {
            let why = format!(
                "route {path}: with issuers, set resource_identifier (the hub's URL, which tokens' aud names) or public_urls: else the Host header a client sends would say which audience counts"
            );
            return Err(t.refuse("issuer", why));
        }
        if let Some(r) = &self.keys.resource_identifier {
            if let Err(why) = origin_of_url(r) {
                return Err(t.refuse("resource_identifier", format!("route {path}: {why}")));
            }
        }
        for u in &self.keys.public_urls {
            if let Err(why) = origin_of_url(u) {
                return Err(t.refuse("public_urls", format!("route {path}: {why}")));
            }
        }
        Ok(())
    }

    /// The issuers and the hub's identity (reads PEM key files: config time only).
    pub(super) fn build(&self, path: &str) -> Result<(Vec<Issuer>, Identity), String> {
        let verifier = |key: &Option<String>, alg: &str| {
            key.as_ref()
                .map(|k| Verifier::from_config(alg, k))
                .transpose()
        };
        let mut issuers = Vec::with_capacity(self.issuers.len());
        for i in &self.issuers {
            issuers.push(Issuer {
                id: i.id.get_ref().clone(),
                publisher: verifier(&i.publisher_jwt_key, &i.publisher_jwt_alg)?,
                subscriber: verifier(&i.subscriber_jwt_key, &i.subscriber_jwt_alg)?,
            });
        }
        let public_origins = self
            .keys
            .public_urls
            .iter()
            .map(|u| origin_of_url(u))
            .collect::<Result<_, _>>()?;
        let pinned = self.keys.resource_identifier.clone();
        Ok((
            issuers,
            Identity {
                base: base_for(pinned.as_deref()),
                pinned,
                public_origins,
                path: path.to_string(),
            },
        ))
    }
}
