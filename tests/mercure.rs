//! The `mercure` route through real nginx with the shipped snippet: publishing the way
//! `symfony/mercure` does (a form POST with a Bearer JWT), subscribing with selectors and URI
//! templates, resuming by the publisher's ids, private updates, every refusal, RS256/ES256
//! keys, cookies and CORS, and a stream ended when its token expires. Tokens are made by PyJWT
//! (Debian's python3-jwt) and keys by openssl, never by fastsse.

mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;
use support::{form_body as form, jwt_token as token};

const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
const HUB: &str = "/.well-known/mercure";

/// An HS256 token whose secret is `secret_file`'s bytes, made with Python's hmac (PyJWT refuses
/// to sign with a public key: this is the forgery an HS/RS-confused hub would accept).
fn hs256_with_file_as_secret(secret_file: &str, claims: serde_json::Value) -> String {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import base64, hashlib, hmac, json, sys\n\
             b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b'=').decode()\n\
             head = b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())\n\
             body = b64(sys.argv[1].encode())\n\
             key = open(sys.argv[2], 'rb').read()\n\
             sig = hmac.new(key, f'{head}.{body}'.encode(), hashlib.sha256).digest()\n\
             print(f'{head}.{body}.{b64(sig)}')",
        ])
        .arg(claims.to_string())
        .arg(secret_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The next block that is an event (skips the opening `retry:` hint and heartbeats).
fn next_event_block(s: &mut HttpStream) -> String {
    loop {
        let b = s.next_block().expect("an event");
        if b.contains("data:") {
            return b;
        }
    }
}

fn publisher(topics: &[&str]) -> String {
    token(
        "HS256",
        SECRET,
        serde_json::json!({"mercure": {"publish": topics}}),
    )
}

fn subscriber(topics: &[&str]) -> String {
    token(
        "HS256",
        SECRET,
        serde_json::json!({"mercure": {"subscribe": topics}}),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hub_config(extra: &str) -> String {
    format!(
        "[stream]\nretry = \"1s\"\nheartbeat = \"2s\"\n\n\
         [[route]]\npath = \"{HUB}\"\ntype = \"mercure\"\n\
         publisher_jwt_key = \"{SECRET}\"\nsubscriber_jwt_key = \"{SECRET}\"\n\
         anonymous = true\n{extra}\n\n\
         [[route]]\npath = \"/status\"\ntype = \"status\"\n"
    )
}

/// POSTs a publish; returns (status, body).
fn publish(port: u16, headers: &[(&str, &str)], fields: &[(&str, &str)]) -> (u16, String) {
    let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(headers);
    let mut s = HttpStream::send(port, "POST", HUB, &h, form(fields).as_bytes());
    (s.status, s.rest().trim().to_string())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn subscribe(port: u16, query: &str, headers: &[(&str, &str)]) -> HttpStream {
    HttpStream::open(port, "GET", &format!("{HUB}?{query}"), headers)
}

fn enc(s: &str) -> String {
    form(&[("x", s)])[2..].to_string()
}

#[test]
fn publish_and_subscribe_as_symfony_mercure_and_the_js_clients_do() {
    let Some((_d, n)) = daemon_behind_nginx(&hub_config("")) else {
        return;
    };
    let books = "https://example.com/books/{id}";
    let mut s = subscribe(n.port, &format!("topic={}", enc(books)), &[]);
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    let auth = bearer(&publisher(&["https://example.com/books/{id}"]));
    let (status, id) = publish(
        n.port,
        &[("Authorization", &auth)],
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "{\"title\":\"one\"}\nsecond line"),
            ("id", "urn:uuid:5e94c686-2c0b-4f9b-958c-92ccc3bbb4eb"),
        ],
    );
    assert_eq!(
        (status, id.as_str()),
        (200, "urn:uuid:5e94c686-2c0b-4f9b-958c-92ccc3bbb4eb")
    );
    let (ev_id, _, data) = s.next_event().unwrap();
    assert_eq!(ev_id, id);
    assert_eq!(data, "{\"title\":\"one\"}\nsecond line");
    // Alternate topics: the canonical one does not match, an alternate does.
    let (status, generated) = publish(
        n.port,
        &[("Authorization", &bearer(&publisher(&["*"])))],
        &[
            ("topic", "https://example.com/reviews/9"),
            ("topic", "https://example.com/books/2"),
            ("data", "two"),
            ("type", "bookUpdated"),
            ("retry", "4000"),
        ],
    );
    assert_eq!(status, 200);
    let block = next_event_block(&mut s);
    assert!(block.contains(&format!("id: {generated}\n")), "{block}");
    assert!(
        block.contains("event: bookUpdated\n") && block.contains("retry: 4000\n"),
        "{block}"
    );
    // Not selected: another collection.
    publish(
        n.port,
        &[("Authorization", &bearer(&publisher(&["*"])))],
        &[("topic", "https://example.com/authors/1"), ("data", "no")],
    );
    publish(
        n.port,
        &[("Authorization", &bearer(&publisher(&["*"])))],
        &[
            ("topic", "https://example.com/books/3"),
            ("data", "three"),
            ("id", "book-3"),
        ],
    );
    assert_eq!(s.next_event().unwrap().2, "three");
    drop(s);
    // Resuming after the publisher's id, from the header (as a browser's EventSource does).
    let mut s = subscribe(
        n.port,
        &format!("topic={}", enc(books)),
        &[("Last-Event-ID", &id)],
    );
    assert_eq!(s.header("last-event-id"), Some(id.as_str()));
    assert_eq!(s.next_event().unwrap().2, "two");
    assert_eq!(s.next_event().unwrap().0, "book-3");
    drop(s);
    // From the query (clients that cannot set headers), and `earliest`.
    let mut s = subscribe(
        n.port,
        &format!("topic={}&lastEventID=earliest", enc(books)),
        &[],
    );
    assert_eq!(s.header("last-event-id"), Some("earliest"));
    let got: Vec<String> = (0..3).map(|_| s.next_event().unwrap().0).collect();
    assert_eq!(got, [id.clone(), generated.clone(), "book-3".into()]);
    drop(s);
    // An id the hub does not know: the in-band reset, then live events.
    let mut s = subscribe(
        n.port,
        &format!("topic={}", enc(books)),
        &[("Last-Event-ID", "urn:uuid:never-published")],
    );
    let block = next_event_block(&mut s);
    assert!(
        block.contains("event: fastsse-reset") && block.contains("unknown"),
        "{block}"
    );
}

#[test]
fn every_refusal_says_why_and_stores_nothing() {
    let Some((d, n)) = daemon_behind_nginx(&hub_config("")) else {
        return;
    };
    let topic = [("topic", "https://example.com/t"), ("data", "x")];
    let ok = bearer(&publisher(&["*"]));
    let cases: Vec<(String, u16, &str)> = vec![
        (String::new(), 401, "no token"),
        (bearer("not.a.token"), 401, "malformed"),
        (
            bearer(&token(
                "none",
                "",
                serde_json::json!({"mercure": {"publish": ["*"]}}),
            )),
            401,
            "",
        ),
        (
            bearer(&token(
                "HS384",
                SECRET,
                serde_json::json!({"mercure": {"publish": ["*"]}}),
            )),
            401,
            "HS256 only",
        ),
        (
            bearer(&token(
                "HS256",
                "another secret, 32 bytes or more!",
                serde_json::json!({"mercure": {"publish": ["*"]}}),
            )),
            401,
            "bad signature",
        ),
        (
            bearer(&token(
                "HS256",
                SECRET,
                serde_json::json!({"exp": now() - 10, "mercure": {"publish": ["*"]}}),
            )),
            401,
            "expired",
        ),
        (
            bearer(&token(
                "HS256",
                SECRET,
                serde_json::json!({"nbf": now() + 600, "mercure": {"publish": ["*"]}}),
            )),
            401,
            "not valid yet",
        ),
        (
            bearer(&token("HS256", SECRET, serde_json::json!({"sub": "x"}))),
            403,
            "no mercure.publish",
        ),
        (
            bearer(&publisher(&["https://example.com/other/{x}"])),
            403,
            "not among",
        ),
    ];
    for (auth, status, reason) in &cases {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth.as_str())]
        };
        let (got, body) = publish(n.port, &headers, &topic);
        assert_eq!(got, *status, "{auth:.40}: {body}");
        assert!(body.contains(reason), "{reason:?} not in {body:?}");
        assert!(!body.contains(SECRET));
    }
    let bad_forms: [(&[(&str, &str)], &str); 5] = [
        (&[("data", "no topic")], "missing topic"),
        (&[("topic", "t"), ("retry", "soon")], "retry"),
        (&[("topic", "t"), ("id", "#1")], "must not start with #"),
        (&[("topic", "t"), ("id", "a\nb")], "CR, LF"),
        (&[("topic", "t"), ("type", "a\r\nb")], "CR or LF"),
    ];
    for (fields, reason) in bad_forms {
        let (got, body) = publish(n.port, &[("Authorization", &ok)], fields);
        assert_eq!(got, 400, "{fields:?}: {body}");
        assert!(body.contains(reason), "{reason:?} not in {body:?}");
    }
    let mut json = HttpStream::send(
        n.port,
        "POST",
        HUB,
        &[("Authorization", &ok), ("Content-Type", "application/json")],
        b"{\"topic\":\"t\"}",
    );
    assert_eq!(json.status, 400);
    assert!(json.rest().contains("x-www-form-urlencoded"));
    assert_eq!(
        d.status_number("published"),
        0,
        "a refusal stored something"
    );
    // The one that is right is stored.
    assert_eq!(publish(n.port, &[("Authorization", &ok)], &topic).0, 200);
    // Subscribers: a bad token is refused even where anonymous subscribers are served.
    let s = subscribe(n.port, "topic=*", &[("Authorization", &bearer("x.y.z"))]);
    assert_eq!(s.status, 401);
    assert_eq!(subscribe(n.port, "", &[]).status, 400);
    // A token longer than 8 KiB (nginx refuses such a header itself; straight to FastCGI).
    let mut c = FcgiClient::connect(&d.socket);
    let huge = bearer(&"a".repeat(9000));
    let params = [
        ("HTTP_AUTHORIZATION", huge.as_str()),
        ("QUERY_STRING", "topic=t"),
    ];
    c.send(&get_request(
        1,
        "/.well-known/mercure?topic=t",
        false,
        &params,
    ));
    let text = String::from_utf8(c.read_response(1).0).unwrap();
    assert!(
        text.starts_with("Status: 401") && text.contains("longer than 8192"),
        "{text}"
    );
}

