//! Raw-bytes FastCGI protocol suite: every nasty input from the checklist, sent as hand-encoded
//! records (tests/support, independent of src/). The server must answer correctly or close only
//! that connection, never panic, and keep serving other connections.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = r#"
[[route]]
path = "/clock"
type = "clock"
interval = "100ms"

[[route]]
path = "/idle"
type = "clock"
interval = "1h"

[[route]]
path = "/status"
type = "status"
"#;

/// After any abuse: the process is alive and a fresh connection is served.
fn still_serving(d: &mut Daemon) {
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "fastsse exited:\n{}",
        d.log()
    );
    let mut c = FcgiClient::connect(&d.socket);
    c.send(&get_request(1, "/status", false, &[]));
    let (out, status) = c.read_response(1);
    assert_eq!(status, 0);
    assert!(String::from_utf8_lossy(&out).starts_with("Status: 200 OK\r\n"));
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

fn response_text(c: &mut FcgiClient, id: u16) -> String {
    let (out, status) = c.read_response(id);
    assert_eq!(status, 0, "protocolStatus");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn get_values_at_any_time() {
    let mut d = Daemon::start(CONFIG);
    let mut c = FcgiClient::connect(&d.socket);
    // Unknown names, a duplicate, a non-empty value, before any BEGIN_REQUEST.
    let mut body = pairs(&[
        ("FCGI_MPXS_CONNS", ""),
        ("NOPE", ""),
        ("FCGI_MAX_REQS", "x"),
        ("FCGI_MPXS_CONNS", ""),
    ]);
    body.extend(pairs(&[("FCGI_MAX_CONNS", "")]));
    c.send(&record(GET_VALUES, 0, &body));
    let r = c.read_record().unwrap();
    assert_eq!((r.t, r.id), (GET_VALUES_RESULT, 0));
    let text = String::from_utf8_lossy(&r.content).into_owned();
    assert_eq!(text.matches("FCGI_MPXS_CONNS").count(), 1, "{text:?}");
    assert!(
        text.contains("FCGI_MPXS_CONNS\x01") || text.contains("FCGI_MPXS_CONNS1"),
        "{text:?}"
    );
    assert!(text.contains("FCGI_MAX_REQS10000"), "{text:?}");
    assert!(text.contains("FCGI_MAX_CONNS10500"), "{text:?}");
    assert!(!text.contains("NOPE"));
    // And in the middle of a stream.
    c.send(&get_request(1, "/clock", true, &[]));
    c.read_stdout_until(1, "data: ");
    c.send(&record(GET_VALUES, 0, &pairs(&[("FCGI_MAX_REQS", "")])));
    loop {
        let r = c.read_record().unwrap();
        if r.t == GET_VALUES_RESULT {
            break;
        }
    }
    still_serving(&mut d);
}

#[test]
fn unknown_types() {
    let mut d = Daemon::start(CONFIG);
    let mut c = FcgiClient::connect(&d.socket);
    for t in [0u8, 12, 200, BEGIN] {
        c.send(&record(t, 0, b"abc"));
        let r = c.read_record().unwrap();
        assert_eq!((r.t, r.id), (UNKNOWN_TYPE, 0));
        assert_eq!(r.content, vec![t, 0, 0, 0, 0, 0, 0, 0]);
    }
    // Unknown types on a request id are ignored; the request still works.
    c.send(&begin(1, 1, 0));
    c.send(&record(0, 1, b"x"));
    c.send(&record(12, 1, b"x"));
    c.send(&record(8, 1, b"data record"));
    c.send(&record(
        PARAMS,
        1,
        &pairs(&[("REQUEST_URI", "/status"), ("REQUEST_METHOD", "GET")]),
    ));
    c.send(&record(PARAMS, 1, b""));
    assert!(response_text(&mut c, 1).contains("\"active_streams\""));
    still_serving(&mut d);
}

#[test]
fn bad_version_and_malformed_begin_close_only_that_connection() {
    let mut d = Daemon::start(CONFIG);
    let mut other = FcgiClient::connect(&d.socket);
    other.send(&get_request(1, "/clock", false, &[]));
    other.read_stdout_until(1, "data: ");
    let cases: Vec<Vec<u8>> = vec![
        {
            let mut v = get_request(1, "/status", false, &[]);
            v[0] = 2;
            v
        },
        record(BEGIN, 1, &[0, 1, 0, 0, 0, 0, 0]),
        record(BEGIN, 1, &[0, 1, 0, 0, 0, 0, 0, 0, 0]),
        {
            let mut v = begin(1, 1, 0);
            v.extend(begin(1, 1, 0));
            v
        },
    ];
    for bytes in cases {
        let mut c = FcgiClient::connect(&d.socket);
        c.send(&bytes);
        assert!(
            c.closed_within(Duration::from_secs(2)),
            "not closed after {bytes:?}"
        );
    }
    // The stream on the other connection never noticed.
    other.read_stdout_until(1, "data: ");
    assert_eq!(d.status_number("active_streams"), 1);
    still_serving(&mut d);
}

#[test]
fn roles_other_than_responder_get_unknown_role() {
    let mut d = Daemon::start(CONFIG);
    for role in [0u16, 2, 3, 0xFFFF] {
        let mut c = FcgiClient::connect(&d.socket);
        c.send(&begin(1, role, 1));
        let r = c.read_record().unwrap();
        assert_eq!((r.t, r.id), (END, 1), "role {role}");
        assert_eq!(r.content[4], 3, "UNKNOWN_ROLE for role {role}");
        // KEEP_CONN was set: the connection still serves a responder request.
        c.send(&get_request(2, "/status", false, &[]));
        assert!(response_text(&mut c, 2).starts_with("Status: 200 OK"));
        assert!(c.closed_within(Duration::from_secs(2)));
    }
    // Without KEEP_CONN the connection closes after END_REQUEST.
    let mut c = FcgiClient::connect(&d.socket);
    c.send(&begin(1, 2, 0));
    assert_eq!(c.read_record().unwrap().content[4], 3);
    assert!(c.closed_within(Duration::from_secs(2)));
    still_serving(&mut d);
}

#[test]
fn keep_conn_serves_request_after_request_and_unknown_flags_are_ignored() {
    let mut d = Daemon::start(CONFIG);
    let mut c = FcgiClient::connect(&d.socket);
    for id in [1u16, 1, 7] {
        let mut req = begin(id, 1, 0xFF);
        req.extend(record(
            PARAMS,
            id,
            &pairs(&[("REQUEST_URI", "/status"), ("REQUEST_METHOD", "GET")]),
        ));
        req.extend(record(PARAMS, id, b""));
        req.extend(record(STDIN, id, b""));
        c.send(&req);
        assert!(response_text(&mut c, id).contains("\"total_connections\""));
    }
    still_serving(&mut d);
}

#[test]
fn multiplexed_streams_are_independent_and_abort_ends_only_one() {
    let mut d = Daemon::start(CONFIG);
    let mut c = FcgiClient::connect(&d.socket);
    // Interleaved BEGINs and PARAMS for ids 1 and 2.
    let p1 = pairs(&[("REQUEST_URI", "/clock"), ("REQUEST_METHOD", "GET")]);
    let p2 = pairs(&[("REQUEST_URI", "/idle"), ("REQUEST_METHOD", "GET")]);
    let mut bytes = begin(1, 1, 1);
    bytes.extend(begin(2, 1, 1));
    bytes.extend(record(PARAMS, 2, &p2));
    bytes.extend(record(PARAMS, 1, &p1));
    bytes.extend(record(PARAMS, 1, b""));
    bytes.extend(record(PARAMS, 2, b""));
    c.send(&bytes);
    let (mut out1, mut out2) = (String::new(), String::new());
    while out1.matches("data: ").count() < 3 || !out2.contains("data: ") {
        let r = c.read_record().unwrap();
        assert_eq!(r.t, STDOUT);
        match r.id {
            1 => out1.push_str(&String::from_utf8_lossy(&r.content)),
            2 => out2.push_str(&String::from_utf8_lossy(&r.content)),
            other => panic!("record for id {other}"),
        }
    }
    assert_eq!(d.status_number("active_streams"), 2);
    c.send(&record(ABORT, 1, b""));
    // Exactly one END_REQUEST for 1 (after its empty STDOUT), nothing for 1 afterwards.
    let mut ended = 0;
    let deadline = Instant::now() + Duration::from_millis(800);
    c.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        let mut h = [0u8; 8];
        if std::io::Read::read_exact(&mut c.sock, &mut h).is_err() {
            continue;
        }
        let len = u16::from_be_bytes([h[4], h[5]]) as usize + h[6] as usize;
        let mut body = vec![0; len];
        std::io::Read::read_exact(&mut c.sock, &mut body).unwrap();
        let id = u16::from_be_bytes([h[2], h[3]]);
        if id == 1 {
            assert!(
                ended == 0,
                "record type {} for id 1 after END_REQUEST",
                h[1]
            );
            if h[1] == END {
                assert_eq!(body[4], 0, "REQUEST_COMPLETE");
                ended += 1;
            }
        }
    }
    assert_eq!(ended, 1);
    assert_eq!(d.status_number("active_streams"), 1);
    // Stream 2 is alive and its connection too: a heartbeat-free idle stream, so ask status.
    c.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    c.send(&get_request(3, "/status", true, &[]));
    assert!(response_text(&mut c, 3).contains("\"active_streams\":1"));
    still_serving(&mut d);
}

