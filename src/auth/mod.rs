//! Authorization, one module for every route that has it: JWS compact tokens (Mercure's
//! `mercure.publish` / `mercure.subscribe` / `mercure.payload` claims) found in
//! `Authorization: Bearer`, the `authorization` query parameter, or a cookie; verified with the
//! `jsonwebtoken` crate against one configured algorithm and key (no `alg: none`, no HS/RS
//! confusion), `exp` and `nbf` enforced. Topic selectors are in [`selector`].

pub mod access;
pub mod cache;
pub mod jwks;
pub mod pattern;
pub mod route;
pub mod selector;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::request::Request;
pub use route::RouteAuth;
pub use selector::Selector;

/// Longest token accepted (bytes); a longer one is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// A configured key: the algorithm tokens must be signed with and the key that checks them.
#[derive(Clone)]
pub struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
    /// Audiences a token's `aud` may name (`jwt_audience`); empty: a token with `aud` is
    /// refused (RFC 7519 4.1.3: a recipient not named in it must reject it).
    audience: Vec<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({:?})", self.alg)
    }
}

impl Verifier {
    /// A verifier from config: `alg` is `HS256`/`HS384`/`HS512` (then `key` is the secret) or
    /// `RS256`…`RS512`, `PS256`…, `ES256`/`ES384` (then `key` is a PEM public key, inline or
    /// the path of a file holding one). Blocking file I/O: call it while loading config.
    pub fn from_config(alg: &str, key: &str) -> Result<Verifier, String> {
        let alg: Algorithm = alg.parse().map_err(|_| {
            format!("unknown algorithm `{alg}` (HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384)")
        })?;
        if key.is_empty() {
            return Err("empty key".into());
        }
        let pem = || -> Result<Vec<u8>, String> {
            if key.trim_start().starts_with("-----BEGIN") {
                Ok(key.as_bytes().to_vec())
            } else {
                std::fs::read(key).map_err(|e| format!("reading the public key {key}: {e}"))
            }
        };
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                check_hmac_secret(key, alg)?;
                DecodingKey::from_secret(key.as_bytes())
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem()?)
                .map_err(|e| format!("not an EC public key in PEM form: {e}"))?,
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem()?)
                .map_err(|e| format!("not an Ed25519 public key in PEM form: {e}"))?,
            _ => DecodingKey::from_rsa_pem(&pem()?)
                .map_err(|e| format!("not an RSA public key in PEM form: {e}"))?,
        };
        Ok(Verifier {
            alg,
            key,
            audience: Vec::new(),
        })
    }

    /// Accepts tokens whose `aud` names one of `audience`.
    pub fn with_audience(mut self, audience: &[String]) -> Verifier {
        self.audience = audience.to_vec();
        self
    }

    /// Checks a token's length, algorithm and signature; returns its claims as `T` (the dates
    /// and the audience are the caller's to check).
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<T, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid(format!(
                "token longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        if header.alg != self.alg {
            return Err(AuthError::Invalid(format!(
                "token signed with {:?}, this route accepts {:?} only",
                header.alg, self.alg
            )));
        }
        // Signature and algorithm by jsonwebtoken; the registered claims by the caller, as
        // RFC 7519 says (NumericDates may be fractional; a date that is not a number is an
        // error).
        let mut v = Validation::new(self.alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<T>(token, &self.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            AuthError::Invalid(match e.kind() {
                K::InvalidSignature => "bad signature".into(),
                K::InvalidAlgorithm => "algorithm not accepted".into(),
                K::Json(_) => "claims are not the expected JSON (mercure.publish and mercure.subscribe are lists of strings or of {match, match_type} objects)".into(),
                _ => format!("invalid token: {e}"),
            })
        })?;
        Ok(data.claims)
    }

    /// Checks a token's signature, algorithm, `exp` and `nbf`; returns its claims.
    pub fn verify(&self, token: &str, base: &url::Url) -> Result<Claims, AuthError> {
        let c: RawClaims = self.decode(token)?;
        let exp = check_dates(c.exp.as_ref(), c.nbf.as_ref())?;
        if let Some(aud) = &c.aud {
            self.check_audience(aud)?;
        }
        let m = c.mercure.unwrap_or_default();
        let list = |v: &Option<Vec<serde_json::Value>>, name: &str| {
            v.as_ref()
                .map(|v| claim_selectors(v, base))
                .transpose()
                .map_err(|why| AuthError::Invalid(format!("mercure.{name}: {why}")))
        };
        // Mercure 1.0's object form may carry a payload per entry: the first stands in for a
        // missing mercure.payload (a subscription has one payload here).
        let entry_payload = || {
            m.subscribe
                .iter()
                .flatten()
                .find_map(|e| e.get("payload").cloned())
        };
        Ok(Claims {
            publish: list(&m.publish, "publish")?,
            subscribe: list(&m.subscribe, "subscribe")?,
            payload: m.payload.clone().or_else(entry_payload),
            subject: c.sub.as_ref().and_then(|s| s.as_str()).map(str::to_string),
            expires: expiry(exp),
            access: false,
        })
    }

    /// `aud` (a string or a list of strings) must name one of the configured audiences.
    fn check_audience(&self, aud: &serde_json::Value) -> Result<(), AuthError> {
        let named: Vec<&str> = match aud {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        if named.is_empty() {
            return Err(AuthError::Invalid(
                "aud must be a string or a list of strings".into(),
            ));
        }
        if self.audience.is_empty() {
            return Err(AuthError::Invalid(
                "the token names an audience (aud) and this route accepts none: set jwt_audience"
                    .into(),
            ));
        }
        if named.iter().any(|a| self.audience.iter().any(|b| b == a)) {
            Ok(())
        } else {
            Err(AuthError::Invalid(
                "the token's audience (aud) is not one of this route's jwt_audience".into(),
            ))
        }
    }
}

