//! A daemon hostile clients cannot starve, against the raw socket: `max_connections` holds under
//! a burst, connections that never finish a request are closed (the oldest idle one first when
//! the server is full, all of them after `request_timeout`), half-sent bodies cost only what was
//! sent and are bounded by `max_input_bytes`; the socket is never reachable before its mode
//! applies; a draining daemon leaves a newer daemon's socket alone; `check-config` refuses an
//! empty `publish_token`.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const ROUTES: &str = r#"
[[route]]
path = "/status"
type = "status"

[[route]]
path = "/clock"
type = "clock"

[[route]]
path = "/events"
type = "topics"
"#;

/// Whether the server has closed `s` (EOF or reset) — without waiting.
fn closed(mut s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let r = match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    r
}

fn status_text(socket: &std::path::Path) -> String {
    let mut c = FcgiClient::connect(socket);
    c.send(&get_request(1, "/status", false, &[]));
    String::from_utf8(c.read_response(1).0).unwrap()
}

#[test]
fn max_connections_holds_under_a_burst_and_idle_connections_make_room() {
    let d = Daemon::start(&format!(
        "[server]\nmax_connections = 100\nmax_streams = 50\nrequest_timeout = \"30s\"\n{ROUTES}"
    ));
    let idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = idle.iter().filter(|s| !closed(s)).count();
    assert!(
        open <= 100,
        "{open} connections held with max_connections = 100"
    );
    // A real request still gets through: the oldest idle connection makes room for it.
    let text = status_text(&d.socket);
    assert!(text.starts_with("Status: 200"), "{text}");
    // The status request's own connection may be counted before the idle one it displaced
    // has finished closing: at most one over, for that instant.
    let active = number_after(&text, "active_connections");
    assert!(active <= 101, "{text}");
    assert!(number_after(&text, "evicted_connections") >= 1, "{text}");
}

/// A burst of refusals is summarised in the log: the first line whole, then a count — not a line
/// per connection (260 lines for one burst of 300 before).
#[test]
fn a_burst_of_refused_connections_is_two_log_lines_not_hundreds() {
    let d = Daemon::start(&format!(
        "[server]\nmax_connections = 10\nmax_streams = 10\n{ROUTES}"
    ));
    // Every connection busy with a stream: none is idle to make room.
    let streams: Vec<FcgiClient> = (0..10).map(|_| fcgi_subscribe(&d.socket, "t")).collect();
    let burst: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    wait_for("the burst to be refused", Duration::from_secs(10), || {
        burst.iter().all(closed)
    });
    wait_for("the summary line", Duration::from_secs(5), || {
        d.log().contains("more connections refused")
    });
    let log = d.log();
    // Whole lines only (a summary quotes the last refusal after "the last: ").
    let whole = log.matches("] peer=").count();
    assert!(
        (1..=3).contains(&whole),
        "{whole} lines for 300 refusals:\n{log}"
    );
    drop(streams);
}

#[test]
fn connections_that_never_finish_a_request_are_closed_after_request_timeout() {
    let d = Daemon::start(&format!(
        "[server]\nmax_connections = 40\nmax_streams = 20\nrequest_timeout = \"1s\"\n{ROUTES}"
    ));
    // A stream that is running stays, however long.
    let mut stream = FcgiClient::connect(&d.socket);
    stream.send(&get_request(1, "/clock", false, &[]));
    stream.read_stdout_until(1, "data:");
    // Silent connections, and one that sends half a request.
    let silent: Vec<UnixStream> = (0..30)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let mut half = FcgiClient::connect(&d.socket);
    let mut partial = begin(1, 1, 0);
    partial.extend(record(PARAMS, 1, &pairs(&[("REQUEST_METHOD", "GET")])));
    half.send(&partial);
    let t = Instant::now();
    // The half-sent request is answered 408 once request_timeout has passed.
    let (out, _) = half.read_response(1);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("Status: 408"), "{text}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    wait_for("silent connections closed", Duration::from_secs(5), || {
        silent.iter().all(closed)
    });
    stream.read_stdout_until(1, "data:");
    // While full of silent connections, a real request is still served at once.
    let _more: Vec<UnixStream> = (0..45)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert!(status_text(&d.socket).starts_with("Status: 200"));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

/// 100 multiplexed POSTs on one connection, each announcing a 64 KiB body and sending `sent`.
fn half_sent_posts(sent: &[u8]) -> Vec<u8> {
    let kv = [
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", "/events?topic=t"),
        ("CONTENT_TYPE", "text/plain"),
        ("CONTENT_LENGTH", "65536"),
    ];
    let mut bytes = Vec::new();
    for id in 1..=100u16 {
        bytes.extend(begin(id, 1, 1));
        bytes.extend(record(PARAMS, id, &pairs(&kv)));
        bytes.extend(record(PARAMS, id, b""));
        bytes.extend(record(STDIN, id, sent));
    }
    bytes
}