#[test]
fn abort_at_odd_times() {
    let mut d = Daemon::start(CONFIG);
    let mut c = FcgiClient::connect(&d.socket);
    // For an unknown id: ignored.
    c.send(&record(ABORT, 9, b""));
    // Before PARAMS end: END_REQUEST at once.
    c.send(&begin(1, 1, 1));
    c.send(&record(PARAMS, 1, &pairs(&[("REQUEST_URI", "/clock")])));
    c.send(&record(ABORT, 1, b""));
    let r = c.read_record().unwrap();
    assert_eq!((r.t, r.id, r.content[4]), (END, 1, 0));
    // After END_REQUEST: ignored, and the id can be used again.
    c.send(&record(ABORT, 1, b""));
    c.send(&get_request(1, "/status", true, &[]));
    assert!(response_text(&mut c, 1).starts_with("Status: 200"));
    still_serving(&mut d);
}

#[test]
fn eof_mid_header_mid_record_and_while_idle() {
    let mut d = Daemon::start(CONFIG);
    let full = get_request(1, "/status", false, &[]);
    for cut in [0usize, 3, 8, 12, full.len() - 1] {
        let mut c = FcgiClient::connect(&d.socket);
        c.send(&full[..cut]);
        drop(c);
    }
    still_serving(&mut d);
}

