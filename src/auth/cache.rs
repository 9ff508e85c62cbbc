//! Tokens that verified, kept per route so a subscriber that reconnects (EventSource does, on
//! every drop, with the same token) and the hooks' second look at a request cost a lookup, not a
//! signature check and a compile of every URL Pattern its grants hold (tens of milliseconds for
//! a token with dozens of patterns). A token is kept until its `exp`, and at most
//! [`MAX_AGE`] (a key an issuer withdrew stops counting by then); the whole cache is bounded in
//! bytes (`token_cache_bytes`), each entry counted as twice its token plus [`PATTERN_BYTES`] per
//! URL Pattern grant and ten times its payload's JSON, the oldest entries leaving first.
//! Refusals are never kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::access::Role;
use super::{Claims, Selector};

/// Longest a verified token is kept.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// What one URL Pattern grant is counted as: the bound its regexps compile under.
pub const PATTERN_BYTES: usize = 16 * 1024;
/// What an entry costs beyond its token and patterns (its key, map and list slots).
const ENTRY_BYTES: usize = 256;
/// What a payload is counted as, per byte of its JSON text (a parsed `serde_json::Value`).
const PAYLOAD_FACTOR: usize = 10;

/// What a verification depended on besides the token: the role, and for an access token
/// the audience the request derived.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    role: Role,
    audience: String,
    token: String,
}

struct Entry {
    claims: Claims,
    until: SystemTime,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Insertion order, for eviction (keys may name entries already gone).
    order: VecDeque<Key>,
    bytes: usize,
}

/// One route's verified tokens.
pub struct TokenCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl TokenCache {
    /// A cache of at most `budget` bytes (0: nothing is kept).
    pub fn new(budget: usize) -> TokenCache {
        TokenCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The claims `token` verified to for `role` and `audience`, if kept and not expired.
    pub fn get(&self, role: Role, audience: &str, token: &str) -> Option<Claims> {
        if self.budget == 0 {
            return None;
        }
        let key = Key {
            role,
            audience: audience.to_string(),
            token: token.to_string(),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = inner.map.get(&key).map(|e| SystemTime::now() < e.until)?;
        if !fresh {
            let e = inner.map.remove(&key)?;
            inner.bytes -= e.bytes;
            return None;
        }
        inner.map.get(&key).map(|e| e.claims.clone())
    }

    /// Keeps `claims`, which `token` verified to, until its `exp` or [`MAX_AGE`].
    pub fn put(&self, role: Role, audience: &str, token: &str, claims: &Claims) {
        let patterns = [&claims.publish, &claims.subscribe]
            .into_iter()
            .flatten()
            .flatten()
            .filter(|s| matches!(s, Selector::UrlPattern(_)))
            .count();
        // The key is held twice (map and order list); a JSON payload takes several times its
        // text in memory.
        let payload = claims.payload.as_ref().map_or(0, |p| p.to_string().len());
        let bytes = ENTRY_BYTES
            + 2 * (token.len() + audience.len())
            + patterns * PATTERN_BYTES
            + PAYLOAD_FACTOR * payload;
        if bytes > self.budget {
            return;
        }
        let max = SystemTime::now() + MAX_AGE;
        let until = claims.expires.map_or(max, |e| e.min(max));
        let key = Key {
            role,
            audience: audience.to_string(),
            token: token.to_string(),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = inner.map.remove(&key) {
            inner.bytes -= old.bytes;
        }
        while inner.bytes + bytes > self.budget {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
        inner.bytes += bytes;
        inner.order.push_back(key.clone());
        inner.map.insert(
            key,
            Entry {
                claims: claims.clone(),
                until,
                bytes,
            },
        );
        // Keys of entries that left early (expired, replaced) are dropped once they are half
        // the list, so the list stays within twice the entries.
        if inner.order.len() > 2 * inner.map.len() + 16 {
            let Inner { map, order, .. } = &mut *inner;
            let mut seen = std::collections::HashSet::new();
            order.retain(|k| map.contains_key(k) && seen.insert(k.clone()));
        }
    }

    /// Bytes held, as counted.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_in: Option<Duration>, patterns: usize) -> Claims {
        let base = url::Url::parse("https://hub.example/").unwrap();
        let subscribe = (0..patterns)
            .map(|i| {
                let p = super::super::pattern::Pattern::parse(&format!("/r{i}/:id"), &base);
                Selector::UrlPattern(p.unwrap())
            })
            .collect();
        Claims {
            subscribe: Some(subscribe),
            expires: expires_in.map(|d| SystemTime::now() + d),
            ..Claims::default()
        }
    }

    #[test]
    fn a_token_is_kept_for_its_role_and_audience_until_it_expires() {
        let c = TokenCache::new(1 << 20);
        c.put(
            Role::Subscriber,
            "aud",
            "t1",
            &claims(Some(Duration::from_secs(60)), 1),
        );
        assert!(c.get(Role::Subscriber, "aud", "t1").is_some());
        assert!(c.get(Role::Publisher, "aud", "t1").is_none());
        assert!(c.get(Role::Subscriber, "other", "t1").is_none());
        c.put(
            Role::Subscriber,
            "aud",
            "t2",
            &claims(Some(Duration::ZERO), 0),
        );
        assert!(c.get(Role::Subscriber, "aud", "t2").is_none(), "expired");
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_and_skips_what_cannot_fit() {
        let one = ENTRY_BYTES + 2 * (2 + 3) + PATTERN_BYTES;
        let c = TokenCache::new(2 * one);
        for t in ["t1", "t2", "t3"] {
            c.put(Role::Subscriber, "aud", t, &claims(None, 1));
        }
        assert!(c.get(Role::Subscriber, "aud", "t1").is_none());
        assert!(c.get(Role::Subscriber, "aud", "t3").is_some());
        assert_eq!(c.bytes(), 2 * one);
        c.put(Role::Subscriber, "aud", "big", &claims(None, 3));
        assert!(c.get(Role::Subscriber, "aud", "big").is_none());
        assert!(
            c.get(Role::Subscriber, "aud", "t2").is_some(),
            "nothing evicted for it"
        );
        let off = TokenCache::new(0);
        off.put(Role::Subscriber, "aud", "t1", &claims(None, 0));
        assert!(off.get(Role::Subscriber, "aud", "t1").is_none());
    }

    #[test]
    fn replaced_and_expired_entries_do_not_grow_the_order_list() {
        let c = TokenCache::new(1 << 20);
        for _ in 0..1000 {
            c.put(Role::Subscriber, "aud", "same", &claims(None, 0));
        }
        let inner = c.inner.lock().unwrap();
        assert_eq!(inner.map.len(), 1);
        assert!(inner.order.len() <= 18, "{}", inner.order.len());
    }
}
