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
path = "/clock"
type = "clock"
interval = "100ms"

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

/// What `scripts/soak.sh` relies on: events published to several topics in turn, each subscriber
/// expecting only its own topic's (across churn), and the server's figures sampled from
/// `/metrics` into the report.
#[test]
fn topics_in_turn_with_churn_and_the_server_sampled() {
    if !have("nginx") {
        return;
    }
    let d = Daemon::start(&format!(
        "{CONFIG}\n[[route]]\npath = \"/metrics\"\ntype = \"metrics\"\n"
    ));
    let metrics = "location = /metrics { include /etc/nginx/fastcgi_params; \
                   fastcgi_pass unix:/run/fastsse/fastsse.sock; }";
    let n = Nginx::start_with(&format!("unix:{}", d.socket.display()), "", metrics);
    let url = |t: &str| format!("http://127.0.0.1:{}/events?topic={t}", n.port);
    let (a, b) = (url("a"), url("b"));
    let sample = format!("http://127.0.0.1:{}/metrics", n.port);
    let mut args = vec![
        "--url",
        &a,
        "--url",
        &b,
        "--publish-url",
        &a,
        "--publish-url",
        &b,
    ];
    args.extend([
        "-n",
        "6",
        "--rate",
        "20",
        "--duration",
        "3s",
        "--drain",
        "1s",
        "--churn",
        "30",
        "--max-duplicated",
        "0",
        "--sample",
        &sample,
        "--sample-every",
        "300ms",
    ]);
    let (code, r, err) = bench(&args);
    assert_eq!(code, 0, "{r}\n{err}");
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 40, "{r}");
    // Subscribers 0, 2, 4 read topic a (events 1, 3, 5…), 1, 3, 5 topic b (2, 4, 6…).
    assert_eq!(r["events_expected"].as_u64().unwrap(), 3 * published, "{r}");
    assert_eq!(r["events_received"].as_u64().unwrap(), 3 * published, "{r}");
    assert_eq!(r["events_lost"], 0, "{r}");
    assert!(r["reconnects"].as_u64().unwrap() > 3, "{r}");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.len() >= 5, "{r}");
    let last = &samples[samples.len() - 1]["values"];
    assert!(last["process_open_fds"].as_f64().unwrap() >= 6.0, "{last}");
    assert!(
        last["process_resident_memory_bytes"].as_f64().unwrap() > 1e6,
        "{last}"
    );
    assert!(last["fastsse_tasks"].as_f64().unwrap() >= 6.0, "{last}");
    assert!(samples
        .iter()
        .any(|s| s["values"]["fastsse_streams_active"].as_f64() == Some(6.0)));

    // Two topics need two subscribe URLs, said before anything connects.
    let (code, _, err) = bench(&["--url", &a, "--publish-url", &a, "--publish-url", &b]);
    assert_ne!(code, 0);
    assert!(err.contains("2 --publish-url need 2 --url"), "{err}");
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

#[test]
fn thresholds_set_the_exit_status() {
    let d = Daemon::start(CONFIG);
    let fcgi = format!("unix:{}", d.socket.display());
    let run = |extra: &[&str]| {
        let mut args = vec!["--fcgi", &fcgi, "--path", "/events?topic=gate", "-n", "5"];
        args.extend_from_slice(&["--duration", "1s", "--drain", "500ms"]);
        args.extend_from_slice(extra);
        bench(&args)
    };
    // Publishing through the same socket's HTTP side is not available over FastCGI: a
    // subscriber-only run that receives nothing fails, saying so.
    let (code, r, _) = run(&[]);
    assert_eq!(code, 1, "{r}");
    assert!(
        r["failures"].to_string().contains("no event was received"),
        "{r}"
    );
    // With a source that produces events (the clock) and thresholds it meets: exit 0.
    let clock = |extra: &[&str]| {
        let mut args = vec!["--fcgi", &fcgi, "--path", "/clock", "-n", "5"];
        args.extend_from_slice(&["--duration", "2s", "--drain", "0s"]);
        args.extend_from_slice(extra);
        bench(&args)
    };
    let (code, r, _) = clock(&["--max-p99", "10s", "--max-loss", "0"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["failures"], serde_json::json!([]));
}

#[test]
fn a_p99_threshold_and_a_404_fail_the_run_and_failed_connects_back_off() {
    if !have("nginx") {
        return;
    }
    let d = Daemon::start(CONFIG);
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), "");
    let url = format!("http://127.0.0.1:{}/events?topic=p99", n.port);
    let (code, r, _) = bench(&[
        "--url",
        &url,
        "--publish-url",
        &url,
        "-n",
        "5",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--drain",
        "500ms",
        "--max-p99",
        "0ms",
    ]);
    assert_eq!(code, 1, "{r}");
    assert!(r["failures"].to_string().contains("--max-p99"), "{r}");
    assert_eq!(r["events_lost"], 0, "the threshold alone failed it: {r}");
    // A URL that answers 404: counted by cause, retried with back-off, not hammered.
    let missing = format!("http://127.0.0.1:{}/nope", n.port);
    let (code, r, _) = bench(&[
        "--url",
        &missing,
        "-n",
        "2",
        "--duration",
        "3s",
        "--drain",
        "0s",
    ]);
    assert_eq!(code, 1, "{r}");
    let failed = r["connections_failed"].as_object().unwrap();
    assert!(failed.keys().any(|k| k.contains("404")), "{r}");
    let attempts = r["connections_attempted"].as_u64().unwrap();
    assert!(
        attempts <= 2 * 6,
        "{attempts} attempts by 2 subscribers in ~3 s: {r}"
    );
}

