//! `fastsse bench sse`: a load tester for any SSE server. N subscribers through a web server
//! (HTTP/1.1, chunked or not) or straight to a FastCGI socket, a publisher posting events that
//! carry a send timestamp and a sequence number, optional churn with Last-Event-ID, and a report
//! of connections, delivery (lost, duplicated, out of order) and latency percentiles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::fcgi::codec::{encode_record, Record, RecordCodec};
use crate::fcgi::params::encode_pair;
use crate::fcgi::{FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT};
use crate::source::clock::unix_now;
use crate::sse::SseParser;

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// Options of `fastsse bench sse`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Subscribe through a web server: http://HOST:PORT/PATH?QUERY.
    #[arg(long, required_unless_present = "fcgi")]
    pub url: Option<String>,
    /// Subscribe straight to a FastCGI socket instead: unix:PATH or HOST:PORT.
    #[arg(long, conflicts_with = "url")]
    pub fcgi: Option<String>,
    /// Request path and query sent with --fcgi.
    #[arg(long, default_value = "/events?topic=bench")]
    pub path: String,
    /// Concurrent subscribers.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub subscribers: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp: f64,
    /// How long to publish (after the ramp-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Publish by POSTing to this URL (the body is `{"t":<unix µs>,"seq":<n>}`); without it the
    /// source must produce events itself.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Events published per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Percent of subscribers dropped and reconnected (with Last-Event-ID) each second.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Time allowed after the last publish for events in flight.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Print the final report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress line each second.
    #[arg(long)]
    pub quiet: bool,
}

/// An http:// URL split for a raw client.
#[derive(Debug, Clone)]
struct HttpUrl {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.to_string(),
            p.parse().map_err(|_| format!("{url}: bad port"))?,
        ),
        _ => (authority.to_string(), 80),
    };
    Ok(HttpUrl {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        path: path.to_string(),
    })
}

/// Latency histograms sharded so that thousands of subscriber tasks rarely contend.
struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    fn new() -> Shards {
        Shards(
            (0..32)
                .map(|_| Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()))
                .collect(),
        )
    }
    fn record(&self, shard: usize, us: u64) {
        let mut h = self.0[shard % self.0.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = h.record(us.clamp(1, 600_000_000));
    }
    fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap();
        for s in &self.0 {
            let _ = all.add(&*s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

#[derive(Default)]
struct Counters {
    attempted: AtomicU64,
    established: AtomicU64,
    connected: AtomicUsize,
    reconnects: AtomicU64,
    events: AtomicU64,
    /// Subscribers whose first connection attempt has finished (connected or failed).
    first_attempts: AtomicUsize,
    failures: Mutex<HashMap<String, u64>>,
}

impl Counters {
    fn fail(&self, cause: String) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cause)
            .or_default() += 1;
    }
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    received: u64,
    duplicated: u64,
    out_of_order: u64,
    last_seq: u64,
    first_seq: Option<u64>,
}

impl Seen {
    fn add(&mut self, seq: u64) {
        self.received += 1;
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicated += 1;
            return;
        }
        self.bits[w] |= 1 << b;
        if seq < self.last_seq {
            self.out_of_order += 1;
        }
        self.last_seq = self.last_seq.max(seq);
        self.first_seq.get_or_insert(seq);
    }
    fn unique_in(&self, from: u64, to: u64) -> u64 {
        (from..=to)
            .filter(|&s| {
                self.bits
                    .get((s / 64) as usize)
                    .is_some_and(|w| w & (1 << (s % 64)) != 0)
            })
            .count() as u64
    }
}

