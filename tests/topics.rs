//! Topics behind a real nginx: publish forms and refusals, fan-out, Last-Event-ID replay across
//! disconnects, restarts and `kill -9`, a racing publisher, the reset event, a stalled
//! subscriber, the `publish` CLI from another process, and a real WHATWG client (npm
//! `eventsource`).

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = r#"
[server]
max_body_bytes = 8192

[stream]
retry = "1s"
heartbeat = "2s"

[journal]
fsync = "batch"

[[route]]
path = "/events"
type = "topics"
history_events = 500
subscriber_queue = 16

[[route]]
path = "/status"
type = "status"
"#;

fn setup(config: &str) -> Option<(Daemon, Nginx)> {
    daemon_behind_nginx(config)
}

/// POSTs through nginx; returns (status, body).
fn post(
    port: u16,
    path: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut h = vec![("Content-Type", content_type)];
    h.extend_from_slice(headers);
    let mut s = HttpStream::send(port, "POST", path, &h, body);
    (s.status, s.rest())
}

fn publish(port: u16, topic: &str, data: &str) -> u64 {
    let (status, body) = post(
        port,
        &format!("/events?topic={topic}"),
        "text/plain",
        data.as_bytes(),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    body.trim().parse().unwrap()
}

fn subscribe(port: u16, query: &str, last_event_id: Option<&str>) -> HttpStream {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|id| vec![("Last-Event-ID", id)])
        .unwrap_or_default();
    let mut s = HttpStream::open(port, "GET", &format!("/events?{query}"), &headers);
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.next_block().unwrap(), "retry: 1000\n");
    s
}

fn hub_number(d: &Daemon, key: &str) -> u64 {
    let doc = d.status();
    let at = doc.find("\"/events\"").expect("topics in status");
    number_after(&doc[at..], key)
}

#[test]
fn every_publish_form_and_every_refusal() {
    let Some((d, n)) = setup(CONFIG) else { return };
    let mut sub = subscribe(n.port, "topic=news", None);
    let (s, body) = post(
        n.port,
        "/events",
        "application/x-www-form-urlencoded",
        b"topic=news&data=from%20a%0Aform&type=greet",
        &[],
    );
    assert_eq!((s, body.as_str()), (200, "1\n"));
    let (s, body) = post(
        n.port,
        "/events",
        "application/json",
        br#"{"topic":"news","data":{"n":2},"event":"json"}"#,
        &[],
    );
    assert_eq!((s, body.as_str()), (200, "2\n"));
    let (s, body) = post(
        n.port,
        "/events?topic=news",
        "text/plain; charset=utf-8",
        b"raw\r\nbody",
        &[],
    );
    assert_eq!((s, body.as_str()), (200, "3\n"));
    assert_eq!(
        sub.next_event().unwrap(),
        ("1".into(), "greet".into(), "from a\nform".into())
    );
    assert_eq!(
        sub.next_event().unwrap(),
        ("2".into(), "json".into(), "{\"n\":2}".into())
    );
    assert_eq!(
        sub.next_event().unwrap(),
        ("3".into(), "".into(), "raw\nbody".into())
    );

    let refusals: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/events",
            "text/plain",
            b"no topic".to_vec(),
            400,
            "missing topic",
        ),
        (
            "/events",
            "application/x-www-form-urlencoded",
            b"data=x".to_vec(),
            400,
            "missing topic",
        ),
        (
            "/events",
            "application/json",
            br#"{"topic":"a","event":"a\nb"}"#.to_vec(),
            400,
            "CR or LF",
        ),
        (
            "/events",
            "application/x-www-form-urlencoded",
            b"topic=a&type=x%0Dy".to_vec(),
            400,
            "CR or LF",
        ),
        (
            "/events?topic=a",
            "text/plain",
            b"\xff\xfe bad".to_vec(),
            400,
            "UTF-8",
        ),
        (
            "/events",
            "application/json",
            b"{\"topic\":".to_vec(),
            400,
            "JSON",
        ),
        (
            "/events?topic=a",
            "image/png",
            b"x".to_vec(),
            415,
            "Content-Type",
        ),
        (
            "/events?topic=a",
            "text/plain",
            vec![b'x'; 9000],
            413,
            "max_body_bytes",
        ),
    ];
    for (path, ct, body, want, reason) in refusals {
        let (status, text) = post(n.port, path, ct, &body, &[]);
        assert_eq!(status, want, "{path} {ct}: {text}");
        assert!(
            text.contains(reason),
            "{path} {ct}: {text:?} lacks {reason:?}"
        );
    }
    let mut put = HttpStream::open(n.port, "PUT", "/events?topic=a", &[("Content-Length", "0")]);
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD, POST"));
    put.rest();
    let mut nosub = HttpStream::open(n.port, "GET", "/events", &[]);
    assert_eq!(nosub.status, 400);
    assert!(nosub.rest().contains("missing topic"));
    // Nothing refused reached the journal: the next id is 4.
    assert_eq!(publish(n.port, "news", "after"), 4);
    drop(d);
}

