//! Authorization on `topics` routes, through real nginx: the `auth_request` recipe
//! (conf/nginx-auth-request.conf) with a real second upstream deciding who the browser is,
//! publisher JWTs (made by PyJWT) on a topics route, and publishes from pages on other sites
//! refused by default.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

/// The PHP app's session check, as a real HTTP server (Python's http.server): `Cookie:
/// session=<name>` is signed in as <name> (200 + `X-User`), no session is 401, and POSTs pass
/// (200 without a user) so publishers reach fastsse.
struct WhoAmI {
    child: Child,
    port: u16,
}

impl WhoAmI {
    fn start() -> WhoAmI {
        let port = free_port();
        let child = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import http.server, sys\n\
                 class H(http.server.BaseHTTPRequestHandler):\n\
                 \x20   def do_GET(self):\n\
                 \x20       if self.headers.get('X-Original-Method') == 'POST':\n\
                 \x20           self.send_response(200); self.end_headers(); return\n\
                 \x20       c = self.headers.get('Cookie') or ''\n\
                 \x20       user = c.split('session=')[1].split(';')[0] if 'session=' in c else ''\n\
                 \x20       self.send_response(200 if user else 401)\n\
                 \x20       if user: self.send_header('X-User', user)\n\
                 \x20       self.end_headers()\n\
                 \x20   def log_message(self, *a): pass\n\
                 http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()",
            ])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        wait_for("the auth upstream", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        WhoAmI { child, port }
    }
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PUBLISH_TOKEN: &str = "a-publish-token-for-the-backend";

#[test]
fn the_auth_request_recipe_gives_each_signed_in_user_their_own_topics() {
    if !have("nginx") {
        return;
    }
    let who = WhoAmI::start();
    let d = Daemon::start(&format!(
        "[[route]]\npath = \"/events\"\ntype = \"topics\"\n\
         publish_token = \"{PUBLISH_TOKEN}\"\n\
         user_param = \"REMOTE_USER\"\nuser_topics = [\"user/{{user}}\"]\n"
    ));
    let recipe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/nginx-auth-request.conf"
    ))
    .unwrap()
    .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", who.port));
    let n = Nginx::start_with(&format!("unix:{}", d.socket.display()), "", &recipe);
    let get = |topic: &str, headers: &[(&str, &str)]| {
        HttpStream::open(n.port, "GET", &format!("/events?topic={topic}"), headers)
    };
    let alice = [("Cookie", "session=alice")];
    let mut own = get("user/alice", &alice);
    assert_eq!(own.status, 200);
    let mut public = get("news", &alice);
    assert_eq!(public.status, 200);
    // Another user's topic: refused by fastsse, saying why; a forged header changes nothing.
    let mut other = get("user/bob", &alice);
    assert_eq!(other.status, 403);
    assert!(other.rest().contains("not yours"));
    assert_eq!(
        get(
            "user/bob",
            &[("Cookie", "session=alice"), ("Remote-User", "bob")]
        )
        .status,
        403
    );
    // Not signed in: the app's 401, through nginx.
    assert_eq!(get("user/alice", &[]).status, 401);
    // The backend publishes with its token (the auth endpoint lets POSTs through).
    let publish = |topic: &str, data: &str| {
        let mut p = HttpStream::send(
            n.port,
            "POST",
            &format!("/events?topic={topic}"),
            &[
                ("Authorization", &format!("Bearer {PUBLISH_TOKEN}")),
                ("Content-Type", "text/plain"),
            ],
            data.as_bytes(),
        );
        let status = p.status;
        assert_eq!(status, 200, "{}", p.rest());
    };
    publish("user/bob", "for bob");
    publish("user/alice", "for alice");
    publish("news", "for everyone");
    assert_eq!(own.next_event().unwrap().2, "for alice");
    assert_eq!(public.next_event().unwrap().2, "for everyone");
    // Straight to fastsse with no web server vouching for anyone: a user topic needs a user.
    let mut c = FcgiClient::connect(&d.socket);
    c.send(&get_request(
        1,
        "/events?topic=user/alice",
        false,
        &[("QUERY_STRING", "topic=user/alice")],
    ));
    let text = String::from_utf8(c.read_response(1).0).unwrap();
    assert!(text.starts_with("Status: 401"), "{text}");
}

