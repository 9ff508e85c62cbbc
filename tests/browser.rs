//! A real browser: Debian's Chromium, headless, driven by npm puppeteer-core
//! (tests/node/browser-eventsource.mjs), through a real nginx with the shipped config.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const CONFIG: &str = r#"
[stream]
retry = "1s"
heartbeat = "2s"

[[route]]
path = "/events"
type = "topics"

[[route]]
path = "/status"
type = "status"
"#;

fn publish(port: u16, data: &str) {
    let mut s = HttpStream::send(
        port,
        "POST",
        "/events?topic=t",
        &[("Content-Type", "text/plain")],
        data.as_bytes(),
    );
    let status = s.status;
    assert_eq!(status, 200, "{}", s.rest());
}

#[test]
fn an_event_source_survives_a_five_second_daemon_stop_and_misses_nothing() {
    if !have("chromium") {
        return;
    }
    let Some((mut d, n)) = daemon_behind_nginx(CONFIG) else {
        return;
    };
    let page = format!("http://127.0.0.1:{}/status", n.port);
    let result = run_browser(
        "browser-eventsource.mjs",
        &[&page, "/events?topic=t", "20", "40"],
        || {
            for i in 0..10 {
                publish(n.port, &format!("before {i}"));
            }
            // A deploy: the daemon is away for 5 s (nginx answers its error page meanwhile).
            d.signal("TERM");
            d.wait_exit(Duration::from_secs(5));
            std::thread::sleep(Duration::from_secs(5));
            d.respawn();
            for i in 0..10 {
                publish(n.port, &format!("after {i}"));
            }
        },
    );
    let want: Vec<String> = (0..10)
        .map(|i| format!("before {i}"))
        .chain((0..10).map(|i| format!("after {i}")))
        .collect();
    assert_eq!(result["got"], serde_json::json!(want), "{result}");
    let result = result.to_string();
    assert!(
        !result.contains("\"readyState\":2"),
        "the EventSource closed for good: {result}"
    );
}

/// `n` EventSources in one page on `origin`; publishes once all that can open are open.
fn many_streams(origin: &str, n: usize, publish_port: u16) -> serde_json::Value {
    let page = format!("{origin}/status");
    run_browser(
        "browser-many-streams.mjs",
        &[&page, "/events?topic=t", &n.to_string(), "5"],
        || publish(publish_port, "to every open stream"),
    )
}

#[test]
fn over_http2_with_tls_a_page_holds_more_than_six_streams() {
    if !have("chromium") || !have("openssl") {
        return;
    }
    let Some((d, _)) = daemon_behind_nginx(CONFIG) else {
        return;
    };
    // The shipped TLS server block, with a certificate made by openssl for this test.
    let certs = TempDir::new("tls");
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let read = |name: &str| {
        std::fs::read_to_string(format!("{}/conf/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let tls_port = free_port();
    let snippet = read("nginx-fastsse.conf").replace(
        "unix:/run/fastsse/fastsse.sock",
        &format!("unix:{}", d.socket.display()),
    );
    let tls = read("nginx-tls.conf")
        .replace("include snippets/fastsse.conf;", &snippet)
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{tls_port} ssl http2;"),
        )
        .replace("listen [::]:443 ssl http2;", "")
        .replace("server_name example.com;", "server_name localhost;")
        .replace(
            "/etc/letsencrypt/live/example.com/fullchain.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/example.com/privkey.pem",
            &key.display().to_string(),
        );
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), &tls);
    // HTTP/1.1: Chromium opens six connections to an origin; the seventh and eighth wait.
    let plain = many_streams(&format!("http://127.0.0.1:{}", n.port), 8, n.port);
    assert_eq!(plain["protocol"], "http/1.1", "{plain}");
    assert_eq!(plain["opened"], 6, "{plain}");
    assert_eq!(plain["withMessage"], 6, "{plain}");
    // HTTP/2 over TLS (the shipped server block): all eight open and get the event.
    let h2 = many_streams(&format!("https://localhost:{tls_port}"), 8, n.port);
    assert_eq!(h2["protocol"], "h2", "{h2}");
    assert_eq!(h2["opened"], 8, "{h2}");
    assert_eq!(h2["withMessage"], 8, "{h2}");
}
