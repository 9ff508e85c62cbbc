//! A real browser: Debian's Chromium, headless, driven by npm puppeteer-core
//! (tests/node/browser-eventsource.mjs), through a real nginx with the shipped config.

mod support;

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
    let certs = TestCerts::make();
    let (tls, tls_port) = shipped_tls_server(&d, &certs);
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
