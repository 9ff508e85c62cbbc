//! Hooks against real applications: a PHP script in Debian's php-fpm (FastCGI, no web server
//! between) and in PHP's own web server (HTTP), each recording every call it gets in a file.
//! Browsers are raw HTTP clients through a real nginx; tokens come from PyJWT.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

/// The application: records each call as a JSON line (the body as PHP read it, and the
/// headers fastsse sent); refuses a connect to the topic `forbidden` (403 with a reason);
/// takes 20 ms over each leave, so that leaves are still queued when the daemon is killed.
const HOOKS_PHP: &str = r#"<?php
$body = $_POST;
if (($_SERVER['CONTENT_TYPE'] ?? '') === 'application/json') {
    $body = json_decode(file_get_contents('php://input'), true);
}
$line = json_encode([
    'body' => $body,
    'hook' => $_SERVER['HTTP_X_FASTSSE_HOOK'] ?? null,
    'hook_id' => $_SERVER['HTTP_X_FASTSSE_HOOK_ID'] ?? null,
    'auth' => $_SERVER['HTTP_AUTHORIZATION'] ?? null,
]);
file_put_contents(__DIR__ . '/calls.log', $line . "\n", FILE_APPEND | LOCK_EX);
if (($body['event'] ?? '') === 'leave') {
    usleep(20000);
}
if (($body['event'] ?? '') === 'connect' && in_array('forbidden', $body['topics'] ?? [])) {
    http_response_code(403);
    echo "user {$body['user']} may not read forbidden";
}
"#;

/// A php-fpm pool (Debian's php-fpm) serving `hooks.php` in its own temp dir.
struct PhpFpm {
    child: Option<Child>,
    dir: TempDir,
}

impl PhpFpm {
    fn start() -> Option<PhpFpm> {
        PhpFpm::start_with(HOOKS_PHP)
    }