fn pyjwt(claims: serde_json::Value, secret: &str) -> String {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import jwt, json, sys\n\
             t = jwt.encode(json.loads(sys.argv[1]), sys.argv[2], algorithm='HS256')\n\
             print(t.decode() if isinstance(t, bytes) else t)",
        ])
        .arg(claims.to_string())
        .arg(secret)
        .output()
        .expect("python3 with PyJWT");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn topics_routes_take_publisher_and_subscriber_tokens_and_refuse_other_sites_pages() {
    let secret = "a-shared-secret-of-32-bytes-or-more";
    let config = format!(
        "[[route]]\npath = \"/events\"\ntype = \"topics\"\n\
         publisher_jwt_key = \"{secret}\"\nsubscriber_jwt_key = \"{secret}\"\n\
         publish_origins = [\"https://admin.example\"]\n"
    );
    let Some((_d, n)) = daemon_behind_nginx(&config) else {
        return;
    };
    let sub = pyjwt(
        serde_json::json!({"mercure": {"subscribe": ["orders/{id}"]}}),
        secret,
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let mut s = HttpStream::open(
        n.port,
        "GET",
        "/events?topic=orders/7",
        &[("Authorization", &bearer(&sub))],
    );
    assert_eq!(s.status, 200);
    let mut refused = HttpStream::open(
        n.port,
        "GET",
        "/events?topic=invoices/7",
        &[("Authorization", &bearer(&sub))],
    );
    let status = refused.status;
    assert_eq!(status, 403, "{}", refused.rest());
    assert_eq!(
        HttpStream::open(n.port, "GET", "/events?topic=orders/7", &[]).status,
        401
    );
    let publisher = pyjwt(
        serde_json::json!({"mercure": {"publish": ["orders/{id}"]}}),
        secret,
    );
    let post = |topic: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "text/plain")];
        h.extend_from_slice(headers);
        let mut p = HttpStream::send(n.port, "POST", &format!("/events?topic={topic}"), &h, b"x");
        (p.status, p.rest())
    };
    let auth = bearer(&publisher);
    assert_eq!(post("orders/7", &[("Authorization", &auth)]).0, 200);
    assert_eq!(s.next_event().unwrap().2, "x");
    let (status, body) = post("invoices/7", &[("Authorization", &auth)]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(post("orders/7", &[]).0, 401);
    // A page on another site (a cross-site form or fetch) is refused even with a good token;
    // a listed origin and the site's own pages are not.
    let (status, body) = post(
        "orders/7",
        &[("Authorization", &auth), ("Origin", "https://evil.example")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("publish_origins"), "{body}");
    assert_eq!(
        post(
            "orders/7",
            &[
                ("Authorization", &auth),
                ("Origin", "https://admin.example")
            ]
        )
        .0,
        200
    );
    let own = format!("http://localhost:{}", n.port);
    assert_eq!(
        post("orders/7", &[("Authorization", &auth), ("Origin", &own)]).0,
        200
    );
}

#[test]
fn the_embedded_default_refuses_publishes_from_other_sites_pages() {
    let Some((_d, n)) = daemon_behind_nginx("") else {
        return;
    };
    let post = |headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        HttpStream::send(n.port, "POST", "/events", &h, b"topic=t&data=x").status
    };
    assert_eq!(post(&[("Origin", "https://evil.example")]), 403);
    assert_eq!(post(&[("Referer", "https://evil.example/form.html")]), 403);
    assert_eq!(post(&[]), 200, "curl and backends send no Origin");
    assert_eq!(
        post(&[("Origin", &format!("http://localhost:{}", n.port))]),
        200
    );
}
