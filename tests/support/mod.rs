//! Test support: FastCGI fixtures encoded by hand (independent of `src/`), a temp dir, the
//! fastsse daemon, a real nginx, and a raw HTTP/1.0 client that reads a stream as it arrives.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// FastCGI fixtures, written from the spec.

pub const BEGIN: u8 = 1;
pub const ABORT: u8 = 2;
pub const END: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// One record with explicit padding.
pub fn record_padded(t: u8, id: u16, content: &[u8], pad: u8) -> Vec<u8> {
    assert!(content.len() <= 65535);
    let mut v = vec![1, t];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(content.len() as u16).to_be_bytes());
    v.push(pad);
    v.push(0);
    v.extend_from_slice(content);
    v.extend(std::iter::repeat_n(0x5a, pad as usize));
    v
}

pub fn record(t: u8, id: u16, content: &[u8]) -> Vec<u8> {
    record_padded(t, id, content, 0)
}

pub fn begin(id: u16, role: u16, flags: u8) -> Vec<u8> {
    let r = role.to_be_bytes();
    record(BEGIN, id, &[r[0], r[1], flags, 0, 0, 0, 0, 0])
}

fn nv_len(v: &mut Vec<u8>, n: usize) {
    if n < 128 {
        v.push(n as u8);
    } else {
        v.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Name-value pairs.
pub fn pairs(kv: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in kv {
        nv_len(&mut v, k.len());
        nv_len(&mut v, val.len());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v
}

/// A whole GET request as nginx sends it: BEGIN, one PARAMS record, empty PARAMS, empty STDIN.
pub fn get_request(id: u16, path: &str, keep_conn: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut kv = vec![
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", path),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ];
    kv.extend_from_slice(extra);
    let mut v = begin(id, 1, keep_conn as u8);
    v.extend(record(PARAMS, id, &pairs(&kv)));
    v.extend(record(PARAMS, id, b""));
    v.extend(record(STDIN, id, b""));
    v
}

/// A whole POST request: BEGIN, PARAMS with CONTENT_TYPE/CONTENT_LENGTH, the body as STDIN
/// records (at most 65535 bytes each), empty STDIN.
pub fn post_request(id: u16, uri: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let len = body.len().to_string();
    let kv = [
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", uri),
        ("QUERY_STRING", uri.split_once('?').map_or("", |(_, q)| q)),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("CONTENT_TYPE", content_type),
        ("CONTENT_LENGTH", len.as_str()),
    ];
    let mut v = begin(id, 1, 0);
    v.extend(record(PARAMS, id, &pairs(&kv)));
    v.extend(record(PARAMS, id, b""));
    for chunk in body.chunks(65535) {
        v.extend(record(STDIN, id, chunk));
    }
    v.extend(record(STDIN, id, b""));
    v
}

/// Publishes `data` to `/events?topic=<topic>` over FastCGI; returns (status, body).
pub fn fcgi_publish(socket: &Path, topic: &str, data: &str) -> (u16, String) {
    let mut c = FcgiClient::connect(socket);
    c.send(&post_request(
        1,
        &format!("/events?topic={topic}"),
        "text/plain",
        data.as_bytes(),
    ));
    let (out, _) = c.read_response(1);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .strip_prefix("Status: ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// One SSE event block as (id, event name, data lines joined by `\n`); comments ignored.
pub fn parse_block(block: &str) -> (String, String, String) {
    let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.to_string();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v);
        }
    }
    (id, event, data.join("\n"))
}

/// Subscribes to `topic` of `/events` over FastCGI (request id 1) and reads up to the stream's
/// first `retry:` hint.
pub fn fcgi_subscribe(socket: &Path, topic: &str) -> FcgiClient {
    let mut c = FcgiClient::connect(socket);
    let query = format!("topic={topic}");
    c.send(&get_request(
        1,
        &format!("/events?{query}"),
        false,
        &[("QUERY_STRING", &query)],
    ));
    c.read_stdout_until(1, "retry:");
    c
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Whether this process runs as root (mounting a tmpfs needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub t: u8,
    pub id: u16,
    pub content: Vec<u8>,
}

/// A FastCGI client connection that reads records as they come.
pub struct FcgiClient {
    pub sock: UnixStream,
}

impl FcgiClient {
    pub fn connect(path: &Path) -> FcgiClient {
        let sock = UnixStream::connect(path).expect("connect to fastsse");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        FcgiClient { sock }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write to fastsse");
    }

    /// The next record; `None` at EOF. Panics on timeout.
    pub fn read_record(&mut self) -> Option<Rec> {
        let mut h = [0u8; 8];
        match self.sock.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a record: {e}"),
        }
        assert_eq!(h[0], 1, "version");
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut body = vec![0u8; len + h[6] as usize];
        self.sock.read_exact(&mut body).expect("record body");
        body.truncate(len);
        Some(Rec {
            t: h[1],
            id: u16::from_be_bytes([h[2], h[3]]),
            content: body,
        })
    }

    /// Reads until END_REQUEST for `id`; returns (stdout bytes, protocolStatus).
    pub fn read_response(&mut self, id: u16) -> (Vec<u8>, u8) {
        let mut out = Vec::new();
        loop {
            let r = self
                .read_record()
                .expect("connection closed before END_REQUEST");
            if r.id != id {
                continue;
            }
            match r.t {
                STDOUT => out.extend_from_slice(&r.content),
                END => return (out, r.content[4]),
                _ => {}
            }
        }
    }

    /// Reads STDOUT for `id` until `needle` has arrived; returns everything read.
    pub fn read_stdout_until(&mut self, id: u16, needle: &str) -> String {
        let mut out = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within 10 s in {out:?}"
            );
            let r = self.read_record().expect("connection closed");
            if r.id == id && r.t == STDOUT {
                out.push_str(&String::from_utf8_lossy(&r.content));
            }
            assert!(
                !(r.id == id && r.t == END),
                "request ended before {needle:?}: {out}"
            );
        }
        out
    }

    /// True when the server closed the connection (EOF) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.sock.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 4096];
        loop {
            match self.sock.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and files.

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "fastsse-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn fastsse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fastsse")
}

/// `fastsse check-config` on `config` written to `dir`'s `fastsse.toml`: whether it passed, and
/// what it printed (stderr, then stdout).
pub fn check_config(dir: &TempDir, config: &str) -> (bool, String) {
    let file = dir.path("fastsse.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(fastsse_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// Whether a peer program is installed; when `FASTSSE_REQUIRE_PEERS` is set (CI), a missing
/// peer fails the test instead of skipping it.
pub fn have(program: &str) -> bool {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).exists());
    if !found {
        if std::env::var_os("FASTSSE_REQUIRE_PEERS").is_some() {
            panic!("{program} is not installed (scripts/test.sh installs it)");
        }
        eprintln!("skipping: {program} is not installed");
    }
    found
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running fastsse daemon on a unix socket in its own temp dir, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: TempDir,
    tcp_port: Option<u16>,
}

impl Daemon {
    /// Starts `fastsse serve` with `config` (TOML text) on `<dir>/fastsse.sock`.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_also(config, None)
    }

    /// Like `start`, also listening on TCP `127.0.0.1:tcp_port` when given.
    pub fn start_also(config: &str, tcp_port: Option<u16>) -> Daemon {
        Daemon::start_prepared(config, tcp_port, |_| {})
    }

    /// Like `start_also`, after `prepare` has set up the daemon's temp dir (the data directory
    /// is `<dir>/data`).
    pub fn start_prepared(
        config: &str,
        tcp_port: Option<u16>,
        prepare: impl FnOnce(&TempDir),
    ) -> Daemon {
        let dir = TempDir::new("daemon");
        prepare(&dir);
        let socket = dir.path("fastsse.sock");
        std::fs::write(dir.path("fastsse.toml"), config).unwrap();
        let mut d = Daemon {
            child: Daemon::spawn(&dir, tcp_port),
            socket,
            dir,
            tcp_port,
        };
        d.wait_ready();
        d
    }

    fn spawn(dir: &TempDir, tcp_port: Option<u16>) -> Child {
        let mut cmd = Command::new(fastsse_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(dir.path("fastsse.toml"))
            .arg("--listen")
            .arg(format!("unix:{}", dir.path("fastsse.sock").display()))
            .arg("--data-dir")
            .arg(dir.path("data"))
            .current_dir(&dir.0);
        if let Some(port) = tcp_port {
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path("fastsse.log"))
            .unwrap();
        // stdout/stderr never go to the test's own pipes: a leaked child would hold them open.
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start fastsse")
    }

    fn wait_ready(&mut self) {
        let sock = self.socket.clone();
        wait_for("the fastsse socket", Duration::from_secs(10), || {
            UnixStream::connect(&sock).is_ok()
        });
    }

    /// Kills the daemon with `signal` (`KILL`, `TERM`), then starts it again on the same socket,
    /// config and data directory.
    pub fn restart(&mut self, signal: &str) {
        self.signal(signal);
        self.wait_exit(Duration::from_secs(5));
        self.child = Daemon::spawn(&self.dir, self.tcp_port);
        self.wait_ready();
    }

    /// Whether the daemon process is still running.
    pub fn child_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Starts the daemon again after it was stopped (same socket, config and data).
    pub fn respawn(&mut self) {
        self.child = Daemon::spawn(&self.dir, self.tcp_port);
        self.wait_ready();
    }

    /// The data directory (journals).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("fastsse.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its status and how long it took.
    pub fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, start.elapsed());
            }
            assert!(
                start.elapsed() < within,
                "fastsse did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads `/status` over FastCGI and returns the JSON text.
    pub fn status(&self) -> String {
        let mut c = FcgiClient::connect(&self.socket);
        c.send(&get_request(1, "/status", false, &[]));
        let (out, _) = c.read_response(1);
        let text = String::from_utf8(out).unwrap();
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    }

    /// A number from `/status`.
    pub fn status_number(&self, key: &str) -> u64 {
        number_after(&self.status(), key)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- fastsse log ---\n{}", self.log());
        }
    }
}