/// Extracts `"t":<µs>` and `"seq":<n>` from event data (any JSON-ish text).
fn field(data: &str, name: &str) -> Option<u64> {
    let at = data.find(name)? + name.len();
    let digits: String = data[at..]
        .trim_start_matches([':', ' ', '"'])
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

enum Target {
    Http(HttpUrl),
    Fcgi(String, String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn dial(addr: &str) -> std::io::Result<Box<dyn Io>> {
    if let Some(p) = addr.strip_prefix("unix:") {
        Ok(Box::new(tokio::net::UnixStream::connect(p).await?))
    } else {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// An open SSE response body, HTTP (plain or chunked) or FastCGI STDOUT.
struct Body {
    io: Box<dyn Io>,
    raw: BytesMut,
    kind: BodyKind,
}

#[derive(Clone, Copy)]
enum BodyKind {
    Plain,
    Chunked(ChunkState),
    Fcgi,
}

#[derive(Clone, Copy)]
enum ChunkState {
    Size,
    Data(usize),
    Crlf,
}

impl Body {
    async fn fill(&mut self) -> Result<bool, String> {
        if self.raw.capacity() - self.raw.len() < 1024 {
            self.raw.reserve(8192);
        }
        Ok(self
            .io
            .read_buf(&mut self.raw)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?
            > 0)
    }

    /// The next piece of the body; `None` when the response ended.
    async fn next_chunk(&mut self) -> Result<Option<BytesMut>, String> {
        loop {
            match self.kind {
                BodyKind::Plain => {
                    if !self.raw.is_empty() {
                        return Ok(Some(self.raw.split()));
                    }
                }
                BodyKind::Chunked(ChunkState::Size) => {
                    if let Some(p) = self.raw.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(&self.raw[..p]).to_string();
                        self.raw.advance(p + 2);
                        let size =
                            usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                                .map_err(|_| format!("bad chunk size {line:?}"))?;
                        if size == 0 {
                            return Ok(None);
                        }
                        self.kind = BodyKind::Chunked(ChunkState::Data(size));
                        continue;
                    }
                }
                BodyKind::Chunked(ChunkState::Data(n)) => {
                    if !self.raw.is_empty() {
                        let take = n.min(self.raw.len());
                        let chunk = self.raw.split_to(take);
                        self.kind = BodyKind::Chunked(if take == n {
                            ChunkState::Crlf
                        } else {
                            ChunkState::Data(n - take)
                        });
                        return Ok(Some(chunk));
                    }
                }
                BodyKind::Chunked(ChunkState::Crlf) => {
                    if self.raw.len() >= 2 {
                        self.raw.advance(2);
                        self.kind = BodyKind::Chunked(ChunkState::Size);
                        continue;
                    }
                }
                BodyKind::Fcgi => {
                    while let Some(r) = RecordCodec
                        .decode(&mut self.raw)
                        .map_err(|e| e.to_string())?
                    {
                        match r.record_type {
                            FCGI_STDOUT if !r.content.is_empty() => {
                                return Ok(Some(BytesMut::from(&r.content[..])))
                            }
                            FCGI_END_REQUEST => return Ok(None),
                            _ => {}
                        }
                    }
                }
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Opens the stream and checks the response head. Returns the body and any body bytes that
    /// came with the head; `Err` is the failure cause.
    async fn open(target: &Target, last_event_id: Option<&str>) -> Result<(Body, Vec<u8>), String> {
        match target {
            Target::Http(u) => {
                let io = dial(&format!("{}:{}", u.host, u.port))
                    .await
                    .map_err(|e| format!("connect: {}", e.kind()))?;
                let mut body = Body {
                    io,
                    raw: BytesMut::with_capacity(8192),
                    kind: BodyKind::Plain,
                };
                let mut req = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
                    u.path, u.host
                );
                if let Some(id) = last_event_id {
                    req.push_str(&format!("Last-Event-ID: {id}\r\n"));
                }
                req.push_str("\r\n");
                body.io
                    .write_all(req.as_bytes())
                    .await
                    .map_err(|e| format!("write: {}", e.kind()))?;
                let head_end = loop {
                    if let Some(p) = body.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    if body.raw.len() > 16384 || !body.fill().await? {
                        return Err("closed before the response head".into());
                    }
                };
                let head = String::from_utf8_lossy(&body.raw[..head_end]).to_ascii_lowercase();
                let status = head.split_whitespace().nth(1).unwrap_or("?").to_string();
                if status != "200" {
                    return Err(format!("http {status}"));
                }
                if head.contains("transfer-encoding: chunked") {
                    body.kind = BodyKind::Chunked(ChunkState::Size);
                }
                body.raw.advance(head_end);
                Ok((body, Vec::new()))
            }
            Target::Fcgi(addr, path) => {
                let io = dial(addr)
                    .await
                    .map_err(|e| format!("connect: {}", e.kind()))?;
                let mut body = Body {
                    io,
                    raw: BytesMut::with_capacity(8192),
                    kind: BodyKind::Fcgi,
                };
                let (uri, query) = path.split_once('?').unwrap_or((path, ""));
                let mut p = BytesMut::new();
                for (k, v) in [
                    ("REQUEST_METHOD", "GET"),
                    ("REQUEST_URI", path.as_str()),
                    ("DOCUMENT_URI", uri),
                    ("SCRIPT_NAME", uri),
                    ("QUERY_STRING", query),
                    ("SERVER_PROTOCOL", "HTTP/1.1"),
                    ("GATEWAY_INTERFACE", "CGI/1.1"),
                    ("REMOTE_ADDR", "127.0.0.1"),
                    ("HTTP_ACCEPT", "text/event-stream"),
                ] {
                    encode_pair(&mut p, k.as_bytes(), v.as_bytes());
                }
                if let Some(id) = last_event_id {
                    encode_pair(&mut p, b"HTTP_LAST_EVENT_ID", id.as_bytes());
                }
                let mut out = BytesMut::new();
                for (t, c) in [
                    (FCGI_BEGIN_REQUEST, &[0u8, 1, 0, 0, 0, 0, 0, 0][..]),
                    (FCGI_PARAMS, &p[..]),
                    (FCGI_PARAMS, b""),
                    (FCGI_STDIN, b""),
                ] {
                    encode_record(&Record::new(t, 1, c.to_vec()), &mut out)
                        .map_err(|e| e.to_string())?;
                }
                body.io
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("write: {}", e.kind()))?;
                let mut head = Vec::new();
                loop {
                    let Some(chunk) = body.next_chunk().await? else {
                        return Err("closed before the response head".into());
                    };
                    head.extend_from_slice(&chunk);
                    if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let text = String::from_utf8_lossy(&head[..p]).to_string();
                        if let Some(status) = text
                            .strip_prefix("Status: ")
                            .and_then(|s| s.split_whitespace().next())
                        {
                            if status != "200" {
                                return Err(format!("http {status}"));
                            }
                        }
                        return Ok((body, head[p + 4..].to_vec()));
                    }
                }
            }
        }
    }
}

struct Shared {
    counters: Counters,
    latency: Shards,
    first_event: Shards,
    server_closed: AtomicU64,
    stop: CancellationToken,
    publishing: AtomicU64,
    churn: f64,
}

fn now_us() -> u64 {
    unix_now().as_micros() as u64
}

/// One subscriber for the whole run: connects, reads, reconnects with Last-Event-ID when churned
/// or when the server ends the stream.
async fn subscriber(idx: usize, target: Arc<Target>, shared: Arc<Shared>) -> (Seen, bool) {
    let mut seen = Seen::default();
    let mut last_id: Option<String> = None;
    let mut rng = (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut first_connection = true;
    let mut failed_once = false;
    let mut before_publishing = false;
    let c = &shared.counters;
    'run: while !shared.stop.is_cancelled() {
        c.attempted.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let opened = tokio::select! {
            r = Body::open(&target, last_id.as_deref()) => r,
            _ = shared.stop.cancelled() => break,
        };
        let first_attempt_done = |c: &Counters| {
            c.first_attempts.fetch_add(1, Ordering::Relaxed);
        };
        if first_connection && opened.is_err() && !failed_once {
            failed_once = true;
            first_attempt_done(c);
        }
        let (mut body, initial) = match opened {
            Ok(x) => x,
            Err(cause) => {
                c.fail(cause);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    _ = shared.stop.cancelled() => break,
                }
            }
        };
        c.established.fetch_add(1, Ordering::Relaxed);
        c.connected.fetch_add(1, Ordering::Relaxed);
        if first_connection {
            before_publishing = shared.publishing.load(Ordering::Acquire) == 0;
            if !failed_once {
                first_attempt_done(c);
            }
        } else {
            c.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let mut parser = SseParser::new();
        let mut got_first = !first_connection;
        let mut handle = |bytes: &[u8], seen: &mut Seen| {
            for ev in parser.feed(bytes) {
                c.events.fetch_add(1, Ordering::Relaxed);
                if !got_first {
                    got_first = true;
                    shared
                        .first_event
                        .record(idx, started.elapsed().as_micros() as u64);
                }
                if let Some(t) = field(&ev.data, "\"t\"") {
                    shared.latency.record(idx, now_us().saturating_sub(t));
                }
                if let Some(seq) = field(&ev.data, "\"seq\"") {
                    seen.add(seq);
                }
            }
        };
        handle(&initial, &mut seen);
        first_connection = false;
        let mut next_churn = tokio::time::Instant::now() + Duration::from_secs(1);
        let churned = loop {
            tokio::select! {
                r = body.next_chunk() => match r {
                    Ok(Some(chunk)) => handle(&chunk, &mut seen),
                    Ok(None) => {
                        shared.server_closed.fetch_add(1, Ordering::Relaxed);
                        break false;
                    }
                    Err(e) => {
                        c.fail(e);
                        break false;
                    }
                },
                _ = tokio::time::sleep_until(next_churn), if shared.churn > 0.0 => {
                    next_churn += Duration::from_secs(1);
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if (rng % 10_000) as f64 / 100.0 < shared.churn {
                        break true;
                    }
                }
                _ = shared.stop.cancelled() => {
                    c.connected.fetch_sub(1, Ordering::Relaxed);
                    break 'run;
                }
            }
        };
        c.connected.fetch_sub(1, Ordering::Relaxed);
        let id = parser.last_event_id();
        if !id.is_empty() {
            last_id = Some(id.to_string());
        }
        if !churned {
            // The server ended the stream: come back as a browser would, a little later.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shared.stop.cancelled() => break,
            }
        }
    }
    (seen, before_publishing)
}

/// POSTs `{"t":…,"seq":…}` at `rate` for `duration`; returns the acknowledged sequence numbers.
async fn publisher(
    url: HttpUrl,
    rate: f64,
    duration: Duration,
    shared: Arc<Shared>,
) -> (Vec<u64>, u64) {
    let mut acked = Vec::new();
    let mut failed = 0;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let mut seq = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        seq += 1;
        shared.publishing.store(seq, Ordering::Release);
        let body = format!("{{\"t\":{},\"seq\":{seq}}}", now_us());
        match post(&url, &body).await {
            Ok(()) => acked.push(seq),
            Err(e) => {
                failed += 1;
                shared.counters.fail(format!("publish: {e}"));
            }
        }
    }
    (acked, failed)
}

async fn post(url: &HttpUrl, body: &str) -> Result<(), String> {
    let mut io = dial(&format!("{}:{}", url.host, url.port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        url.path,
        url.host,
        body.len()
    );
    io.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut resp)).await;
    let status = String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_string();
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("http {status}"))
    }
}