#[test]
fn private_updates_reach_only_the_subscribers_allowed_to_see_them_even_after_a_restart() {
    let Some((mut d, n)) = daemon_behind_nginx(&hub_config("")) else {
        return;
    };
    let alice_t = subscriber(&["https://example.com/users/alice/{+rest}"]);
    let bob_t = subscriber(&["https://example.com/users/bob/{+rest}"]);
    let (alice_h, bob_h) = (bearer(&alice_t), bearer(&bob_t));
    let all = "topic=*";
    let mut alice = subscribe(n.port, all, &[("Authorization", &alice_h)]);
    let mut bob = subscribe(n.port, all, &[("Authorization", &bob_h)]);
    let mut anonymous = subscribe(n.port, all, &[]);
    // The token in the `authorization` query parameter (clients that can set no header).
    let mut alice_q = subscribe(n.port, &format!("{all}&authorization={alice_t}"), &[]);
    let auth = bearer(&publisher(&["*"]));
    let send = |topics: &[&str], data: &str, private: bool| {
        let mut fields: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
        fields.push(("data", data));
        if private {
            fields.push(("private", "on"));
        }
        let (status, body) = publish(n.port, &[("Authorization", &auth)], &fields);
        assert_eq!(status, 200, "{body}");
    };
    send(
        &["https://example.com/users/alice/orders"],
        "alice's order",
        true,
    );
    send(
        &["https://example.com/users/bob/orders"],
        "bob's order",
        true,
    );
    // Private, with an alternate topic bob may read.
    send(
        &[
            "https://example.com/orders/7",
            "https://example.com/users/bob/orders/7",
        ],
        "order 7 for bob",
        true,
    );
    send(&["https://example.com/news"], "public news", false);
    assert_eq!(alice.next_event().unwrap().2, "alice's order");
    assert_eq!(alice.next_event().unwrap().2, "public news");
    assert_eq!(bob.next_event().unwrap().2, "bob's order");
    assert_eq!(bob.next_event().unwrap().2, "order 7 for bob");
    assert_eq!(bob.next_event().unwrap().2, "public news");
    assert_eq!(anonymous.next_event().unwrap().2, "public news");
    assert_eq!(alice_q.next_event().unwrap().2, "alice's order");
    drop((alice, bob, anonymous, alice_q));
    // After a restart the journal still knows which updates were private, and their ids.
    d.restart("TERM");
    let replay = |headers: &[(&str, &str)]| {
        let mut s = subscribe(n.port, "topic=*&lastEventID=earliest", headers);
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("public news") {
            got.push(s.next_event().unwrap().2);
        }
        got
    };
    assert_eq!(
        replay(&[("Authorization", &alice_h)]),
        ["alice's order", "public news"]
    );
    assert_eq!(
        replay(&[("Cookie", &format!("mercureAuthorization={bob_t}"))]),
        ["bob's order", "order 7 for bob", "public news"]
    );
    assert_eq!(replay(&[]), ["public news"]);
}

