//! `type = "command"` routes with real programs (sh scripts, and a PHP SSE loop run unchanged
//! by Debian's php-cli): one shared process for every subscriber, stopped when idle and
//! restarted when it crashes; per-stream processes with a CGI environment, ended within a
//! second of their browser leaving (through nginx), SIGKILLed when they ignore SIGTERM, and
//! capped by max_processes; a flooding program that cannot grow memory; clear config errors.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// Writes an executable sh script.
fn script(dir: &TempDir, name: &str, body: &str) -> String {
    let path = dir.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn route(path: &str, extra: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\ntype = \"command\"\n{extra}\n")
}

fn with_status(routes: &str) -> String {
    format!(
        "[stream]\nretry = \"500ms\"\nheartbeat = \"1s\"\n\n{routes}\n\
         [[route]]\npath = \"/status\"\ntype = \"status\"\n"
    )
}

fn open(socket: &std::path::Path, path: &str, params: &[(&str, &str)]) -> FcgiClient {
    let mut c = FcgiClient::connect(socket);
    c.send(&get_request(1, path, false, params));
    c
}

#[test]
fn a_thousand_subscribers_share_one_process_which_stops_when_idle() {
    let dir = TempDir::new("cmd-shared");
    let tick = script(
        &dir,
        "tick-shared.sh",
        "i=0; while true; do i=$((i+1)); printf 'id: %s\\ndata: tick %s\\n\\n' $i $i; sleep 0.2; done",
    );
    let d = Daemon::start(&with_status(&route(
        "/tick",
        &format!("command = [\"{tick}\"]\nidle_stop = \"1s\""),
    )));
    assert!(
        processes("tick-shared.sh").is_empty(),
        "started before anyone asked"
    );
    let bench = std::process::Command::new(fastsse_bin())
        .args(["bench", "sse", "--json", "--quiet", "--fcgi"])
        .arg(format!("unix:{}", d.socket.display()))
        .args([
            "--path",
            "/tick",
            "-n",
            "1000",
            "--duration",
            "3s",
            "--drain",
            "0s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("1,000 subscribers", Duration::from_secs(20), || {
        d.status_number("active_streams") >= 1000
    });
    assert_eq!(
        processes("tick-shared.sh").len(),
        1,
        "one process for every subscriber"
    );
    let out = bench.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["events_received"].as_u64().unwrap() >= 1000 * 5,
        "{report}"
    );
    // Everyone left: the program is stopped after idle_stop, and started again on demand.
    wait_for("the idle program to stop", Duration::from_secs(5), || {
        processes("tick-shared.sh").is_empty()
    });
    let mut c = open(&d.socket, "/tick", &[]);
    c.read_stdout_until(1, "data: tick");
    assert_eq!(processes("tick-shared.sh").len(), 1);
}

#[test]
fn a_php_sse_loop_runs_unchanged_and_a_crashing_program_is_restarted() {
    if !have("php") {
        return;
    }
    let dir = TempDir::new("cmd-php");
    let php = dir.path("ticker.php");
    // The loop every SSE tutorial shows, exiting after three events (a crash, as seen here).
    std::fs::write(
        &php,
        "<?php\nfor ($i = 1; $i <= 3; $i++) {\n    echo \"event: priceUp\\n\";\n    \
         echo 'data: {\"price\": ' . (100 + $i) . \"}\\n\\n\";\n    flush();\n    usleep(100000);\n}\nexit(1);\n",
    )
    .unwrap();
    let d = Daemon::start(&with_status(&route(
        "/ticker",
        &format!("command = [\"php\", \"{}\"]", php.display()),
    )));
    let mut c = open(&d.socket, "/ticker", &[]);
    let mut prices = Vec::new();
    while prices.len() < 6 {
        let text = c.read_stdout_until(1, "\n\n");
        for block in text.split("\n\n").filter(|b| b.contains("data:")) {
            let (_, event, data) = parse_block(block);
            assert_eq!(event, "priceUp");
            prices.push(data);
        }
    }
    assert_eq!(
        prices[..3],
        prices[3..6],
        "the second run repeats the first: {prices:?}"
    );
    let status = d.status();
    assert!(number_after(&status, "restarts") >= 1, "{status}");
    assert!(d.log().contains("exited"), "{}", d.log());
}

