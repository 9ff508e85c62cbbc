//! `fastsse bench sse`: a load tester for any SSE server. N subscribers through a web server
//! (HTTP/1.1, chunked or not) or straight to a FastCGI socket, a publisher posting events that
//! carry a send timestamp and a sequence number, optional churn with Last-Event-ID, and a report
//! of connections, delivery (lost, duplicated, out of order) and latency percentiles. The
//! clients are in [`super::client`], the figures in [`super::report`]; this file runs the load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{Body, Target};
use super::http::{parse_url, ClientSettings, HttpClient, HttpVersion, Url};
use super::report::{percentiles, Comebacks, Report, Shards, Thresholds};
use crate::source::clock::unix_now;
use crate::sse::SseParser;

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `Name: value`"))?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("`{k}` is not a header name"));
    }
    if v.contains(['\r', '\n']) {
        return Err("a header value cannot hold CR or LF".into());
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// Options of `fastsse bench sse`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Subscribe through a web server: http(s)://HOST:PORT/PATH?QUERY. Repeat it to spread the
    /// subscribers over several URLs (subscriber i takes URL i mod n).
    #[arg(long, required_unless_present = "fcgi")]
    pub url: Vec<String>,
    /// Subscribe straight to a FastCGI socket instead: unix:PATH or HOST:PORT (repeatable).
    #[arg(long, conflicts_with = "url")]
    pub fcgi: Vec<String>,
    /// HTTP version: 1.1 (a connection per stream) or 2 (streams share connections, as in a
    /// browser; h2c prior knowledge on http://).
    #[arg(long = "http", value_enum, default_value = "1.1")]
    pub http: HttpVersion,
    /// Streams per HTTP/2 connection (nginx allows 128 by default).
    #[arg(long, default_value_t = 100)]
    pub streams_per_connection: usize,
    /// Accept any TLS certificate (self-signed test servers).
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long)]
    pub cacert: Option<std::path::PathBuf>,
    /// Local addresses to connect from, comma-separated (127.0.0.2,127.0.0.3): each gives
    /// another ~28,000 ephemeral ports towards one server address.
    #[arg(long = "source", value_delimiter = ',')]
    pub sources: Vec<std::net::IpAddr>,
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
    /// A header sent with every subscription, as `Name: value` (repeatable): Authorization,
    /// Cookie, Host…
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Fail the run (exit 1) when the delivery latency's p99 is above this (e.g. 100ms).
    #[arg(long, value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Fail the run when more than this many expected deliveries were lost.
    #[arg(long, default_value_t = 0)]
    pub max_loss: u64,
    /// Fail the run when fewer than this percent of the expected deliveries arrived (e.g. 99.9).
    #[arg(long)]
    pub min_delivered: Option<f64>,
    /// Print the final report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress line each second.
    #[arg(long)]
    pub quiet: bool,
}

/// An http:// URL split for a raw client.
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

struct Shared {
    counters: Counters,
    latency: Shards,
    /// This second's latencies, for the progress line (emptied each second).
    this_second: Shards,
    first_event: Shards,
    server_closed: AtomicU64,
    stop: CancellationToken,
    publishing: AtomicU64,
    churn: f64,
    /// When the run began: reconnect times are counted from here.
    began: Instant,
    /// `-H` headers.
    headers: Vec<(String, String)>,
}

/// What one subscriber task hands back at the end of the run.
struct Outcome {
    seen: Seen,
    /// Connected before the first publish (so it should see every event).
    before_publishing: bool,
    /// When (ms after the run began) it came back after the server ended its stream.
    comebacks_ms: Vec<u64>,
}

fn now_us() -> u64 {
    unix_now().as_micros() as u64
}

/// One subscriber for the whole run: connects, reads, reconnects with Last-Event-ID when churned
/// or when the server ends the stream — then after the last `retry:` the server sent, as a
/// browser's EventSource does (100 ms when it sent none).
async fn subscriber(idx: usize, target: Arc<Target>, shared: Arc<Shared>) -> Outcome {
    let mut seen = Seen::default();
    let mut retry = Duration::from_millis(100);
    let mut backoff = Duration::from_millis(250);
    let mut comebacks_ms = Vec::new();
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
            r = Body::open(&target, idx, last_id.as_deref(), &shared.headers) => r,
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
                // Back off (250 ms doubling to 5 s): a URL that answers 404 is not hammered.
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shared.stop.cancelled() => break,
                }
            }
        };
        backoff = Duration::from_millis(250);
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
                    let us = now_us().saturating_sub(t);
                    shared.latency.record(idx, us);
                    shared.this_second.record(idx, us);
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
        if let Some(ms) = parser.retry_ms {
            retry = Duration::from_millis(ms);
        }
        let id = parser.last_event_id();
        if !id.is_empty() {
            last_id = Some(id.to_string());
        }
        if !churned {
            // The server ended the stream: come back as a browser would, after `retry`.
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shared.stop.cancelled() => break,
            }
            comebacks_ms.push(shared.began.elapsed().as_millis() as u64);
        }
    }
    Outcome {
        seen,
        before_publishing,
        comebacks_ms,
    }
}

