//! Mercure 1.0 issuers whose keys come from a JWK Set (`*_jwks_uri`), through real nginx: RSA
//! keys made by openssl, the set and the tokens by PyJWT, the set served by Python's
//! http.server (an authorization server's certs endpoint is a static document too) that is
//! down when fastsse starts, rotated later, and down again across a restart.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::*;

const HUB: &str = "/.well-known/mercure";
const ISS: &str = "https://keycloak.example/realms/main";
const AUD: &str = "http://localhost/.well-known/mercure";
const DETAIL: &str = "https://mercure.rocks/authorization-detail";

fn grant(actions: &[&str]) -> serde_json::Value {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    json!({
        "iss": ISS, "aud": AUD, "exp": exp, "sub": "alice",
        "authorization_details": [{"type": DETAIL, "actions": actions, "topics": [{"match": "*"}]}]
    })
}

fn publish(port: u16, token: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let h = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", auth.as_str()),
    ];
    let mut s = HttpStream::send(port, "POST", HUB, &h, form_body(fields).as_bytes());
    let body = s.rest();
    (s.status, body)
}

/// What a Python script printed (Debian's python3 with PyJWT and cryptography), trimmed.
fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 with PyJWT");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An RSA key made by openssl, and its public half as a JWK (PyJWT's `to_jwk`).
fn rsa_key(dir: &TempDir, kid: &str) -> (String, serde_json::Value) {
    let pem = dir
        .path(&format!("{kid}.pem"))
        .to_string_lossy()
        .into_owned();
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &pem,
        ])
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl genpkey");
    let jwk = python(
        "import sys\n\
         from jwt.algorithms import RSAAlgorithm\n\
         from cryptography.hazmat.primitives import serialization\n\
         k = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)\n\
         print(RSAAlgorithm.to_jwk(k.public_key()))",
        &[&pem],
    );
    let mut jwk: serde_json::Value = serde_json::from_str(&jwk).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    (pem, jwk)
}

/// An RS256 access token naming key `kid`, signed by PyJWT with the key in `pem`.
fn rs256_access_token(pem: &str, kid: &str, claims: serde_json::Value) -> String {
    python(
        "import jwt, json, sys\n\
         print(jwt.encode(json.loads(sys.argv[1]), open(sys.argv[2]).read(), algorithm='RS256', headers={'typ': 'at+jwt', 'kid': sys.argv[3]}))",
        &[&claims.to_string(), pem, kid],
    )
}