#[test]
fn params_split_across_records_padding_and_one_byte_writes() {
    let mut d = Daemon::start(&format!("[server]\nmax_params_bytes = 200000\n{CONFIG}"));
    let cookie = "c".repeat(70_000);
    let body = pairs(&[
        ("REQUEST_METHOD", "GET"),
        ("HTTP_COOKIE", &cookie),
        ("REQUEST_URI", "/status"),
    ]);
    // Split at 65535 bytes, inside the cookie's value (sent with the 4-byte length form).
    let mut c = FcgiClient::connect(&d.socket);
    let mut bytes = begin(1, 1, 0);
    bytes.extend(record(PARAMS, 1, &body[..65535]));
    bytes.extend(record_padded(PARAMS, 1, &body[65535..], 7));
    bytes.extend(record_padded(PARAMS, 1, b"", 255));
    c.send(&bytes);
    assert!(response_text(&mut c, 1).starts_with("Status: 200 OK"));
    // The same request delivered one byte per write.
    let mut c = FcgiClient::connect(&d.socket);
    let mut bytes = begin(1, 1, 0);
    bytes.extend(record_padded(
        PARAMS,
        1,
        &pairs(&[("REQUEST_URI", "/status")]),
        255,
    ));
    bytes.extend(record_padded(PARAMS, 1, b"", 255));
    for b in &bytes {
        c.sock.write_all(&[*b]).unwrap();
        c.sock.flush().unwrap();
    }
    assert!(response_text(&mut c, 1).starts_with("Status: 200 OK"));
    still_serving(&mut d);
}

