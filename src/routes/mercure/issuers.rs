//! A mercure route's Mercure 1.0 keys, with Mercure's own names: `[[route.issuer]]` tables
//! (`id`, `publisher_jwt_key` or `publisher_jwks_uri`, `publisher_jwt_alg`, the same for
//! subscribers, `jwks_refresh`) for the issuers whose access tokens count, `resource_identifier` (the
//! `aud` those tokens must name; derived from each request when unset) and `public_urls` (the
//! origins the hub answers for). The route-level keys stay the 0.x hub's single implicit
//! issuer.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::access::{origin_of_url, Identity, Issuer, Keys};
use crate::auth::jwks::KeySet;
use crate::auth::pattern::base_for;
use crate::auth::Verifier;
use crate::config::de::de_positive_duration;
use crate::config::{ConfigError, RouteTable};

/// The shortest `jwks_refresh`.
const MIN_REFRESH: Duration = Duration::from_secs(10);

/// One `[[route.issuer]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub(super) struct IssuerConfig {
    /// The `iss` its tokens carry, matched exactly.
    id: toml::Spanned<String>,
    /// The key its publishers' tokens are checked with (none: they may not publish).
    publisher_jwt_key: Option<String>,
    /// Its publishers' algorithm (HS256 with a key; with a JWK Set, pinned when set).
    publisher_jwt_alg: Option<String>,
    /// The JWK Set its publishers' keys come from, instead of `publisher_jwt_key`.
    publisher_jwks_uri: Option<String>,
    /// The key its subscribers' tokens are checked with (none: they may not subscribe).
    subscriber_jwt_key: Option<String>,
    /// Its subscribers' algorithm.
    subscriber_jwt_alg: Option<String>,
    /// The JWK Set its subscribers' keys come from, instead of `subscriber_jwt_key`.
    subscriber_jwks_uri: Option<String>,
    /// How often its JWK Sets are fetched again.
    #[serde(deserialize_with = "de_positive_duration")]
    jwks_refresh: Duration,
}

/// One role's key settings of an issuer, as written.
struct RoleKeys<'a> {
    key: &'a Option<String>,
    alg: &'a Option<String>,
    jwks: &'a Option<String>,
    /// `publisher` or `subscriber`.
    role: &'static str,
}

impl IssuerConfig {
    fn roles(&self) -> [RoleKeys<'_>; 2] {
        [
            RoleKeys {
                key: &self.publisher_jwt_key,
                alg: &self.publisher_jwt_alg,
                jwks: &self.publisher_jwks_uri,
                role: "publisher",
            },
            RoleKeys {
                key: &self.subscriber_jwt_key,
                alg: &self.subscriber_jwt_alg,
                jwks: &self.subscriber_jwks_uri,
                role: "subscriber",
            },
        ]
    }

    /// The keys of one role (reads PEM files, fetches JWK Sets: config time only); `None`
    /// when it has none, `Err` with the key's name and why.
    /// A set the other role already fetched is shared (`held`).
    /// `fetch`: the folder a fetched set is kept in, when the set is to be readied now.
    fn keys(
        &self,
        r: &RoleKeys<'_>,
        fetch: Option<&std::path::Path>,
        held: &mut Vec<Arc<KeySet>>,
    ) -> Result<Option<Keys>, (String, String)> {
        let role = r.role;
        match (r.key, r.jwks) {
            (Some(_), Some(_)) => Err((
                format!("{role}_jwks_uri"),
                format!("{role}_jwt_key and {role}_jwks_uri are two sources of keys: keep one"),
            )),
            (Some(k), None) => {
                let alg = r.alg.as_deref().unwrap_or("HS256");
                Verifier::from_config(alg, k)
                    .map(|v| Some(Keys::Key(v)))
                    .map_err(|why| {
                        (
                            format!("{role}_jwt_key"),
                            format!("{why} (algorithm {alg})"),
                        )
                    })
            }
            (None, Some(uri)) => {
                let name = format!("{role}_jwks_uri");
                check_jwks_uri(uri).map_err(|why| (name.clone(), why))?;
                let set = KeySet::new(uri, r.alg.as_deref(), self.jwks_refresh)
                    .map_err(|why| (format!("{role}_jwt_alg"), why))?;
                if let Some(same) = held.iter().find(|h| h.same_source(&set)) {
                    return Ok(Some(Keys::Set(same.clone())));
                }
                let set = match fetch {
                    Some(dir) => set.cached_in(dir),
                    None => set,
                };
                let set = Arc::new(set);
                if fetch.is_some() {
                    #[cfg(feature = "client")]
                    crate::auth::jwks::fetch_now(&set);
                }
                held.push(set.clone());
                Ok(Some(Keys::Set(set)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// A `jwks_uri` is an https URL (http only to this host: over the network, anyone on the path
/// could swap in a key of their own), and this build can fetch it.
fn check_jwks_uri(uri: &str) -> Result<(), String> {
    if !cfg!(feature = "client") {
        return Err(
            "this build has no HTTP client (built without the client feature): give the key itself (*_jwt_key)".into(),
        );
    }
    let shown = || format!("{:?}", uri.chars().take(200).collect::<String>());
    let Ok(u) = url::Url::parse(uri) else {
        return Err(format!("{} is not an https URL of a JWK Set", shown()));
    };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{}: a JWK Set over plain http could be swapped by anyone on the path; use https (http is taken to this host only)",
            shown()
        )),
        _ => Err(format!("{} is not an https URL of a JWK Set", shown())),
    }
}

impl Default for IssuerConfig {
    fn default() -> Self {
        IssuerConfig {
            id: toml::Spanned::new(0..0, String::new()),
            publisher_jwt_key: None,
            publisher_jwt_alg: None,
            publisher_jwks_uri: None,
            subscriber_jwt_key: None,
            subscriber_jwt_alg: None,
            subscriber_jwks_uri: None,
            jwks_refresh: Duration::from_secs(600),
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
            if i.roles()
                .iter()
                .all(|r| r.key.is_none() && r.jwks.is_none())
            {
                return Err(at(
                    "id",
                    format!("issuer {id:?} has no keys: set publisher_jwt_key or publisher_jwks_uri, subscriber_jwt_key or subscriber_jwks_uri"),
                ));
            }
            let with_sets = i.roles().iter().any(|r| r.jwks.is_some());
            if with_sets && i.jwks_refresh < MIN_REFRESH {
                return Err(at(
                    "jwks_refresh",
                    format!(
                        "issuer {id:?}: jwks_refresh under {MIN_REFRESH:?} would hammer its server"
                    ),
                ));
            }
            for r in i.roles() {
                if let Err((name, why)) = i.keys(&r, None, &mut Vec::new()) {
                    return Err(at(&name, format!("issuer {id:?}: {why}")));
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

    /// The issuers and the hub's identity (reads PEM key files and fetches JWK Sets, each
    /// within a deadline: config time only).
    /// `data_dir` keeps the JWK Sets fetched.
    pub(super) fn build(
        &self,
        path: &str,
        data_dir: &std::path::Path,
    ) -> Result<(Vec<Issuer>, Identity), String> {
        let mut issuers = Vec::with_capacity(self.issuers.len());
        for i in &self.issuers {
            let [p, s] = i.roles();
            let mut held = Vec::new();
            let mut keys = |r| {
                i.keys(&r, Some(data_dir), &mut held)
                    .map_err(|(_, why)| why)
            };
            let publisher = keys(p)?;
            issuers.push(Issuer {
                id: i.id.get_ref().clone(),
                publisher,
                subscriber: keys(s)?,
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