/// Raises the open-file limit for `n` streams or says clearly why it cannot.
fn check_open_files(n: usize) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = n as u64 + 64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(format!(
            "{n} subscribers need about {need} open files, but the hard limit (ulimit -Hn) is {hard}: \
             lower --subscribers or raise the limit"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, need, hard)
        .map_err(|e| format!("raising ulimit -n to {need}: {e}"))
}

/// The final figures.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Connection attempts (including reconnects).
    pub connections_attempted: u64,
    /// Connections that got a 200 event stream.
    pub connections_established: u64,
    /// Failed attempts by cause.
    pub connections_failed: HashMap<String, u64>,
    /// Reconnects (churn and streams the server ended).
    pub reconnects: u64,
    /// Streams the server ended.
    pub server_closed: u64,
    /// Events published and acknowledged.
    pub published: u64,
    /// Publishes that failed.
    pub publish_failed: u64,
    /// Deliveries expected (acknowledged events x subscribers that should see them).
    pub events_expected: u64,
    /// Events received (all of them, including duplicates and events without a sequence).
    pub events_received: u64,
    /// Expected events never received.
    pub events_lost: u64,
    /// Events received more than once.
    pub events_duplicated: u64,
    /// Events received after a later one.
    pub events_out_of_order: u64,
    /// Delivery latency in milliseconds: p50, p90, p99, p99.9, max.
    pub latency_ms: Percentiles,
    /// Time from connecting to the first event, in milliseconds.
    pub first_event_ms: Percentiles,
    /// Seconds spent publishing (after the ramp-up).
    pub seconds: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, serde::Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        samples: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// Runs the load test; returns the report (the caller prints it and sets the exit status).
