//! Topics over Redis Streams (`[journal] backend = "redis"`), with Debian's redis-server started
//! on its own port and directory: two instances behind one nginx, an instance killed mid-stream,
//! Redis restarted (AOF on) mid-run, and a subscriber hopping between three instances.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A redis-server of the test's own, with append-only persistence in a temp dir.
struct Redis {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        if !have("redis-server") {
            return None;
        }
        let dir = TempDir::new("redis");
        let port = free_port();
        let child = Redis::spawn(&dir, port);
        let r = Redis { child, port, dir };
        r.wait_up();
        Some(r)
    }

    fn spawn(dir: &TempDir, port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server")
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf).is_ok_and(|n| &buf[..n] == b"+PONG\r\n")
    }

    fn wait_up(&self) {
        wait_for("redis-server", Duration::from_secs(10), || self.ping());
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.child = Redis::spawn(&self.dir, self.port);
        self.wait_up();
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn instance(redis: &Redis) -> Daemon {
    Daemon::start(&format!(
        "[stream]\nretry = \"500ms\"\nheartbeat = \"1s\"\n\n\
         [journal]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"test:\"\n\n\
         [[route]]\npath = \"/events\"\ntype = \"topics\"\n\n\
         [[route]]\npath = \"/status\"\ntype = \"status\"\n",
        redis.url()
    ))
}

/// nginx in front of `instances` with the shipped cluster upstream.
fn cluster(instances: &[&Daemon]) -> Nginx {
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/nginx-cluster.conf"
    ))
    .unwrap();
    let servers: String = instances
        .iter()
        .map(|d| format!("    server unix:{};\n", d.socket.display()))
        .collect();
    let conf = conf.replace("    server unix:/run/fastsse/fastsse.sock;\n", &servers);
    Nginx::start("fastsse_cluster", &conf)
}

/// `fastsse bench sse` through nginx (publishing at 20/s for `seconds`), calling `during`
/// with the time elapsed every 100 ms; returns its JSON report.
fn bench(port: u16, n: usize, seconds: u64, mut during: impl FnMut(Duration)) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}/events?topic=cluster");
    let mut child = Command::new(fastsse_bin())
        .args([
            "bench",
            "sse",
            "--json",
            "--quiet",
            "--url",
            &url,
            "--publish-url",
            &url,
        ])
        .args(["-n", &n.to_string(), "--rate", "20"])
        .args(["--duration", &format!("{seconds}s"), "--drain", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        during(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn two_instances_behind_one_nginx_deliver_every_event_once_in_order() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (instance(&redis), instance(&redis));
    let n = cluster(&[&a, &b]);
    let mut spread = (0, 0);
    let report = bench(n.port, 200, 5, |t| {
        if t > Duration::from_secs(3) && spread == (0, 0) {
            spread = (
                a.status_number("active_streams"),
                b.status_number("active_streams"),
            );
        }
    });
    assert!(
        spread.0 > 0 && spread.1 > 0,
        "subscribers not spread: {spread:?}"
    );
    assert_eq!(report["events_lost"], 0, "{report}");
    assert_eq!(report["events_duplicated"], 0, "{report}");
    assert_eq!(report["events_out_of_order"], 0, "{report}");
    assert_eq!(report["publish_failed"], 0, "{report}");
    assert!(report["published"].as_u64().unwrap() >= 60, "{report}");
    // Publishes went through both instances.
    let published = |d: &Daemon| number_after(&d.status(), "published");
    assert!(
        published(&a) > 0 && published(&b) > 0,
        "{} {}",
        a.status(),
        b.status()
    );
}

#[test]
fn an_instance_killed_mid_stream_loses_its_browsers_nothing() {
    let Some(redis) = Redis::start() else { return };
    let (mut a, b) = (instance(&redis), instance(&redis));
    let n = cluster(&[&a, &b]);
    let mut killed = false;
    let report = bench(n.port, 200, 8, |t| {
        if t > Duration::from_secs(4) && !killed {
            killed = true;
            let _ = a.child.kill(); // SIGKILL: no retry hint, no clean end
        }
    });
    assert!(killed);
    assert_eq!(report["events_lost"], 0, "{report}");
    assert_eq!(report["events_duplicated"], 0, "{report}");
    assert_eq!(report["events_out_of_order"], 0, "{report}");
    assert!(report["reconnects"].as_u64().unwrap() > 0, "{report}");
    assert!(
        b.status().contains("active_streams"),
        "the survivor does not serve"
    );
}

/// Reads events from a FastCGI stream until `n` have arrived; returns their (id, data).
fn read_events(c: &mut FcgiClient, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events: {got:?}",
            got.len()
        );
        let Some(rec) = c.read_record() else { break };
        text.push_str(&String::from_utf8_lossy(&rec.content));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (id, _, data) = parse_block(&block);
            if !data.is_empty() {
                got.push((id.parse().unwrap(), data));
            }
        }
    }
    got
}