/// Python's http.server serving `dir` on `port` (a stand-in for an authorization server's
/// JWKS endpoint; the set is a static document there too).
fn serve_dir(dir: &TempDir, port: u16) -> ChildGuard {
    let child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    wait_for("http.server", std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    ChildGuard(child)
}

/// Kills the child when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon behind nginx whose issuer takes its keys from the set at `uri`.
fn hub(uri: &str) -> Option<(Daemon, Nginx)> {
    daemon_behind_nginx(&format!(
        "[stream]\nretry = \"1s\"\nheartbeat = \"2s\"\n\n\
         [[route]]\npath = \"{HUB}\"\ntype = \"mercure\"\nanonymous = true\n\
         resource_identifier = \"{AUD}\"\n\n\
         [[route.issuer]]\nid = \"{ISS}\"\npublisher_jwks_uri = \"{uri}\"\n\
         publisher_jwt_alg = \"RS256\"\nsubscriber_jwks_uri = \"{uri}\"\n"
    ))
}

/// The data of the next event.
fn next_data(s: &mut HttpStream) -> String {
    s.next_event().expect("an event").2
}

#[test]
fn keys_from_a_jwks_uri_down_at_start_then_rotated_then_kept_across_a_restart() {
    let keys = TempDir::new("jwks");
    let (pem1, jwk1) = rsa_key(&keys, "k1");
    let (pem2, jwk2) = rsa_key(&keys, "k2");
    // As Keycloak publishes it: an encryption key beside the signing one (skipped).
    let mut enc_key = jwk2.clone();
    enc_key["kid"] = json!("enc-1");
    enc_key["use"] = json!("enc");
    enc_key["alg"] = json!("RSA-OAEP");
    let write_set = |list: &[&serde_json::Value]| {
        std::fs::write(keys.path("certs.json"), json!({ "keys": list }).to_string()).unwrap()
    };
    write_set(&[&jwk1, &enc_key]);
    // The set's server is down when fastsse starts.
    let port = free_port();
    let Some((mut d, n)) = hub(&format!("http://127.0.0.1:{port}/certs.json")) else {
        return;
    };
    let topic = "https://example.com/books/1";
    let t1 = rs256_access_token(&pem1, "k1", grant(&["publish"]));
    let fields = [("topic", topic), ("data", "x")];
    let (status, body) = publish(n.port, &t1, &fields);
    assert_eq!(status, 503, "keys not fetched: the hub's failure, {body}");
    assert!(!body.contains("127.0.0.1"), "no address in a body: {body}");
    assert!(
        d.log().contains("cannot fetch the issuer's keys"),
        "{}",
        d.log()
    );
    // The server comes up: the retry (1 s, 2 s, …) fetches the set.
    let server = serve_dir(&keys, port);
    wait_for("the set fetched", Duration::from_secs(20), || {
        publish(n.port, &t1, &fields).0 == 200
    });
    // A subscriber's token from the same set reads private updates.
    let reader = rs256_access_token(&pem1, "k1", grant(&["subscribe"]));
    let auth = format!("Bearer {reader}");
    let q = format!("{HUB}?match={}", &form_body(&[("x", topic)])[2..]);
    let mut s = HttpStream::open(n.port, "GET", &q, &[("Authorization", auth.as_str())]);
    assert_eq!(s.status, 200);
    // Signed by k2 but naming k1: refused, whatever kid it names.
    let forged = rs256_access_token(&pem2, "k1", grant(&["publish"]));
    let (status, body) = publish(n.port, &forged, &fields);
    assert_eq!(
        (status, body.contains("bad signature")),
        (401, true),
        "{body}"
    );
    // k2 before the issuer publishes it: 401; once it does, an unknown kid fetches the set
    // again, well before jwks_refresh (10 min).
    let t2 = rs256_access_token(&pem2, "k2", grant(&["publish"]));
    write_set(&[&jwk1, &jwk2, &enc_key]);
    let (status, body) = publish(n.port, &t2, &fields);
    assert_eq!(
        (status, body.contains("fetching it again")),
        (401, true),
        "{body}"
    );
    let private = [("topic", topic), ("data", "by k2"), ("private", "on")];
    wait_for("k2 fetched", Duration::from_secs(15), || {
        publish(n.port, &t2, &private).0 == 200
    });
    while next_data(&mut s) != "by k2" {}
    // An HS256 token naming the issuer is refused: its keys are public keys.
    let key = "an-hmac-secret-0123456789abcdef0123456789";
    let hs = jwt_token_typed("HS256", key, grant(&["publish"]), Some("at+jwt"));
    assert_eq!(publish(n.port, &hs, &fields).0, 401);
    // The set's server goes down and fastsse restarts: the copy kept in its data directory
    // stands in (no 503), k2 included.
    drop(server);
    d.restart("TERM");
    assert_eq!(publish(n.port, &t2, &fields).0, 200, "{}", d.log());
}

#[test]
fn a_jwks_uri_over_plain_http_to_another_host_is_refused() {
    let dir = TempDir::new("jwks-http");
    let (passed, err) = check_config(
        &dir,
        &format!(
            "[[route]]\npath = \"{HUB}\"\ntype = \"mercure\"\nresource_identifier = \"{AUD}\"\n\n\
             [[route.issuer]]\nid = \"{ISS}\"\nsubscriber_jwks_uri = \"http://sso.example.com/certs\"\n"
        ),
    );
    assert!(!passed);
    assert!(err.contains("use https"), "{err}");
}