/// The number after `"key":` in a JSON text (the first occurrence).
pub fn number_after(doc: &str, key: &str) -> u64 {
    let at = doc
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {doc}"));
    doc[at + key.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A daemon with `config` behind a real nginx using the shipped config; `None` (skip) when
/// nginx is not installed outside CI.
pub fn daemon_behind_nginx(config: &str) -> Option<(Daemon, Nginx)> {
    if !have("nginx") {
        return None;
    }
    let d = Daemon::start(config);
    let n = Nginx::start(&format!("unix:{}", d.socket.display()), "");
    Some((d, n))
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real nginx from Debian's package, in front of `upstream` (`unix:/path` or `127.0.0.1:9000`).
pub struct Nginx {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl Nginx {
    /// Starts nginx with the `location` block the project ships in `conf/nginx.conf`, pointed
    /// at `upstream`, plus `extra_http` lines.
    pub fn start(upstream: &str, extra_http: &str) -> Nginx {
        Nginx::start_with(upstream, extra_http, "")
    }

    /// [`Nginx::start`] with `extra_server` lines in the shipped `server` block, after the
    /// snippet (`unix:/run/fastsse/fastsse.sock` in them is replaced by `upstream` too).
    pub fn start_with(upstream: &str, extra_http: &str, extra_server: &str) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/nginx.conf"))
                .expect("conf/nginx.conf");
        let snippet = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conf/nginx-fastsse.conf"
        ))
        .expect("conf/nginx-fastsse.conf");
        let shipped = shipped
            .replace(
                "include snippets/fastsse.conf;",
                &format!("{snippet}\n{extra_server}"),
            )
            .replace("unix:/run/fastsse/fastsse.sock", upstream)
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("server_name example.com;", "server_name localhost;");
        let user = if nix_is_root() { "user root;" } else { "" };
        let d = dir.0.display();
        let conf = format!(
            "{user}
worker_processes 1;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 16000; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi_temp;
    proxy_temp_path {d}/proxy_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    {extra_http}
{shipped}
}}
"
        );
        let conf_path = dir.path("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&dir.0)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path("stderr.log")).unwrap())
            .spawn()
            .expect("start nginx");
        let n = Nginx { child, port, dir };
        wait_for("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        n
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none()
            && start.elapsed() < Duration::from_secs(3)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nginx error.log ---\n{}", brief_log(&self.error_log()));
        }
    }
}

