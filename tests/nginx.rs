//! fastsse behind a real nginx (Debian's package) using the shipped `conf/nginx.conf`: headers,
//! events arriving one at a time, 100 concurrent streams, client abort, 503 over the limit,
//! SIGTERM, HEAD/404/405, and the TCP upstream.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// Routes for these tests: a fast clock, an idle stream (one event, then silence), status.
const CONFIG: &str = r#"
[stream]
retry = "2500ms"

[[route]]
path = "/clock"
type = "clock"
interval = "200ms"

[[route]]
path = "/ping"
type = "clock"
interval = "1h"

[[route]]
path = "/status"
type = "status"
"#;

fn with_limit(max_streams: usize) -> String {
    format!("[server]\nmax_streams = {max_streams}\n{CONFIG}")
}

fn setup(config: &str) -> Option<(Daemon, Nginx)> {
    daemon_behind_nginx(config)
}

fn active(d: &Daemon) -> u64 {
    d.status_number("active_streams")
}

#[test]
fn stream_headers_and_events_arrive_one_at_a_time() {
    let Some((d, n)) = setup(CONFIG) else { return };
    let mut s = HttpStream::open(n.port, "GET", "/clock", &[]);
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("cache-control"), Some("no-cache"));
    assert_eq!(s.header("content-length"), None);
    // nginx consumes X-Accel-Buffering itself; it must not be forwarded to the browser.
    assert_eq!(s.header("x-accel-buffering"), None);
    assert_eq!(s.next_block().unwrap(), "retry: 2500\n");
    let mut arrivals = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let block = s.next_block().expect("event");
        arrivals.push(Instant::now());
        let id = block
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .expect("id line")
            .to_string();
        assert!(block.contains("\ndata: 20"), "{block}");
        ids.push(id);
    }
    // Each event arrives on its own, about one interval after the previous one: nothing is
    // held in a buffer and released in a burst.
    // (The median gap, so one late event on a busy machine does not count as buffering.)
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    assert!(
        gaps[gaps.len() / 2] >= Duration::from_millis(120),
        "events arrived together ({gaps:?} apart): buffered"
    );
    drop(s);
    wait_for("stream freed", Duration::from_secs(2), || active(&d) == 0);
    drop(n);
}

#[test]
fn a_hundred_concurrent_streams() {
    let Some((d, n)) = setup(CONFIG) else { return };
    let mut streams: Vec<HttpStream> = (0..100)
        .map(|_| HttpStream::open(n.port, "GET", "/clock", &[]))
        .collect();
    for s in &mut streams {
        assert_eq!(s.status, 200);
        assert_eq!(s.next_block().unwrap(), "retry: 2500\n");
    }
    for _ in 0..3 {
        for s in &mut streams {
            assert!(s.next_block().unwrap().contains("data: "));
        }
    }
    assert_eq!(active(&d), 100);
    drop(streams);
    wait_for("all streams freed", Duration::from_secs(3), || {
        active(&d) == 0
    });
}

/// Opens a stream through nginx, waits for its first event, drops the browser side and
/// returns how long fastsse took to free the stream.
fn time_to_free(d: &Daemon, n: &Nginx, path: &str) -> Duration {
    let mut s = HttpStream::open(n.port, "GET", path, &[]);
    s.next_block().unwrap();
    s.next_block().unwrap();
    assert_eq!(active(d), 1);
    let start = Instant::now();
    drop(s);
    wait_for("the stream to be freed", Duration::from_secs(5), || {
        active(d) == 0
    });
    start.elapsed()
}

#[test]
fn a_browser_leaving_frees_its_stream_within_a_second() {
    let Some((d, n)) = setup(CONFIG) else { return };
    // While the stream is sending (an event every 200 ms) ...
    let busy = time_to_free(&d, &n, "/clock");
    // ... and while it is idle (the next event is an hour away).
    let idle = time_to_free(&d, &n, "/ping");
    assert!(
        busy < Duration::from_secs(1),
        "busy stream freed after {busy:?}"
    );
    assert!(
        idle < Duration::from_secs(1),
        "idle stream freed after {idle:?}"
    );
    // nginx logged the browser leaving (499), not an upstream error.
    wait_for("access log", Duration::from_secs(2), || {
        n.access_log().lines().count() >= 2
    });
    let log = n.access_log();
    assert!(
        log.lines()
            .all(|l| l.contains("\" 499 ") || l.contains("\" 200 ")),
        "{log}"
    );
}