#[test]
fn a_topic_named_twice_is_one_subscription() {
    let Some((_d, n)) = setup(CONFIG) else { return };
    let mut s = subscribe(n.port, "topic=dup&topic=dup", None);
    let first = publish(n.port, "dup", "one");
    let second = publish(n.port, "dup", "two");
    assert_eq!(s.next_event().unwrap().0, first.to_string());
    assert_eq!(s.next_event().unwrap().0, second.to_string());
}

#[test]
fn publish_token_is_required_when_configured() {
    let config = CONFIG.replace(
        "subscriber_queue = 16",
        "subscriber_queue = 16\npublish_token = \"s3cret\"",
    );
    let Some((_d, n)) = setup(&config) else {
        return;
    };
    let (s, body) = post(n.port, "/events?topic=a", "text/plain", b"x", &[]);
    assert_eq!(s, 401, "{body}");
    let (s, _) = post(
        n.port,
        "/events?topic=a",
        "text/plain",
        b"x",
        &[("Authorization", "Bearer s3creT")],
    );
    assert_eq!(s, 401);
    let (s, body) = post(
        n.port,
        "/events?topic=a",
        "text/plain",
        b"x",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!((s, body.as_str()), (200, "1\n"));
}

#[test]
fn fan_out_across_many_subscribers_and_topics() {
    let Some((d, n)) = setup(CONFIG) else { return };
    let queries = ["topic=a", "topic=b", "topic=a&topic=b"];
    let mut subs: Vec<(usize, HttpStream)> = (0..30)
        .map(|i| (i % 3, subscribe(n.port, queries[i % 3], None)))
        .collect();
    wait_for("30 subscribers", Duration::from_secs(3), || {
        hub_number(&d, "subscribers") == 30
    });
    let mut expect: [Vec<String>; 3] = Default::default();
    for i in 0..30 {
        let topic = ["a", "b", "c"][i % 3];
        let id = publish(n.port, topic, &format!("event {i} on {topic}")).to_string();
        match topic {
            "a" => {
                expect[0].push(id.clone());
                expect[2].push(id);
            }
            "b" => {
                expect[1].push(id.clone());
                expect[2].push(id);
            }
            _ => {}
        }
    }
    // One publication to two topics reaches a subscriber of both once.
    let (s, body) = post(
        n.port,
        "/events",
        "application/x-www-form-urlencoded",
        b"topic=a&topic=b&data=both",
        &[],
    );
    assert_eq!(s, 200);
    for e in expect.iter_mut() {
        e.push(body.trim().to_string());
    }
    for (kind, s) in &mut subs {
        let got: Vec<String> = (0..expect[*kind].len())
            .map(|_| s.next_event().unwrap().0)
            .collect();
        assert_eq!(got, expect[*kind], "subscriber of {}", queries[*kind]);
    }
}

/// Reads events until `last` and returns their ids.
fn read_ids_until(s: &mut HttpStream, last: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        let (id, event, _) = s.next_event().expect("stream ended early");
        assert_ne!(event, "fastsse-reset", "unexpected reset after {ids:?}");
        ids.push(id.parse().unwrap());
    }
    ids
}

