//! An issuer's keys from its JWK Set (`jwks_uri`, RFC 7517), as Mercure 1.0 points its hub at an
//! authorization server (Keycloak's `…/protocol/openid-connect/certs`). The set is fetched when
//! the route is built (a deadline of [`FETCH_TIMEOUT`], so a CGI request and a daemon's first
//! request both find keys), then again every `jwks_refresh`, and soon after a token names a key
//! id the set does not hold (a rotation; at most once per [`WAKE_EVERY`]). A fetch that fails
//! keeps the keys already held and is retried with backoff.
//!
//! Keys are checked for what they are: only public keys (RSA, EC P-256/P-384, Ed25519) that are
//! for signatures; a secret (`kty: oct`) or an encryption key in the set is skipped. The
//! algorithm is the configured one when `*_jwt_alg` is set, else the key's own `alg`, else the
//! token's if it suits the key's type; never an HMAC one. A set over [`MAX_BYTES`] or
//! [`MAX_KEYS`] keys is refused as a whole.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde::Deserialize;
use tokio::time::Instant;

use super::{AuthError, Verifier};

/// Longest a fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest set accepted (Keycloak's is about 3 KB).
pub const MAX_BYTES: usize = 256 * 1024;
/// Most keys in a set.
pub const MAX_KEYS: usize = 100;
/// Least time between two fetches asked for by an unknown key id.
pub const WAKE_EVERY: Duration = Duration::from_secs(10);

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Family {
    fn suits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Family::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Family::P256 => alg == ES256,
            Family::P384 => alg == ES384,
            Family::Ed25519 => alg == EdDSA,
        }
    }
}

/// One usable key of the set.
struct SetKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

/// The keys held, and why the last fetch failed (if it did).
#[derive(Default)]
struct Held {
    keys: Arc<Vec<SetKey>>,
    fetched: bool,
    error: Option<String>,
}

/// An issuer's JWK Set for one role: where it comes from and the keys held.
pub struct KeySet {
    /// `jwks_uri`.
    pub uri: String,
    /// It as logs show it: without a user or password.
    pub shown: String,
    /// `*_jwt_alg` when the config sets it: tokens must be signed with it.
    pinned: Option<Algorithm>,
    /// How often it is fetched again.
    pub refresh: Duration,
    held: RwLock<Held>,
    /// Wakes the refresher early (an unknown key id).
    wake: Arc<tokio::sync::Notify>,
    last_wake: Mutex<Option<Instant>>,
    /// Where the last set fetched is kept (the data directory), for a CGI request or a reload
    /// to start from instead of fetching.
    cache_file: Option<std::path::PathBuf>,
    /// Whether its refresher runs (a build without the HTTP client has none).
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    started: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({})", self.shown)
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWK Set document, and how many were skipped (with the first reason).
fn parse_set(body: &[u8]) -> Result<(Vec<SetKey>, usize, Option<String>), String> {
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|e| format!("not a JWK Set (a JSON object with \"keys\"): {e}"))?;
    if raw.keys.len() > MAX_KEYS {
        return Err(format!("{} keys, over {MAX_KEYS}", raw.keys.len()));
    }
    let (mut keys, mut skipped, mut why) = (Vec::new(), 0, None);
    for v in raw.keys {
        match usable(v) {
            Ok(k) => keys.push(k),
            Err(e) => {
                skipped += 1;
                why.get_or_insert(e);
            }
        }
    }
    Ok((keys, skipped, why))
}

/// A key of the set as a verifying key, or why it is not one.
fn usable(v: serde_json::Value) -> Result<SetKey, String> {
    let jwk: Jwk = serde_json::from_value(v).map_err(|e| format!("unreadable key: {e}"))?;
    let kid = jwk.common.key_id.clone();
    let name = kid
        .as_deref()
        .unwrap_or("(no kid)")
        .chars()
        .take(64)
        .collect::<String>();
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err(format!("key {name} is not for signatures"));
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Family::P256,
            EllipticCurve::P384 => Family::P384,
            _ => return Err(format!("key {name}: curve not supported (P-256, P-384)")),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Family::Ed25519
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err(format!("key {name}: not Ed25519")),
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!(
                "key {name} is a shared secret (kty oct), not a public key"
            ))
        }
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => match a.to_string().parse::<Algorithm>() {
            Ok(a) if family.suits(a) => Some(a),
            _ => {
                return Err(format!(
                    "key {name}: alg {a} is not a signature algorithm for its type"
                ))
            }
        },
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {name}: {e}"))?;
    Ok(SetKey {
        kid,
        alg,
        family,
        key,
    })
}

impl KeySet {
    /// A set fetched from `uri`; `pinned` is the configured algorithm, if any.
    pub fn new(uri: &str, pinned: Option<&str>, refresh: Duration) -> Result<KeySet, String> {
        let pinned = pinned
            .map(|a| {
                let alg: Algorithm = a.parse().map_err(|_| format!("unknown algorithm `{a}`"))?;
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    return Err(format!(
                        "{a} is an HMAC algorithm: a JWK Set holds public keys (RS256, PS256, ES256, ES384, EdDSA)"
                    ));
                }
                Ok(alg)
            })
            .transpose()?;
        let shown = match url::Url::parse(uri) {
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            Err(_) => uri.chars().take(200).collect(),
        };
        Ok(KeySet {
            uri: uri.to_string(),
            shown,
            pinned,
            refresh,
            held: RwLock::new(Held::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            last_wake: Mutex::new(None),
            started: Default::default(),
            cache_file: None,
        })
    }