#[test]
fn rs256_and_es256_keys_made_by_openssl_and_no_algorithm_confusion() {
    if !have("openssl") {
        return;
    }
    let keys = TempDir::new("keys");
    let make = |name: &str, args: &[&str]| {
        let private = keys.path(&format!("{name}.key"));
        let public = keys.path(&format!("{name}.pub"));
        assert!(Command::new("openssl")
            .args(["genpkey", "-algorithm"])
            .args(args)
            .arg("-out")
            .arg(&private)
            .status()
            .unwrap()
            .success());
        assert!(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success());
        (private.display().to_string(), public.display().to_string())
    };
    let (rsa_key, rsa_pub) = make("rsa", &["RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    let (ec_key, ec_pub) = make("ec", &["EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let config = format!(
        "[[route]]\npath = \"{HUB}\"\ntype = \"mercure\"\n\
         publisher_jwt_key = \"{rsa_pub}\"\npublisher_jwt_alg = \"RS256\"\n\
         subscriber_jwt_key = \"{ec_pub}\"\nsubscriber_jwt_alg = \"ES256\"\n"
    );
    let Some((_d, n)) = daemon_behind_nginx(&config) else {
        return;
    };
    let claims = serde_json::json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}});
    let es = bearer(&token("ES256", &ec_key, claims.clone()));
    let mut s = subscribe(n.port, "topic=t", &[("Authorization", &es)]);
    assert_eq!(s.status, 200);
    let rs = bearer(&token("RS256", &rsa_key, claims.clone()));
    let fields = [("topic", "t"), ("data", "signed"), ("private", "on")];
    assert_eq!(publish(n.port, &[("Authorization", &rs)], &fields).0, 200);
    assert_eq!(s.next_event().unwrap().2, "signed");
    // The classic confusion: HS256 "signed" with the RSA public key as the secret.
    let forged = bearer(&hs256_with_file_as_secret(&rsa_pub, claims.clone()));
    let (status, body) = publish(n.port, &[("Authorization", &forged)], &fields);
    assert_eq!(status, 401, "{body}");
    // An ES256 token is not a publisher token here, nor RS256 a subscriber one.
    assert_eq!(publish(n.port, &[("Authorization", &es)], &fields).0, 401);
    assert_eq!(
        subscribe(n.port, "topic=t", &[("Authorization", &rs)]).status,
        401
    );
    // Without a token and with anonymous off: refused, saying why.
    let mut anon = subscribe(n.port, "topic=t", &[]);
    assert_eq!(anon.status, 401);
    assert!(anon.rest().contains("anonymous = false"));
}

