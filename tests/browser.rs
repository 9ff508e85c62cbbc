//! A real browser: Debian's Chromium, headless, driven by npm puppeteer-core
//! (tests/node/browser-eventsource.mjs), through a real nginx with the shipped config.

mod support;

use std::io::{BufRead, BufReader};
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
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/browser-eventsource.mjs"
    );
    let mut browser = Command::new("node")
        .arg(script)
        .arg(format!("http://127.0.0.1:{}", n.port))
        .arg("/events?topic=t")
        .arg("20")
        .arg("40")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
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
    let result = lines.next().expect("a result line").unwrap();
    let _ = browser.wait();
    let want: Vec<String> = (0..10)
        .map(|i| format!("\"before {i}\""))
        .chain((0..10).map(|i| format!("\"after {i}\"")))
        .collect();
    let got = format!("[{}]", want.join(","));
    assert!(result.contains(&format!("\"got\":{got}")), "{result}");
    assert!(
        !result.contains("\"readyState\":2"),
        "the EventSource closed for good: {result}"
    );
}