#[test]
fn per_stream_programs_get_the_request_and_end_with_their_browser() {
    let Some((d, n)) = daemon_behind_nginx(&with_status(&{
        let dir = TempDir::new("cmd-per");
        let echo = script(
            &dir,
            "echo-request.sh",
            "printf 'data: %s|%s|%s\\n\\n' \"$QUERY_STRING\" \"$HTTP_LAST_EVENT_ID\" \"$HOME\"\n\
             while true; do sleep 1; printf ': alive\\n\\n'; done",
        );
        std::mem::forget(dir);
        // /events, so the shipped nginx snippet routes it.
        route(
            "/events",
            &format!("command = [\"{echo}\"]\nmode = \"per-stream\"\nmax_processes = 2"),
        )
    })) else {
        return;
    };
    let mut a = HttpStream::open(n.port, "GET", "/events?room=7", &[("Last-Event-ID", "41")]);
    assert_eq!(a.status, 200);
    let (_, _, data) = a.next_event().unwrap();
    assert_eq!(
        data, "room=7|41|",
        "environment: the request only (not even the daemon's HOME)"
    );
    let b = HttpStream::open(n.port, "GET", "/events", &[]);
    assert_eq!(b.status, 200);
    let mut c = HttpStream::open(n.port, "GET", "/events", &[]);
    let status = c.status;
    assert_eq!(status, 503, "{}", c.rest());
    assert_eq!(processes("echo-request.sh").len(), 2);
    // The browsers leave: their programs are gone within a second.
    drop((a, b));
    let left = Instant::now();
    wait_for("the programs to end", Duration::from_secs(3), || {
        processes("echo-request.sh").is_empty()
    });
    assert!(
        left.elapsed() < Duration::from_secs(1),
        "{:?}",
        left.elapsed()
    );
    assert_eq!(d.status_number("active_streams"), 0);
}

#[test]
fn a_program_ignoring_sigterm_is_killed_and_a_flood_does_not_grow_memory() {
    let dir = TempDir::new("cmd-hostile");
    let stubborn = script(
        &dir,
        "stubborn.sh",
        "trap '' TERM\nprintf 'data: here\\n\\n'\nwhile true; do sleep 0.1; done",
    );
    let flood = script(
        &dir,
        "flood.sh",
        "yes 'data: 0123456789abcdef0123456789abcdef' | sed 'n;s/.*//'",
    );
    let d = Daemon::start(&with_status(&format!(
        "{}{}",
        route(
            "/stubborn",
            &format!("command = [\"{stubborn}\"]\nmode = \"per-stream\"\nkill_grace = \"500ms\""),
        ),
        route(
            "/flood",
            &format!("command = [\"{flood}\"]\nsubscriber_queue = 64")
        ),
    )));
    let mut s = open(&d.socket, "/stubborn", &[]);
    s.read_stdout_until(1, "data: here");
    drop(s);
    wait_for("SIGKILL after the grace", Duration::from_secs(3), || {
        processes("stubborn.sh").is_empty()
    });
    // A program printing as fast as it can, to a subscriber that never reads: it is cut off
    // once 64 events behind (with a retry: hint), and memory stays flat.
    let mut stalled = open(&d.socket, "/flood", &[]);
    stalled.read_stdout_until(1, "retry: 500");
    let before = rss_kib(d.pid());
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_kib(d.pid());
    assert!(
        stalled.closed_within(Duration::from_secs(2)),
        "the stalled subscriber was kept"
    );
    assert!(
        after < before + 20_000,
        "RSS grew from {before} to {after} KiB under a flood"
    );
    assert!(
        number_after(&d.status(), "events") > 10_000,
        "{}",
        d.status()
    );
}

