//! Running it in production: systemd socket activation (`systemd-socket-activate`, from
//! Debian's systemd package, hands fastsse a listening socket the way systemd does).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn socket_activation_serves_the_socket_systemd_hands_over_and_leaves_it_in_place() {
    if !have("systemd-socket-activate") {
        return;
    }
    let dir = TempDir::new("activate");
    let sock = dir.path("fastsse.sock");
    // A listen address in the config is not used when systemd hands over sockets.
    std::fs::write(
        dir.path("fastsse.toml"),
        format!(
            "[server]\nlisten = [\"unix:{}\"]\n\n[[route]]\npath = \"/status\"\ntype = \"status\"\n",
            dir.path("unused.sock").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path("log")).unwrap();
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(fastsse_bin())
        .args(["serve", "--config"])
        .arg(dir.path("fastsse.toml"))
        .arg("--data-dir")
        .arg(dir.path("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("the activated socket", Duration::from_secs(10), || sock.exists());
    // systemd-socket-activate starts fastsse on the first connection, as systemd would.
    let mut c = FcgiClient::connect(&sock);
    c.send(&get_request(1, "/status", false, &[]));
    let (out, _) = c.read_response(1);
    assert!(String::from_utf8_lossy(&out).starts_with("Status: 200 OK"));
    let text = std::fs::read_to_string(dir.path("log")).unwrap();
    assert!(text.contains("socket activation: 1 listener"), "{text}");
    assert!(!dir.path("unused.sock").exists(), "the config's listen was bound too");
    Command::new("kill").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
    // The socket is systemd's: fastsse leaves it for the next start.
    assert!(sock.exists(), "fastsse removed systemd's socket");
}