/// POSTs `{"t":…,"seq":…}` at `rate` for `duration`; returns the acknowledged sequence numbers.
async fn publisher(
    client: HttpClient,
    url: Url,
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
        match client.post(&url, &body).await {
            Ok(()) => acked.push(seq),
            Err(e) => {
                failed += 1;
                shared.counters.fail(format!("publish: {e}"));
            }
        }
    }
    (acked, failed)
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

/// Runs the load test; returns the report (the caller prints it and sets the exit status).
pub fn run(args: LoadArgs) -> Result<Report, String> {
    check_open_files(args.subscribers)?;
    let settings = |version| ClientSettings {
        version,
        insecure: args.insecure,
        cacert: args.cacert.clone(),
        sources: args.sources.clone(),
        streams_per_connection: args.streams_per_connection,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Clients hold tokio handles (rustls, hyper): made inside the runtime.
    let _guard = rt.enter();
    let target = Arc::new(if !args.url.is_empty() {
        Target::Http {
            client: HttpClient::new(settings(args.http), args.subscribers)?,
            urls: args
                .url
                .iter()
                .map(|u| parse_url(u))
                .collect::<Result<_, _>>()?,
        }
    } else if !args.fcgi.is_empty() {
        Target::Fcgi {
            addrs: args.fcgi.clone(),
            path: args.path.clone(),
        }
    } else {
        return Err("give --url or --fcgi".into());
    });
    let publish = match args.publish_url.as_deref() {
        Some(u) => Some((HttpClient::new(settings(args.http), 1)?, parse_url(u)?)),
        None => None,
    };
    let publish_given = publish.is_some();
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        latency: Shards::new(),
        this_second: Shards::new(),
        first_event: Shards::new(),
        server_closed: AtomicU64::new(0),
        stop: CancellationToken::new(),
        publishing: AtomicU64::new(0),
        churn: args.churn,
        began: Instant::now(),
        headers: args.headers.clone(),
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
                    // The last second's p99, not the run's so far (the run's is in the report).
                    let second = shared.this_second.take();
                    if !quiet {
                        let failures: u64 = c
                            .failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .values()
                            .sum();
                        eprintln!(
                            "t={:>4.0}s connected={}/{n} events/s={} p50={:.1}ms p99={:.1}ms errors={failures}",
                            start.elapsed().as_secs_f64(),
                            c.connected.load(Ordering::Relaxed),
                            events - last,
                            second.value_at_quantile(0.5) as f64 / 1000.0,
                            second.value_at_quantile(0.99) as f64 / 1000.0,
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
            Some((client, url)) => {
                publisher(client, url, args.rate, args.duration, shared.clone()).await
            }
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
        let mut comebacks = Vec::new();
        for s in subs {
            let Ok(Outcome {
                seen,
                before_publishing: before,
                comebacks_ms,
            }) = s.await
            else {
                continue;
            };
            comebacks.extend(comebacks_ms);
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
        let thresholds = Thresholds {
            max_p99: args.max_p99,
            max_loss: args.max_loss,
            min_delivered: args.min_delivered,
            publishing: publish_given,
        };
        let mut report = Report {
            subscribers: args.subscribers,
            connections_attempted: c.attempted.load(Ordering::Relaxed),
            transport_connections: match &*target {
                Target::Http { client, .. } => client.connections.load(Ordering::Relaxed),
                Target::Fcgi { .. } => c.established.load(Ordering::Relaxed),
            },
            protocol: match &*target {
                Target::Http { urls, .. } => format!(
                    "{} HTTP/{}",
                    if urls[0].https { "https" } else { "http" },
                    if args.http == HttpVersion::Http2 { "2" } else { "1.1" }
                ),
                Target::Fcgi { .. } => "FastCGI".into(),
            },
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
            comebacks: Comebacks::of(&mut comebacks),
            seconds,
            failures: Vec::new(),
        };
        report.failures = thresholds.check(&report);
        Ok(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
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