#[test]
fn a_shared_command_with_a_topic_replays_with_last_event_id() {
    let dir = TempDir::new("cmd-topic");
    let counter = script(
        &dir,
        "count.sh",
        "i=0; while true; do i=$((i+1)); printf 'data: n%s\\n\\n' $i; sleep 0.1; done",
    );
    let d = Daemon::start(&with_status(&route(
        "/count",
        &format!("command = [\"{counter}\"]\ntopic = \"counter\""),
    )));
    let mut c = open(&d.socket, "/count", &[]);
    let first = c.read_stdout_until(1, "data: n3");
    let id3 = first
        .split("\n\n")
        .find(|b| b.contains("data: n3"))
        .map(|b| parse_block(b).0)
        .unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(500));
    let mut again = open(&d.socket, "/count", &[("HTTP_LAST_EVENT_ID", &id3)]);
    let text = again.read_stdout_until(1, "data: n6");
    assert!(
        text.contains("data: n4") && text.contains("data: n5"),
        "{text}"
    );
    assert!(!text.contains("data: n3\n"), "{text}");
}

#[test]
fn a_missing_program_is_a_config_error_with_file_line_and_key() {
    let dir = TempDir::new("cmd-check");
    let (passed, err) = check_config(
        &dir,
        "[[route]]\npath = \"/x\"\ntype = \"command\"\ncommand = [\"/nonexistent/ticker\"]\n",
    );
    assert!(!passed);
    assert!(
        err.contains("fastsse.toml:4: key `command`") && err.contains("/nonexistent/ticker"),
        "{err}"
    );
}

#[test]
fn start_always_runs_before_anyone_subscribes_and_stderr_reaches_the_log() {
    let dir = TempDir::new("cmd-always");
    let chatty = script(
        &dir,
        "always-chatty.sh",
        "echo 'warming the cache' >&2\nwhile true; do printf 'data: x\\n\\n'; sleep 0.5; done",
    );
    let d = Daemon::start(&with_status(&route(
        "/always",
        &format!("command = [\"{chatty}\"]\nstart = \"always\"\nidle_stop = \"1s\""),
    )));
    wait_for(
        "the program to start on its own",
        Duration::from_secs(5),
        || processes("always-chatty.sh").len() == 1,
    );
    wait_for("its stderr in the log", Duration::from_secs(5), || {
        d.log().contains("route /always: program") && d.log().contains("warming the cache")
    });
    // Nobody subscribes, and it keeps running past idle_stop.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(processes("always-chatty.sh").len(), 1);
}

#[test]
fn a_program_runs_as_the_configured_user_when_fastsse_is_root() {
    if !is_root() {
        return;
    }
    let dir = TempDir::new("cmd-user");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let whoami = script(
        &dir,
        "whoami.sh",
        "printf 'data: %s\\n\\n' \"$(id -un)\"\nwhile true; do sleep 1; done",
    );
    let d = Daemon::start(&with_status(&route(
        "/who",
        &format!("command = [\"{whoami}\"]\nmode = \"per-stream\"\nuser = \"www-data\""),
    )));
    let mut c = open(&d.socket, "/who", &[]);
    c.read_stdout_until(1, "data: www-data");
}

