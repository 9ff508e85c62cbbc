//! Mercure 1.0 beside 0.x on one `mercure` route, through real nginx with the shipped snippet:
//! RFC 9068 access tokens (`typ: at+jwt`) from two trusted issuers, each checked with its own
//! keys, `aud` derived from the request (or pinned), `authorization_details` grants with exact
//! and URL Pattern topics, `match` / `match_urlpattern` subscriptions, 0.x tokens and `topic`
//! templates still served, and the hub's 400 / 401 / 403 / 421 answers. Tokens are made by
//! PyJWT (Debian's python3-jwt), never by fastsse.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::*;

const HUB: &str = "/.well-known/mercure";
const OLD_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
const KEY_A: &str = "issuer-a-key-0123456789abcdef0123456789";
const KEY_B: &str = "issuer-b-key-0123456789abcdef0123456789";
const ISS_A: &str = "https://auth.example.com";
const ISS_B: &str = "https://sso.example.org/realms/app";
/// The `aud` the tests' tokens name (pinned by [`LOCAL`]).
const AUD: &str = "http://localhost/.well-known/mercure";
/// The hub's identity in most tests (a route with issuers pins it or lists its origins).
const LOCAL: &str = "resource_identifier = \"http://localhost/.well-known/mercure\"\n";
const DETAIL: &str = "https://mercure.rocks/authorization-detail";

/// An access token as an OAuth server would issue it: PyJWT with `typ: at+jwt`.
fn access_token(key: &str, claims: serde_json::Value) -> String {
    jwt_token_typed("HS256", key, claims, Some("at+jwt"))
}

fn in_an_hour() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

/// Claims of `iss` granting `actions` on `topics` (`(match, match_type)`).
fn grant(iss: &str, actions: &[&str], topics: &[(&str, &str)]) -> serde_json::Value {
    let topics: Vec<_> = topics
        .iter()
        .map(|(m, t)| json!({"match": m, "match_type": t}))
        .collect();
    json!({
        "iss": iss, "aud": AUD, "exp": in_an_hour(), "sub": "alice", "client_id": "app",
        "authorization_details": [{"type": DETAIL, "actions": actions, "topics": topics}]
    })
}

fn config(extra: &str) -> String {
    format!(
        "[stream]\nretry = \"1s\"\nheartbeat = \"2s\"\n\n\
         [[route]]\npath = \"{HUB}\"\ntype = \"mercure\"\nanonymous = true\n\
         publisher_jwt_key = \"{OLD_KEY}\"\nsubscriber_jwt_key = \"{OLD_KEY}\"\n{extra}\n\
         [[route.issuer]]\nid = \"{ISS_A}\"\npublisher_jwt_key = \"{KEY_A}\"\nsubscriber_jwt_key = \"{KEY_A}\"\n\n\
         [[route.issuer]]\nid = \"{ISS_B}\"\nsubscriber_jwt_key = \"{KEY_B}\"\n"
    )
}

fn enc(s: &str) -> String {
    form_body(&[("x", s)])[2..].to_string()
}

fn publish(port: u16, token: &str, fields: &[(&str, &str)]) -> HttpStream {
    let auth = format!("Bearer {token}");
    let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if !token.is_empty() {
        h.push(("Authorization", auth.as_str()));
    }
    HttpStream::send(port, "POST", HUB, &h, form_body(fields).as_bytes())
}

fn subscribe(port: u16, query: &str, token: Option<&str>) -> HttpStream {
    let auth = token.map(|t| format!("Bearer {t}"));
    let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    HttpStream::open(port, "GET", &format!("{HUB}?{query}"), &h)
}

/// The status and body of a finished answer.
fn answer(mut s: HttpStream) -> (u16, String) {
    let body = s.rest();
    (s.status, body)
}

/// The data of the next event (skipping the opening hint and heartbeats).
fn next_data(s: &mut HttpStream) -> String {
    loop {
        let b = s.next_block().expect("an event");
        if let Some(d) = b.lines().find_map(|l| l.strip_prefix("data: ")) {
            return d.to_string();
        }
    }
}