#[test]
fn half_sent_bodies_cost_what_was_sent_and_are_bounded_by_max_input_bytes() {
    let d = Daemon::start(&format!(
        "[server]\nmax_body_bytes = 65536\nmax_input_bytes = 4194304\nrequest_timeout = \"30s\"\n{ROUTES}"
    ));
    let before = rss_kib(d.pid());
    // 100 connections x 100 multiplexed POSTs announcing 64 KiB bodies, one byte sent each
    // (640 MB if buffers were sized from CONTENT_LENGTH).
    let mut conns = Vec::new();
    for _ in 0..100 {
        let mut c = FcgiClient::connect(&d.socket);
        c.send(&half_sent_posts(b"x"));
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_kib(d.pid()).saturating_sub(before);
    // Pre-sized buffers cost ~40 MiB resident here even untouched; what was sent is ~1.5 MiB.
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    let buffered = number_after(&status_text(&d.socket), "input_bytes");
    assert!(buffered < 4 << 20, "{buffered} bytes of input counted");
    drop(conns);
    // Bodies that are really sent count against max_input_bytes: past it, 503 and a reason.
    let mut c = FcgiClient::connect(&d.socket);
    c.send(&half_sent_posts(&[b'y'; 60_000]));
    let mut busy = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while busy == 0 && Instant::now() < deadline {
        let r = c.read_record().expect("open");
        if r.t == STDOUT && String::from_utf8_lossy(&r.content).starts_with("Status: 503") {
            assert!(String::from_utf8_lossy(&r.content).contains("request input"));
            busy += 1;
        }
    }
    assert!(busy > 0, "no request was refused past max_input_bytes");
}

#[test]
fn the_socket_is_never_reachable_before_its_mode_applies() {
    let dir = TempDir::new("mode");
    let sock = dir.path("fastsse.sock");
    let config = dir.path("fastsse.toml");
    std::fs::write(
        &config,
        format!("[server]\nsocket_mode = \"0600\"\n{ROUTES}"),
    )
    .unwrap();
    for _ in 0..15 {
        let watcher = {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut modes = Vec::new();
                while start.elapsed() < Duration::from_secs(15) {
                    if let Ok(m) = std::fs::symlink_metadata(&sock) {
                        let mode = m.permissions().mode() & 0o777;
                        modes.push(mode);
                        if UnixStream::connect(&sock).is_ok() {
                            break;
                        }
                    }
                }
                modes
            })
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 000; exec {} serve --config {} --listen unix:{} --data-dir {}",
                fastsse_bin(),
                config.display(),
                sock.display(),
                dir.path("data").display()
            ))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let modes = watcher.join().unwrap();
        assert!(!modes.is_empty(), "the socket never appeared");
        assert!(
            modes.iter().all(|&m| m == 0o600),
            "the socket was seen with modes {:?}",
            modes.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>()
        );
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        child.wait().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".fs"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn a_draining_daemon_leaves_a_newer_daemons_socket_alone() {
    let mut old = Daemon::start(&format!(
        "[server]\nshutdown_timeout = \"4s\"\nmax_body_bytes = 300000\n{ROUTES}"
    ));
    // A subscriber that never reads keeps the old daemon draining for shutdown_timeout.
    let stuck = fcgi_subscribe(&old.socket, "t");
    let big = "b".repeat(250_000);
    for _ in 0..8 {
        assert_eq!(fcgi_publish(&old.socket, "t", &big).0, 200);
    }
    old.signal("TERM");
    wait_for(
        "the old daemon to stop accepting",
        Duration::from_secs(5),
        || UnixStream::connect(&old.socket).is_err(),
    );
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "old daemon already gone"
    );
    let log = std::fs::File::create(old.dir.path("new.log")).unwrap();
    let mut new = Command::new(fastsse_bin())
        .args(["serve", "--config"])
        .arg(old.dir.path("fastsse.toml"))
        .arg("--listen")
        .arg(format!("unix:{}", old.socket.display()))
        .arg("--data-dir")
        .arg(old.dir.path("data2"))
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("the new daemon", Duration::from_secs(5), || {
        UnixStream::connect(&old.socket).is_ok()
    });
    old.wait_exit(Duration::from_secs(10));
    let reachable = UnixStream::connect(&old.socket).is_ok();
    let _ = new.kill();
    let _ = new.wait();
    assert!(reachable, "the old daemon removed the new daemon's socket");
    drop(stuck);
}

#[test]
fn check_config_refuses_an_empty_publish_token() {
    let dir = TempDir::new("token");
    let file = dir.path("bad.toml");
    std::fs::write(
        &file,
        "[[route]]\npath = \"/events\"\ntype = \"topics\"\npublish_token = \"\"\n",
    )
    .unwrap();
    for args in [vec!["check-config"], vec!["serve", "--config"]] {
        let out = Command::new(fastsse_bin())
            .args(&args)
            .arg(&file)
            .args(if args.len() == 1 {
                vec![]
            } else {
                vec![
                    "--listen".to_string(),
                    format!("unix:{}", dir.path("s.sock").display()),
                ]
            })
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted an empty token");
        assert!(
            err.contains("bad.toml:4: key `publish_token`"),
            "{args:?}: {err}"
        );
    }
    let mut w = std::fs::File::create(&file).unwrap();
    w.write_all(b"[[route]]\npath = \"/events\"\ntype = \"topics\"\npublish_token = \"s3cret\"\n")
        .unwrap();
    let out = Command::new(fastsse_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_peer_that_never_reads_its_answers_is_closed_after_request_timeout() {
    let d = Daemon::start(&format!("[server]\nrequest_timeout = \"1s\"\n{ROUTES}"));
    let mut c = UnixStream::connect(&d.socket).unwrap();
    let ask = record(GET_VALUES, 0, &pairs(&[("FCGI_MAX_CONNS", "")]));
    let flood: Vec<u8> = ask.iter().copied().cycle().take(ask.len() * 4096).collect();
    // Write questions without reading answers until the daemon stops taking them.
    c.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if c.write_all(&flood).is_err() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    // The daemon gave up on this peer: draining what it sent ends in EOF, not a wait.
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answers = Vec::new();
    let r = c.read_to_end(&mut answers);
    assert!(r.is_ok(), "still open after request_timeout: {r:?}");
    assert!(d.log().contains("not reading its answers"), "{}", d.log());
    // Everyone else is served.
    assert!(status_text(&d.socket).starts_with("Status: 200"));
}
