//! scripts/demo.sh as a visitor sees it: the demo page through its real nginx in headless
//! Chromium, two tabs — every panel receives events, a publish from the form appears in the
//! other tab, a tab that comes back replays what it missed, the chat works. The screenshot is
//! kept at target/demo-screenshot.png. Also: demo.sh refuses a port that is taken.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn the_demo_console_in_two_chromium_tabs() {
    if !have("chromium") || !have("php") || !have("nginx") {
        return;
    }
    let port = free_port();
    let mut demo = Command::new("setsid")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("PORT", port.to_string())
        .env("FASTSSE_BIN", fastsse_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Stops the whole demo (its process group) however the test ends.
    struct Stop(u32);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", self.0)])
                .status();
        }
    }
    let guard = Stop(demo.id());
    let stop = || drop(Stop(guard.0));
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("Demo page:") => {
                break l.split_whitespace().last().unwrap().to_string()
            }
            Some(Ok(_)) => continue,
            _ => {
                stop();
                panic!("demo.sh did not start");
            }
        }
    };
    // A second demo on the same port is refused, saying how to pick another.
    let second = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("PORT", port.to_string())
        .env("FASTSSE_BIN", fastsse_bin())
        .output()
        .unwrap();
    let screenshot = concat!(env!("CARGO_MANIFEST_DIR"), "/target/demo-screenshot.png");
    let result = run_browser("browser-demo.mjs", &[&url, screenshot], || {});
    stop();
    let _ = demo.wait();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("PORT="),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    for panel in [
        "clock",
        "ticker",
        "figures",
        "topicsOpen",
        "published",
        "secondTab",
        "replayed",
        "chat",
    ] {
        assert_eq!(result[panel], true, "{panel}: {result}");
    }
    assert!(std::fs::metadata(screenshot).is_ok_and(|m| m.len() > 10_000));
    std::thread::sleep(Duration::from_millis(200));
}
