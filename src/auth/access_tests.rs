//! Access tokens and their grants. Tokens here are signed by the jsonwebtoken crate; the
//! integration tests (tests/mercure_v1.rs) sign theirs with PyJWT.

use super::*;
use serde_json::json;

const KEY_A: &str = "issuer-a-secret-0123456789abcdef0123";
const KEY_B: &str = "issuer-b-secret-0123456789abcdef0123";
const HUB: &str = "https://hub.example.com/.well-known/mercure";

fn issuers() -> Vec<Issuer> {
    let v = |k: &str| Some(Keys::Key(Verifier::from_config("HS256", k).unwrap()));
    vec![
        Issuer {
            id: "https://a.example".into(),
            publisher: v(KEY_A),
            subscriber: v(KEY_A),
        },
        Issuer {
            id: "https://b.example".into(),
            publisher: None,
            subscriber: v(KEY_B),
        },
    ]
}

fn sign(typ: Option<&str>, claims: serde_json::Value, key: &str) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.typ = typ.map(str::to_string);
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn later() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

fn claims(iss: &str, details: serde_json::Value) -> serde_json::Value {
    json!({"iss": iss, "aud": [HUB, "other"], "exp": later(), "sub": "alice",
           "authorization_details": details})
}

fn base() -> url::Url {
    super::super::pattern::base_for(Some(HUB))
}

#[test]
fn typ_at_jwt_is_what_makes_an_access_token() {
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/AT+JWT",
    ] {
        assert!(is_access_token(&sign(Some(typ), json!({}), KEY_A)), "{typ}");
    }
    for typ in [None, Some("JWT"), Some("at+jwt2"), Some("application/jwt")] {
        assert!(!is_access_token(&sign(typ, json!({}), KEY_A)), "{typ:?}");
    }
}

#[test]
fn an_issuers_token_grants_what_its_details_say() {
    let details = json!([
        {"type": "https://mercure.rocks/authorization-detail", "actions": ["subscribe"],
         "topics": [{"match": "/books/:id", "match_type": "urlpattern"},
                    {"match": "https://example.com/news"}],
         "payload": {"name": "alice"}},
        {"type": "mercure", "actions": ["publish", "subscribe"],
         "topics": [{"match": "https://example.com/{id}", "match_type": "exact"}]},
        {"type": "https://other.example/api", "anything": true}
    ]);
    let t = sign(Some("at+jwt"), claims("https://a.example", details), KEY_A);
    let c = verify(&t, &issuers(), Role::Subscriber, HUB, &base()).unwrap();
    let sub = c.subscribe.unwrap();
    assert_eq!(sub.len(), 3);
    assert!(sub[0].matches("https://hub.example.com/books/1"));
    assert!(sub[1].matches("https://example.com/news"));
    // exact is exact: a URI template is not expanded.
    assert!(sub[2].matches("https://example.com/{id}"));
    assert!(!sub[2].matches("https://example.com/1"));
    assert_eq!(c.publish.unwrap().len(), 1);
    assert_eq!(c.payload, Some(json!({"name": "alice"})));
    assert_eq!(c.subject.as_deref(), Some("alice"));
    assert!(c.expires.is_some());
}

#[test]
fn a_token_is_refused_for_its_issuer_audience_dates_and_details() {
    let ok = json!([{"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "*"}]}]);
    let check = |c: serde_json::Value, key: &str, role: Role| {
        let t = sign(Some("at+jwt"), c, key);
        verify(&t, &issuers(), role, HUB, &base())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let sub = Role::Subscriber;
    assert_eq!(
        check(claims("https://a.example", ok.clone()), KEY_A, sub),
        ""
    );
    assert!(check(claims("https://c.example", ok.clone()), KEY_A, sub).contains("untrusted issuer"));
    let mut no_iss = claims("x", ok.clone());
    no_iss.as_object_mut().unwrap().remove("iss");
    assert!(check(no_iss, KEY_A, sub).contains("untrusted issuer"));
    // Signed with issuer B's key but naming A: checked with A's key.
    assert!(check(claims("https://a.example", ok.clone()), KEY_B, sub).contains("bad signature"));
    // B has no publisher key.
    assert!(check(
        claims("https://b.example", ok.clone()),
        KEY_B,
        Role::Publisher
    )
    .contains("may not publish"));
    let mut c = claims("https://a.example", ok.clone());
    c["aud"] = json!("https://elsewhere.example/.well-known/mercure");
    assert!(check(c, KEY_A, sub).contains("audience"));
    let mut c = claims("https://a.example", ok.clone());
    c.as_object_mut().unwrap().remove("aud");
    assert!(check(c, KEY_A, sub).contains("audience"));
    let mut c = claims("https://a.example", ok.clone());
    c.as_object_mut().unwrap().remove("exp");
    assert!(check(c, KEY_A, sub).contains("exp"));
    let mut c = claims("https://a.example", ok.clone());
    c["exp"] = json!(1_000_000);
    assert!(check(c, KEY_A, sub).contains("expired"));
    let mut c = claims("https://a.example", ok);
    c["nbf"] = json!(later());
    assert!(check(c, KEY_A, sub).contains("nbf"));
    for (bad, says) in [
        (json!({"type": "mercure"}), "must be a list"),
        (
            json!([{"type": "mercure", "topics": [{"match": "a"}]}]),
            "actions",
        ),
        (
            json!([{"type": "mercure", "actions": ["read"], "topics": [{"match": "a"}]}]),
            "unsupported action",
        ),
        (
            json!([{"type": "mercure", "actions": [], "topics": [{"match": "a"}]}]),
            "actions must not be empty",
        ),
        (
            json!([{"type": "mercure", "actions": ["publish"], "topics": []}]),
            "topics must not be empty",
        ),
        (
            json!([{"type": "mercure", "actions": ["publish"], "topics": ["a"]}]),
            "object",
        ),
        (
            json!([{"type": "mercure", "actions": ["publish"], "topics": [{"match": ""}]}]),
            "non-empty match",
        ),
        (
            json!([{"type": "mercure", "actions": ["publish"], "topics": [{"match": "a", "match_type": "template"}]}]),
            "match_type",
        ),
        (
            json!([{"type": "mercure", "actions": ["publish"], "topics": [{"match": "https://x/(", "match_type": "urlpattern"}]}]),
            "invalid URL pattern",
        ),
    ] {
        let e = check(claims("https://a.example", bad.clone()), KEY_A, sub);
        assert!(e.contains(says), "{bad}: {e}");
    }
    let many: Vec<_> = (0..101)
        .map(|i| json!({"match": format!("t{i}")}))
        .collect();
    let e = check(
        claims(
            "https://a.example",
            json!([{"type": "mercure", "actions": ["subscribe"], "topics": many}]),
        ),
        KEY_A,
        sub,
    );
    assert!(e.contains("more than 100"), "{e}");
}

#[test]
fn the_0x_claim_grants_nothing_in_an_access_token() {
    let mut c = claims("https://a.example", json!([]));
    c["mercure"] = json!({"publish": ["*"], "subscribe": ["*"]});
    let t = sign(Some("at+jwt"), c, KEY_A);
    let got = verify(&t, &issuers(), Role::Publisher, HUB, &base()).unwrap();
    assert!(got.publish.unwrap().is_empty());
    assert!(got.subscribe.unwrap().is_empty());
}