#[test]
fn oversized_and_hostile_params_get_clear_errors() {
    let mut d = Daemon::start(CONFIG);
    let ask = |d: &Daemon, params: Vec<Vec<u8>>| -> String {
        let mut c = FcgiClient::connect(&d.socket);
        let mut bytes = begin(1, 1, 0);
        for p in params {
            for chunk in p.chunks(65535) {
                bytes.extend(record(PARAMS, 1, chunk));
            }
        }
        bytes.extend(record(PARAMS, 1, b""));
        c.send(&bytes);
        response_text(&mut c, 1)
    };
    // A 70 KB cookie over the default 64 KiB max_params_bytes.
    let big = ask(
        &d,
        vec![pairs(&[
            ("REQUEST_URI", "/status"),
            ("HTTP_COOKIE", &"c".repeat(70_000)),
        ])],
    );
    assert!(big.starts_with("Status: 431 "), "{big}");
    assert!(big.contains("max_params_bytes"), "{big}");
    // 10,000 tiny pairs over max_params_pairs.
    let many: Vec<u8> = (0..10_000).flat_map(|_| pairs(&[("a", "")])).collect();
    let r = ask(&d, vec![many]);
    assert!(r.starts_with("Status: 400 ") && r.contains("1024"), "{r}");
    // Lengths of 0x7FFFFFFF, sums that overflow u32, lengths past the end.
    for hostile in [
        vec![0xff, 0xff, 0xff, 0xff, 0x01, b'a'],
        vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'a', b'b'],
        vec![0x05, 0x05, b'a'],
        vec![0x80, 0x00],
    ] {
        let r = ask(&d, vec![hostile.clone()]);
        assert!(
            r.starts_with("Status: 400 ") && r.contains("malformed FastCGI PARAMS"),
            "{hostile:?}: {r}"
        );
    }
    // Duplicate names (the last wins, as in php-fpm), NUL and '=' in names, non-UTF-8
    // values: served.
    let mut odd = pairs(&[
        ("REQUEST_URI", "/clock"),
        ("REQUEST_URI", "/status"),
        ("A\0=B", "x"),
    ]);
    odd.extend([4, 2]);
    odd.extend(b"HTTP\xff\xfe");
    let r = ask(&d, vec![odd]);
    assert!(
        r.starts_with("Status: 200 OK") && r.contains("active_streams"),
        "{r}"
    );
    still_serving(&mut d);
}

#[test]
fn request_bodies_are_bounded() {
    let mut d = Daemon::start(&format!("[server]\nmax_body_bytes = 1000\n{CONFIG}"));
    let post = |len: &str, body: &[u8]| -> String {
        let mut c = FcgiClient::connect(&d.socket);
        let mut bytes = begin(1, 1, 0);
        bytes.extend(record(
            PARAMS,
            1,
            &pairs(&[
                ("REQUEST_URI", "/clock"),
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_LENGTH", len),
            ]),
        ));
        bytes.extend(record(PARAMS, 1, b""));
        if !body.is_empty() {
            bytes.extend(record(STDIN, 1, body));
        }
        bytes.extend(record(STDIN, 1, b""));
        c.send(&bytes);
        response_text(&mut c, 1)
    };
    assert!(post("10", b"0123456789").starts_with("Status: 405 "));
    // STDIN ended before CONTENT_LENGTH bytes: refused, not handled as a short body.
    let short = post("10", b"01234");
    assert!(
        short.starts_with("Status: 400 ") && short.contains("5 of 10 bytes"),
        "{short}"
    );
    let r = post("5000", b"");
    assert!(
        r.starts_with("Status: 413 ") && r.contains("max_body_bytes"),
        "{r}"
    );
    let r = post("ten", b"");
    assert!(r.starts_with("Status: 400 "), "{r}");
    still_serving(&mut d);
}

#[test]
fn each_event_is_its_own_record_and_head_gets_headers_only() {
    let mut d = Daemon::start(CONFIG);
    let mut c = FcgiClient::connect(&d.socket);
    c.send(&get_request(1, "/clock", false, &[]));
    let head = c.read_record().unwrap();
    assert_eq!(
        String::from_utf8(head.content).unwrap(),
        "Status: 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n"
    );
    assert_eq!(c.read_record().unwrap().content, b"retry: 3000\n\n");
    for _ in 0..3 {
        let r = c.read_record().unwrap();
        let text = String::from_utf8(r.content).unwrap();
        assert!(
            text.starts_with("id: ")
                && text.ends_with("Z\n\n")
                && text.matches("\n\n").count() == 1,
            "{text:?}"
        );
    }
    let mut c = FcgiClient::connect(&d.socket);
    let mut bytes = begin(1, 1, 0);
    bytes.extend(record(
        PARAMS,
        1,
        &pairs(&[("REQUEST_URI", "/clock"), ("REQUEST_METHOD", "HEAD")]),
    ));
    bytes.extend(record(PARAMS, 1, b""));
    c.send(&bytes);
    let text = response_text(&mut c, 1);
    assert!(text.ends_with("X-Accel-Buffering: no\r\n\r\n"), "{text}");
    still_serving(&mut d);
}

