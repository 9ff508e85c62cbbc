//! JWK Set parsing and key choice, on hand-written sets (the keys' numbers are placeholders:
//! nothing here checks a signature; tests/mercure_v1.rs does, with PyJWT's tokens).

use super::*;
use serde_json::json;

fn rsa(kid: &str) -> serde_json::Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"})
}

fn set_of(keys: Vec<serde_json::Value>) -> KeySet {
    let s = KeySet::new("https://auth.example/certs", None, Duration::from_secs(600)).unwrap();
    s.install(Ok(serde_json::to_vec(&json!({ "keys": keys })).unwrap()))
        .unwrap();
    s
}

fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    h
}

#[test]
fn only_public_signature_keys_are_kept() {
    let body = json!({"keys": [
        rsa("a"),
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AQAB", "y": "AQAB"},
        {"kty": "EC", "kid": "p256", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AQAB"},
        {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
        {"kty": "XYZ", "kid": "odd"},
    ]});
    let (keys, skipped, why) = parse_set(&serde_json::to_vec(&body).unwrap()).unwrap();
    let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["a", "p256", "ed"]);
    assert_eq!(skipped, 5);
    assert!(why.unwrap().contains("secret"));
}

#[test]
fn a_set_too_large_or_not_a_set_is_refused_and_the_keys_held_stay() {
    let s = set_of(vec![rsa("a")]);
    let many: Vec<_> = (0..=MAX_KEYS).map(|i| rsa(&i.to_string())).collect();
    let e = s
        .install(Ok(serde_json::to_vec(&json!({ "keys": many })).unwrap()))
        .unwrap_err();
    assert!(e.contains("over 100"), "{e}");
    assert!(s.install(Ok(b"<html>".to_vec())).is_err());
    assert!(s.install(Err("answered 500".into())).is_err());
    assert!(s.verifier(&header(Algorithm::RS256, Some("a"))).is_ok());
}

#[test]
fn the_key_is_the_one_kid_names_and_suits_the_algorithm() {
    let s = set_of(vec![rsa("a"), rsa("b")]);
    assert!(s.verifier(&header(Algorithm::RS256, Some("b"))).is_ok());
    assert!(s.verifier(&header(Algorithm::PS384, Some("a"))).is_ok());
    // An RSA key never checks ES256, and never an HMAC token.
    for alg in [Algorithm::ES256, Algorithm::HS256] {
        let e = s.verifier(&header(alg, Some("a"))).unwrap_err();
        assert!(matches!(e, AuthError::Invalid(_)), "{alg:?}");
    }
    // No kid and two RSA keys: which one is not guessed.
    let e = s.verifier(&header(Algorithm::RS256, None)).unwrap_err();
    assert!(e.to_string().contains("several"), "{e}");
    let one = set_of(vec![rsa("a")]);
    assert!(one.verifier(&header(Algorithm::RS256, None)).is_ok());
}

#[test]
fn a_key_s_own_alg_and_the_configured_one_are_kept_to() {
    let mut k = rsa("a");
    k["alg"] = json!("RS256");
    let s = set_of(vec![k]);
    assert!(s.verifier(&header(Algorithm::RS256, Some("a"))).is_ok());
    assert!(s.verifier(&header(Algorithm::RS512, Some("a"))).is_err());
    let pinned = KeySet::new("https://x/certs", Some("PS256"), Duration::from_secs(1)).unwrap();
    pinned
        .install(Ok(serde_json::to_vec(&json!({"keys": [rsa("a")]})).unwrap()))
        .unwrap();
    assert!(pinned
        .verifier(&header(Algorithm::RS256, Some("a")))
        .is_err());
    assert!(pinned
        .verifier(&header(Algorithm::PS256, Some("a")))
        .is_ok());
    assert!(KeySet::new("https://x/certs", Some("HS256"), Duration::from_secs(1)).is_err());
}

#[test]
fn an_unknown_kid_asks_for_a_fetch_at_most_once_per_wake_period() {
    let s = set_of(vec![rsa("a")]);
    let e = s
        .verifier(&header(Algorithm::RS256, Some("new")))
        .unwrap_err();
    assert!(e.to_string().contains("fetching it again"), "{e}");
    let first = *s.last_wake.lock().unwrap();
    assert!(first.is_some());
    let _ = s.verifier(&header(Algorithm::RS256, Some("newer")));
    assert_eq!(*s.last_wake.lock().unwrap(), first, "a second wake waits");
}

#[test]
fn keys_never_fetched_are_the_server_s_failure() {
    let s = KeySet::new("https://x/certs", None, Duration::from_secs(1)).unwrap();
    let e = s
        .verifier(&header(Algorithm::RS256, Some("a")))
        .unwrap_err();
    assert_eq!(e.status(), 503);
    assert!(
        !e.to_string().contains("https://"),
        "no address in a body: {e}"
    );
}

#[test]
fn of_keys_sharing_a_kid_the_one_that_takes_the_algorithm_is_used() {
    let ec = json!({"kty": "EC", "kid": "a", "crv": "P-256", "x": "AQAB", "y": "AQAB"});
    let s = set_of(vec![rsa("a"), ec]);
    assert!(s.verifier(&header(Algorithm::ES256, Some("a"))).is_ok());
    assert!(s.verifier(&header(Algorithm::RS256, Some("a"))).is_ok());
    assert!(s.verifier(&header(Algorithm::EdDSA, Some("a"))).is_err());
}

#[test]
fn a_set_is_kept_on_disk_and_read_back_while_young_enough() {
    let dir = std::env::temp_dir().join(format!("fastsse-jwks-{}", std::process::id()));
    let s = KeySet::new(
        "https://user:secret@auth.example/certs",
        None,
        Duration::from_secs(60),
    )
    .unwrap()
    .cached_in(&dir);
    assert!(!s.shown.contains("secret"), "{}", s.shown);
    assert!(s.load_kept(Duration::from_secs(60)).is_none());
    let body = serde_json::to_vec(&json!({"keys": [rsa("a")]})).unwrap();
    s.keep(&body);
    assert_eq!(
        s.load_kept(Duration::from_secs(60)).as_deref(),
        Some(&body[..])
    );
    assert!(s.load_kept(Duration::ZERO).is_none(), "too old");
    let _ = std::fs::remove_dir_all(&dir);
}
