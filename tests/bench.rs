//! `fastsse bench sse` against a real nginx + fastsse and straight over FastCGI: its counts are
//! right (every event, no loss, churn with Last-Event-ID), and its exit status gates a deploy.

mod support;

use std::process::Command;

use support::*;

const CONFIG: &str = r#"
[[route]]
path = "/events"
type = "topics"

[[route]]
path = "/status"
type = "status"
"#;

fn bench(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(fastsse_bin())
        .args(["bench", "sse", "--json", "--quiet"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

#[test]
fn bench_through_nginx_counts_every_event() {
    if !have("nginx") {
        return;
    }
    let d = Daemon::start(CONFIG);
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), "");
    let url = format!("http://127.0.0.1:{}/events?topic=bench", n.port);
    let (code, r, err) = bench(&[
        "--url",
        &url,
        "--publish-url",
        &url,
        "-n",
        "20",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--drain",
        "1s",
    ]);
    assert_eq!(code, 0, "{r}\n{err}");
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 30, "{r}");
    assert_eq!(r["connections_established"], 20);
    assert_eq!(r["events_expected"].as_u64().unwrap(), published * 20);
    assert_eq!(r["events_received"].as_u64().unwrap(), published * 20);
    assert_eq!(r["events_lost"], 0);
    assert_eq!(r["events_duplicated"], 0);
    assert_eq!(r["latency_ms"]["samples"].as_u64().unwrap(), published * 20);
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_over_fastcgi_with_churn_loses_nothing() {
    let d = Daemon::start(CONFIG);
    let fcgi = format!("unix:{}", d.socket.display());
    // The publisher needs HTTP: put nginx in front for it when available, else skip publishing.
    if !have("nginx") {
        return;
    }
    let n = Nginx::start(&fcgi, "");
    let publish = format!("http://127.0.0.1:{}/events?topic=churn", n.port);
    let (code, r, err) = bench(&[
        "--fcgi",
        &fcgi,
        "--path",
        "/events?topic=churn",
        "--publish-url",
        &publish,
        "-n",
        "30",
        "--rate",
        "20",
        "--duration",
        "3s",
        "--churn",
        "50",
        "--drain",
        "1s",
    ]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert!(r["reconnects"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(r["events_lost"], 0, "{r}");
    assert_eq!(r["events_duplicated"], 0, "{r}");
    assert_eq!(r["events_out_of_order"], 0, "{r}");
    assert!(r["events_expected"].as_u64().unwrap() > 0);
}

#[test]
fn failed_connections_fail_the_run() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/events");
    let (code, r, _) = bench(&[
        "--url",
        &url,
        "-n",
        "3",
        "--duration",
        "1s",
        "--drain",
        "0s",
    ]);
    assert_eq!(code, 1);
    assert!(
        r["connections_failed"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("connect")),
        "{r}"
    );
}

#[test]
fn too_many_subscribers_for_the_open_file_limit_is_refused_up_front() {
    let (code, _, err) = bench(&[
        "--url",
        "http://127.0.0.1:9/x",
        "-n",
        "10000000",
        "--duration",
        "1s",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("open files") && err.contains("ulimit"),
        "{err}"
    );
}