#[test]
fn server_full_is_a_503_response_not_a_protocol_error() {
    let mut d = Daemon::start(&format!(
        "[server]\nmax_streams = 1\nmax_connections = 10\n{CONFIG}"
    ));
    let mut a = FcgiClient::connect(&d.socket);
    a.send(&get_request(1, "/idle", false, &[]));
    a.read_stdout_until(1, "data: ");
    let mut b = FcgiClient::connect(&d.socket);
    b.send(&get_request(1, "/idle", false, &[]));
    let text = response_text(&mut b, 1);
    assert!(
        text.starts_with("Status: 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains("Retry-After: 5\r\n"), "{text}");
    still_serving(&mut d);
}

#[test]
fn sigterm_ends_streams_with_retry_and_end_request() {
    let mut d = Daemon::start(CONFIG);
    let mut clients: Vec<FcgiClient> = (0..3).map(|_| FcgiClient::connect(&d.socket)).collect();
    for c in &mut clients {
        c.send(&get_request(1, "/idle", false, &[]));
        c.read_stdout_until(1, "data: ");
    }
    d.signal("TERM");
    for c in &mut clients {
        let (rest, status) = c.read_response(1);
        assert_eq!(status, 0);
        let rest = String::from_utf8(rest).unwrap();
        assert!(
            rest.starts_with("retry: ") && rest.ends_with("\n\n"),
            "{rest:?}"
        );
        assert!(spread_retry(last_retry(&rest), 3000), "{rest:?}");
        assert!(c.closed_within(Duration::from_secs(3)));
    }
    let (status, took) = d.wait_exit(Duration::from_secs(5));
    assert!(
        status.success() && took < Duration::from_secs(3),
        "{status:?} after {took:?}"
    );
}

#[test]
fn fd0_listening_socket_is_detected() {
    let dir = TempDir::new("fd0");
    let path = dir.path("inherited.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut child = std::process::Command::new(fastsse_bin())
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            listener,
        )))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut c = FcgiClient::connect(&path);
    c.send(&get_request(1, "/status", false, &[]));
    assert!(response_text(&mut c, 1).starts_with("Status: 200 OK"));
    let _ = child.kill();
    let _ = child.wait();
    // Not a listening socket (a connected one, as mod_cgid gives CGI scripts) and no CGI
    // environment: help, exit status 2.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let out = std::process::Command::new(fastsse_bin())
        .current_dir(&dir.0)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(a)))
        .env_remove("GATEWAY_INTERFACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}

#[test]
fn bad_config_fails_before_listening() {
    let dir = TempDir::new("badconf");
    std::fs::write(dir.path("bad.toml"), "[stream]\nheartbeat = \"soon\"\n").unwrap();
    let sock = dir.path("never.sock");
    let out = std::process::Command::new(fastsse_bin())
        .args(["serve", "--config"])
        .arg(dir.path("bad.toml"))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2: key `heartbeat`"), "{err}");
    assert!(!sock.exists());
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let d = Daemon::start(CONFIG);
    let out = std::process::Command::new(fastsse_bin())
        .current_dir(&d.dir.0)
        .args(["serve", "--listen"])
        .arg(format!("unix:{}", d.socket.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another process is listening"));
    // A stale socket file (nobody accepting) is replaced.
    let dir = TempDir::new("stale");
    let stale = dir.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut child = std::process::Command::new(fastsse_bin())
        .current_dir(&dir.0)
        .args(["serve", "--listen"])
        .arg(format!("unix:{}", stale.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the replaced socket", Duration::from_secs(5), || {
        std::os::unix::net::UnixStream::connect(&stale).is_ok()
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn socket_mode_is_applied() {
    let d = Daemon::start(&format!("[server]\nsocket_mode = \"0600\"\n{CONFIG}"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn tcp_peers_outside_fcgi_web_server_addrs_are_refused() {
    for (allowed, served) in [("127.0.0.1", true), ("127.0.0.2, 10.9.9.9", false)] {
        let port = free_port();
        let config = format!("[server]\nweb_server_addrs = [\"{allowed}\"]\n{CONFIG}")
            .replace("\"127.0.0.2, 10.9.9.9\"", "\"127.0.0.2\", \"10.9.9.9\"");
        let _d = Daemon::start_also(&config, Some(port));
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(&get_request(1, "/status", false, &[]))
            .unwrap();
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut sock, &mut got);
        assert_eq!(
            String::from_utf8_lossy(&got).contains("Status: 200 OK"),
            served,
            "allowed {allowed}"
        );
    }
}