#[test]
fn cookies_cors_and_the_csrf_guard() {
    let extra =
        "cors_origins = [\"https://app.example\"]\npublish_origins = [\"https://app.example\"]\n";
    let Some((_d, n)) = daemon_behind_nginx(&hub_config(extra)) else {
        return;
    };
    let cookie = format!("mercureAuthorization={}", publisher(&["*"]));
    let fields = [("topic", "t"), ("data", "from a page")];
    let from = |origin: &str| {
        let mut h = vec![("Cookie", cookie.as_str())];
        if !origin.is_empty() {
            h.push(("Origin", origin));
        }
        publish(n.port, &h, &fields)
    };
    let (status, body) = from("https://evil.example");
    assert_eq!(status, 403);
    assert!(body.contains("publish_origins"), "{body}");
    assert_eq!(from("").0, 403, "no Origin, no Referer");
    assert_eq!(from("https://app.example").0, 200);
    let referer = publish(
        n.port,
        &[
            ("Cookie", &cookie),
            ("Referer", "https://app.example/page?x=1"),
        ],
        &fields,
    );
    assert_eq!(referer.0, 200);
    // A Bearer token is not sent by a browser on its own: no origin needed.
    let bearer_only = publish(
        n.port,
        &[
            ("Authorization", &bearer(&publisher(&["*"]))),
            ("Origin", "https://evil.example"),
        ],
        &fields,
    );
    assert_eq!(bearer_only.0, 200);
    // Preflight and the stream's CORS headers.
    let pre = HttpStream::open(
        n.port,
        "OPTIONS",
        HUB,
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    let denied = HttpStream::open(
        n.port,
        "OPTIONS",
        HUB,
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("access-control-allow-origin"), None);
    let s = subscribe(n.port, "topic=t", &[("Origin", "https://app.example")]);
    assert_eq!(s.status, 200);
    assert_eq!(
        s.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let other = subscribe(n.port, "topic=t", &[("Origin", "https://evil.example")]);
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[test]
fn a_stream_ends_when_its_token_expires_and_a_hub_without_keys_says_why() {
    let Some((_d, n)) = daemon_behind_nginx(&hub_config("")) else {
        return;
    };
    let t = token(
        "HS256",
        SECRET,
        serde_json::json!({"exp": now() + 3, "mercure": {"subscribe": ["*"]}}),
    );
    let started = Instant::now();
    let mut s = subscribe(n.port, "topic=t", &[("Authorization", &bearer(&t))]);
    assert_eq!(s.status, 200);
    let rest = s.rest();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(rest.trim_end().ends_with("retry: 1000"), "{rest:?}");
    drop(_d);
    let keyless = format!("[[route]]\npath = \"{HUB}\"\ntype = \"mercure\"\nanonymous = true\n");
    let Some((_d, n)) = daemon_behind_nginx(&keyless) else {
        return;
    };
    let (status, body) = publish(
        n.port,
        &[("Authorization", &bearer(&publisher(&["*"])))],
        &[("topic", "t")],
    );
    assert_eq!(status, 403);
    assert!(body.contains("no publisher_jwt_key"), "{body}");
}

fn browser(args: &[&str], after_ready: impl FnOnce()) -> serde_json::Value {
    run_browser("browser-eventsource.mjs", args, after_ready)
}

#[test]
fn in_chromium_the_cookie_opens_only_its_own_private_topic_and_cors_admits_only_listed_origins() {
    if !have("chromium") {
        return;
    }
    let Some((d, n)) = daemon_behind_nginx(&hub_config("")) else {
        return;
    };
    // The page on another origin (localhost rather than 127.0.0.1) is listed: reload to say so.
    let config = d.dir.path("fastsse.toml");
    let listed = format!("http://localhost:{}", n.port);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "anonymous = true\n",
            &format!("anonymous = true\ncors_origins = [\"{listed}\"]\n"),
        ),
    )
    .unwrap();
    d.signal("HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        d.log().contains("SIGHUP: reloaded")
    });
    let origin = format!("http://127.0.0.1:{}", n.port);
    let alice = subscriber(&["https://example.com/users/alice/{+rest}"]);
    let auth = bearer(&publisher(&["*"]));
    let send = |topic: &str, data: &str, private: bool| {
        let mut f = vec![("topic", topic), ("data", data)];
        if private {
            f.push(("private", "on"));
        }
        assert_eq!(publish(n.port, &[("Authorization", &auth)], &f).0, 200);
    };
    // Same origin, the token in the mercureAuthorization cookie (as Symfony sets it).
    let got = browser(
        &[
            &format!("{origin}/status"),
            &format!("{HUB}?topic=*"),
            "2",
            "10",
            &format!("mercureAuthorization={alice}"),
        ],
        || {
            send("https://example.com/users/bob/inbox", "bob's secret", true);
            send(
                "https://example.com/users/alice/inbox",
                "alice's secret",
                true,
            );
            send("https://example.com/news", "news", false);
        },
    );
    assert_eq!(
        got["got"],
        serde_json::json!(["alice's secret", "news"]),
        "{got}"
    );
    // A page on the listed origin, withCredentials: CORS lets it read the stream.
    let hub = format!("{origin}{HUB}?topic=t");
    let got = browser(
        &[
            &format!("{listed}/status"),
            &hub,
            "1",
            "10",
            "",
            "credentials",
        ],
        || send("t", "cross-origin", false),
    );
    assert_eq!(got["got"], serde_json::json!(["cross-origin"]), "{got}");
    // The same page on an origin that is not listed: the browser refuses the stream.
    // (browser-eventsource.mjs maps *.test to 127.0.0.1)
    let unlisted = format!("http://unlisted.test:{}", n.port);
    let got = browser(
        &[
            &format!("{unlisted}/status"),
            &hub,
            "1",
            "3",
            "",
            "credentials",
        ],
        || send("t", "not for you", false),
    );
    assert_eq!(got["got"], serde_json::json!([]), "{got}");
    assert_eq!(got["readyState"], 2, "{got}");
}

