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

pub use super::args::LoadArgs;
use super::client::{Body, Target};
use super::http::{parse_url, ClientSettings, HttpClient, HttpVersion, Url};
use super::report::{percentiles, Comebacks, Report, Shards, Thresholds};
use super::seen::{field, Outcome, Seen, Tally};
use super::series::{self, Second, Stage};
use crate::source::clock::unix_now;
use crate::sse::SseParser;

/// Run-wide counters, updated by every subscriber task.
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

/// One bench run: what every task of it shares.
pub(super) struct Run {
    counters: Counters,
    latency: Shards,
    /// This second's latencies, for the progress line (emptied each second).
    this_second: Shards,
    first_event: Shards,
    server_closed: AtomicU64,
    stop: CancellationToken,
    publishing: AtomicU64,
    /// Publishes acknowledged so far.
    acked: AtomicU64,
    churn: f64,
    /// When the run began: reconnect times are counted from here.
    began: Instant,
    /// `-H` headers.
    headers: Vec<(String, String)>,
    /// When each sequence number was sent (index `seq - 1`).
    pub(super) sent_at: Mutex<Vec<Instant>>,
    /// One entry per second of the run.
    pub(super) series: Mutex<Vec<Second>>,
}

impl Run {
    pub(super) fn new(args: &LoadArgs) -> Run {
        Run {
            counters: Counters::default(),
            latency: Shards::new(),
            this_second: Shards::new(),
            first_event: Shards::new(),
            server_closed: AtomicU64::new(0),
            stop: CancellationToken::new(),
            publishing: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            churn: args.churn,
            began: Instant::now(),
            headers: args.headers.clone(),
            sent_at: Mutex::new(Vec::new()),
            series: Mutex::new(Vec::new()),
        }
    }

    /// Failures so far, by cause.
    pub(super) fn counters_failures(&self) -> HashMap<String, u64> {
        self.counters
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the run's tasks (the progress task ends its series).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }
}

/// A bench process started by `--processes`: which one of how many. It subscribes its share
/// (subscriber `k` of it is the run's `k * of + index`), its parent publishes.
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkerRole {
    pub(super) index: usize,
    pub(super) of: usize,
}

impl WorkerRole {
    fn parse(s: &str) -> Result<WorkerRole, String> {
        let (i, n) = s.split_once('/').ok_or("--bench-worker is I/N")?;
        let (index, of) = (
            i.parse().map_err(|_| "--bench-worker is I/N")?,
            n.parse().map_err(|_| "--bench-worker is I/N")?,
        );
        if index >= of {
            return Err("--bench-worker I/N needs I < N".into());
        }
        Ok(WorkerRole { index, of })
    }
    /// Its share of `n` subscribers.
    pub(super) fn share(&self, n: usize) -> usize {
        n / self.of + usize::from(self.index < n % self.of)
    }
    fn global(&self, k: usize) -> usize {
        k * self.of + self.index
    }
}

fn now_us() -> u64 {
    unix_now().as_micros() as u64
}

/// One subscriber for the whole run: connects, reads, reconnects with Last-Event-ID when churned
/// or when the server ends the stream — then after the last `retry:` the server sent, as a
/// browser's EventSource does (100 ms when it sent none).
/// `quit` ends it: the run's end, or a stage that lowers the subscriber count.
async fn subscriber(
    idx: usize,
    target: Arc<Target>,
    shared: Arc<Run>,
    quit: CancellationToken,
) -> Outcome {
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
    'run: while !quit.is_cancelled() {
        c.attempted.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let opened = tokio::select! {
            r = Body::open(&target, idx, last_id.as_deref(), &shared.headers) => r,
            _ = quit.cancelled() => break,
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
                    _ = quit.cancelled() => break,
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
                _ = quit.cancelled() => {
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
                _ = quit.cancelled() => break,
            }
            comebacks_ms.push(shared.began.elapsed().as_millis() as u64);
        }
    }
    let left_at = (!shared.stop.is_cancelled()).then(Instant::now);
    Outcome {
        seen,
        before_publishing,
        comebacks_ms,
        left_at,
    }
}