#[test]
fn access_tokens_and_matchers_beside_0x_tokens_and_templates() {
    let Some((_d, n)) = daemon_behind_nginx(&config(LOCAL)) else {
        return;
    };
    let port = n.port;
    let books = "https://example.com/books/:id";
    let by_pattern = subscribe(port, &format!("match_urlpattern={}", enc(books)), None);
    let by_exact = subscribe(
        port,
        &format!("match={}", enc("https://example.com/books/2")),
        None,
    );
    // A 0.x subscriber with a URI template, on the same route.
    let old = subscribe(
        port,
        &format!("topic={}", enc("https://example.com/books/{id}")),
        None,
    );
    // A private reader: issuer B's access token, granted a pattern.
    let reader = access_token(
        KEY_B,
        grant(ISS_B, &["subscribe"], &[(books, "urlpattern")]),
    );
    let private = subscribe(
        port,
        &format!("match_urlpattern={}", enc(books)),
        Some(&reader),
    );
    for s in [&by_pattern, &by_exact, &old, &private] {
        assert_eq!(s.status, 200);
    }
    let (mut by_pattern, mut by_exact, mut old, mut private) = (by_pattern, by_exact, old, private);
    // Issuer A publishes with a URL Pattern grant.
    let writer = access_token(KEY_A, grant(ISS_A, &["publish"], &[(books, "urlpattern")]));
    let (status, body) = answer(publish(
        port,
        &writer,
        &[("topic", "https://example.com/books/1"), ("data", "one")],
    ));
    assert_eq!(status, 200, "{body}");
    let (status, body) = answer(publish(
        port,
        &writer,
        &[
            ("topic", "https://example.com/books/2"),
            ("data", "two-private"),
            ("private", "on"),
        ],
    ));
    assert_eq!(status, 200, "{body}");
    // A 0.x publisher token still publishes.
    let old_writer = jwt_token("HS256", OLD_KEY, json!({"mercure": {"publish": ["*"]}}));
    let (status, body) = answer(publish(
        port,
        &old_writer,
        &[("topic", "https://example.com/books/2"), ("data", "two")],
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_data(&mut by_pattern), "one");
    assert_eq!(next_data(&mut by_pattern), "two");
    assert_eq!(next_data(&mut by_exact), "two");
    assert_eq!(next_data(&mut old), "one");
    assert_eq!(next_data(&mut old), "two");
    assert_eq!(next_data(&mut private), "one");
    assert_eq!(next_data(&mut private), "two-private");
    assert_eq!(next_data(&mut private), "two");
}

#[test]
fn refusals_are_the_hubs() {
    let Some((_d, n)) = daemon_behind_nginx(&config(LOCAL)) else {
        return;
    };
    let port = n.port;
    let topic = [("topic", "https://example.com/books/1"), ("data", "x")];
    let refused = |mut s: HttpStream| {
        let challenge = s.header("www-authenticate").unwrap_or("").to_string();
        (s.status, challenge, s.rest())
    };
    let books = [("https://example.com/books/:id", "urlpattern")];
    // No token: a bare challenge.
    let (status, challenge, _) = refused(publish(port, "", &topic));
    assert_eq!((status, challenge.as_str()), (401, "Bearer"));
    let cases: Vec<(String, &str)> = vec![
        // Another hub's audience.
        (
            access_token(KEY_A, {
                let mut c = grant(ISS_A, &["publish"], &books);
                c["aud"] = json!("https://other.example/.well-known/mercure");
                c
            }),
            "audience",
        ),
        // An issuer nobody trusts, and one that names A but is signed with B's key.
        (
            access_token(KEY_A, grant("https://evil.example", &["publish"], &books)),
            "untrusted issuer",
        ),
        (
            access_token(KEY_B, grant(ISS_A, &["publish"], &books)),
            "bad signature",
        ),
        // B may not publish at all (no publisher key).
        (
            access_token(KEY_B, grant(ISS_B, &["publish"], &books)),
            "may not publish",
        ),
        // No exp.
        (
            access_token(KEY_A, {
                let mut c = grant(ISS_A, &["publish"], &books);
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "exp",
        ),
        // A malformed grant refuses the whole token.
        (
            access_token(KEY_A, grant(ISS_A, &["publish", "admin"], &books)),
            "unsupported action",
        ),
        // A 0.x token signed with an issuer's key is checked with the route's own key.
        (
            jwt_token("HS256", KEY_A, json!({"mercure": {"publish": ["*"]}})),
            "bad signature",
        ),
    ];
    for (token, says) in cases {
        let (status, challenge, body) = refused(publish(port, &token, &topic));
        assert_eq!(status, 401, "{says}: {body}");
        assert_eq!(challenge, "Bearer error=\"invalid_token\"", "{says}");
        assert!(body.contains(says), "{says}: {body}");
    }
    // Granted, but not this topic: 403 insufficient_scope.
    let other = access_token(
        KEY_A,
        grant(
            ISS_A,
            &["publish"],
            &[("https://example.com/authors/1", "exact")],
        ),
    );
    let (status, challenge, _) = refused(publish(port, &other, &topic));
    assert_eq!(
        (status, challenge.as_str()),
        (403, "Bearer error=\"insufficient_scope\"")
    );
    // `type=mercure` is reserved.
    let ok = access_token(KEY_A, grant(ISS_A, &["publish"], &books));
    let (status, _, body) = refused(publish(
        port,
        &ok,
        &[
            ("topic", "https://example.com/books/1"),
            ("type", "mercure"),
        ],
    ));
    assert_eq!(status, 400, "{body}");
    // Subscribe parameters.
    for (query, says) in [
        (
            "matchTopic=a",
            "unknown topic matcher query parameter: \"matchTopic\"",
        ),
        ("match=a&topic=b", "not both"),
        (
            "match_urlpattern=https%3A%2F%2Fx%2F(",
            "invalid URL pattern",
        ),
    ] {
        let (status, _, body) = refused(subscribe(port, query, None));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
}

#[test]
fn a_pinned_identity_and_public_urls() {
    let pinned = "https://hub.example.com/.well-known/mercure";
    let extra = "public_urls = [\"https://hub.example.com\"]\n".to_string();
    let Some((_d, n)) = daemon_behind_nginx(&config(&extra)) else {
        return;
    };
    // Reached at http://localhost, which public_urls does not list: 421.
    let t = access_token(KEY_A, grant(ISS_A, &["publish"], &[("*", "exact")]));
    let (status, body) = answer(publish(n.port, &t, &[("topic", "a"), ("data", "x")]));
    assert_eq!(status, 421, "{body}");
    drop(n);
    let extra = format!("resource_identifier = \"{pinned}\"\n");
    let Some((d, n)) = daemon_behind_nginx(&config(&extra)) else {
        return;
    };
    let mut c = grant(ISS_A, &["publish"], &[("*", "exact")]);
    c["aud"] = json!([pinned]);
    let (status, body) = answer(publish(
        n.port,
        &access_token(KEY_A, c),
        &[("topic", "a"), ("data", "x")],
    ));
    assert_eq!(status, 200, "{body}");
    // The derived identity is not the pinned one.
    let (status, body) = answer(publish(
        n.port,
        &access_token(KEY_A, grant(ISS_A, &["publish"], &[("*", "exact")])),
        &[("topic", "a"), ("data", "x")],
    ));
    assert_eq!(status, 401, "{body}");
    // Derived from the request: Debian's fastcgi_params passes HTTP_HOST without the port
    // ($host); the port is nginx's SERVER_PORT.
    let path = d.dir.path("fastsse.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &extra,
        &format!("public_urls = [\"http://LOCALHOST:{}\"]\n", n.port),
    );
    std::fs::write(&path, text).unwrap();
    d.signal("HUP");
    wait_for("the reload", std::time::Duration::from_secs(5), || {
        d.log().contains("SIGHUP: reloaded")
    });
    let mut c = grant(ISS_A, &["publish"], &[("*", "exact")]);
    c["aud"] = json!(format!("http://localhost:{}/.well-known/mercure", n.port));
    let ok = access_token(KEY_A, c);
    let (status, body) = answer(publish(n.port, &ok, &[("topic", "a"), ("data", "x")]));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn subscriptions_are_announced_and_listed_as_1_0_documents() {
    let Some((_d, n)) = daemon_behind_nginx(&config(&format!("subscriptions = true\n{LOCAL}")))
    else {
        return;
    };
    let port = n.port;
    let all = "/.well-known/mercure/subscriptions/*";
    let admin = access_token(KEY_A, grant(ISS_A, &["subscribe"], &[(all, "urlpattern")]));
    let mut watcher = subscribe(
        port,
        &format!("match_urlpattern={}", enc(all)),
        Some(&admin),
    );
    assert_eq!(watcher.status, 200);
    // A browser's subscription, its token in Mercure 1.0's cookie, with a payload.
    let mut c = grant(ISS_B, &["subscribe"], &[("https://example.com/a", "exact")]);
    c["authorization_details"][0]["payload"] = json!({"name": "bob"});
    let cookie = format!("__Secure-mercure_access_token={}", access_token(KEY_B, c));
    let bob = HttpStream::open(
        port,
        "GET",
        &format!("{HUB}?match={}", enc("https://example.com/a")),
        &[("Cookie", cookie.as_str())],
    );
    assert_eq!(bob.status, 200);
    let doc = |s: &mut HttpStream, active: bool| loop {
        let b = s.next_block().expect("a subscription event");
        let Some(d) = b.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        assert!(b.contains("event: mercure\n"), "{b}");
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        if v["match"] == "https://example.com/a" && v["active"] == active {
            return v;
        }
    };
    let started = doc(&mut watcher, true);
    assert_eq!(started["type"], "subscription");
    assert_eq!(started["match_type"], "exact");
    assert_eq!(started["payload"]["name"], "bob");
    let sub = started["subscriber"].as_str().unwrap().to_string();
    assert!(sub.starts_with("urn:uuid:"), "{sub}");
    assert_eq!(
        started["id"].as_str().unwrap(),
        format!(
            "{HUB}/subscriptions/exact/https%3A%2F%2Fexample.com%2Fa/{}",
            sub.replace(':', "%3A")
        )
    );
    // The API, with the access token: 1.0 documents.
    let auth = format!("Bearer {admin}");
    let mut list = HttpStream::open(
        port,
        "GET",
        &format!("{HUB}/subscriptions/exact"),
        &[("Authorization", auth.as_str())],
    );
    assert_eq!(list.status, 200);
    assert_eq!(
        list.header("content-type"),
        Some("application/mercure+json")
    );
    let body: serde_json::Value = serde_json::from_str(&list.rest()).unwrap();
    assert_eq!(body["type"], "subscriptions");
    let subs = body["subscriptions"].as_array().unwrap();
    assert!(
        subs.iter().any(|s| s["subscriber"] == sub.as_str()),
        "{body}"
    );
    assert!(subs.iter().all(|s| s["match_type"] == "exact"), "{body}");
    // A token without a subscribe grant may not list.
    let none = access_token(KEY_A, grant(ISS_A, &["publish"], &[("*", "exact")]));
    let auth = format!("Bearer {none}");
    let refused = HttpStream::open(
        port,
        "GET",
        &format!("{HUB}/subscriptions"),
        &[("Authorization", auth.as_str())],
    );
    assert_eq!(refused.status, 403);
    drop(bob);
    let ended = doc(&mut watcher, false);
    assert_eq!(ended["subscriber"], sub.as_str());
}

#[test]
fn query_subscriptions_resume_points_and_two_cookies() {
    let Some((_d, n)) = daemon_behind_nginx(&config(LOCAL)) else {
        return;
    };
    let port = n.port;
    let writer = access_token(KEY_A, grant(ISS_A, &["publish"], &[("*", "exact")]));
    let (topic, other) = (
        "https://example.com/books/1",
        "https://example.com/authors/1",
    );
    for (id, t) in [("e1", topic), ("e2", other), ("e3", topic)] {
        let (status, body) = answer(publish(
            port,
            &writer,
            &[("topic", t), ("data", id), ("id", id)],
        ));
        assert_eq!(status, 200, "{body}");
    }
    // QUERY (RFC 10008): the matchers in a form body, merged with the query string's.
    let form = "application/x-www-form-urlencoded";
    let body = format!("match={}&last_event_id=e1", enc(other));
    let mut s = HttpStream::send(
        port,
        "QUERY",
        &format!("{HUB}?match={}", enc(topic)),
        &[("Content-Type", form)],
        body.as_bytes(),
    );
    assert_eq!(s.status, 200);
    assert_eq!(s.header("accept-query"), Some(form));
    assert_eq!(s.header("mercure-last-event-id"), Some("e1"));
    assert_eq!(next_data(&mut s), "e2");
    assert_eq!(next_data(&mut s), "e3");
    // A QUERY without a form: 415 (naming what it takes) or 400 (no media type).
    let s = HttpStream::send(
        port,
        "QUERY",
        HUB,
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(s.status, 415);
    assert_eq!(s.header("accept-query"), Some(form));
    let s = HttpStream::send(port, "QUERY", HUB, &[], b"match=a");
    assert_eq!(s.status, 400);
    // The resume point: the id of the event before the first one sent (the Last-Event-ID
    // header counts first). An id the history does not hold resumes live: the newest id, not
    // the one asked for, tells the client it missed events.
    let q = format!("{HUB}?match={}&last_event_id=e1", enc(topic));
    let mut s = HttpStream::open(port, "GET", &q, &[("Last-Event-ID", "e2")]);
    assert_eq!(s.header("mercure-last-event-id"), Some("e2"));
    assert_eq!(s.header("last-event-id"), Some("e2"), "0.x's name too");
    assert_eq!(next_data(&mut s), "e3");
    let s = HttpStream::open(port, "GET", &q.replace("e1", "gone"), &[]);
    assert_eq!(s.header("mercure-last-event-id"), Some("e3"));
    let s = subscribe(port, &format!("match={}", enc(topic)), None);
    assert_eq!(
        s.header("mercure-last-event-id"),
        None,
        "nothing asked, nothing told"
    );
}

#[test]
fn object_form_mercure_claims_in_hub_key_tokens() {
    let Some((_d, n)) = daemon_behind_nginx(&config(LOCAL)) else {
        return;
    };
    let port = n.port;
    // 1.0's object form of the mercure claim, signed with the route's own (0.x) key.
    let writer = jwt_token(
        "HS256",
        OLD_KEY,
        json!({"mercure": {"publish": [
            {"match": "https://example.com/books/:id", "match_type": "urlpattern"},
            "https://example.com/legacy/{id}"
        ]}}),
    );
    let reader = jwt_token(
        "HS256",
        OLD_KEY,
        json!({"mercure": {"subscribe": [
            {"match": "https://example.com/books/1", "payload": {"user": "alice"}}
        ]}}),
    );
    let topic = "https://example.com/books/1";
    let mut s = subscribe(port, &format!("match={}", enc(topic)), Some(&reader));
    assert_eq!(s.status, 200);
    for (t, want) in [
        (topic, 200),
        ("https://example.com/legacy/3", 200),
        ("https://example.com/authors/1", 403),
    ] {
        let (status, body) = answer(publish(
            port,
            &writer,
            &[("topic", t), ("data", "p"), ("private", "on")],
        ));
        assert_eq!(status, want, "{t}: {body}");
    }
    assert_eq!(next_data(&mut s), "p");
    // One malformed entry refuses the token.
    let bad = jwt_token(
        "HS256",
        OLD_KEY,
        json!({"mercure": {"publish": [{"match": "x", "match_type": "regex"}]}}),
    );
    let (status, body) = answer(publish(port, &bad, &[("topic", topic), ("data", "p")]));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("match_type"), "{body}");
}

#[test]
fn a_stale_0x_cookie_does_not_hide_a_valid_1_0_one() {
    let Some((_d, n)) = daemon_behind_nginx(&config(LOCAL)) else {
        return;
    };
    let port = n.port;
    let topic = "https://example.com/books/1";
    let writer = access_token(KEY_A, grant(ISS_A, &["publish"], &[("*", "exact")]));
    let stale = jwt_token(
        "HS256",
        OLD_KEY,
        json!({"mercure": {"subscribe": ["*"]}, "exp": 1_000_000_000}),
    );
    let reader = access_token(KEY_B, grant(ISS_B, &["subscribe"], &[(topic, "exact")]));
    let q = format!("{HUB}?match={}", enc(topic));
    let both = format!("mercureAuthorization={stale}; __Secure-mercure_access_token={reader}");
    let mut s = HttpStream::open(port, "GET", &q, &[("Cookie", both.as_str())]);
    assert_eq!(s.status, 200);
    let (status, body) = answer(publish(
        port,
        &writer,
        &[("topic", topic), ("data", "private"), ("private", "on")],
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_data(&mut s), "private");
    // The stale one alone is still refused, with its own reason.
    let alone = format!("mercureAuthorization={stale}");
    let (status, body) = answer(HttpStream::open(
        port,
        "GET",
        &q,
        &[("Cookie", alone.as_str())],
    ));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
}
