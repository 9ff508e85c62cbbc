//! `fastsse check URL` against chains built here from real nginx: the shipped config (good),
//! and an nginx proxy in front that buffers, compresses, or times out idle streams.

mod support;

use std::process::Command;

use support::*;

const CONFIG: &str = "[[route]]\npath = \"/events\"\ntype = \"topics\"\n\n[[route]]\npath = \"/status\"\ntype = \"status\"\n";

fn check(url: &str, publish: &str, idle: &str) -> (bool, String) {
    let out = Command::new(fastsse_bin())
        .args(["check", url, "--publish-url", publish, "--idle", idle])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An nginx proxy in front of `back_port` with `directives` in its location; returns its port.
fn front(back_port: u16, directives: &str) -> (Nginx, u16) {
    let port = free_port();
    let n = Nginx::start(
        "unix:/nonexistent",
        &format!(
            "server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{back_port}; \
             proxy_http_version 1.1; proxy_set_header Connection \"\"; {directives} }} }}"
        ),
    );
    wait_for("the front nginx", std::time::Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (n, port)
}

#[test]
fn check_passes_the_shipped_chain_and_names_each_broken_one() {
    let Some((_d, back)) = daemon_behind_nginx(CONFIG) else {
        return;
    };
    let publish = format!("http://127.0.0.1:{}/events?topic=t", back.port);
    let good = format!("http://127.0.0.1:{}/events?topic=t", back.port);
    let (ok, text) = check(&good, &publish, "3s");
    assert!(ok, "the shipped chain failed the check:\n{text}");
    assert!(text.contains("HTTP/1.1"), "{text}");

    // The classic php-fpm SSE misconfiguration: FastCGI buffering on, X-Accel-Buffering ignored.
    let port = free_port();
    let _b = Nginx::start(
        "unix:/nonexistent",
        &format!(
            "server {{ listen 127.0.0.1:{port}; location / {{ include /etc/nginx/fastcgi_params; \
             fastcgi_pass unix:{}; fastcgi_buffering on; fastcgi_ignore_headers X-Accel-Buffering; }} }}",
            _d.socket.display()
        ),
    );
    let (ok, text) = check(
        &format!("http://127.0.0.1:{port}/events?topic=t"),
        &publish,
        "3s",
    );
    assert!(
        !ok && text.contains("fastcgi_buffering off"),
        "buffering not found:\n{text}"
    );

    let (_g, port) = front(
        back.port,
        "proxy_buffering off; gzip on; gzip_types text/event-stream; gzip_min_length 1;",
    );
    let (ok, text) = check(
        &format!("http://127.0.0.1:{port}/events?topic=t"),
        &publish,
        "3s",
    );
    assert!(
        !ok && text.contains("compressed"),
        "compression not found:\n{text}"
    );

    // The classic case users hit: a front proxy that gzips the stream (proxy buffering as it
    // comes). Nothing arrives at all; the check must blame compression, not buffering.
    let (_z, port) = front(
        back.port,
        "gzip on; gzip_types text/event-stream; gzip_proxied any;",
    );
    let (ok, text) = check(
        &format!("http://127.0.0.1:{port}/events?topic=t"),
        &publish,
        "3s",
    );
    assert!(
        !ok && text.contains("a compressor in the chain holds the events back"),
        "compression not named as the cause:\n{text}"
    );
    assert!(
        text.contains("gzip_types") && text.contains("zlib.output_compression"),
        "{text}"
    );
    assert!(!text.contains("fastcgi_buffering"), "{text}");

    let (_t, port) = front(back.port, "proxy_buffering off; proxy_read_timeout 2s;");
    let (ok, text) = check(
        &format!("http://127.0.0.1:{port}/events?topic=t"),
        &publish,
        "6s",
    );
    assert!(
        !ok && text.contains("closed after"),
        "the idle timeout not found:\n{text}"
    );
    assert!(text.contains("proxy_read_timeout"), "{text}");
}
