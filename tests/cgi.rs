//! fastsse as a CGI program, run the way a web server runs it (environment, stdin, stdout):
//! SIGTERM and a client that left (EPIPE) end the process within a second, request bodies and
//! publishing work, and the maximum stream lifetime ends a stream cleanly so the reconnect
//! with Last-Event-ID loses nothing; `[cgi] hold` bounds a request's process, down to polling.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = r#"
[stream]
retry = "1s"
heartbeat = "1s"
max_lifetime = "1500ms"

[server]
max_body_bytes = 100

[[route]]
path = "/clock"
type = "clock"
interval = "200ms"

[[route]]
path = "/events"
type = "topics"
"#;

struct Cgi {
    dir: TempDir,
}

impl Cgi {
    fn new() -> Cgi {
        Cgi::with_config(CONFIG)
    }

    fn with_config(config: &str) -> Cgi {
        let dir = TempDir::new("cgi");
        std::fs::write(dir.path("fastsse.toml"), config).unwrap();
        Cgi { dir }
    }

    fn command(&self, method: &str, path_info: &str, query: &str) -> Command {
        let mut c = Command::new(fastsse_bin());
        c.current_dir(&self.dir.0)
            .env_clear()
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path_info)
            .env("QUERY_STRING", query)
            .env("SCRIPT_NAME", "/cgi-bin/events.cgi")
            .env("FASTSSE_CONFIG", self.dir.path("fastsse.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Starts a streaming request and reads its header block.
    fn open(
        &self,
        path_info: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> (Child, BufReader<ChildStdout>) {
        let mut c = self.command("GET", path_info, query);
        if let Some(id) = last_event_id {
            c.env("HTTP_LAST_EVENT_ID", id);
        }
        let mut child = c.stdin(Stdio::null()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(
                out.read_line(&mut head).unwrap() > 0,
                "no header block: {head:?}"
            );
        }
        assert!(
            head.starts_with("Status: 200 OK\r\nContent-Type: text/event-stream\r\n"),
            "{head}"
        );
        (child, out)
    }

    /// Publishes `data` to topic `t`; the id it was stored as.
    fn publish(&self, data: &[u8]) -> u64 {
        let answer = self.post("topic=t", data);
        let id = answer.rsplit("\r\n\r\n").next().unwrap().trim();
        id.parse()
            .unwrap_or_else(|_| panic!("not an id: {answer:?}"))
    }

    fn post(&self, query: &str, body: &[u8]) -> String {
        let mut child = self
            .command("POST", "/events", query)
            .env("CONTENT_TYPE", "text/plain")
            .env("CONTENT_LENGTH", body.len().to_string())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }
}

fn block(out: &mut BufReader<ChildStdout>) -> String {
    let mut b = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 || line == "\n" {
            return b;
        }
        b.push_str(&line);
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Duration {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < within,
            "CGI process still running after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn sigterm_ends_the_cgi_process_within_a_second() {
    let cgi = Cgi::new();
    let (mut child, mut out) = cgi.open("/clock", "", None);
    assert_eq!(block(&mut out), "retry: 1000\n");
    assert!(block(&mut out).starts_with("id: "));
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let took = wait_exit(&mut child, Duration::from_secs(1));
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    // The retry hint: `retry` plus a share of drain_period, so a restart's crowd spreads out.
    assert!(
        rest.ends_with("\n\n") && spread_retry(last_retry(&rest), 1000),
        "{rest:?}"
    );
    assert!(child.wait().unwrap().success(), "after {took:?}");
}

#[test]
fn a_client_that_left_ends_the_cgi_process() {
    let cgi = Cgi::new();
    let (mut child, mut out) = cgi.open("/clock", "", None);
    block(&mut out);
    block(&mut out);
    // The web server closes the pipe when the browser leaves: the next write fails (EPIPE).
    drop(out);
    let took = wait_exit(&mut child, Duration::from_secs(1));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(took < Duration::from_secs(1));
}

#[test]
fn publishing_and_body_limits_over_cgi() {
    let cgi = Cgi::new();
    let ok = cgi.post("topic=a", b"hello");
    assert!(
        ok.starts_with("Status: 200 OK\r\n") && ok.ends_with("\r\n\r\n1\n"),
        "{ok}"
    );
    let big = cgi.post("topic=a", &[b'x'; 101]);
    assert!(
        big.starts_with("Status: 413 ") && big.contains("max_body_bytes"),
        "{big}"
    );
    let none = cgi.post("", b"no topic");
    assert!(
        none.starts_with("Status: 400 ") && none.contains("missing topic"),
        "{none}"
    );
    // An unknown route, and the 405 for a stream route.
    let out = cgi
        .command("GET", "/nope", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Status: 404 "));
}

#[test]
fn max_lifetime_ends_the_stream_and_the_reconnect_loses_nothing() {
    let cgi = Cgi::new();
    let (mut child, mut out) = cgi.open("/events", "topic=t", None);
    assert_eq!(block(&mut out), "retry: 1000\n");
    // Nothing published yet: the stream's resume point is the start of the history.
    assert_eq!(block(&mut out), "id: 0\n");
    let first = cgi.post("topic=t", b"one");
    let first_id = first.rsplit("\r\n\r\n").next().unwrap().trim().to_string();
    let ev = block(&mut out);
    assert_eq!(ev, format!("id: {first_id}\ndata: one\n"));
    // The lifetime (1.5 s) ends the stream with a retry hint; the process exits.
    let start = Instant::now();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.ends_with("retry: 1000\n\n"), "{rest:?}");
    wait_exit(&mut child, Duration::from_secs(1));
    assert!(start.elapsed() < Duration::from_secs(3));
    // Published while no subscriber was connected.
    cgi.post("topic=t", b"two");
    cgi.post("topic=t", b"three");
    let (mut child, mut out) = cgi.open("/events", "topic=t", Some(&first_id));
    block(&mut out);
    assert!(block(&mut out).ends_with("data: two\n"));
    assert!(block(&mut out).ends_with("data: three\n"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_journal_that_cannot_be_opened_takes_only_its_own_route_down() {
    let cgi = Cgi::new();
    // A data directory that cannot be created, even by root: under a regular file.
    std::fs::write(
        cgi.dir.path("fastsse.toml"),
        format!("{CONFIG}\n[[route]]\npath = \"/status\"\ntype = \"status\"\n").replacen(
            "[server]",
            "[journal]\ndir = \"/etc/hostname/data\"\n\n[server]",
            1,
        ),
    )
    .unwrap();
    let out = cgi.command("GET", "/status", "").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Status: 200 OK"), "{text}");
    let out = cgi.command("GET", "/events", "topic=a").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Status: 503"), "{text}");
    assert!(text.contains("/events is unavailable"), "{text}");
    assert!(
        !text.contains("/etc/hostname"),
        "a path reached the client: {text}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("/etc/hostname"),
        "the log names the path: {log}"
    );
}

#[test]
fn a_script_folder_the_web_server_user_cannot_write_keeps_its_journal_in_its_home() {
    if !is_root() {
        return;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "www-data"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    // Debian's /usr/lib/cgi-bin: the folder belongs to root, the script runs as www-data, and
    // there is no config beside it (the embedded default: `fastsse-data` in the folder).
    let cgi = Cgi::new();
    let folder = cgi.dir.path("cgi-bin");
    let home = cgi.dir.path("home");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(
        &cgi.dir.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let _ = Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(&home)
        .status();
    let spawn = |method: &str, path: &str, query: &str, extra: &[(&str, &str)], body: &[u8]| {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(fastsse_bin());
        c.current_dir(&folder)
            .env_clear()
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("SCRIPT_NAME", "/cgi-bin/events.cgi")
            .env("HOME", &home)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("CONTENT_TYPE", "text/plain")
            .env("RUST_LOG", "info")
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        child
    };
    let text = |out: std::process::Output| {
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let post = spawn("POST", "/events", "topic=news", &[], b"kept");
    let (published, log) = text(post.wait_with_output().unwrap());
    assert!(published.starts_with("Status: 200"), "{published}\n{log}");
    assert!(log.contains("journals in"), "{log}");
    assert!(!folder.join("fastsse-data").exists());
    // A later request (another process) finds the event: the journal is where the first put it.
    let get = spawn(
        "GET",
        "/events",
        "topic=news",
        &[("HTTP_LAST_EVENT_ID", "0")],
        b"",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill").arg(get.id().to_string()).status();
    let (replayed, log) = text(get.wait_with_output().unwrap());
    assert!(replayed.contains("data: kept"), "{replayed}\n{log}");
    let journal = home.join(".local/state/fastsse");
    assert!(journal.is_dir(), "no journal under {}", journal.display());
}

/// The `retry:` value and the ids of the events in a whole response body.
fn ids_and_final_retry(body: &str) -> (Vec<u64>, u64) {
    let mut ids = Vec::new();
    let mut retry = 0;
    for block in body.split("\n\n") {
        if block.contains("data: ") {
            let id = block.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
            ids.push(id.parse().unwrap());
        } else if let Some(ms) = block.strip_prefix("retry: ") {
            retry = ms.trim().parse().unwrap();
        }
    }
    (ids, retry)
}

const POLLING: &str = r#"
[stream]
retry = "1s"

[cgi]
hold = "0s"

[journal]
# Small segments: the polls below span several segment files.
segment_bytes = 2000

[[route]]
path = "/events"
type = "topics"
"#;

/// One poll: the whole response, and how long the process took.
fn poll(cgi: &Cgi, last_event_id: Option<&str>) -> (String, Duration) {
    let mut c = cgi.command("GET", "/events", "topic=t");
    if let Some(id) = last_event_id {
        c.env("HTTP_LAST_EVENT_ID", id);
    }
    let start = Instant::now();
    let out = c.stdin(Stdio::null()).output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    assert!(head.starts_with("Status: 200 OK\r\n"), "{head}");
    (body.to_string(), took)
}

#[test]
fn hold_0s_polls_answer_every_event_after_the_last_id_exactly_once_across_segment_rolls() {
    let cgi = Cgi::with_config(POLLING);
    // A first visit, before anything was published: no event, the resume point `0`, and a
    // jittered retry between 1 s and 1.25 s.
    let (body, took) = poll(&cgi, None);
    assert!(body.starts_with("retry: 1000\n\nid: 0\n\n"), "{body:?}");
    let (ids, retry) = ids_and_final_retry(&body);
    assert!(ids.is_empty());
    assert!((1000..=1250).contains(&retry), "{retry}");
    assert!(took < Duration::from_secs(2), "a poll took {took:?}");
    let mut last = "0".to_string();
    let mut seen = Vec::new();
    let mut published = Vec::new();
    let mut retries = std::collections::BTreeSet::new();
    // 30 rounds of publishing 0-3 events of 200 bytes, then a poll from the last id; the
    // journal rolls over a segment every ~8 events.
    for round in 0..30u32 {
        for k in 0..(round % 4) {
            let data = format!("{round}-{k}-{}", "x".repeat(190));
            published.push(cgi.publish(data.as_bytes()));
        }
        let (body, _) = poll(&cgi, Some(&last));
        let (ids, retry) = ids_and_final_retry(&body);
        assert!(!body.contains("fastsse-reset"), "{body}");
        retries.insert(retry);
        assert!((1000..=1250).contains(&retry), "{retry}");
        if let Some(id) = ids.last() {
            last = id.to_string();
        }
        seen.extend(ids);
    }
    assert_eq!(seen, published, "every event once, in order");
    let segments = std::fs::read_dir(cgi.dir.path("fastsse-data/events"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(segments > 2, "the journal rolled ({segments} files)");
    assert!(retries.len() > 1, "the retry is jittered: {retries:?}");
    // A poll from the newest id answers nothing but the retry.
    let (body, _) = poll(&cgi, Some(&last));
    assert_eq!(ids_and_final_retry(&body).0, Vec::<u64>::new());
    assert!(!body.contains("id: "), "{body:?}");
}

#[test]
fn a_first_poll_marks_the_newest_id_so_the_next_one_misses_nothing() {
    let cgi = Cgi::with_config(POLLING);
    cgi.post("topic=t", b"before");
    let newest = cgi.publish(b"before too");
    // No Last-Event-ID: nothing old is replayed, but the browser learns where it stands.
    let (body, _) = poll(&cgi, None);
    assert!(body.contains(&format!("\n\nid: {newest}\n\n")), "{body:?}");
    assert!(!body.contains("data: "), "{body:?}");
    cgi.post("topic=t", b"between polls");
    let (body, _) = poll(&cgi, Some(&newest.to_string()));
    assert!(body.contains("data: between polls\n"), "{body:?}");
}

#[test]
fn hold_ends_a_stream_after_the_hold_with_what_is_due() {
    let cgi = Cgi::with_config(&POLLING.replace("hold = \"0s\"", "hold = \"1500ms\""));
    let start = Instant::now();
    let (mut child, mut out) = cgi.open("/events", "topic=t", None);
    assert_eq!(block(&mut out), "retry: 1000\n");
    assert_eq!(block(&mut out), "id: 0\n");
    cgi.post("topic=t", b"live");
    assert!(block(&mut out).ends_with("data: live\n"));
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let retry: u64 = rest
        .trim()
        .strip_prefix("retry: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1000..=1250).contains(&retry), "{rest:?}");
    wait_exit(&mut child, Duration::from_secs(1));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1400), "ended after {took:?}");
}

#[test]
fn check_config_refuses_a_hold_that_is_not_a_duration() {
    let cgi = Cgi::with_config("[cgi]\nhold = \"a while\"\n");
    let out = Command::new(fastsse_bin())
        .args(["check-config"])
        .arg(cgi.dir.path("fastsse.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fastsse.toml:2: key `hold`"), "{err}");
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn a_clock_poll_tells_the_time_once() {
    let cgi = Cgi::with_config(&POLLING.replace(
        "[[route]]",
        "[[route]]\npath = \"/clock\"\ntype = \"clock\"\ninterval = \"1s\"\n\n[[route]]",
    ));
    let start = Instant::now();
    let out = cgi
        .command("GET", "/clock", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body.matches("data: ").count(), 1, "{body:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}