#[test]
fn headers_given_with_dash_h_reach_the_server() {
    let secret = "a-shared-secret-of-32-bytes-or-more";
    let config = format!(
        "[[route]]\npath = \"/events\"\ntype = \"topics\"\nsubscriber_jwt_key = \"{secret}\"\n"
    );
    let Some((d, n)) = daemon_behind_nginx(&config) else {
        return;
    };
    // A subscriber token made by PyJWT (Debian's python3-jwt).
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import jwt, sys\n\
             t = jwt.encode({'mercure': {'subscribe': ['*']}}, sys.argv[1], algorithm='HS256')\n\
             print(t.decode() if isinstance(t, bytes) else t)",
        ])
        .arg(secret)
        .output()
        .unwrap();
    let auth = format!(
        "Authorization: Bearer {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let url = format!("http://127.0.0.1:{}/events?topic=t", n.port);
    let fcgi = format!("unix:{}", d.socket.display());
    let short = ["-n", "2", "--duration", "1s", "--drain", "0s"];
    // Without the header: every connection is refused, 401.
    let (code, r, _) = bench(&[&["--url", url.as_str()][..], &short].concat());
    assert_eq!(code, 1);
    assert!(r["connections_failed"].to_string().contains("401"), "{r}");
    // With it, through nginx and straight over FastCGI: connected.
    for target in [["--url", url.as_str()], ["--fcgi", fcgi.as_str()]] {
        let mut args = vec![target[0], target[1], "-H", &auth];
        if target[0] == "--fcgi" {
            args.extend(["--path", "/events?topic=t"]);
        }
        args.extend(short);
        let (_, r, err) = bench(&args);
        assert_eq!(r["connections_established"], 2, "{r}\n{err}");
        assert_eq!(r["connections_failed"], serde_json::json!({}), "{r}");
    }
    let (code, _, err) = bench(&["--url", &url, "-H", "no colon here"]);
    assert_eq!(code, 2);
    assert!(err.contains("Name: value"), "{err}");
}