fn subscribe_after(socket: &std::path::Path, last: Option<u64>) -> FcgiClient {
    let mut c = FcgiClient::connect(socket);
    let last = last.map(|l| l.to_string());
    let mut params = vec![("QUERY_STRING", "topic=t")];
    if let Some(l) = &last {
        params.push(("HTTP_LAST_EVENT_ID", l.as_str()));
    }
    c.send(&get_request(1, "/events?topic=t", false, &params));
    c
}

#[test]
fn a_redis_restart_keeps_acknowledged_events_refuses_publishes_meanwhile_and_loses_nothing() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let d = instance(&redis);
    let mut sub = subscribe_after(&d.socket, None);
    sub.read_stdout_until(1, "retry:");
    let mut acked = Vec::new();
    for i in 0..20 {
        let (status, body) = fcgi_publish(&d.socket, "t", &format!("before {i}"));
        assert_eq!(status, 200, "{body}");
        acked.push((body.trim().parse::<u64>().unwrap(), format!("before {i}")));
    }
    redis.stop();
    // Away: publishes are refused (not stored), subscribers stay connected, /status says so.
    for i in 0..5 {
        let (status, body) = fcgi_publish(&d.socket, "t", &format!("refused {i}"));
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("Redis"), "{body}");
    }
    wait_for("/status to show the outage", Duration::from_secs(5), || {
        d.status().contains("\"failing\"")
    });
    assert_eq!(d.status_number("active_streams"), 1);
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    wait_for("publishing to work again", Duration::from_secs(15), || {
        let (status, body) = fcgi_publish(&d.socket, "t", "after 0");
        if status == 200 {
            acked.push((body.trim().parse().unwrap(), "after 0".into()));
        }
        status == 200
    });
    for i in 1..20 {
        let (status, body) = fcgi_publish(&d.socket, "t", &format!("after {i}"));
        assert_eq!(status, 200, "{body}");
        acked.push((body.trim().parse().unwrap(), format!("after {i}")));
    }
    // The subscriber that stayed connected got every acknowledged event once, in order.
    assert_eq!(read_events(&mut sub, acked.len()), acked);
    // A new subscriber replaying from the start gets exactly the acknowledged events.
    let mut replay = subscribe_after(&d.socket, Some(0));
    assert_eq!(read_events(&mut replay, acked.len()), acked);
    let log = d.log();
    assert_eq!(
        log.matches("retrying").count(),
        2,
        "one log line per outage and thread, not one per retry: {log}"
    );
    assert!(!d.status().contains("\"failing\""));
}

#[test]
fn a_subscriber_hopping_between_three_instances_sees_no_gap() {
    let Some(redis) = Redis::start() else { return };
    let instances = [instance(&redis), instance(&redis), instance(&redis)];
    let sockets: Vec<_> = instances.iter().map(|d| d.socket.clone()).collect();
    let publisher = {
        let sockets = sockets.clone();
        std::thread::spawn(move || {
            let mut acked = BTreeSet::new();
            for i in 0..150 {
                let (status, body) = fcgi_publish(&sockets[i % 3], "t", &format!("e{i}"));
                assert_eq!(status, 200, "{body}");
                acked.insert(body.trim().parse::<u64>().unwrap());
                std::thread::sleep(Duration::from_millis(10));
            }
            acked
        })
    };
    let mut seen = Vec::new();
    let mut last = Some(0);
    let mut hop = 0;
    while seen.len() < 150 {
        let mut c = subscribe_after(&sockets[hop % 3], last);
        let want = (150 - seen.len()).min(7);
        let got = read_events(&mut c, want);
        last = got.last().map(|e| e.0).or(last);
        seen.extend(got.into_iter().map(|e| e.0));
        hop += 1;
    }
    let acked = publisher.join().unwrap();
    assert!(hop > 10, "hopped {hop} times");
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seen:?}"
    );
    assert_eq!(unique, acked);
}