pub fn run(args: LoadArgs) -> Result<Report, String> {
    check_open_files(args.subscribers)?;
    let target = Arc::new(match (&args.url, &args.fcgi) {
        (Some(u), _) => Target::Http(parse_url(u)?),
        (None, Some(addr)) => Target::Fcgi(addr.clone(), args.path.clone()),
        (None, None) => return Err("give --url or --fcgi".into()),
    });
    let publish = args.publish_url.as_deref().map(parse_url).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        latency: Shards::new(),
        first_event: Shards::new(),
        server_closed: AtomicU64::new(0),
        stop: CancellationToken::new(),
        publishing: AtomicU64::new(0),
        churn: args.churn,
    });
    rt.block_on(async move {
        let mut subs = Vec::with_capacity(args.subscribers);
        let gap = Duration::from_secs_f64(1.0 / args.ramp.max(1.0));
        let ramp_start = Instant::now();
        let progress = {
            let shared = shared.clone();
            let quiet = args.quiet;
            let n = args.subscribers;
            tokio::spawn(async move {
                let mut last = 0;
                let start = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = shared.stop.cancelled() => return,
                    }
                    let c = &shared.counters;
                    let events = c.events.load(Ordering::Relaxed);
                    if !quiet {
                        let failures: u64 = c
                            .failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .values()
                            .sum();
                        eprintln!(
                            "t={:>4.0}s connected={}/{n} events/s={} p99={:.1}ms errors={failures}",
                            start.elapsed().as_secs_f64(),
                            c.connected.load(Ordering::Relaxed),
                            events - last,
                            shared.latency.merged().value_at_quantile(0.99) as f64 / 1000.0,
                        );
                    }
                    last = events;
                }
            })
        };
        for i in 0..args.subscribers {
            subs.push(tokio::spawn(subscriber(i, target.clone(), shared.clone())));
            tokio::time::sleep_until((ramp_start + gap * (i as u32 + 1)).into()).await;
        }
        // Let the ramp settle: every subscriber connected (or failed) before publishing.
        let settle = Instant::now() + Duration::from_secs(10);
        while shared.counters.first_attempts.load(Ordering::Relaxed) < args.subscribers
            && Instant::now() < settle
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let (acked, publish_failed) = match publish {
            Some(url) => publisher(url, args.rate, args.duration, shared.clone()).await,
            None => {
                tokio::time::sleep(args.duration).await;
                (Vec::new(), 0)
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(args.drain).await;
        shared.stop.cancel();
        let _ = progress.await;
        let mut expected = 0u64;
        let mut lost = 0u64;
        let mut duplicated = 0u64;
        let mut out_of_order = 0u64;
        for s in subs {
            let Ok((seen, before)) = s.await else {
                continue;
            };
            duplicated += seen.duplicated;
            out_of_order += seen.out_of_order;
            if acked.is_empty() {
                continue;
            }
            let from = if before {
                1
            } else {
                seen.first_seq.unwrap_or(u64::MAX)
            };
            let want: Vec<u64> = acked.iter().copied().filter(|&q| q >= from).collect();
            expected += want.len() as u64;
            let got = want.iter().filter(|&&q| seen.unique_in(q, q) == 1).count() as u64;
            lost += want.len() as u64 - got;
        }
        let c = &shared.counters;
        Ok(Report {
            subscribers: args.subscribers,
            connections_attempted: c.attempted.load(Ordering::Relaxed),
            connections_established: c.established.load(Ordering::Relaxed),
            connections_failed: c.failures.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            server_closed: shared.server_closed.load(Ordering::Relaxed),
            published: acked.len() as u64,
            publish_failed,
            events_expected: expected,
            events_received: c.events.load(Ordering::Relaxed),
            events_lost: lost,
            events_duplicated: duplicated,
            events_out_of_order: out_of_order,
            latency_ms: percentiles(&shared.latency.merged()),
            first_event_ms: percentiles(&shared.first_event.merged()),
            seconds,
        })
    })
}