#[test]
fn active_subscriptions_are_announced_and_listed_to_those_allowed() {
    let Some((_d, n)) = daemon_behind_nginx(&hub_config("subscriptions = true\n")) else {
        return;
    };
    let watcher = bearer(&subscriber(&[
        "/.well-known/mercure/subscriptions/{topic}/{subscriber}",
    ]));
    let topic_sel = "/.well-known/mercure/subscriptions/{topic}/{subscriber}";
    let mut watch = subscribe(
        n.port,
        &format!("topic={}", enc(topic_sel)),
        &[("Authorization", &watcher)],
    );
    assert_eq!(watch.status, 200);
    let alice = token(
        "HS256",
        SECRET,
        serde_json::json!({"mercure": {"subscribe": ["x"], "payload": {"user": "alice"}}}),
    );
    let book = "https://example.com/books/1";
    let s = subscribe(
        n.port,
        &format!("topic={}", enc(book)),
        &[("Authorization", &bearer(&alice))],
    );
    assert_eq!(s.status, 200);
    // (The watcher's own subscription is announced too.)
    let started: serde_json::Value = loop {
        let (_, _, data) = watch.next_event().unwrap();
        let d: serde_json::Value = serde_json::from_str(&data).unwrap();
        if d["topic"] == book {
            break d;
        }
    };
    assert_eq!(started["type"], "Subscription");
    assert_eq!(started["topic"], book);
    assert_eq!(started["active"], true);
    assert_eq!(started["payload"]["user"], "alice");
    let subscriber_id = started["subscriber"].as_str().unwrap().to_string();
    assert!(subscriber_id.starts_with("urn:uuid:"), "{started}");
    let listed_id = started["id"].as_str().unwrap().to_string();
    assert!(
        listed_id.starts_with("/.well-known/mercure/subscriptions/https%3A%2F%2F"),
        "{listed_id}"
    );
    // The API, for a token allowed to see them; anonymous gets 401, others see nothing.
    let get = |path: &str, auth: &str| {
        let mut h = HttpStream::open(n.port, "GET", path, &[("Authorization", auth)]);
        (h.status, h.rest())
    };
    let (status, body) = get("/.well-known/mercure/subscriptions", &watcher);
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["type"], "Subscriptions");
    let subs = doc["subscriptions"].as_array().unwrap();
    assert!(
        subs.iter()
            .any(|s| s["subscriber"] == subscriber_id.as_str()),
        "{doc}"
    );
    assert!(doc["lastEventID"].is_string(), "{doc}");
    let (status, body) = get(&listed_id, &watcher);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["topic"],
        book
    );
    let (_, body) = get("/.well-known/mercure/subscriptions", &bearer(&alice));
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["subscriptions"], serde_json::json!([]), "{doc}");
    assert_eq!(
        HttpStream::open(n.port, "GET", "/.well-known/mercure/subscriptions", &[]).status,
        401
    );
    // Leaving is announced too.
    drop(s);
    let ended: serde_json::Value = loop {
        let (_, _, data) = watch.next_event().unwrap();
        let d: serde_json::Value = serde_json::from_str(&data).unwrap();
        if d["subscriber"] == subscriber_id.as_str() {
            break d;
        }
    };
    assert_eq!(ended["active"], false, "{ended}");
    let (status, _) = get(&listed_id, &watcher);
    assert_eq!(status, 404);
}

