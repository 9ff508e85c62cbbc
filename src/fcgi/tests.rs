//! In-process tests of the connection state machine: [`serve_connection`] on one end of a
//! `UnixStream::pair()`, records written and read by hand on the other (encoded here from the
//! spec, not with the codec under test).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{serve_connection, ConnContext};
use super::idle::IdleConnections;
use crate::app::App;
use crate::config::Config;

const BEGIN: u8 = 1;
const ABORT: u8 = 2;
const END: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const GET_VALUES: u8 = 9;
const GET_VALUES_RESULT: u8 = 10;
const UNKNOWN_TYPE: u8 = 11;

fn record(t: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut v = vec![1, t, (id >> 8) as u8, id as u8];
    v.extend_from_slice(&(content.len() as u16).to_be_bytes());
    v.extend_from_slice(&[3, 0]);
    v.extend_from_slice(content);
    v.extend_from_slice(&[0xAA; 3]);
    v
}

fn pairs(kv: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in kv {
        v.push(k.len() as u8);
        v.push(val.len() as u8);
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v
}

fn request(id: u16, method: &str, uri: &str, body: &[u8], keep_conn: bool) -> Vec<u8> {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let len = body.len().to_string();
    let mut v = record(BEGIN, id, &[0, 1, keep_conn as u8, 0, 0, 0, 0, 0]);
    v.extend(record(
        PARAMS,
        id,
        &pairs(&[
            ("REQUEST_METHOD", method),
            ("REQUEST_URI", uri),
            ("QUERY_STRING", query),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", &len),
        ]),
    ));
    v.extend(record(PARAMS, id, b""));
    if !body.is_empty() {
        v.extend(record(STDIN, id, body));
    }
    v.extend(record(STDIN, id, b""));
    v
}

struct Client {
    sock: UnixStream,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    /// The next record as (type, id, content); `None` at EOF.
    async fn next(&mut self) -> Option<(u8, u16, Vec<u8>)> {
        let mut h = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), self.sock.read_exact(&mut h))
            .await
            .expect("a record within 5 s");
        if read.is_err() {
            return None;
        }
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut body = vec![0u8; len + h[6] as usize];
        self.sock.read_exact(&mut body).await.unwrap();
        body.truncate(len);
        Some((h[1], u16::from_be_bytes([h[2], h[3]]), body))
    }

    /// STDOUT of request `id` until its END_REQUEST (other ids' records are skipped).
    async fn response(&mut self, id: u16) -> String {
        let mut out = Vec::new();
        loop {
            let (t, rid, c) = self.next().await.expect("END_REQUEST before EOF");
            if rid != id {
                continue;
            }
            match t {
                STDOUT => out.extend(c),
                END => return String::from_utf8(out).unwrap(),
                _ => {}
            }
        }
    }
}

/// A connection served in-process; the app from `config`.
fn connect(config: Config) -> (Client, Arc<App>, CancellationToken) {
    let app = Arc::new(App::new(config).unwrap());
    let shutdown = CancellationToken::new();
    (connect_to(&app, &shutdown), app, shutdown)
}