#[test]
fn reconnect_with_last_event_id_loses_nothing_across_restart_and_kill_9() {
    let Some((mut d, n)) = setup(CONFIG) else {
        return;
    };
    let mut s = subscribe(n.port, "topic=t", None);
    let first = publish(n.port, "t", "first");
    assert_eq!(s.next_event().unwrap().0, first.to_string());
    drop(s);
    let fifty: Vec<u64> = (0..50)
        .map(|i| {
            publish(
                n.port,
                if i % 5 == 0 { "other" } else { "t" },
                &format!("m{i}"),
            )
        })
        .collect();
    let on_t: Vec<u64> = fifty
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, id)| *id)
        .collect();
    let fifty_t: Vec<u64> = (0..10)
        .map(|i| publish(n.port, "t", &format!("x{i}")))
        .collect();
    let mut want = on_t.clone();
    want.extend(&fifty_t);
    let mut s = subscribe(n.port, "topic=t", Some(&first.to_string()));
    assert_eq!(read_ids_until(&mut s, *want.last().unwrap()), want);
    // Live events follow the replay.
    let live = publish(n.port, "t", "live");
    assert_eq!(s.next_event().unwrap().0, live.to_string());
    drop(s);

    // Across a clean restart.
    d.restart("TERM");
    want.push(live);
    let mut s = subscribe(n.port, "topic=t", Some(&first.to_string()));
    assert_eq!(read_ids_until(&mut s, live), want);
    drop(s);

    // Across kill -9 in the middle of publishing: every acknowledged event survives, ids
    // continue, nothing torn is served.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (acked, stop, port) = (acked.clone(), stop.clone(), n.port);
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = post(
                    port,
                    "/events?topic=t",
                    "text/plain",
                    format!("burst {i}").as_bytes(),
                    &[],
                );
                if status == 200 {
                    acked
                        .lock()
                        .unwrap()
                        .push(body.trim().parse::<u64>().unwrap());
                }
                i += 1;
            }
        })
    };
    wait_for(
        "some acknowledged publishes",
        Duration::from_secs(5),
        || acked.lock().unwrap().len() >= 20,
    );
    d.restart("KILL");
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let after = publish(n.port, "t", "after the crash");
    assert!(
        after > *acked.last().unwrap(),
        "ids went back: {after} after {acked:?}"
    );
    let mut s = subscribe(n.port, "topic=t", Some(&live.to_string()));
    let got = read_ids_until(&mut s, after);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    for id in &acked {
        assert!(
            got.contains(id),
            "acknowledged event {id} lost after kill -9"
        );
    }
}

#[test]
fn a_racing_publisher_and_a_reconnecting_subscriber_see_no_gap_and_no_duplicate() {
    let Some((_d, n)) = setup(CONFIG) else { return };
    const TOTAL: u64 = 400;
    // Five rounds, each on its own topic; ids are global, so round r owns ids r*400+1 ..= (r+1)*400.
    for round in 0..5u64 {
        let topic = format!("race{round}");
        let first = round * TOTAL + 1;
        let last_id = (round + 1) * TOTAL;
        let publisher = {
            let (port, topic) = (n.port, topic.clone());
            std::thread::spawn(move || {
                for i in 0..TOTAL {
                    publish(port, &topic, &format!("r{i}"));
                }
            })
        };
        let mut seen: Vec<u64> = Vec::new();
        let mut reconnects = 0;
        let mut rng = 12345u64 + round;
        while seen.last() != Some(&last_id) {
            // The first connection starts live, just before the publisher's first event.
            let from = seen.last().copied().unwrap_or(first - 1).to_string();
            let mut s = subscribe(n.port, &format!("topic={topic}"), Some(&from));
            reconnects += 1;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Read a few events, then drop the connection, as a flaky mobile browser would.
            for _ in 0..1 + rng % 7 {
                let (id, event, _) = s.next_event().expect("event");
                assert_ne!(event, "fastsse-reset");
                seen.push(id.parse().unwrap());
                if seen.last() == Some(&last_id) {
                    break;
                }
            }
        }
        publisher.join().unwrap();
        let want: Vec<u64> = (first..=last_id).collect();
        assert_eq!(seen, want, "round {round}, after {reconnects} reconnects");
        assert!(reconnects > 20, "only {reconnects} reconnects");
    }
}