impl Report {
    /// Whether the run should fail a deploy gate: events lost or connections failed.
    pub fn failed(&self) -> bool {
        self.events_lost > 0 || !self.connections_failed.is_empty() || self.publish_failed > 0
    }

    /// The human-readable report.
    pub fn print(&self) {
        println!("subscribers           {}", self.subscribers);
        println!(
            "connections           attempted {} established {} failed {} reconnects {} (server ended {})",
            self.connections_attempted,
            self.connections_established,
            self.connections_failed.values().sum::<u64>(),
            self.reconnects,
            self.server_closed
        );
        for (cause, n) in &self.connections_failed {
            println!("  failed: {n} x {cause}");
        }
        println!(
            "published             {} in {:.1}s ({} failed)",
            self.published, self.seconds, self.publish_failed
        );
        println!(
            "events                expected {} received {} lost {} duplicated {} out of order {}",
            self.events_expected,
            self.events_received,
            self.events_lost,
            self.events_duplicated,
            self.events_out_of_order
        );
        let l = &self.latency_ms;
        println!(
            "latency ms            p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ({} samples)",
            l.p50, l.p90, l.p99, l.p999, l.max, l.samples
        );
        let f = &self.first_event_ms;
        println!(
            "first event ms        p50 {:.2} p99 {:.2} max {:.2}",
            f.p50, f.p99, f.max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_fields() {
        let u = parse_url("http://127.0.0.1:8080/events?topic=a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/events?topic=a")
        );
        let u = parse_url("http://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(parse_url("https://x").is_err());
        assert_eq!(field("{\"t\":123,\"seq\":7}", "\"t\""), Some(123));
        assert_eq!(field("{\"t\": 9, \"seq\": 7}", "\"seq\""), Some(7));
        assert_eq!(field("no numbers", "\"t\""), None);
    }

    #[test]
    fn seen_counts_duplicates_and_order() {
        let mut s = Seen::default();
        for q in [1, 2, 4, 3, 4, 70] {
            s.add(q);
        }
        assert_eq!((s.received, s.duplicated, s.out_of_order), (6, 1, 1));
        assert_eq!(s.unique_in(1, 5), 4);
        assert_eq!(s.unique_in(70, 70), 1);
    }
}
