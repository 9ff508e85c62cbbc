//! The journal under faults, through the daemon's FastCGI socket: a full disk (a small tmpfs
//! the test mounts) answers each publisher truthfully; flipped bytes (chosen by the test) in the
//! newest and in an older segment are skipped, logged, never cause an id to be reissued, and give
//! resuming clients a reset; a data directory deleted and recreated under the daemon is noticed;
//! a held journal lock answers 503 after `lock_timeout`; history is bounded in bytes.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn config(extra_journal: &str, extra_route: &str) -> String {
    format!(
        r#"
[server]
max_body_bytes = 300000

[stream]
retry = "1s"
heartbeat = "1s"

[journal]
fsync = "batch"
{extra_journal}

[[route]]
path = "/events"
type = "topics"
{extra_route}

[[route]]
path = "/status"
type = "status"
"#
    )
}

/// One SSE event as (id, event name, data).
type Ev = (String, String, String);

fn parse_events(text: &str) -> Vec<Ev> {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or(text);
    body.split("\n\n")
        .map(parse_block)
        .filter(|(id, _, _)| !id.is_empty())
        .collect()
}

/// Subscribes to `topic` resuming after `last` and reads until `needle` appears.
fn resume(socket: &std::path::Path, topic: &str, last: u64, needle: &str) -> Vec<Ev> {
    let mut c = FcgiClient::connect(socket);
    let id = last.to_string();
    c.send(&get_request(
        1,
        &format!("/events?topic={topic}"),
        false,
        &[
            ("QUERY_STRING", &format!("topic={topic}")),
            ("HTTP_LAST_EVENT_ID", &id),
        ],
    ));
    parse_events(&c.read_stdout_until(1, needle))
}