/// POSTs `{"t":…,"seq":…}` at `rate` for `duration`; returns the acknowledged sequence numbers.
pub(super) async fn publisher(
    client: HttpClient,
    url: Url,
    rate: f64,
    duration: Duration,
    shared: Arc<Run>,
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
        shared
            .sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        shared.publishing.store(seq, Ordering::Release);
        let body = format!("{{\"t\":{},\"seq\":{seq}}}", now_us());
        match client.post(&url, &body).await {
            Ok(()) => {
                acked.push(seq);
                shared.acked.fetch_add(1, Ordering::Relaxed);
            }
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

/// Prints the progress line and keeps the series: one [`Second`] each second until the end.
/// A bench worker writes each second as a `SEC` line for its parent instead.
pub(super) async fn progress(shared: Arc<Run>, quiet: bool, peak: usize, worker: bool) {
    let (mut last_events, mut last_published) = (0, 0);
    let mut last_failures: HashMap<String, u64> = HashMap::new();
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
        let published = shared.acked.load(Ordering::Relaxed);
        // This second's latencies, not the run's so far (the run's are in the report).
        let h = shared.this_second.take();
        let failures = c.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let errors = failures
            .iter()
            .filter_map(|(k, &v)| {
                let d = v - last_failures.get(k).copied().unwrap_or(0);
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        let second = Second {
            t: start.elapsed().as_secs_f64().round() as u64,
            connected: c.connected.load(Ordering::Relaxed),
            events: events - last_events,
            published: published - last_published,
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            errors,
        };
        if worker {
            super::protocol::say("SEC", &second);
        } else if !quiet {
            eprintln!(
                "t={:>4}s connected={}/{peak} events/s={} p50={:.1}ms p99={:.1}ms errors={}",
                second.t,
                second.connected,
                second.events,
                second.p50_ms,
                second.p99_ms,
                failures.values().sum::<u64>(),
            );
        }
        shared
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(second);
        (last_events, last_published, last_failures) = (events, published, failures);
    }
}

/// A subscriber task and the token that ends it.
type Running = (CancellationToken, tokio::task::JoinHandle<Outcome>);

fn spawn_subscriber(idx: usize, target: &Arc<Target>, shared: &Arc<Run>) -> Running {
    let quit = shared.stop.child_token();
    let task = tokio::spawn(subscriber(
        idx,
        target.clone(),
        shared.clone(),
        quit.clone(),
    ));
    (quit, task)
}

/// Follows the stages: adds or ends subscribers every 20 ms towards the count the stage asks
/// for now. Returns every subscriber task.
async fn follow_stages(
    stages: &[Stage],
    target: &Arc<Target>,
    shared: &Arc<Run>,
    role: Option<WorkerRole>,
) -> Vec<Running> {
    let total = series::total(stages);
    let begun = Instant::now();
    let (mut active, mut ended): (Vec<Running>, Vec<Running>) = (Vec::new(), Vec::new());
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while begun.elapsed() < total {
        tick.tick().await;
        let want = series::target_at(stages, begun.elapsed());
        let want = role.map_or(want, |r| r.share(want));
        while active.len() < want {
            let k = active.len() + ended.len();
            let idx = role.map_or(k, |r| r.global(k));
            active.push(spawn_subscriber(idx, target, shared));
        }
        while active.len() > want {
            let Some(r) = active.pop() else { break };
            r.0.cancel();
            ended.push(r);
        }
    }
    ended.extend(active);
    ended
}

fn settings(args: &LoadArgs, version: HttpVersion) -> ClientSettings {
    ClientSettings {
        version,
        insecure: args.insecure,
        cacert: args.cacert.clone(),
        sources: args.sources.clone(),
        streams_per_connection: args.streams_per_connection,
    }
}

/// Where the subscribers connect, as the arguments name it.
fn target(args: &LoadArgs, peak: usize) -> Result<Target, String> {
    Ok(if !args.url.is_empty() {
        Target::Http {
            client: HttpClient::new(settings(args, args.http), peak)?,
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
    })
}

/// The publisher's client and URL (`--publish-url`); it speaks HTTP/1.1.
pub(super) fn publisher_client(args: &LoadArgs) -> Result<Option<(HttpClient, Url)>, String> {
    match args.publish_url.as_deref() {
        Some(u) => Ok(Some((
            HttpClient::new(settings(args, HttpVersion::Http1), 1)?,
            parse_url(u)?,
        ))),
        None => Ok(None),
    }
}

/// Runs the load test in this process (the whole run, or a worker's share of it); returns the
/// report (the caller prints it and sets the exit status).
pub fn run(args: LoadArgs) -> Result<Report, String> {
    let role = args
        .bench_worker
        .as_deref()
        .map(WorkerRole::parse)
        .transpose()?;
    let stages = args
        .stages
        .as_deref()
        .map(series::parse_stages)
        .transpose()?;
    let peak_total = stages.as_deref().map_or(args.subscribers, series::peak);
    let peak = role.map_or(peak_total, |r| r.share(peak_total));
    check_open_files(peak)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Clients hold tokio handles (rustls, hyper): made inside the runtime.
    let _guard = rt.enter();
    let target = Arc::new(target(&args, peak)?);
    let publish_given = args.publish_url.is_some();
    // A bench worker's parent publishes.
    let publish = match role {
        Some(_) => None,
        None => publisher_client(&args)?,
    };
    let shared = Arc::new(Run::new(&args));
    if role.is_some() && stages.is_some() {
        // The parent publishes from the start, beside the stages: a subscriber is expected to
        // see what comes from the first event it got (none connects before publishing).
        shared.publishing.store(1, Ordering::Release);
    }
    rt.block_on(async move {
        let progress = tokio::spawn(progress(shared.clone(), args.quiet, peak, role.is_some()));
        let publishing = |duration| {
            let shared = shared.clone();
            async move {
                match publish {
                    Some((client, url)) => {
                        publisher(client, url, args.rate, duration, shared).await
                    }
                    // Subscribed: the parent publishes, then says what it published.
                    None if role.is_some() => {
                        let (acked, sent_at) = super::protocol::await_end().await;
                        *shared.sent_at.lock().unwrap_or_else(|p| p.into_inner()) = sent_at;
                        (acked, 0)
                    }
                    None => {
                        tokio::time::sleep(duration).await;
                        (Vec::new(), 0)
                    }
                }
            }
        };
        let started = Instant::now();
        let (subs, (acked, publish_failed)) = match &stages {
            // Stages: publishing runs from the start, beside the ramps.
            Some(st) => {
                let p = tokio::spawn(publishing(series::total(st)));
                let subs = follow_stages(st, &target, &shared, role).await;
                (subs, p.await.unwrap_or_default())
            }
            None => {
                let mine = peak;
                let mut subs = Vec::with_capacity(mine);
                let ramp = role.map_or(args.ramp, |r| args.ramp / r.of as f64);
                let gap = Duration::from_secs_f64(1.0 / ramp.max(1.0));
                let ramp_start = Instant::now();
                for k in 0..mine {
                    let idx = role.map_or(k, |r| r.global(k));
                    subs.push(spawn_subscriber(idx, &target, &shared));
                    tokio::time::sleep_until((ramp_start + gap * (k as u32 + 1)).into()).await;
                }
                // Let the ramp settle: every subscriber connected (or failed) first.
                let settle = Instant::now() + Duration::from_secs(10);
                while shared.counters.first_attempts.load(Ordering::Relaxed) < mine
                    && Instant::now() < settle
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                (subs, publishing(args.duration).await)
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(args.drain).await;
        shared.stop.cancel();
        let _ = progress.await;
        let sent_at =
            std::mem::take(&mut *shared.sent_at.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tally = Tally::default();
        for (_, task) in subs {
            if let Ok(outcome) = task.await {
                tally.add(outcome, &acked, &sent_at, args.drain);
            }
        }
        let c = &shared.counters;
        let thresholds = Thresholds {
            max_p99: args.max_p99,
            max_loss: args.max_loss,
            min_delivered: args.min_delivered,
            publishing: publish_given,
        };
        let latency = shared.latency.merged();
        let first_event = shared.first_event.merged();
        let comebacks_ms = tally.comebacks.clone();
        let mut report = Report {
            subscribers: peak,
            connections_attempted: c.attempted.load(Ordering::Relaxed),
            transport_connections: match &*target {
                Target::Http { client, .. } => client.connections.load(Ordering::Relaxed),
                Target::Fcgi { .. } => c.established.load(Ordering::Relaxed),
            },
            protocol: match &*target {
                Target::Http { urls, .. } => format!(
                    "{} HTTP/{}",
                    if urls[0].https { "https" } else { "http" },
                    if args.http == HttpVersion::Http2 {
                        "2"
                    } else {
                        "1.1"
                    }
                ),
                Target::Fcgi { .. } => "FastCGI".into(),
            },
            connections_established: c.established.load(Ordering::Relaxed),
            connections_failed: c.failures.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            server_closed: shared.server_closed.load(Ordering::Relaxed),
            published: acked.len() as u64,
            publish_failed,
            events_expected: tally.expected,
            events_received: c.events.load(Ordering::Relaxed),
            events_lost: tally.lost,
            events_duplicated: tally.duplicated,
            events_out_of_order: tally.out_of_order,
            latency_ms: percentiles(&latency),
            first_event_ms: percentiles(&first_event),
            comebacks: Comebacks::of(&mut tally.comebacks),
            seconds,
            failures: Vec::new(),
            stages: args.stages.clone(),
            series: std::mem::take(&mut *shared.series.lock().unwrap_or_else(|p| p.into_inner())),
        };
        if role.is_some() {
            // For the parent: the figures and what it needs to merge them.
            super::protocol::report_to_parent(&report, &latency, &first_event, comebacks_ms);
            return Ok(report);
        }
        report.failures = thresholds.check(&report);
        Ok(report)
    })
}