#[test]
fn reset_event_for_expired_unknown_and_garbage_ids() {
    let config = CONFIG.replace("history_events = 500", "history_events = 10");
    let Some((d, n)) = setup(&config) else { return };
    for i in 0..30 {
        publish(n.port, "g", &format!("{i}"));
    }
    let reset = |s: &mut HttpStream| -> String {
        let (id, event, data) = s.next_event().unwrap();
        assert_eq!(
            (id.as_str(), event.as_str()),
            ("30", "fastsse-reset"),
            "{data}"
        );
        data
    };
    // Expired: events after 5 are no longer retained.
    let mut s = subscribe(n.port, "topic=g", Some("5"));
    assert!(reset(&mut s).contains("\"reason\":\"expired\""));
    // Within history: plain replay, no reset.
    let mut s = subscribe(n.port, "topic=g", Some("25"));
    assert_eq!(read_ids_until(&mut s, 30), vec![26, 27, 28, 29, 30]);
    // From the future, non-numeric, huge, CR/LF (via ?lastEventId=, as a header cannot carry it).
    let mut s = subscribe(n.port, "topic=g", Some("999999"));
    assert!(reset(&mut s).contains("\"reason\":\"unknown\""));
    for garbage in ["abc", "-1", "18446744073709551616", &"7".repeat(4000)] {
        let mut s = subscribe(n.port, "topic=g", Some(garbage));
        assert!(
            reset(&mut s).contains("\"reason\":\"invalid\""),
            "{garbage:.20}"
        );
    }
    let mut s = subscribe(n.port, "topic=g&lastEventId=1%0D%0Aevent:%20evil", None);
    assert!(reset(&mut s).contains("invalid"));
    // A 10 KB Last-Event-ID (too long for nginx's header buffers) straight over FastCGI.
    let mut c = FcgiClient::connect(&d.socket);
    let huge = "9".repeat(10_000);
    c.send(&get_request(
        1,
        "/events",
        false,
        &[("QUERY_STRING", "topic=g"), ("HTTP_LAST_EVENT_ID", &huge)],
    ));
    let text = c.read_stdout_until(1, "}\n\n");
    assert!(
        text.contains(
            "event: fastsse-reset\nid: 30\ndata: {\"last_id\":30,\"reason\":\"invalid\"}\n\n"
        ),
        "{text}"
    );
    // The browser's next reconnect (Last-Event-ID 30, from the reset event) resumes normally.
    let mut s = subscribe(n.port, "topic=g", Some("30"));
    let id = publish(n.port, "g", "fresh");
    assert_eq!(s.next_event().unwrap().0, id.to_string());
}

#[test]
fn a_stalled_subscriber_is_cut_off_without_slowing_anyone() {
    let Some((d, n)) = setup(CONFIG) else { return };
    // A subscriber straight on the FastCGI socket that never reads.
    let mut stalled = FcgiClient::connect(&d.socket);
    stalled.send(&get_request(
        1,
        "/events",
        false,
        &[("QUERY_STRING", "topic=s")],
    ));
    let mut reader = subscribe(n.port, "topic=s", None);
    wait_for("2 subscribers", Duration::from_secs(3), || {
        hub_number(&d, "subscribers") == 2
    });
    let payload = "p".repeat(4000);
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(publish(n.port, "s", &payload));
        // The healthy subscriber keeps up as it goes.
        assert_eq!(
            reader.next_event().unwrap().0,
            ids.last().unwrap().to_string()
        );
    }
    let took = start.elapsed();
    assert_eq!(hub_number(&d, "lagged_subscribers"), 1);
    assert_eq!(hub_number(&d, "subscribers"), 1);
    assert!(
        took < Duration::from_secs(30),
        "publishing 300 events took {took:?}"
    );
    drop(stalled);
}