#[test]
fn over_the_limit_gets_503_with_retry_after_at_once() {
    let Some((d, n)) = setup(&with_limit(3)) else {
        return;
    };
    let mut held: Vec<HttpStream> = (0..3)
        .map(|_| HttpStream::open(n.port, "GET", "/ping", &[]))
        .collect();
    for s in &mut held {
        s.next_block().unwrap();
    }
    let start = Instant::now();
    let mut full = HttpStream::open(n.port, "GET", "/ping", &[]);
    let took = start.elapsed();
    assert_eq!(full.status, 503);
    assert_eq!(full.header("retry-after"), Some("5"));
    assert!(full.rest().contains("max_streams"));
    assert!(took < Duration::from_secs(1), "503 took {took:?}");
    assert_eq!(d.status_number("rejected_streams"), 1);
    // An EventSource would close for good on a 503: it gets a stream that only says when to
    // come back, spread over a second.
    let mut es = HttpStream::open(n.port, "GET", "/ping", &[("Accept", "text/event-stream")]);
    assert_eq!(es.status, 200);
    assert_eq!(es.header("content-type"), Some("text/event-stream"));
    let body = es.rest();
    let retry: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("retry: "))
        .unwrap_or_else(|| panic!("no retry in {body:?}"))
        .parse()
        .unwrap();
    assert!((5000..6000).contains(&retry), "{body}");
    assert_eq!(d.status_number("rejected_streams"), 2);
    // A slot freed is a slot served.
    held.pop();
    wait_for("a free slot", Duration::from_secs(2), || active(&d) == 2);
    assert_eq!(HttpStream::open(n.port, "GET", "/ping", &[]).status, 200);
}

#[test]
fn sigterm_ends_every_stream_cleanly_and_exits_within_3s() {
    let Some((mut d, n)) = setup(CONFIG) else {
        return;
    };
    let mut streams: Vec<HttpStream> = (0..5)
        .map(|_| HttpStream::open(n.port, "GET", "/ping", &[]))
        .collect();
    for s in &mut streams {
        s.next_block().unwrap();
        s.next_block().unwrap();
    }
    d.signal("TERM");
    let (status, took) = d.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    for s in &mut streams {
        // The last thing each browser gets is a retry hint (spread over drain_period), then
        // the response ends.
        let rest = s.rest();
        assert!(
            rest.starts_with("retry: ") && rest.ends_with("\n\n"),
            "{rest:?}"
        );
        assert!(spread_retry(last_retry(&rest), 2500), "{rest:?}");
    }
    let errors = n.error_log();
    assert!(!errors.contains("prematurely closed"), "{errors}");
    assert!(!d.socket.exists(), "socket file left behind");
}

#[test]
fn head_404_and_405_through_nginx() {
    let Some((_d, n)) = setup(CONFIG) else { return };
    let mut head = HttpStream::open(n.port, "HEAD", "/clock", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.rest(), "");
    let mut post = HttpStream::open(n.port, "POST", "/clock", &[("Content-Length", "0")]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert!(post.rest().contains("does not accept POST"));
    // The nginx location sends only fastsse's routes; an unknown one there is a 404 from fastsse.
    let mut status = HttpStream::open(n.port, "GET", "/events", &[]);
    assert_eq!(status.status, 404);
    assert!(status.rest().contains("no route for /events"));
}

#[test]
fn tcp_upstream() {
    if !have("nginx") {
        return;
    }
    let port = free_port();
    let _d = Daemon::start_also(CONFIG, Some(port));
    let n = Nginx::start(&format!("127.0.0.1:{port}"), "");
    let mut s = HttpStream::open(n.port, "GET", "/clock", &[]);
    assert_eq!(s.status, 200);
    s.next_block().unwrap();
    assert!(s.next_block().unwrap().contains("data: "));
}

#[test]
fn heartbeats_keep_an_idle_stream_alive_through_nginx() {
    let config = CONFIG.replace(
        "retry = \"2500ms\"",
        "retry = \"2500ms\"\nheartbeat = \"500ms\"",
    );
    let Some((_d, n)) = setup(&config) else {
        return;
    };
    let mut s = HttpStream::open(n.port, "GET", "/ping", &[]);
    s.next_block().unwrap();
    assert!(s.next_block().unwrap().contains("data: "));
    // The next event is an hour away: comments arrive every 500 ms meanwhile.
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(s.next_block().unwrap(), ":\n");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn while_fastsse_is_down_an_event_source_is_told_to_retry_and_others_get_502() {
    if !have("nginx") {
        return;
    }
    let gone = TempDir::new("gone");
    let n = Nginx::start(&format!("unix:{}", gone.path("nobody.sock").display()), "");
    // An EventSource: 200 text/event-stream holding only a retry hint, so it comes back.
    let mut es = HttpStream::open(
        n.port,
        "GET",
        "/events?topic=a",
        &[("Accept", "text/event-stream")],
    );
    assert_eq!(es.status, 200);
    assert_eq!(es.header("content-type"), Some("text/event-stream"));
    assert!(es.rest().contains("retry: 3000\n\n"));
    // Anyone else — a plain GET, a publisher — gets the real 502.
    assert_eq!(
        HttpStream::open(n.port, "GET", "/events?topic=a", &[]).status,
        502
    );
    let publish = HttpStream::send(
        n.port,
        "POST",
        "/events?topic=a",
        &[
            ("Accept", "text/event-stream"),
            ("Content-Type", "text/plain"),
        ],
        b"x",
    );
    assert_eq!(publish.status, 502);
}