#[test]
fn a_network_blip_between_an_instance_and_redis_loses_and_repeats_nothing() {
    let Some(redis) = Redis::start() else { return };
    let d = instance(&redis);
    let mut sub = subscribe_after(&d.socket, None);
    sub.read_stdout_until(1, "retry:");
    let socket = d.socket.clone();
    let publisher = std::thread::spawn(move || {
        // (id, data) of the stored; data of those whose fate the 503 said is unknown.
        let (mut acked, mut unknown) = (Vec::new(), Vec::new());
        for i in 0..120 {
            let data = format!("e{i}");
            let (status, body) = fcgi_publish(&socket, "t", &data);
            match status {
                200 => acked.push((body.trim().parse::<u64>().unwrap(), data)),
                503 if body.contains("may or may not") => unknown.push(data),
                503 => {}
                other => panic!("{other}: {body}"),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (acked, unknown)
    });
    // Cut every client connection (the instance's appender and reader) three times.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        s.write_all(b"CLIENT KILL TYPE normal SKIPME yes\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    let (acked, unknown) = publisher.join().unwrap();
    assert!(
        acked.len() >= 60,
        "only {} of 120 publishes were stored",
        acked.len()
    );
    // Read up to the last acknowledged event; an event whose 503 said "may or may not be
    // stored" may be among them, nothing else.
    let last = acked.last().unwrap().0;
    let mut got = Vec::new();
    while got.last().is_none_or(|e: &(u64, String)| e.0 < last) {
        got.extend(read_events(&mut sub, 1));
    }
    got.retain(|(_, data)| !unknown.contains(data));
    assert_eq!(got, acked);
    assert_eq!(d.status_number("active_streams"), 1);
}

#[test]
fn the_publish_cli_and_a_cgi_process_use_the_same_redis() {
    let Some(redis) = Redis::start() else { return };
    let d = instance(&redis);
    let mut sub = subscribe_after(&d.socket, None);
    sub.read_stdout_until(1, "retry:");
    // The same config without a listen address: `fastsse publish` writes to Redis itself.
    let dir = TempDir::new("redis-cli");
    let config = dir.path("fastsse.toml");
    std::fs::write(
        &config,
        format!(
            "[journal]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"test:\"\n\n\
             [[route]]\npath = \"/events\"\ntype = \"topics\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let out = Command::new(fastsse_bin())
        .args(["publish", "--config"])
        .arg(&config)
        .args(["--topic", "t", "from the CLI"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(read_events(&mut sub, 1), [(id, "from the CLI".to_string())]);
    assert!(
        std::fs::read_dir(&dir.0).unwrap().count() == 1,
        "publish left files beside the config"
    );
    // A CGI request replays it from Redis.
    let cgi = Command::new(fastsse_bin())
        .current_dir(&dir.0)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("PATH_INFO", "/events")
        .env("QUERY_STRING", "topic=t")
        .env("HTTP_LAST_EVENT_ID", "0")
        .env("FASTSSE_CONFIG", &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill").arg(cgi.id().to_string()).status();
    let out = cgi.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("id: {id}\ndata: from the CLI")),
        "{text}"
    );
}

#[test]
fn history_age_trims_the_stream() {
    let Some(redis) = Redis::start() else { return };
    let d = Daemon::start(&format!(
        "[journal]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"test:\"\n\n\
         [[route]]\npath = \"/events\"\ntype = \"topics\"\nhistory_age = \"2s\"\n",
        redis.url()
    ));
    let xlen = || {
        let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        s.write_all(b"XLEN test:events\r\n").unwrap();
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n])
            .trim()
            .trim_start_matches(':')
            .parse::<u64>()
            .unwrap()
    };
    for i in 0..3 {
        assert_eq!(fcgi_publish(&d.socket, "t", &format!("old {i}")).0, 200);
    }
    assert_eq!(xlen(), 3);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fcgi_publish(&d.socket, "t", "young").0, 200);
    wait_for(
        "the old entries to be trimmed",
        Duration::from_secs(5),
        || xlen() == 1,
    );
}

/// Kills a child process when dropped (a server a test started by hand).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rediss_checks_the_servers_certificate() {
    if !have("redis-server") || !have("openssl") {
        return;
    }
    // A CA and a server certificate for 127.0.0.1 signed by it, made by openssl.
    let dir = TempDir::new("redis-tls");
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(&dir.0)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl {args:?}");
    };
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test CA",
        ]
        .iter()
        .chain(&["-keyout", "ca.key", "-out", "ca.pem"])
        .copied()
        .collect::<Vec<_>>(),
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ]
        .iter()
        .chain(&["-keyout", "key.pem", "-out", "req.csr"])
        .copied()
        .collect::<Vec<_>>(),
    );
    std::fs::write(dir.path("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &[
            "x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        ]
        .iter()
        .chain(&[
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "cert.pem",
        ])
        .copied()
        .collect::<Vec<_>>(),
    );
    let port = free_port();
    let _server = KillOnDrop(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
            .args([
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
                "--save",
                "",
            ])
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("redis-server (TLS)", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let config = |ca: &str| {
        format!(
            "[journal]\nbackend = \"redis\"\nurl = \"rediss://127.0.0.1:{port}/0\"\n{ca}\n\
             [[route]]\npath = \"/events\"\ntype = \"topics\"\n"
        )
    };
    let ca = dir.path("ca.pem");
    let trusted = Daemon::start(&config(&format!("tls_ca_file = \"{}\"\n", ca.display())));
    let mut sub = subscribe_after(&trusted.socket, None);
    sub.read_stdout_until(1, "retry:");
    let (status, body) = fcgi_publish(&trusted.socket, "t", "over TLS");
    assert_eq!(status, 200, "{body}\n{}", trusted.log());
    let id: u64 = body.trim().parse().unwrap();
    assert_eq!(read_events(&mut sub, 1), [(id, "over TLS".to_string())]);
    // The same server without its CA (the system's roots): refused, never stored.
    let untrusted = Daemon::start(&config(""));
    let (status, body) = fcgi_publish(&untrusted.socket, "t", "not over an unchecked TLS");
    assert_eq!(status, 503, "{body}");
}

impl Redis {
    /// Runs one command with Debian's redis-cli; returns its output.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Reads blocks until an event named `name` arrives; returns everything read.
fn read_until_event(c: &mut FcgiClient, name: &str) -> String {
    c.read_stdout_until(1, &format!("event: {name}"))
}

/// Issue 19, finding 4: instance A issued 1–5, Redis lost everything (FLUSHALL), a new instance
/// B issued 1, 2, 3 again; A's subscriber never saw them and resuming gave a mix of old and
/// new events without a reset. Now a stream that lost its data numbers above every id ever
/// issued, and subscribers resuming across the loss are told `lost`.
#[test]
fn ids_are_never_issued_twice_after_redis_loses_its_data() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = instance(&redis);
    let mut old = Vec::new();
    for i in 0..5 {
        let (status, body) = fcgi_publish(&a.socket, "t", &format!("old {i}"));
        assert_eq!(status, 200, "{body}");
        old.push(body.trim().parse::<u64>().unwrap());
    }
    let mut live_a = subscribe_after(&a.socket, Some(old[4]));
    live_a.read_stdout_until(1, "retry:");
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let b = instance(&redis);
    let mut new = Vec::new();
    for i in 0..3 {
        let (status, body) = fcgi_publish(&b.socket, "t", &format!("new {i}"));
        assert_eq!(status, 200, "{body}");
        new.push(body.trim().parse::<u64>().unwrap());
    }
    assert!(
        new.iter().all(|n| *n > old[4]),
        "reissued: old {old:?}, new {new:?}"
    );
    // A finds the jump and ends its stream so that the browser resumes and is told.
    assert!(
        live_a.closed_within(Duration::from_secs(10)),
        "A's subscriber was not told"
    );
    // Resuming from an old id, on either instance: a reset saying events were lost, then the new
    // events; never an old one after a new one, never a new one passed off as old-3.
    for d in [&a, &b] {
        let mut resumed = subscribe_after(&d.socket, Some(old[1]));
        let text = read_until_event(&mut resumed, "fastsse-reset");
        assert!(text.contains("lost") || text.contains("expired"), "{text}");
        assert!(!text.contains("old 2"), "{text}");
    }
    // A publish on A after the loss: above everything, seen by B's subscriber.
    let mut live_b = subscribe_after(&b.socket, Some(new[2]));
    let (status, body) = fcgi_publish(&a.socket, "t", "from A");
    assert_eq!(status, 200, "{body}");
    let id: u64 = body.trim().parse().unwrap();
    assert!(id > new[2]);
    assert_eq!(read_events(&mut live_b, 1), [(id, "from A".to_string())]);
}

/// Finding 10: an entry that is not a fastsse record at the end of the stream made the reader
/// spin (154k XREADs in 5 s) until the next publish. It is skipped, counted and logged once.
#[test]
fn an_entry_written_by_another_tool_is_skipped_not_spun_on() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let d = instance(&redis);
    let (status, body) = fcgi_publish(&d.socket, "t", "first");
    assert_eq!(status, 200, "{body}");
    let first: u64 = body.trim().parse().unwrap();
    // Two foreign entries: `<n>-0` and `<n>-1` (what Redis's own ids look like when two land
    // in one millisecond).
    for seq in 0..2 {
        let foreign = format!("{}-{seq}", first + 1);
        let answer = redis.cli(&["XADD", "test:events", &foreign, "hello", "world"]);
        assert_eq!(answer, foreign);
    }
    std::thread::sleep(Duration::from_secs(1));
    let calls = |r: &Redis| -> u64 {
        r.cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_xread:calls="))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = calls(&redis);
    std::thread::sleep(Duration::from_secs(3));
    let during = calls(&redis) - before;
    // One blocking XREAD a second while idle; the spin made tens of thousands.
    assert!(during < 30, "{during} XREAD calls in 3 s");
    assert!(
        d.status().contains("\"backend_unreadable\":2"),
        "{}",
        d.status()
    );
    assert_eq!(d.log().matches("not fastsse events").count(), 1);
    // And the next publish still arrives.
    let mut sub = subscribe_after(&d.socket, Some(first));
    let (status, body) = fcgi_publish(&d.socket, "t", "second");
    assert_eq!(status, 200, "{body}");
    let second: u64 = body.trim().parse().unwrap();
    assert_eq!(read_events(&mut sub, 1), [(second, "second".to_string())]);
}

/// Finding 15: a key of the wrong type answered 503 "Redis did not answer… may or may not be
/// stored" with the script's SHA in the body; a stalled Redis was answered after 5 s with
/// lock_timeout = 2s. Now: 500 "not stored" with no internals, and an answer by the deadline.
#[test]
fn redis_errors_say_not_stored_and_a_stall_is_answered_by_the_deadline() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let d = instance(&redis);
    assert_eq!(redis.cli(&["SET", "test:events", "a string"]), "OK");
    let (status, body) = fcgi_publish(&d.socket, "t", "x");
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("not stored") && body.contains("WRONGTYPE"),
        "{body}"
    );
    assert!(!body.contains("may or may not"), "{body}");
    assert!(
        !body.contains("script") && !body.contains("test:events"),
        "{body}"
    );
    assert_eq!(redis.cli(&["DEL", "test:events"]), "1");
    assert_eq!(redis.cli(&["SET", "test:events:seq", "not a number"]), "OK");
    let (status, body) = fcgi_publish(&d.socket, "t", "y");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("not stored"), "{body}");
    assert_eq!(redis.cli(&["XLEN", "test:events"]), "0", "nothing stored");
    assert_eq!(redis.cli(&["DEL", "test:events:seq"]), "1");
    let (status, body) = fcgi_publish(&d.socket, "t", "z");
    assert_eq!(status, 200, "{body}");
    // Stalled: SIGSTOP. lock_timeout is 2 s by default; the answer comes by then (+ slack).
    let pid = redis.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let (status, body) = fcgi_publish(&d.socket, "t", "stalled");
    let took = start.elapsed();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert_eq!(status, 503, "{body}");
    assert!(
        took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
}