/// The addresses nginx logged as clients (the first field of each access-log line).
fn client_addresses(log: &str) -> std::collections::BTreeSet<String> {
    log.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn https_over_http1_and_http2_through_the_shipped_tls_server() {
    if !have("nginx") || !have("openssl") {
        return;
    }
    let d = Daemon::start(CONFIG);
    let certs = TestCerts::make();
    let (tls, tls_port) = shipped_tls_server(&d, &certs);
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), &tls);
    let url = format!("https://localhost:{tls_port}/events?topic=tls");
    let ca = certs.ca.display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--url",
            &url,
            "--publish-url",
            &url,
            "--rate",
            "20",
            "--duration",
            "2s",
            "--drain",
            "1s",
        ];
        args.extend_from_slice(extra);
        bench(&args)
    };

    // HTTP/1.1 over TLS, trusting the test CA: one connection per stream.
    let (code, r, err) = run(&["-n", "20", "--cacert", &ca]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["protocol"], "https HTTP/1.1", "{r}");
    assert_eq!(r["transport_connections"], 20, "{r}");
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 30, "{r}");
    assert_eq!(
        r["events_received"].as_u64().unwrap(),
        published * 20,
        "{r}"
    );
    assert_eq!(r["events_lost"], 0, "{r}");

    // HTTP/2: 250 streams on three connections (100 each, nginx allows 128), as a browser does.
    let (code, r, err) = run(&["-n", "250", "--cacert", &ca, "--http", "2"]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["protocol"], "https HTTP/2", "{r}");
    assert_eq!(r["connections_established"], 250, "{r}");
    assert_eq!(r["transport_connections"], 3, "{r}");
    let published = r["published"].as_u64().unwrap();
    assert_eq!(
        r["events_received"].as_u64().unwrap(),
        published * 250,
        "{r}"
    );
    assert_eq!(r["events_lost"], 0, "{r}");
    assert!(
        n.access_log()
            .contains("\"GET /events?topic=tls HTTP/2.0\" 200"),
        "nginx saw HTTP/2 streams:\n{}",
        n.access_log()
    );

    // The system's CAs do not know the test CA: every connect fails, by cause, and the run too.
    let (code, r, _) = run(&["-n", "5"]);
    assert_eq!(code, 1, "{r}");
    let causes = r["connections_failed"].to_string();
    assert!(
        causes.contains("tls") && causes.contains("UnknownIssuer"),
        "{r}"
    );
    assert!(
        r["failures"].to_string().contains("no event was received"),
        "{r}"
    );
    // --insecure accepts the certificate.
    let (code, r, err) = run(&["-n", "5", "--insecure", "--http", "2"]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["transport_connections"], 1, "{r}");
}

#[test]
fn subscribers_spread_over_urls_and_source_addresses() {
    if !have("nginx") || !have("openssl") {
        return;
    }
    let d = Daemon::start(CONFIG);
    let certs = TestCerts::make();
    let (tls, tls_port) = shipped_tls_server(&d, &certs);
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), &tls);
    let plain = format!("http://127.0.0.1:{}/events?topic=spread", n.port);
    let secure = format!("https://localhost:{tls_port}/events?topic=spread");
    let (code, r, err) = bench(&[
        "--url",
        &plain,
        "--url",
        &secure,
        "--insecure",
        "--publish-url",
        &plain,
        "-n",
        "40",
        "--source",
        "127.0.0.2,127.0.0.3",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--drain",
        "1s",
    ]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["events_lost"], 0, "{r}");
    assert_eq!(r["transport_connections"], 40, "{r}");
    let log = n.access_log();
    let from = client_addresses(&log);
    assert!(
        from.contains("127.0.0.2") && from.contains("127.0.0.3"),
        "connections from both source addresses: {from:?}"
    );
    assert_eq!(log.matches("GET /events?topic=spread").count(), 40, "{log}");

    // HTTP/2 asked of a server without it: the cause is named and the run fails.
    let (code, r, _) = bench(&[
        "--url",
        &plain,
        "--http",
        "2",
        "-n",
        "3",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 1, "{r}");
    assert!(
        r["connections_failed"].to_string().contains("http2 error"),
        "{r}"
    );
}