fn publish_ok(socket: &std::path::Path, data: &str) -> u64 {
    let (status, body) = fcgi_publish(socket, "t", data);
    assert_eq!(status, 200, "{body}");
    body.trim().parse().unwrap()
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Unmounts a tmpfs when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_answers_each_publisher_with_the_truth() {
    if !is_root() {
        assert!(
            std::env::var_os("FASTSSE_REQUIRE_PEERS").is_none(),
            "mounting a tmpfs needs root"
        );
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    let mut mount = None;
    let d = Daemon::start_prepared(&config("", ""), None, |dir| {
        let data = dir.path("data");
        std::fs::create_dir_all(&data).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&data)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs");
        mount = Some(Mount(data));
    });
    let _mount = mount;
    // 48 concurrent publishers of 3-7 KB events until the 1 MiB disk has refused each a few
    // times.
    let results: Vec<(String, u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..48)
            .map(|p| {
                let socket = d.socket.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut refused = 0;
                    for i in 0..200 {
                        let data =
                            format!("p{p}-{i}-{}", "x".repeat(3000 + (p * 97 + i * 31) % 4000));
                        let (status, body) = fcgi_publish(&socket, "t", &data);
                        out.push((data, status, body));
                        if status != 200 {
                            refused += 1;
                            if refused >= 3 {
                                break;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let stored: Vec<(u64, &str)> = results
        .iter()
        .filter(|r| r.1 == 200)
        .map(|r| (r.2.trim().parse().unwrap(), r.0.as_str()))
        .collect();
    let refused: Vec<&(String, u16, String)> = results.iter().filter(|r| r.1 != 200).collect();
    assert!(
        !stored.is_empty() && !refused.is_empty(),
        "the disk never filled"
    );
    for (_, status, body) in &refused {
        assert!(matches!(status, 500 | 503), "{status} {body}");
        assert!(body.starts_with("not stored:"), "{body}");
        assert!(body.contains("(request "), "no request id in {body:?}");
        assert!(
            !body.contains('/') && !body.contains("os error"),
            "a path or OS error reached the client: {body:?}"
        );
    }
    // Every acknowledged event is in the journal with its id, and no refused one is: after a
    // restart, a replay from the start holds exactly the acknowledged events.
    let mut d = d;
    d.restart("TERM");
    let last = stored.iter().map(|s| s.0).max().unwrap();
    let got = resume(&d.socket, "t", 0, &format!("id: {last}\n"));
    let got: Vec<(u64, &str)> = got
        .iter()
        .map(|(id, _, data)| (id.parse().unwrap(), data.as_str()))
        .collect();
    let mut want = stored.clone();
    want.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "replayed {} of {} acknowledged",
        got.len(),
        want.len()
    );
    assert_eq!(got, want, "replay differs from the acknowledged events");
    for (data, _, _) in &refused {
        assert!(
            !got.iter().any(|g| g.1 == data),
            "a refused event was stored"
        );
    }
    let log = d.log();
    assert!(log.contains("not stored") && log.contains("req="), "{log}");
}

#[test]
fn a_flipped_byte_in_the_newest_segment_skips_one_event_and_reissues_no_id() {
    let mut d = Daemon::start(&config("", ""));
    let ids: Vec<u64> = (0..40)
        .map(|i| publish_ok(&d.socket, &format!("e{i}")))
        .collect();
    d.restart("TERM");
    let seg = segments(&d.data_dir().join("events")).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    flip_byte(&seg, len / 2);
    d.restart("TERM");
    assert!(d.log().contains("damaged bytes"), "{}", d.log());
    // The newest id is still known: a client holding it resumes without a reset.
    let next = publish_ok(&d.socket, "after");
    assert!(next > ids[39], "id {next} reissued (had {})", ids[39]);
    let got = resume(&d.socket, "t", ids[39], "data: after\n");
    assert_eq!(got, vec![(next.to_string(), String::new(), "after".into())]);
    // A client resuming from before the damage is told, not silently short-changed.
    let got = resume(&d.socket, "t", ids[0], "fastsse-reset");
    assert!(got[0].2.contains("\"reason\":\"lost\""), "{got:?}");
    // The writer's open, the history load and the resuming reader all passed over the damage:
    // it is logged once.
    assert_eq!(d.log().matches("damaged bytes").count(), 1, "{}", d.log());
    // The default skips damage; `refuse` refuses to start, naming the segment.
    std::fs::write(
        d.dir.path("fastsse.toml"),
        config("on_corruption = \"refuse\"", ""),
    )
    .unwrap();
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(5));
    let out = Command::new(fastsse_bin())
        .args(["serve", "--config"])
        .arg(d.dir.path("fastsse.toml"))
        .arg("--listen")
        .arg(format!("unix:{}", d.dir.path("other.sock").display()))
        .arg("--data-dir")
        .arg(d.data_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("damaged at offset"),
        "{err}"
    );
    // check-config refuses what serve refuses.
    let check = |config: &std::path::Path| {
        Command::new(fastsse_bin())
            .arg("check-config")
            .arg(config)
            .arg("--data-dir")
            .arg(d.data_dir())
            .output()
            .unwrap()
    };
    let out = check(&d.dir.path("fastsse.toml"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("damaged at offset"),
        "{err}"
    );
    std::fs::write(d.dir.path("skip.toml"), config("", "")).unwrap();
    let out = check(&d.dir.path("skip.toml"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("1 damaged regions"),
        "{said}"
    );
}

#[test]
fn damage_in_an_older_segment_is_skipped_and_resumers_get_a_reset() {
    let mut d = Daemon::start(&config("segment_bytes = 1024", ""));
    let ids: Vec<u64> = (0..60)
        .map(|i| publish_ok(&d.socket, &format!("event {i} {}", "y".repeat(40))))
        .collect();
    d.restart("TERM");
    let segs = segments(&d.data_dir().join("events"));
    assert!(segs.len() >= 4, "{segs:?}");
    let len = std::fs::metadata(&segs[1]).unwrap().len() as usize;
    flip_byte(&segs[1], len / 3);
    d.restart("TERM");
    let log = d.log();
    assert!(
        log.contains("damaged bytes"),
        "no log line for the damage: {log}"
    );
    // Everything after the damaged record is still replayed...
    let first = resume(&d.socket, "t", 0, &format!("id: {}\n", ids[59]));
    assert_eq!(first[0].1, "fastsse-reset", "{first:?}");
    assert!(first[0].2.contains("\"reason\":\"lost\""), "{first:?}");
    // ...to a client resuming after the hole: all of the later segments' events.
    let hole_end = ids.len() / 2;
    let got = resume(&d.socket, "t", ids[hole_end], &format!("id: {}\n", ids[59]));
    let want: Vec<String> = ids[hole_end + 1..].iter().map(|i| i.to_string()).collect();
    assert_eq!(got.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), want);
}

#[test]
fn a_data_dir_deleted_and_recreated_while_running_is_noticed() {
    let d = Daemon::start(&config("", ""));
    let before: Vec<u64> = (0..3)
        .map(|i| publish_ok(&d.socket, &format!("b{i}")))
        .collect();
    // A live subscriber keeps its stream across the replacement.
    let mut live = fcgi_subscribe(&d.socket, "t");
    let journal = d.data_dir().join("events");
    std::fs::remove_dir_all(&journal).unwrap();
    std::fs::create_dir_all(&journal).unwrap();
    // A publish through the daemon: stored in the new directory and delivered.
    let a = publish_ok(&d.socket, "after the wipe");
    assert!(a > before[2], "id {a} reissued");
    live.read_stdout_until(1, "data: after the wipe\n");
    // `fastsse publish` from another process continues the ids too, and is delivered.
    let out = Command::new(fastsse_bin())
        .args(["publish", "--config"])
        .arg(d.dir.path("fastsse.toml"))
        .arg("--data-dir")
        .arg(d.data_dir())
        .args(["--topic", "t", "from the cli"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(cli > a, "the CLI reused id {cli}");
    live.read_stdout_until(1, "data: from the cli\n");
    assert!(d.log().contains("deleted or replaced"), "{}", d.log());
    // Deleted and not recreated: the daemon recreates it and keeps storing.
    std::fs::remove_dir_all(&journal).unwrap();
    let b = publish_ok(&d.socket, "after the delete");
    assert!(b > cli);
    live.read_stdout_until(1, "data: after the delete\n");
}

#[test]
fn a_held_journal_lock_answers_503_after_lock_timeout_and_stores_nothing() {
    let d = Daemon::start(&config("lock_timeout = \"500ms\"", ""));
    let first = publish_ok(&d.socket, "first");
    // A stopped `fastsse publish` holding the lock, played by flock(1).
    let mut holder = Command::new("flock")
        .arg("--close")
        .arg(d.data_dir().join("events/journal.lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    wait_for("flock to hold the lock", Duration::from_secs(10), || {
        !Command::new("flock")
            .args(["-n"])
            .arg(d.data_dir().join("events/journal.lock"))
            .arg("true")
            .status()
            .unwrap()
            .success()
    });
    let t = Instant::now();
    let (status, body) = fcgi_publish(&d.socket, "t", "while locked");
    let took = t.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("locked by another process"), "{body}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    let _ = holder.kill();
    let _ = holder.wait();
    let next = publish_ok(&d.socket, "after");
    let got = resume(&d.socket, "t", first - 1, "data: after\n");
    let data: Vec<&str> = got.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(data, vec!["first", "after"]);
    assert!(next > first);
}

#[test]
fn history_is_bounded_in_bytes() {
    let d = Daemon::start(&config("", "history_bytes = 1048576"));
    let big = "z".repeat(250_000);
    let ids: Vec<u64> = (0..20).map(|_| publish_ok(&d.socket, &big)).collect();
    let doc = d.status();
    let at = doc.find("\"/events\"").unwrap();
    let retained_bytes = number_after(&doc[at..], "retained_bytes");
    let retained = number_after(&doc[at..], "retained");
    assert!(retained_bytes <= 1 << 20, "{doc}");
    assert!((1..=4).contains(&retained), "{doc}");
    // A client behind what is retained gets `expired`, not a partial replay.
    let got = resume(&d.socket, "t", ids[2], "fastsse-reset");
    assert!(got[0].2.contains("\"reason\":\"expired\""), "{got:?}");
    assert!(rss_kib(d.pid()) < 64 * 1024, "RSS {} KiB", rss_kib(d.pid()));
}

#[test]
fn a_last_event_id_that_is_not_utf8_gets_the_invalid_reset() {
    let d = Daemon::start(&config("", ""));
    publish_ok(&d.socket, "one");
    // PARAMS by hand: a Last-Event-ID of raw bytes 0xFF 0xFE '1'.
    let name = b"HTTP_LAST_EVENT_ID";
    let value = [0xffu8, 0xfe, b'1'];
    let mut kv = pairs(&[
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/events?topic=t"),
        ("QUERY_STRING", "topic=t"),
    ]);
    kv.extend([name.len() as u8, value.len() as u8]);
    kv.extend_from_slice(name);
    kv.extend_from_slice(&value);
    let mut bytes = begin(1, 1, 0);
    bytes.extend(record(PARAMS, 1, &kv));
    bytes.extend(record(PARAMS, 1, b""));
    bytes.extend(record(STDIN, 1, b""));
    let mut c = FcgiClient::connect(&d.socket);
    c.send(&bytes);
    let got = parse_events(&c.read_stdout_until(1, "}\n\n"));
    assert_eq!(got[0].1, "fastsse-reset", "{got:?}");
    assert!(got[0].2.contains("\"reason\":\"invalid\""), "{got:?}");
}