#[test]
fn the_docs_plain_php_publisher_publishes_a_private_update() {
    if !have("php") {
        return;
    }
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mercure.md")).unwrap();
    let block = &doc[doc
        .find("<!-- php-publisher")
        .expect("the php block marker")..];
    let start = block.find("```php\n").unwrap() + 7;
    let php = &block[start..start + block[start..].find("```").unwrap()];
    let Some((_d, n)) = daemon_behind_nginx(&hub_config("")) else {
        return;
    };
    let alice = bearer(&subscriber(&["https://example.com/users/alice/{+rest}"]));
    let mut s = subscribe(n.port, "topic=*", &[("Authorization", &alice)]);
    let mut anonymous = subscribe(n.port, "topic=*", &[]);
    let dir = TempDir::new("php");
    let script = dir.path("publish.php");
    std::fs::write(&script, php).unwrap();
    let out = Command::new("php")
        .arg(&script)
        .env("MERCURE_URL", format!("http://127.0.0.1:{}{HUB}", n.port))
        .env("MERCURE_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (got_id, _, data) = s.next_event().unwrap();
    assert_eq!((got_id, data.as_str()), (id, "{\"status\":\"shipped\"}"));
    // Private: the anonymous subscriber gets nothing (a public event proves it is listening).
    let (status, _) = publish(
        n.port,
        &[("Authorization", &bearer(&publisher(&["*"])))],
        &[("topic", "https://example.com/news"), ("data", "public")],
    );
    assert_eq!(status, 200);
    assert_eq!(anonymous.next_event().unwrap().2, "public");
    // A wrong secret: the PHP function throws with the hub's reason.
    let out = Command::new("php")
        .arg(&script)
        .env("MERCURE_URL", format!("http://127.0.0.1:{}{HUB}", n.port))
        .env("MERCURE_SECRET", "not the hub's secret, but long enough")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("not published: bad signature"), "{text}");
}