#[test]
fn stages_ramp_up_hold_and_down_and_the_report_draws_the_series() {
    if !have("nginx") {
        return;
    }
    let d = Daemon::start(CONFIG);
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), "");
    let url = format!("http://127.0.0.1:{}/events?topic=stages", n.port);
    let out = TempDir::new("report");
    let html = out.path("run.html");
    let (code, r, err) = bench(&[
        "--url",
        &url,
        "--publish-url",
        &url,
        "--stages",
        "1s:30,2s:30,1s:6",
        "--rate",
        "20",
        "--drain",
        "1s",
        "--report",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["subscribers"], 30, "the peak: {r}");
    assert_eq!(r["stages"], "1s:30,2s:30,1s:6");
    assert_eq!(r["events_lost"], 0, "{r}");
    assert!(r["events_expected"].as_u64().unwrap() > 0, "{r}");
    let series = r["series"].as_array().unwrap();
    assert!(series.len() >= 4, "{r}");
    let connected: Vec<u64> = series
        .iter()
        .map(|s| s["connected"].as_u64().unwrap())
        .collect();
    assert!(connected.contains(&30), "held at 30: {connected:?}");
    assert_eq!(*connected.last().unwrap(), 6, "ramped down: {connected:?}");
    let published: u64 = series
        .iter()
        .map(|s| s["published"].as_u64().unwrap())
        .sum();
    assert_eq!(published, r["published"].as_u64().unwrap(), "{r}");
    assert!(series.iter().any(|s| s["p99_ms"].as_f64().unwrap() > 0.0));

    // One self-contained page: three inline SVG charts, nothing fetched from anywhere.
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "{page}");
    assert_eq!(
        page.matches("<polyline").count(),
        4,
        "p99, p50, streams, events"
    );
    for outside in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!page.contains(outside), "{outside} in the page");
    }

    // `bench report` puts saved runs side by side and writes the charts as SVG files.
    let (a, b) = (out.path("a.json"), out.path("b.json"));
    std::fs::write(&a, r.to_string()).unwrap();
    let mut other = r.clone();
    other["series"] = serde_json::json!([]);
    std::fs::write(&b, other.to_string()).unwrap();
    let both = out.path("both.html");
    let o = Command::new(fastsse_bin())
        .args(["bench", "report", "--svg-dir"])
        .arg(out.path("svg"))
        .arg("-o")
        .arg(&both)
        .arg(format!("first={}", a.display()))
        .arg(format!("second={}", b.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(&both).unwrap();
    assert!(page.contains("<th>first</th><th>second</th>"), "{page}");
    for name in ["latency", "connected", "events"] {
        let svg = std::fs::read_to_string(out.path("svg").join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    }
    // A file that is not a report is named, with the reason.
    let o = Command::new(fastsse_bin())
        .args(["bench", "report", "-o"])
        .arg(&both)
        .arg(&html)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("not a `fastsse bench sse --json` report"),
        "{e}"
    );
    // Bad stages are refused before anything starts.
    let (code, _, err) = bench(&["--url", &url, "--stages", "1s:10,soon:20"]);
    assert_eq!(code, 1);
    assert!(err.contains("stage `soon:20`"), "{err}");
}

#[test]
fn processes_spread_the_subscribers_and_one_report_counts_them_all() {
    if !have("nginx") {
        return;
    }
    let d = Daemon::start(CONFIG);
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), "");
    let url = format!("http://127.0.0.1:{}/events?topic=spread", n.port);
    let (code, r, err) = bench(&[
        "--url",
        &url,
        "--publish-url",
        &url,
        "-n",
        "90",
        "--processes",
        "3",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--drain",
        "1s",
    ]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert!(
        r["protocol"]
            .as_str()
            .unwrap()
            .contains("over 3 bench processes"),
        "{r}"
    );
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 30, "{r}");
    assert_eq!(r["connections_established"], 90, "{r}");
    assert_eq!(
        r["events_expected"].as_u64().unwrap(),
        published * 90,
        "{r}"
    );
    assert_eq!(
        r["events_received"].as_u64().unwrap(),
        published * 90,
        "{r}"
    );
    assert_eq!(r["events_lost"], 0, "{r}");
    assert_eq!(r["latency_ms"]["samples"].as_u64().unwrap(), published * 90);
    let series = r["series"].as_array().unwrap();
    assert!(series.iter().any(|s| s["connected"] == 90), "{r}");
    let per_second: u64 = series
        .iter()
        .map(|s| s["published"].as_u64().unwrap())
        .sum();
    assert_eq!(per_second, published, "{r}");
    // Nginx saw 90 streams from three bench processes' connections.
    assert_eq!(
        n.access_log().matches("GET /events?topic=spread").count(),
        90
    );

    // With stages, each process follows its share of the count.
    let (code, r, err) = bench(&[
        "--url",
        &url,
        "--publish-url",
        &url,
        "--stages",
        "1s:40,1s:40,1s:10",
        "--processes",
        "2",
        "--rate",
        "20",
        "--drain",
        "1s",
    ]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["events_lost"], 0, "{r}");
    let connected: Vec<u64> = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["connected"].as_u64().unwrap())
        .collect();
    assert!(connected.contains(&40), "{connected:?}");
    assert_eq!(*connected.last().unwrap(), 10, "{connected:?}");
}