/// A server's log for a failed test's output: `[info]` lines past the first five are counted,
/// not printed (5,000 "client prematurely closed" lines would push the panic message out of the
/// part of the output CI keeps).
pub fn brief_log(log: &str) -> String {
    let mut out = String::new();
    let mut info = 0;
    for line in log.lines() {
        if line.contains("[info]") {
            info += 1;
            if info > 5 {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if info > 5 {
        out.push_str(&format!("({} more [info] lines not shown)\n", info - 5));
    }
    out
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// HTTP client.

/// An HTTP/1.0 response being read as it arrives.
pub struct HttpStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub reader: BufReader<TcpStream>,
}

impl HttpStream {
    /// Sends `method path` with `headers` and reads the status line and headers.
    pub fn open(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpStream {
        HttpStream::send(port, method, path, headers, b"")
    }

    /// Sends a request with a body (Content-Length added when the body is not empty).
    pub fn send(
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpStream {
        let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        (&sock).write_all(&bytes).unwrap();
        let mut reader = BufReader::new(sock);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        HttpStream {
            status,
            headers,
            reader,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    /// Reads one SSE block (up to a blank line), without the blank line. `None` at EOF.
    pub fn next_block(&mut self) -> Option<String> {
        let mut block = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).ok()?;
            if n == 0 {
                return None;
            }
            if line == "\n" || line == "\r\n" {
                return Some(block);
            }
            block.push_str(&line);
        }
    }

    /// Reads the next SSE event block, skipping comments and retry-only blocks; returns
    /// (id, event, data) with data lines joined by LF.
    pub fn next_event(&mut self) -> Option<(String, String, String)> {
        // Heartbeats keep the socket busy: give up after 10 s without an event.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no event within 10 s");
            let block = self.next_block()?;
            let (id, event, data) = parse_block(&block);
            if !data.is_empty() {
                return Some((id, event, data));
            }
        }
    }

    /// The rest of the body until EOF.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_to_string(&mut s);
        s
    }
}

/// The value of the last `retry: N` line in `text`.
pub fn last_retry(text: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("retry: "))
        .unwrap_or_else(|| panic!("no retry: in {text:?}"))
        .trim()
        .parse()
        .unwrap()
}

/// Whether a shutdown's retry hint is `base` ms plus a share of the default 5 s drain period.
pub fn spread_retry(value: u64, base: u64) -> bool {
    (base..base + 5000).contains(&value)
}

/// Runs `tests/node/<script>` (a headless Chromium page driven by puppeteer-core) with `args`;
/// once it prints `ready`, runs `after_ready`; returns the JSON line it prints last.
pub fn run_browser(script: &str, args: &[&str], after_ready: impl FnOnce()) -> serde_json::Value {
    use std::io::BufRead;
    let path = format!("{}/tests/node/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("node")
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("ready"),
        "{script} did not start"
    );
    after_ready();
    let result = lines.next().expect("a result line").unwrap();
    let _ = child.wait();
    serde_json::from_str(&result).unwrap_or_else(|e| panic!("{e}: {result}"))
}

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1, made by openssl
/// (never by fastsse's code): `ca.pem`, `cert.pem`, `key.pem` in the returned folder.
pub struct TestCerts {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCerts {
    pub fn make() -> TestCerts {
        let dir = TempDir::new("tls");
        let p = |n: &str| dir.path(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .stdin(Stdio::null())
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=fastsse test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        TestCerts {
            ca: p("ca.pem"),
            cert: p("cert.pem"),
            key: p("key.pem"),
            dir,
        }
    }
}

/// The shipped `conf/nginx-tls.conf` server block (HTTPS, HTTP/2) for `daemon`'s socket on a
/// free port with `certs`, as `extra_http` for [`Nginx::start`]; returns it and the port.
pub fn shipped_tls_server(daemon: &Daemon, certs: &TestCerts) -> (String, u16) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("{}/conf/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let tls_port = free_port();
    let snippet = read("nginx-fastsse.conf").replace(
        "unix:/run/fastsse/fastsse.sock",
        &format!("unix:{}", daemon.socket.display()),
    );
    let tls = read("nginx-tls.conf")
        .replace("include snippets/fastsse.conf;", &snippet)
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{tls_port} ssl http2;"),
        )
        .replace("listen [::]:443 ssl http2;", "")
        .replace("server_name example.com;", "server_name localhost;")
        .replace(
            "/etc/letsencrypt/live/example.com/fullchain.pem",
            &certs.cert.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/example.com/privkey.pem",
            &certs.key.display().to_string(),
        );
    (tls, tls_port)
}

// ---------------------------------------------------------------------------------------------
// Inputs made independently of fastsse: JWTs by PyJWT, forms as PHP writes them.

/// A token signed by PyJWT: `key` is a secret, or the path of a PEM private key.
pub fn jwt_token(alg: &str, key: &str, claims: serde_json::Value) -> String {
    jwt_token_typed(alg, key, claims, None)
}

/// [`jwt_token`] with the header's `typ` set (`at+jwt`: an RFC 9068 access token).
pub fn jwt_token_typed(
    alg: &str,
    key: &str,
    claims: serde_json::Value,
    typ: Option<&str>,
) -> String {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import jwt, json, os, sys\n\
             claims, alg, key, typ = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]\n\
             key = open(key).read() if os.path.isfile(key) else key\n\
             headers = {'typ': typ} if typ else None\n\
             t = jwt.encode(claims, None if alg == 'none' else key, algorithm=alg, headers=headers)\n\
             print(t.decode() if isinstance(t, bytes) else t)",
        ])
        .arg(claims.to_string())
        .arg(alg)
        .arg(key)
        .arg(typ.unwrap_or(""))
        .output()
        .expect("python3 with PyJWT (Debian: python3-jwt)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `application/x-www-form-urlencoded`, as PHP's http_build_query writes it.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    b' ' => "+".into(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Processes whose command line contains `needle`.
pub fn processes(needle: &str) -> Vec<i32> {
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect();
    // A shell forking to run `sleep` shows its own command line until the exec: not a second
    // program.
    let ppid = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<i32>()
                    .ok()
            })
    };
    all.iter()
        .filter(|p| !ppid(p).is_some_and(|pp| all.contains(&pp)))
        .copied()
        .collect()
}