    /// A pool serving `script` as `hooks.php`.
    fn start_with(script: &str) -> Option<PhpFpm> {
        let bin = ["8.4", "8.3", "8.2", "8.1"]
            .iter()
            .map(|v| format!("php-fpm{v}"))
            .find(|b| Path::new("/usr/sbin").join(b).exists());
        let Some(bin) = bin else {
            have("php-fpm");
            return None;
        };
        let dir = TempDir::new("php-fpm");
        std::fs::write(dir.path("hooks.php"), script).unwrap();
        let d = dir.0.display();
        let user = if is_root() {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        std::fs::write(
            dir.path("fpm.conf"),
            format!(
                "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\n[hooks]\n{user}\
                 listen = {d}/fpm.sock\npm = static\npm.max_children = 4\n"
            ),
        )
        .unwrap();
        let mut p = PhpFpm { child: None, dir };
        p.child = Some(p.spawn(&bin));
        Some(p)
    }

    fn spawn(&self, bin: &str) -> Child {
        let child = Command::new(Path::new("/usr/sbin").join(bin))
            .args(["-F", "-R", "-y"])
            .arg(self.dir.path("fpm.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        let sock = self.socket();
        wait_for("php-fpm's socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        child
    }

    fn socket(&self) -> PathBuf {
        self.dir.path("fpm.sock")
    }

    fn script(&self) -> PathBuf {
        self.dir.path("hooks.php")
    }

    fn calls(&self) -> Vec<serde_json::Value> {
        calls_in(&self.dir.path("calls.log"))
    }

    /// Stops the pool: SIGTERM, which php-fpm's master passes to its workers (a SIGKILL would
    /// leave them running), then SIGKILL if it is still there after 5 s.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    fn restart(&mut self) {
        let bin = std::fs::read_dir("/usr/sbin")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.starts_with("php-fpm"))
            .unwrap();
        self.child = Some(self.spawn(&bin));
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The calls recorded in `log`.
fn calls_in(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn field<'a>(call: &'a serde_json::Value, key: &str) -> &'a str {
    call["body"][key].as_str().unwrap_or("")
}

/// Each stream's calls: subscriber → (distinct connect ids, distinct leave ids, leave reasons).
type Pairs = HashMap<String, (Vec<String>, Vec<String>, Vec<String>)>;

fn pairs(calls: &[serde_json::Value]) -> Pairs {
    let mut by: Pairs = HashMap::new();
    for c in calls {
        let e = by.entry(field(c, "subscriber").to_string()).or_default();
        let id = field(c, "id").to_string();
        assert_eq!(c["hook_id"].as_str(), Some(id.as_str()), "{c}");
        match field(c, "event") {
            "connect" if !e.0.contains(&id) => e.0.push(id),
            "leave" if !e.1.contains(&id) => {
                e.1.push(id);
                e.2.push(field(c, "reason").to_string());
            }
            "connect" | "leave" => {}
            other => panic!("unexpected event {other}: {c}"),
        }
    }
    by
}

fn hooked_config(php: &PhpFpm, extra: &str) -> String {
    format!(
        "[[route]]\npath = \"/status\"\ntype = \"status\"\n\
         [[route]]\npath = \"/metrics\"\ntype = \"metrics\"\n\
         [[route]]\npath = \"/events\"\ntype = \"topics\"\n\
         hook_fastcgi = \"unix:{}\"\nhook_script = \"{}\"\n{extra}",
        php.socket().display(),
        php.script().display()
    )
}

#[test]
fn every_connect_gets_its_leave_through_php_fpm_across_kill_9() {
    let Some(php) = PhpFpm::start() else { return };
    let Some((mut daemon, nginx)) = daemon_behind_nginx(&hooked_config(&php, "")) else {
        return;
    };
    // 200 browsers on 10 rooms.
    let mut browsers: Vec<Option<HttpStream>> = (0..200)
        .map(|i| {
            let path = format!("/events?topic=room/{}", i % 10);
            let s = HttpStream::open(nginx.port, "GET", &path, &[("Accept", "text/event-stream")]);
            assert_eq!(s.status, 200);
            Some(s)
        })
        .collect();
    wait_for("200 connects", Duration::from_secs(20), || {
        php.calls()
            .iter()
            .filter(|c| c["hook"] == "connect")
            .count()
            >= 200
    });
    // Half of them leave, in a random order; the daemon is killed while their leaves (20 ms
    // each in the application) are still going out.
    let mut seed = 0x9e37_79b9_u64;
    let mut order: Vec<usize> = (0..200).collect();
    for i in (1..order.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    for &i in &order[..100] {
        browsers[i] = None;
    }
    wait_for("the first leaves", Duration::from_secs(10), || {
        php.calls().iter().any(|c| c["hook"] == "leave")
    });
    daemon.restart("KILL");
    drop(browsers);
    // The new process takes over the dead one's journal: its queued leaves, and a leave for
    // each stream it held.
    wait_for("a leave for every connect", Duration::from_secs(30), || {
        let p = pairs(&php.calls());
        p.len() == 200 && p.values().all(|(c, l, _)| c.len() == 1 && l.len() == 1)
    });
    let p = pairs(&php.calls());
    let reasons: Vec<&str> = p.values().map(|(_, _, r)| r[0].as_str()).collect();
    let count = |r: &str| reasons.iter().filter(|x| **x == r).count();
    assert_eq!(
        count("browser_left") + count("process_died"),
        200,
        "{reasons:?}"
    );
    assert!(count("process_died") >= 100, "{reasons:?}");
    assert!(count("browser_left") >= 1, "{reasons:?}");
    // Taken over: at least the 100 open streams' leaves, and the status says so.
    let status = daemon.status();
    assert!(number_after(&status, "adopted") >= 100, "{status}");
    assert!(
        daemon.log().contains("left by a process that is gone"),
        "{}",
        daemon.log()
    );
    // Nothing left to send; a repeated call carries its first id (checked in `pairs`).
    wait_for("an empty queue", Duration::from_secs(10), || {
        number_after(&daemon.status(), "pending") == 0
    });
    for c in php.calls() {
        let body = &c["body"];
        assert_eq!(body["route"], "/events", "{c}");
        assert!(
            field(&c, "topics[]").is_empty(),
            "PHP reads topics[] as a list: {c}"
        );
        assert!(
            body["topics"][0].as_str().unwrap().starts_with("room/"),
            "{c}"
        );
        assert!(
            body["time_ms"].as_str().unwrap().parse::<u64>().is_ok(),
            "{c}"
        );
    }
}

#[test]
fn a_connect_hook_decides_and_a_silent_application_is_caught_up_with() {
    let Some(mut php) = PhpFpm::start() else {
        return;
    };
    let extra = "hook_connect_wait = \"1s\"\n";
    let Some((daemon, nginx)) = daemon_behind_nginx(&hooked_config(&php, extra)) else {
        return;
    };
    // The application refuses: the browser gets its status and reason, and no stream.
    let mut s = HttpStream::open(nginx.port, "GET", "/events?topic=forbidden", &[]);
    assert_eq!(s.status, 403);
    assert!(s.rest().contains("may not read forbidden"));
    // It accepts: a stream.
    let ok = HttpStream::open(nginx.port, "GET", "/events?topic=fine", &[]);
    assert_eq!(ok.status, 200);
    drop(ok);
    wait_for(
        "the accepted stream's leave",
        Duration::from_secs(10),
        || php.calls().iter().any(|c| c["hook"] == "leave"),
    );
    let calls = php.calls();
    let refused = calls
        .iter()
        .find(|c| c["hook"] == "connect" && c["body"]["topics"][0] == "forbidden")
        .expect("the refused connect");
    let sub = field(refused, "subscriber");
    assert!(
        !calls
            .iter()
            .any(|c| c["hook"] == "leave" && field(c, "subscriber") == sub),
        "a refused stream never opened, so it never leaves: {calls:?}"
    );
    // The application goes away: within hook_connect_wait nothing answers, so an EventSource
    // is told to come back (a 200 with only `retry:`) and another client gets 503.
    php.stop();
    let mut es = HttpStream::open(
        nginx.port,
        "GET",
        "/events?topic=while-down",
        &[("Accept", "text/event-stream")],
    );
    assert_eq!(es.status, 200);
    let body = es.rest();
    assert!(
        body.contains("did not answer the connect hook") && body.contains("retry:"),
        "{body}"
    );
    let plain = HttpStream::open(nginx.port, "GET", "/events?topic=while-down", &[]);
    assert_eq!(plain.status, 503);
    assert!(plain.header("retry-after").is_some());
    // Back: what it missed arrives, each connect with the leave of the refusal.
    php.restart();
    wait_for("the calls it missed", Duration::from_secs(20), || {
        let p = pairs(&php.calls());
        p.values()
            .filter(|(c, l, r)| c.len() == 1 && l.len() == 1 && r[0] == "hook_timeout")
            .count()
            == 2
    });
    let status = daemon.status();
    assert!(number_after(&status, "connect_timeouts") >= 2, "{status}");
    assert!(number_after(&status, "failed_attempts") >= 1, "{status}");
    assert_eq!(number_after(&status, "refused"), 1, "{status}");
    let metrics = {
        let mut c = FcgiClient::connect(&daemon.socket);
        c.send(&get_request(1, "/metrics", false, &[]));
        String::from_utf8(c.read_response(1).0).unwrap()
    };
    assert!(
        metrics.contains("fastsse_hook_streams_refused_total{route=\"/events\"} 1"),
        "{metrics}"
    );
}

#[test]
fn hooks_over_http_carry_json_the_secret_and_the_tokens_user() {
    if !have("php") || !have("nginx") {
        return;
    }
    let app = TempDir::new("php-http");
    std::fs::write(app.path("hooks.php"), HOOKS_PHP).unwrap();
    let port = free_port();
    let _server = Reaped(
        Command::new("php")
            .args(["-S", &format!("127.0.0.1:{port}"), "-t"])
            .arg(&app.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php -S"),
    );
    wait_for("php -S", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let secret = "hook-test-key-0123456789abcdef0123";
    let config = format!(
        "[[route]]\npath = \"/events\"\ntype = \"topics\"\nsubscriber_jwt_key = \"{secret}\"\n\
         user_topics = [\"user/{{user}}\"]\n\
         hook_url = \"http://127.0.0.1:{port}/hooks.php\"\nhook_body = \"json\"\n\
         hook_secret = \"app-secret\"\n"
    );
    let Some((_daemon, nginx)) = daemon_behind_nginx(&config) else {
        return;
    };
    let token = jwt_token(
        "HS256",
        secret,
        serde_json::json!({"sub": "alice", "mercure": {"subscribe": ["*"]}}),
    );
    let bearer = format!("Bearer {token}");
    let s = HttpStream::open(
        nginx.port,
        "GET",
        "/events?topic=chat&topic=news",
        &[("Authorization", bearer.as_str())],
    );
    assert_eq!(s.status, 200);
    drop(s);
    let log = app.path("calls.log");
    wait_for(
        "connect and leave over HTTP",
        Duration::from_secs(10),
        || calls_in(&log).len() >= 2,
    );
    let calls = calls_in(&log);
    let (connect, leave) = (&calls[0], &calls[1]);
    assert_eq!(connect["body"]["event"], "connect", "{calls:?}");
    assert_eq!(
        connect["body"]["topics"],
        serde_json::json!(["chat", "news"])
    );
    assert_eq!(connect["body"]["user"], "alice");
    assert_eq!(connect["auth"], "Bearer app-secret");
    assert_eq!(leave["body"]["event"], "leave");
    assert_eq!(leave["body"]["reason"], "browser_left");
    assert_eq!(leave["body"]["subscriber"], connect["body"]["subscriber"]);
    assert_eq!(leave["body"]["connected_ms"], connect["body"]["time_ms"]);
    assert!(leave["body"]["time"].as_str().unwrap().ends_with('Z'));
    // The token never reaches the application or the log.
    assert!(!std::fs::read_to_string(&log).unwrap().contains(&token));
}

/// A child process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HS256 token made by PyJWT.
/// Reads `s` until an event satisfies `want` (10 s per event at most).
fn event_where(s: &mut HttpStream, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    loop {
        let (_, event, data) = s.next_event().expect("the stream ended");
        assert_eq!(event, "presence", "{data}");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        if want(&v) {
            return v;
        }
    }
}

#[test]
fn presence_is_counted_shown_and_published_as_it_changes() {
    if !have("nginx") {
        return;
    }
    let secret = "presence-test-key-0123456789abcdef";
    let config = format!(
        "[[route]]\npath = \"/status\"\ntype = \"status\"\n\
         [[route]]\npath = \"/metrics\"\ntype = \"metrics\"\n\
         [[route]]\npath = \"/events\"\ntype = \"topics\"\nsubscriber_jwt_key = \"{secret}\"\n\
         presence_topic = \"presence\"\npresence_users = true\n"
    );
    let Some((daemon, nginx)) = daemon_behind_nginx(&config) else {
        return;
    };
    let open = |user: &str, query: &str| {
        let claims = serde_json::json!({"sub": user, "mercure": {"subscribe": ["*"]}});
        let token = jwt_token("HS256", secret, claims);
        let auth = format!("Bearer {token}");
        let s = HttpStream::open(
            nginx.port,
            "GET",
            query,
            &[("Authorization", auth.as_str())],
        );
        assert_eq!(s.status, 200);
        s
    };
    let mut watcher = open("admin", "/events?topic=presence");
    let alice = open("alice", "/events?topic=chat&topic=news");
    let bob = open("bob", "/events?topic=chat");
    let both = event_where(&mut watcher, |v| {
        v["topic"] == "chat" && v["subscribers"] == 2
    });
    assert_eq!(both["users"], serde_json::json!(["alice", "bob"]));
    let status: serde_json::Value = serde_json::from_str(&daemon.status()).unwrap();
    let board = &status["presence"]["/events"];
    assert_eq!(board["by_topic"]["chat"]["subscribers"], 2, "{status}");
    assert_eq!(
        board["by_topic"]["news"]["users"],
        serde_json::json!(["alice"])
    );
    assert_eq!(board["topics"], 3, "chat, news and the watcher's: {status}");
    drop(bob);
    let one = event_where(&mut watcher, |v| {
        v["topic"] == "chat" && v["subscribers"] == 1
    });
    assert_eq!(one["users"], serde_json::json!(["alice"]));
    let metrics = {
        let mut c = FcgiClient::connect(&daemon.socket);
        c.send(&get_request(1, "/metrics", false, &[]));
        String::from_utf8(c.read_response(1).0).unwrap()
    };
    assert!(
        metrics.contains("fastsse_presence_subscribers{route=\"/events\",topic=\"chat\"} 1"),
        "{metrics}"
    );
    drop(alice);
    event_where(&mut watcher, |v| {
        v["topic"] == "news" && v["subscribers"] == 0
    });
}

#[test]
fn a_reload_that_sets_presence_topic_publishes_from_then_on() {
    let config = "[[route]]\npath = \"/status\"\ntype = \"status\"\n\
                  [[route]]\npath = \"/events\"\ntype = \"topics\"\npresence = true\n";
    let Some((daemon, nginx)) = daemon_behind_nginx(config) else {
        return;
    };
    let mut watcher = HttpStream::open(nginx.port, "GET", "/events?topic=presence", &[]);
    let alice = HttpStream::open(nginx.port, "GET", "/events?topic=chat", &[]);
    assert_eq!((watcher.status, alice.status), (200, 200));
    let path = daemon.dir.path("fastsse.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("presence = true\n", "presence_topic = \"presence\"\n"),
    )
    .unwrap();
    daemon.signal("HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        daemon.log().contains("SIGHUP: reloaded")
    });
    // The counts kept through the reload; the changes from then on are published.
    let bob = HttpStream::open(nginx.port, "GET", "/events?topic=chat", &[]);
    assert_eq!(bob.status, 200);
    event_where(&mut watcher, |v| {
        v["topic"] == "chat" && v["subscribers"] == 2
    });
    drop((alice, bob));
}

/// The PHP block of docs/hooks.md, as written.
fn documented_php() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hooks.md")).unwrap();
    let after = doc
        .split("<!-- hooks-php -->")
        .nth(1)
        .expect("the marked PHP block");
    let block = after.split("```php\n").nth(1).unwrap();
    block.split("\n```").next().unwrap().to_string()
}

#[test]
fn the_php_of_docs_hooks_md_works_as_written() {
    let Some(php) = PhpFpm::start_with(&documented_php()) else {
        return;
    };
    let config = hooked_config(&php, "hook_secret = \"change-me\"\nhook_publish = true\n");
    let Some((mut daemon, nginx)) = daemon_behind_nginx(&config) else {
        return;
    };
    let log = php.dir.path("presence.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let a = HttpStream::open(nginx.port, "GET", "/events?topic=chat", &[]);
    assert_eq!(a.status, 200);
    let b = HttpStream::open(nginx.port, "GET", "/events?topic=news&topic=chat", &[]);
    wait_for("two joins", Duration::from_secs(10), || {
        read().matches("joined").count() == 2
    });
    drop(a);
    wait_for("a leave", Duration::from_secs(10), || {
        read().contains("left chat (browser_left)")
    });
    daemon.restart("KILL");
    drop(b);
    wait_for(
        "the dead process's stream left",
        Duration::from_secs(20),
        || read().contains("left news, chat (process_died)"),
    );
    let (status, body) = post_event(nginx.port, "chat", "hi all");
    assert_eq!(status, 200, "{body}");
    wait_for("the publication", Duration::from_secs(10), || {
        read().contains("someone said \"hi all\" on chat")
    });
    let text = read();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("someone joined news, chat"), "{text}");
    // The ids it keeps: five calls, each once.
    let seen = std::fs::read_to_string(php.dir.path("hooks-seen.txt")).unwrap();
    assert_eq!(seen.lines().filter(|l| !l.is_empty()).count(), 5, "{seen}");
    // A wrong secret is refused by the script, so fastsse keeps the call and tries again.
    drop(nginx);
    drop(daemon);
    let wrong = hooked_config(&php, "hook_secret = \"not-it\"\n");
    let Some((daemon, nginx)) = daemon_behind_nginx(&wrong) else {
        return;
    };
    drop(HttpStream::open(nginx.port, "GET", "/events?topic=x", &[]));
    wait_for("retries", Duration::from_secs(10), || {
        number_after(&daemon.status(), "failed_attempts") >= 1
    });
    let status = daemon.status();
    assert!(number_after(&status, "pending") >= 1, "{status}");
    assert!(status.contains("\"target\":\"failing\""), "{status}");
    assert_eq!(read().lines().count(), 5);
    assert!(
        daemon.log().contains("the application answered 401"),
        "{}",
        daemon.log()
    );
}

/// POSTs a publication of `data` to `topic` through nginx: the status and the body.
fn post_event(port: u16, topic: &str, data: &str) -> (u16, String) {
    let body = form_body(&[("topic", topic), ("data", data)]);
    let h = [("Content-Type", "application/x-www-form-urlencoded")];
    let mut s = HttpStream::send(port, "POST", "/events", &h, body.as_bytes());
    let answer = s.rest();
    (s.status, answer)
}

#[test]
fn publish_hooks_reach_php_fpm_at_least_once_and_a_full_queue_refuses_the_publish() {
    let Some(mut php) = PhpFpm::start() else {
        return;
    };
    let extra = "hook_publish = true\nhook_queue_bytes = 2000\n";
    let Some((mut daemon, nginx)) = daemon_behind_nginx(&hooked_config(&php, extra)) else {
        return;
    };
    let (status, first) = post_event(nginx.port, "chat/1", "hello");
    assert_eq!(status, 200, "{first}");
    let publishes = |php: &PhpFpm| -> Vec<serde_json::Value> {
        php.calls()
            .into_iter()
            .filter(|c| c["hook"] == "publish")
            .collect()
    };
    wait_for("the publish call", Duration::from_secs(10), || {
        publishes(&php).len() == 1
    });
    let call = &publishes(&php)[0];
    assert_eq!(field(call, "data"), "hello", "{call}");
    assert_eq!(field(call, "event_id"), first.trim(), "{call}");
    assert_eq!(call["body"]["topics"][0], "chat/1", "{call}");
    assert_eq!(field(call, "private"), "0", "{call}");
    // The application is down: a publication is stored and its call waits; one that would
    // overflow hook_queue_bytes is refused, not stored.
    php.stop();
    let big = "x".repeat(900);
    let (status, body) = post_event(nginx.port, "chat/1", &big);
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_event(nginx.port, "chat/1", &format!("{big}-refused"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("hook queue is full"), "{body}");
    // fastsse is killed before the call is made; the next process makes it.
    daemon.restart("KILL");
    php.restart();
    wait_for(
        "the waiting call after kill -9",
        Duration::from_secs(20),
        || publishes(&php).len() >= 2,
    );
    let calls = publishes(&php);
    let mut ids: Vec<&str> = calls.iter().map(|c| field(c, "id")).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2, "{calls:?}");
    assert_eq!(field(&calls[1], "data"), big);
    assert!(!calls.iter().any(|c| field(c, "data").ends_with("-refused")));
}
