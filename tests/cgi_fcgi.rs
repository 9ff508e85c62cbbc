//! fastsse against an independent FastCGI client: `cgi-fcgi` from Debian's libfcgi-bin, both
//! against a daemon's socket and spawning fastsse with a listening socket on fd 0.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Runs `cgi-fcgi -bind -connect SOCK` for `uri`; reads stdout until `needle` appears (or EOF).
fn cgi_fcgi(socket: &std::path::Path, uri: &str, needle: &str) -> String {
    let mut child = Command::new("cgi-fcgi")
        .args(["-bind", "-connect"])
        .arg(socket)
        .env_clear()
        .env("REQUEST_METHOD", "GET")
        .env("REQUEST_URI", uri)
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run cgi-fcgi");
    let mut out = child.stdout.take().unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while !String::from_utf8_lossy(&text).contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(&text)
        );
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8(text).unwrap()
}

const FAST_CLOCK: &str = "[[route]]\npath = \"/clock\"\ntype = \"clock\"\ninterval = \"100ms\"\n\n[[route]]\npath = \"/status\"\ntype = \"status\"\n";

#[test]
fn cgi_fcgi_reads_status_and_a_stream_from_the_daemon() {
    if !have("cgi-fcgi") {
        return;
    }
    let d = Daemon::start(FAST_CLOCK);
    let status = cgi_fcgi(&d.socket, "/status", "}");
    assert!(
        status.starts_with("Status: 200 OK\r\nContent-Type: application/json\r\n"),
        "{status}"
    );
    assert!(status.contains("\"active_streams\":0"), "{status}");

    let stream = cgi_fcgi(&d.socket, "/clock", "\n\nid: ");
    assert!(
        stream.contains("Content-Type: text/event-stream\r\n"),
        "{stream}"
    );
    assert!(stream.contains("X-Accel-Buffering: no\r\n"), "{stream}");
    assert!(stream.contains("\r\n\r\nretry: 3000\n\nid: "), "{stream}");
    // cgi-fcgi was killed: the daemon must notice and free the stream.
    wait_for("the stream to be freed", Duration::from_secs(2), || {
        d.status_number("active_streams") == 0
    });
}

#[test]
fn cgi_fcgi_start_spawns_fastsse_on_an_inherited_socket() {
    if !have("cgi-fcgi") {
        return;
    }
    let dir = TempDir::new("spawn");
    let socket = dir.path("spawned.sock");
    let pidfile = dir.path("pid");
    // A wrapper that records the pid, then becomes fastsse (exec keeps the pid).
    let wrapper = dir.path("fastsse-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncd {}\necho $$ > {}\nexec {} >/dev/null 2>{}\n",
            dir.0.display(),
            pidfile.display(),
            fastsse_bin(),
            dir.path("log").display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    let started = Command::new("cgi-fcgi")
        .args(["-start", "-connect"])
        .arg(&socket)
        .arg(&wrapper)
        .status()
        .unwrap();
    assert!(started.success());
    wait_for("the spawned fastsse", Duration::from_secs(5), || {
        pidfile.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let kill = |sig: &str| {
        Command::new("kill")
            .arg(sig)
            .arg(&pid)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };

    let status = cgi_fcgi(&socket, "/status", "}");
    assert!(
        status.starts_with("Status: 200 OK\r\n") && status.contains("\"active_streams\":0"),
        "{status}"
    );
    let stream = cgi_fcgi(&socket, "/ping", "event: ping\ndata: {\"time\": \"");
    assert!(
        stream.contains("Content-Type: text/event-stream\r\n"),
        "{stream}"
    );

    assert!(kill("-TERM"));
    let start = Instant::now();
    while kill("-0") {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "spawned fastsse ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.path("log")).unwrap_or_default();
    assert!(log.contains("(inherited)"), "{log}");
}