#[test]
fn publish_cli_from_another_process_reaches_subscribers() {
    let Some((d, n)) = setup(CONFIG) else { return };
    let mut s = subscribe(n.port, "topic=cli", None);
    let out = Command::new(fastsse_bin())
        .current_dir(&d.dir.0)
        .args(["publish", "--topic", "cli", "--event", "note", "--config"])
        .arg(d.dir.path("fastsse.toml"))
        .arg("--data-dir")
        .arg(d.data_dir())
        .arg("line one\nline two")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let start = Instant::now();
    assert_eq!(
        s.next_event().unwrap(),
        (id, "note".into(), "line one\nline two".into())
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "delivery took {:?}",
        start.elapsed()
    );
    // Also with no daemon running: the journal keeps it for the next start.
    drop(s);
    let mut stdin_pub = Command::new(fastsse_bin())
        .current_dir(&d.dir.0)
        .args(["publish", "--topic", "cli", "--data-dir"])
        .arg(d.data_dir())
        .args(["--config"])
        .arg(d.dir.path("fastsse.toml"))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    stdin_pub
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = stdin_pub.wait_with_output().unwrap();
    assert!(out.status.success());
    let bad = Command::new(fastsse_bin())
        .current_dir(&d.dir.0)
        .args(["publish", "--topic", "cli", "--event", "a\nb", "--data-dir"])
        .arg(d.data_dir())
        .arg("x")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("CR or LF"));
}

#[test]
fn multi_line_data_round_trips_through_the_npm_eventsource_client() {
    let Some((_d, n)) = setup(CONFIG) else { return };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/eventsource-client.mjs"
    );
    let installed = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/node_modules/eventsource"
    ))
    .exists();
    if !have("node") || !installed {
        assert!(
            std::env::var_os("FASTSSE_REQUIRE_PEERS").is_none(),
            "npm eventsource is not installed (scripts/test.sh installs it)"
        );
        return;
    }
    let cases = [
        "plain",
        "two\nlines",
        "crlf\r\nline",
        "lone\rcr",
        "\n\nleading blank lines",
        "trailing newline\n",
        "  leading spaces",
        "data: looks like a field\nid: 99",
        "ünïcödé ✓ 🚀",
        "{\"json\": [1, 2, 3]}",
    ];
    let url = format!("http://127.0.0.1:{}/events?topic=npm", n.port);
    let child = Command::new("node")
        .arg(script)
        .arg(&url)
        .arg(cases.len().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Publish once the client is connected.
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::new();
    let start = Instant::now();
    loop {
        // Wait for the subscription before publishing.
        let (status, _) = post(
            n.port,
            "/events?topic=npm-probe",
            "text/plain",
            b"probe",
            &[],
        );
        assert_eq!(status, 200);
        if start.elapsed() > Duration::from_millis(700) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in &cases {
        let (status, body) = post(
            n.port,
            "/events",
            "application/json",
            serde_like_json(c).as_bytes(),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        ids.push(body.trim().to_string());
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{stdout}");
    for ((line, case), id) in lines.iter().zip(cases).zip(&ids) {
        let expect = case.replace("\r\n", "\n").replace('\r', "\n");
        let want = format!(
            "{{\"type\":\"message\",\"data\":{},\"lastEventId\":\"{id}\"}}",
            serde_like_json(&expect)
                .trim_start_matches("{\"topic\":\"npm\",\"data\":")
                .trim_end_matches('}')
        );
        assert_eq!(*line, want);
    }
}

/// `{"topic":"npm","data":"<s as a JSON string>"}` without a JSON crate in the tests.
fn serde_like_json(s: &str) -> String {
    let mut out = String::from("{\"topic\":\"npm\",\"data\":\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str("\"}");
    out
}

#[test]
fn busy_streams_get_no_heartbeats_idle_ones_do() {
    let config = CONFIG.replace("heartbeat = \"2s\"", "heartbeat = \"400ms\"");
    let Some((_d, n)) = setup(&config) else {
        return;
    };
    let mut s = subscribe(n.port, "topic=hb", None);
    // A live stream opens with its resume point: an id and no data.
    assert_eq!(s.next_block().unwrap(), "id: 0\n");
    // Events every 150 ms (written straight to the socket by the fan-out): no heartbeat.
    for i in 0..12 {
        publish(n.port, "hb", &format!("{i}"));
        std::thread::sleep(Duration::from_millis(150));
    }
    for _ in 0..12 {
        let block = s.next_block().unwrap();
        assert!(
            block.starts_with("id: "),
            "a heartbeat between events: {block:?}"
        );
    }
    // Then silence: heartbeats.
    assert_eq!(s.next_block().unwrap(), ":\n");
}