/// When a token whose `exp` is `exp` expires (a date past what a clock can hold never comes:
/// no expiry).
pub(crate) fn expiry(exp: Option<f64>) -> Option<SystemTime> {
    exp.and_then(|e| UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(e).ok()?))
}

/// `exp` (returned) and `nbf` against the clock, without leeway.
pub(crate) fn check_dates(
    exp: Option<&serde_json::Value>,
    nbf: Option<&serde_json::Value>,
) -> Result<Option<f64>, AuthError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let exp = exp.map(|v| numeric_date(v, "exp")).transpose()?;
    if exp.is_some_and(|exp| now >= exp) {
        return Err(AuthError::Invalid("token expired (exp)".into()));
    }
    if let Some(nbf) = nbf.map(|v| numeric_date(v, "nbf")).transpose()? {
        if now < nbf {
            return Err(AuthError::Invalid("token not valid yet (nbf)".into()));
        }
    }
    Ok(exp)
}

/// A NumericDate (RFC 7519 2): seconds since 1970 as a JSON number, fractional or not.
fn numeric_date(v: &serde_json::Value, claim: &str) -> Result<f64, AuthError> {
    v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
        AuthError::Invalid(format!(
            "{claim} must be a number of seconds since 1970 (a NumericDate)"
        ))
    })
}

/// Shortest HMAC secret accepted: 256 bits, as RFC 7518 (3.2) asks of HS256.
pub const MIN_HMAC_SECRET: usize = 32;

/// An HMAC secret is the secret itself: a PEM key or a file path given where the algorithm is
/// HMAC would make the public key (or the path's text) the secret anyone can sign with.
fn check_hmac_secret(key: &str, alg: Algorithm) -> Result<(), String> {
    let k = key.trim();
    if k.starts_with("-----BEGIN") {
        return Err(format!(
            "this is a PEM key but the algorithm is {alg:?} (HMAC), which would use the key's \
             text as a shared secret: set the matching *_jwt_alg (RS256, ES256, ...) for a public key"
        ));
    }
    // An absolute path names a directory that exists (a base64 secret may start with `/`).
    let absolute = k.starts_with('/')
        && std::path::Path::new(k)
            .parent()
            .is_some_and(|d| d != std::path::Path::new("/") && d.is_dir());
    let looks_like_path = absolute
        || ["./", "../", "~/"].iter().any(|p| k.starts_with(p))
        || [".pem", ".key", ".pub", ".crt", ".der"]
            .iter()
            .any(|e| k.to_ascii_lowercase().ends_with(e))
        || std::path::Path::new(k).is_file();
    if looks_like_path {
        return Err(format!(
            "this looks like a file path but the algorithm is {alg:?} (HMAC), whose key is the \
             secret itself: for a public key file set the matching *_jwt_alg (RS256, ES256, ...)"
        ));
    }
    if key.len() < MIN_HMAC_SECRET {
        return Err(format!(
            "an HMAC secret of {} bytes can be guessed; use {MIN_HMAC_SECRET} bytes (256 bits) or more",
            key.len()
        ));
    }
    Ok(())
}

/// The entries of `mercure.publish` / `mercure.subscribe`: 0.x's strings (`*`, a topic, a URI
/// template) or Mercure 1.0's objects `{match, match_type}` (exact or a URL Pattern resolved
/// against `base`). One malformed entry refuses the token.
fn claim_selectors(list: &[serde_json::Value], base: &url::Url) -> Result<Vec<Selector>, String> {
    if list.len() > access::MAX_DETAILS {
        return Err(format!("over {} entries", access::MAX_DETAILS));
    }
    list.iter()
        .map(|e| match e {
            serde_json::Value::String(s) => Ok(Selector::parse(s)),
            _ => access::matcher(e, base),
        })
        .collect()
}