    /// Keeps the last set fetched in `dir` (a file named by the URI's v5 UUID).
    pub fn cached_in(mut self, dir: &std::path::Path) -> KeySet {
        let name = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, self.uri.as_bytes());
        self.cache_file = Some(dir.join(".jwks").join(format!("{name}.json")));
        self
    }

    /// The set kept on disk, if it was written less than `max_age` ago (blocking: config time
    /// or a blocking thread).
    pub fn load_kept(&self, max_age: Duration) -> Option<Vec<u8>> {
        let path = self.cache_file.as_ref()?;
        let age = std::fs::metadata(path)
            .ok()?
            .modified()
            .ok()?
            .elapsed()
            .ok()?;
        if age > max_age {
            return None;
        }
        std::fs::read(path).ok().filter(|b| b.len() <= MAX_BYTES)
    }

    /// Keeps `body`, a set that installed, on disk (blocking; a failure only costs a fetch).
    pub fn keep(&self, body: &[u8]) {
        let Some(path) = &self.cache_file else {
            return;
        };
        let tmp = path.with_extension("tmp");
        let done = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, body))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = done {
            log::debug!("jwks {}: not kept on disk: {e}", self.shown);
        }
    }

    /// Whether `other` fetches the same document for the same algorithm as often (one issuer
    /// naming one set for both roles fetches it once).
    pub fn same_source(&self, other: &KeySet) -> bool {
        self.uri == other.uri && self.pinned == other.pinned && self.refresh == other.refresh
    }

    /// Takes a fetched document: its keys replace the ones held. A bad document keeps them.
    pub fn install(&self, body: Result<Vec<u8>, String>) -> Result<usize, String> {
        let parsed = body.and_then(|b| parse_set(&b));
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        match parsed {
            Ok((keys, skipped, why)) => {
                if skipped > 0 {
                    log::info!(
                        "jwks {}: {skipped} key(s) skipped, e.g. {}",
                        self.shown,
                        why.unwrap_or_default()
                    );
                }
                let n = keys.len();
                held.keys = Arc::new(keys);
                held.fetched = true;
                held.error = None;
                Ok(n)
            }
            Err(e) => {
                held.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The verifier for a token with `header`: the key its `kid` names (or the only key that
    /// suits its algorithm), with the algorithm the config, the key or the token says.
    pub fn verifier(&self, header: &Header) -> Result<Verifier, AuthError> {
        let alg = header.alg;
        if self.pinned.is_some_and(|p| p != alg) {
            return Err(AuthError::Invalid(format!(
                "token signed with {alg:?}, this issuer's keys take {:?} only",
                self.pinned.unwrap_or(alg)
            )));
        }
        let (keys, fetched) = {
            let held = self.held.read().unwrap_or_else(|p| p.into_inner());
            (held.keys.clone(), held.fetched)
        };
        if !fetched {
            return Err(AuthError::Unavailable(
                "the issuer's JWK Set (jwks_uri) has not been fetched; the hub's log says why"
                    .into(),
            ));
        }
        let fits = |k: &&SetKey| k.family.suits(alg) && k.alg.is_none_or(|a| a == alg);
        let key = match &header.kid {
            Some(kid) => match keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .reduce(|first, k| if fits(&first) { first } else { k })
            {
                // Of keys sharing the kid, the first that takes the algorithm.
                Some(k) if fits(&k) => k,
                Some(_) => {
                    return Err(AuthError::Invalid(format!(
                        "key {} does not take {alg:?}",
                        shown(kid)
                    )))
                }
                None => {
                    self.wake_soon();
                    return Err(AuthError::Invalid(format!(
                        "key id {} is not in the issuer's JWK Set (fetching it again)",
                        shown(kid)
                    )));
                }
            },
            None => {
                let mut suited = keys.iter().filter(fits);
                match (suited.next(), suited.next()) {
                    (Some(k), None) => k,
                    (None, _) => {
                        return Err(AuthError::Invalid(format!(
                            "no key in the issuer's JWK Set takes {alg:?}"
                        )))
                    }
                    (Some(_), Some(_)) => {
                        return Err(AuthError::Invalid(
                            "the token names no key id (kid) and the issuer's JWK Set holds several keys for it".into(),
                        ))
                    }
                }
            }
        };
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(AuthError::Invalid(
                "an HMAC token needs a shared key".into(),
            ));
        }
        Ok(Verifier {
            alg,
            key: key.key.clone(),
            audience: Vec::new(),
        })
    }

    /// Asks the refresher for a fetch now, at most once per [`WAKE_EVERY`].
    fn wake_soon(&self) {
        let mut last = self.last_wake.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= WAKE_EVERY) {
            *last = Some(now);
            self.wake.notify_one();
        }
    }
}

/// A client-chosen text as logs and bodies show it: at most 64 characters, debug-quoted.
fn shown(s: &str) -> String {
    format!("{:?}", s.chars().take(64).collect::<String>())
}

#[cfg(feature = "client")]
mod fetch;
#[cfg(feature = "client")]
pub use fetch::{fetch_now, start};

/// How old a set kept on disk may be and still stand in when its server cannot be reached.
pub const KEPT_FALLBACK: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod tests;