/// Another connection to `app`.
fn connect_to(app: &Arc<App>, shutdown: &CancellationToken) -> Client {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let ctx = ConnContext {
        app: app.clone(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        idle: Arc::new(IdleConnections::default()),
        peer: "test".into(),
        conn_id: 1,
    };
    let counted = app.try_open_connection(false).unwrap();
    tokio::spawn(serve_connection(theirs, ctx, counted));
    Client { sock: ours }
}

/// A topics route on `/events` with `heartbeat`, its journal in a fresh directory.
fn topics(name: &str, heartbeat: &str) -> (Config, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("fastsse-conn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::parse(
        &format!(
            "[stream]\nheartbeat = \"{heartbeat}\"\n[journal]\nfsync = \"never\"\n\
             [[route]]\npath = \"/events\"\ntype = \"topics\"\n"
        ),
        "test.toml",
        crate::routes::kinds(),
    )
    .unwrap();
    config.journal.dir = dir.clone();
    (config, dir)
}

/// Waits up to 15 s for `parked_streams` to read `n`.
async fn parked(app: &App, n: usize) {
    let stats = app.stats();
    for _ in 0..1500 {
        if stats
            .parked_streams
            .load(std::sync::atomic::Ordering::Relaxed)
            == n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "parked_streams is {}, not {n}",
        stats
            .parked_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn builtin_only() -> Config {
    let mut c = Config::embedded(crate::routes::kinds());
    c.routes.retain(|r| r.kind.name() != "topics");
    c
}

#[tokio::test]
async fn management_records_are_answered_on_id_0() {
    let (mut c, _app, _) = connect(builtin_only());
    c.send(&record(
        GET_VALUES,
        0,
        &pairs(&[("FCGI_MPXS_CONNS", ""), ("NOPE", "")]),
    ))
    .await;
    let (t, id, content) = c.next().await.unwrap();
    assert_eq!((t, id), (GET_VALUES_RESULT, 0));
    assert_eq!(content, pairs(&[("FCGI_MPXS_CONNS", "1")]));
    c.send(&record(200, 0, b"")).await;
    let (t, _, content) = c.next().await.unwrap();
    assert_eq!((t, content[0]), (UNKNOWN_TYPE, 200));
}

#[tokio::test]
async fn multiplexed_requests_are_independent_and_keep_conn_is_honoured() {
    let (mut c, _app, _) = connect(builtin_only());
    // Two requests interleaved: both BEGINs (8 + 8 content + 3 padding bytes), then the rest.
    let a = request(1, "GET", "/status", b"", true);
    let b = request(2, "GET", "/nope", b"", true);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&a[..19]);
    bytes.extend_from_slice(&b[..19]);
    bytes.extend_from_slice(&a[19..]);
    bytes.extend_from_slice(&b[19..]);
    c.send(&bytes).await;
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut ended = 0;
    while ended < 2 {
        let (t, id, content) = c.next().await.unwrap();
        match (t, id) {
            (STDOUT, 1) => got_a.extend(content),
            (STDOUT, 2) => got_b.extend(content),
            (END, _) => ended += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(String::from_utf8(got_a).unwrap().starts_with("Status: 200"));
    assert!(String::from_utf8(got_b).unwrap().starts_with("Status: 404"));
    // KEEP_CONN: the connection stays; without it, it closes after the response.
    c.send(&request(1, "GET", "/status", b"", false)).await;
    assert!(c.response(1).await.starts_with("Status: 200"));
    assert!(
        c.next().await.is_none(),
        "the connection should close without KEEP_CONN"
    );
}

#[tokio::test]
async fn abort_ends_one_stream_and_the_other_goes_on() {
    let (mut c, app, _) = connect(builtin_only());
    let mut bytes = request(1, "GET", "/clock", b"", true);
    bytes.extend(request(2, "GET", "/clock", b"", true));
    c.send(&bytes).await;
    let mut data = [0, 0];
    while data[0] == 0 || data[1] == 0 {
        let (t, id, content) = c.next().await.unwrap();
        if t == STDOUT && String::from_utf8_lossy(&content).contains("data:") {
            data[id as usize - 1] += 1;
        }
    }
    c.send(&record(ABORT, 1, b"")).await;
    loop {
        let (t, id, _) = c.next().await.unwrap();
        if t == END {
            assert_eq!(id, 1);
            break;
        }
    }
    // Request 2 still streams; request 1 sends nothing more.
    let mut more = 0;
    while more < 2 {
        let (t, id, content) = c.next().await.unwrap();
        assert_eq!(id, 2, "record for an aborted request");
        if t == STDOUT && String::from_utf8_lossy(&content).contains("data:") {
            more += 1;
        }
    }
    assert_eq!(app.stats().active_streams(), 1);
}

#[tokio::test]
async fn a_busy_stream_does_not_suppress_heartbeats_on_another_stream_of_its_connection() {
    let (config, dir) = topics("hb", "300ms");
    let (mut c, _app, _) = connect(config);
    let mut bytes = request(1, "GET", "/events?topic=busy", b"", true);
    bytes.extend(request(2, "GET", "/events?topic=quiet", b"", true));
    c.send(&bytes).await;
    let mut heartbeats_on_quiet = 0;
    let mut events_on_busy = 0;
    let mut next_id = 3u16;
    let start = tokio::time::Instant::now();
    let mut publish_at = start;
    while start.elapsed() < Duration::from_secs(2) {
        if tokio::time::Instant::now() >= publish_at {
            // Publish to the busy topic on the same connection every 100 ms.
            c.send(&request(
                next_id,
                "POST",
                "/events?topic=busy",
                b"tick",
                true,
            ))
            .await;
            next_id += 1;
            publish_at += Duration::from_millis(100);
        }
        let Ok(Some((t, id, content))) =
            tokio::time::timeout(Duration::from_millis(50), c.next()).await
        else {
            continue;
        };
        if t != STDOUT {
            continue;
        }
        let text = String::from_utf8_lossy(&content);
        if id == 1 && text.contains("data: tick") {
            events_on_busy += 1;
        }
        if id == 2 && text.starts_with(':') {
            heartbeats_on_quiet += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        events_on_busy >= 10,
        "busy stream got {events_on_busy} events"
    );
    assert!(
        heartbeats_on_quiet >= 3,
        "the quiet stream got {heartbeats_on_quiet} heartbeats in 2 s at 300 ms"
    );
}

/// STDOUT text of request `id` read until `until` says it is enough (other ids' records
/// are skipped); panics at END_REQUEST or EOF.
async fn read_until(c: &mut Client, id: u16, until: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    while !until(&text) {
        let (t, rid, content) = c.next().await.expect("a record, not EOF");
        assert_ne!((t, rid), (END, id), "the stream ended: {text}");
        if t == STDOUT && rid == id {
            text.push_str(&String::from_utf8_lossy(&content));
        }
    }
    text
}

/// A topics route with `heartbeat`, and stream 1 on topic `t` opened on it and parked.
async fn parked_stream(
    name: &str,
    heartbeat: &str,
) -> (Client, Arc<App>, CancellationToken, std::path::PathBuf) {
    let (config, dir) = topics(name, heartbeat);
    let (mut sub, app, shutdown) = connect(config);
    sub.send(&request(1, "GET", "/events?topic=t", b"", true))
        .await;
    read_until(&mut sub, 1, |t| t.contains("retry:")).await;
    parked(&app, 1).await;
    (sub, app, shutdown, dir)
}

#[tokio::test]
async fn a_parked_stream_is_woken_for_events_that_had_to_wait_and_gets_them_in_order() {
    // Heartbeats 10 s apart: only the queued events can wake the stream before a record is
    // 5 s late (`Client::next`).
    let (mut sub, app, shutdown, dir) = parked_stream("park-queue", "10s").await;

    // Not read for now: 300 events of 2 KB overflow the socket, so some must wait in the
    // stream's queue and wake it from its connection.
    let mut publisher = connect_to(&app, &shutdown);
    let body = "x".repeat(2048);
    for id in 1..=300u16 {
        let publish = request(id, "POST", "/events?topic=t", body.as_bytes(), true);
        publisher.send(&publish).await;
        let answer = publisher.response(id).await;
        assert!(answer.starts_with("Status: 200"), "{answer}");
    }
    let text = read_until(&mut sub, 1, |t| t.contains("id: 300\n")).await;
    let ids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .filter(|&i| i > 0)
        .collect();
    assert_eq!(
        ids,
        (1..=300).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let routes = app.current();
    let hub = routes.get("/events").and_then(|r| r.route.hub()).unwrap();
    let queued = hub
        .stats
        .queued_writes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        queued > 0,
        "no event had to wait: the test did not fill the socket"
    );
    // It keeps its task while events come through its queue, and parks again by its next
    // heartbeat.
    parked(&app, 1).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_parked_stream_gets_its_heartbeats_and_ends_on_abort() {
    let (mut sub, app, _shutdown, dir) = parked_stream("park-hb", "300ms").await;
    read_until(&mut sub, 1, |t| t.matches(":\n\n").count() >= 2).await;
    parked(&app, 1).await;

    // An abort ends it: END_REQUEST, and nothing is left open.
    sub.send(&record(ABORT, 1, b"")).await;
    loop {
        let (t, id, _) = sub.next().await.expect("END_REQUEST");
        if (t, id) == (END, 1) {
            break;
        }
    }
    parked(&app, 0).await;
    for _ in 0..100 {
        if app.stats().active_streams() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.stats().active_streams(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