#[derive(Deserialize)]
struct RawClaims {
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    mercure: Option<MercureClaim>,
}

#[derive(Deserialize, Default)]
struct MercureClaim {
    publish: Option<Vec<serde_json::Value>>,
    subscribe: Option<Vec<serde_json::Value>>,
    payload: Option<serde_json::Value>,
}

/// What a verified token allows.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// `mercure.publish`: topics it may publish to (`None`: the claim is absent).
    pub publish: Option<Vec<Selector>>,
    /// `mercure.subscribe`: topics whose private updates it may receive.
    pub subscribe: Option<Vec<Selector>>,
    /// `mercure.payload`: data attached to the subscription.
    pub payload: Option<serde_json::Value>,
    /// `exp`, when present: a stream authorized by this token ends then.
    pub expires: Option<SystemTime>,
    /// `sub`, when it is a string: who the token is for (hooks name the user by it).
    pub subject: Option<String>,
    /// Whether they come from a Mercure 1.0 access token (`typ: at+jwt`): its client is
    /// answered in 1.0's forms (the subscriptions API).
    pub access: bool,
}

impl Claims {
    /// How long until the token expires (zero if it has); `None` if it never does.
    pub fn remaining(&self) -> Option<Duration> {
        self.expires
            .map(|e| e.duration_since(SystemTime::now()).unwrap_or_default())
    }
}

/// Why a request was not authorized. The text is for the client: it says what to fix and
/// never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token anywhere it is looked for.
    Missing,
    /// A token that does not verify.
    Invalid(String),
    /// The keys to check it with are not at hand (an issuer's JWK Set not fetched): the
    /// server's failure, not the client's (503).
    Unavailable(String),
}

impl AuthError {
    /// The status a refusal for this answers with: 401, or 503 when the keys are missing.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Unavailable(_) => 503,
            _ => 401,
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => f.write_str("no token (Authorization: Bearer, the authorization query parameter, or the cookie)"),
            AuthError::Invalid(why) | AuthError::Unavailable(why) => f.write_str(why),
        }
    }
}

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFrom {
    /// `Authorization: Bearer`.
    Header,
    /// The `authorization` query parameter.
    Query,
    /// The cookie (a browser sends it on its own: a publish needs an allowed origin).
    Cookie,
}

/// The token of a request, in Mercure's order: header, query parameter, cookie `cookie_name`.
pub fn token_of(req: &Request, cookie_name: &str) -> Option<(String, TokenFrom)> {
    if let Some(h) = req.header("Authorization") {
        let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h, ""));
        if scheme.eq_ignore_ascii_case("Bearer") {
            return Some((rest.trim().to_string(), TokenFrom::Header));
        }
    }
    if let Some(q) = req.query_values("authorization").into_iter().next() {
        return Some((q, TokenFrom::Query));
    }
    cookie(req, cookie_name).map(|c| (c, TokenFrom::Cookie))
}

/// The value of cookie `name` (RFC 6265 `Cookie` header syntax).
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    req.header("Cookie")?.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The origin a browser request came from: `Origin`, else the scheme and host of `Referer`.
/// `Origin: null` (a sandboxed iframe, a no-referrer page, a `data:` document) is returned as
/// `null`, an origin no list and no host ever matches: such a page may be anyone's.
pub fn origin_of(req: &Request) -> Option<String> {
    if let Some(o) = req.header("Origin") {
        return Some(o.trim().trim_end_matches('/').to_string());
    }
    let r = req.header("Referer")?;
    let (scheme, rest) = r.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{host}"))
}

/// Whether `origin` is one of `listed` (`null` never is).
pub fn origin_listed(origin: &str, listed: &[String]) -> bool {
    origin != "null" && listed.iter().any(|p| p.trim_end_matches('/') == origin)
}

/// RFC 3986's unreserved characters stay, all else is percent-encoded: a URI template's simple
/// expansion (`{var}`).
const SIMPLE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A reserved expansion (`{+var}`) keeps RFC 3986's reserved characters too. `%` is always
/// encoded, so that no two values expand to the same text.
const RESERVED: &AsciiSet = &SIMPLE
    .remove(b':')
    .remove(b'/')
    .remove(b'?')
    .remove(b'#')
    .remove(b'[')
    .remove(b']')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// Percent-encodes all but RFC 3986's unreserved characters (what a URI template's simple
/// expansion of a value gives; UTF-8 bytes of other characters each encoded).
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, SIMPLE).to_string()
}

/// What a URI template's reserved expansion (`{+var}`) of a value gives.
pub fn encode_reserved(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}