/// Issue 19, finding 8: what a program started (`sleep 3600 &`) outlived it — one orphan per
/// connect/leave, after `idle_stop` too, and after `kill -9` of the daemon. Every program now
/// runs under a guard leading a process group that ends with it.
#[test]
fn what_a_program_starts_ends_with_it_even_when_fastsse_is_killed() {
    let dir = TempDir::new("cmd-orphans");
    let each = script(
        &dir,
        "orphan-each.sh",
        "sleep 3671 &\nwhile true; do printf 'data: x\\n\\n'; sleep 0.2; done",
    );
    let shared = script(
        &dir,
        "orphan-shared.sh",
        "sleep 3672 &\nwhile true; do printf 'data: y\\n\\n'; sleep 0.2; done",
    );
    let config = with_status(&format!(
        "{}{}",
        route(
            "/each",
            &format!("mode = \"per-stream\"\ncommand = [\"{each}\"]\nkill_grace = \"1s\"")
        ),
        route(
            "/shared",
            &format!("command = [\"{shared}\"]\nidle_stop = \"1s\"")
        )
    ));
    let d = Daemon::start(&config);
    for _ in 0..5 {
        let mut c = open(&d.socket, "/each", &[]);
        c.read_stdout_until(1, "data: x");
    }
    wait_for(
        "every per-stream program and what it started to end",
        Duration::from_secs(10),
        || processes("3671").is_empty() && processes("orphan-each.sh").is_empty(),
    );
    let mut c = open(&d.socket, "/shared", &[]);
    c.read_stdout_until(1, "data: y");
    drop(c);
    wait_for(
        "the idle shared program and what it started to end",
        Duration::from_secs(10),
        || processes("3672").is_empty() && processes("orphan-shared.sh").is_empty(),
    );
    // fastsse killed outright while both run.
    let mut a = open(&d.socket, "/each", &[]);
    a.read_stdout_until(1, "data: x");
    let mut b = open(&d.socket, "/shared", &[]);
    b.read_stdout_until(1, "data: y");
    // A script's `sleep &` shows its name once its fork has exec'd: wait for that.
    wait_for("both programs' sleeps", Duration::from_secs(10), || {
        (processes("3671").len(), processes("3672").len()) == (1, 1)
    });
    d.signal("KILL");
    wait_for(
        "the programs and what they started to follow fastsse out",
        Duration::from_secs(10),
        || processes("367").is_empty() && processes("orphan-").is_empty(),
    );
}

/// Issue 19, finding 11: `max_processes` was not enforced across a SIGHUP (10 programs ran with
/// max 5) nor across `[server] processes = 2` (3 ran with max 2). Slots are lock files now,
/// shared by a reloaded route and by every worker; /status counts the box's.
#[test]
fn max_processes_holds_across_a_reload_and_across_workers() {
    let dir = TempDir::new("cmd-max");
    let prog = script(
        &dir,
        "max-each.sh",
        "while true; do printf 'data: m\\n\\n'; sleep 0.2; done",
    );
    for workers in [1, 2] {
        let config = format!(
            "[server]\nprocesses = {workers}\n\n{}",
            with_status(&route(
                "/each",
                &format!("mode = \"per-stream\"\ncommand = [\"{prog}\"]\nmax_processes = 3")
            ))
        );
        let d = Daemon::start(&config);
        let mut streams = Vec::new();
        for _ in 0..3 {
            let mut c = open(&d.socket, "/each", &[]);
            c.read_stdout_until(1, "data: m");
            streams.push(c);
        }
        if workers == 1 {
            d.signal("HUP");
            wait_for("the reload", Duration::from_secs(5), || {
                d.log().contains("SIGHUP: reloaded")
            });
        }
        for _ in 0..4 {
            let mut c = open(&d.socket, "/each", &[]);
            let head = c.read_stdout_until(1, "\r\n\r\n");
            assert!(head.starts_with("Status: 503"), "workers {workers}: {head}");
        }
        assert_eq!(processes("max-each.sh").len(), 3, "workers {workers}");
        let status = d.status();
        assert!(
            status.contains("\"running\":3"),
            "workers {workers}: {status}"
        );
        drop(streams);
        wait_for("the programs to end", Duration::from_secs(10), || {
            processes("max-each.sh").is_empty()
        });
        // Slots come back: a new stream starts again.
        let mut c = open(&d.socket, "/each", &[]);
        c.read_stdout_until(1, "data: m");
    }
}
