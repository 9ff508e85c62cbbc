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
use super::client::Target;
use super::http::{parse_url, ClientSettings, HttpClient, HttpVersion, Url};
use super::progress::progress;
use super::publisher::{check_topics, publisher, publisher_client};
use super::report::{percentiles, Comebacks, Report, Shards, Thresholds};
use super::seen::{Outcome, Tally};
use super::series::{self, Second, Stage};
use super::subscriber::subscriber;

/// Run-wide counters, updated by every subscriber task.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) attempted: AtomicU64,
    pub(super) established: AtomicU64,
    pub(super) connected: AtomicUsize,
    pub(super) reconnects: AtomicU64,
    pub(super) events: AtomicU64,
    /// Subscribers whose first connection attempt has finished (connected or failed).
    pub(super) first_attempts: AtomicUsize,
    pub(super) failures: Mutex<HashMap<String, u64>>,
}

impl Counters {
    pub(super) fn fail(&self, cause: String) {
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
    pub(super) counters: Counters,
    pub(super) latency: Shards,
    /// This second's latencies, for the progress line (emptied each second).
    pub(super) this_second: Shards,
    pub(super) first_event: Shards,
    pub(super) server_closed: AtomicU64,
    pub(super) stop: CancellationToken,
    pub(super) publishing: AtomicU64,
    /// Publishes acknowledged so far.
    pub(super) acked: AtomicU64,
    pub(super) churn: f64,
    /// When the run began: reconnect times are counted from here.
    pub(super) began: Instant,
    /// `-H` headers.
    pub(super) headers: Vec<(String, String)>,
    /// Topics published to in turn (`--publish-url` given m times; 1 otherwise): event `seq`
    /// belongs to topic `(seq - 1) % topics`, subscriber `idx` to topic `idx % topics`.
    pub(super) topics: usize,
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
            topics: args.publish_url.len().max(1),
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

pub(super) fn settings(args: &LoadArgs, version: HttpVersion) -> ClientSettings {
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

/// What a run does, as its arguments say.
struct Plan {
    args: LoadArgs,
    /// A bench worker's share, under `--processes`.
    role: Option<WorkerRole>,
    stages: Option<Vec<Stage>>,
    /// Most subscribers at once (this process's share).
    peak: usize,
    target: Arc<Target>,
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
    check_topics(&args)?;
    let peak_total = stages.as_deref().map_or(args.subscribers, series::peak);
    let peak = role.map_or(peak_total, |r| r.share(peak_total));
    check_open_files(peak)?;
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if role.is_some() {
        // A worker of `--processes N`: the processes are the parallelism. A second runtime
        // thread in each only adds wakeups across threads (bench-50k.sh at 20,000 streams:
        // the bench's CPU 11.6–12.7 s with one thread, 12.8–13.5 s with two).
        b.worker_threads(1);
    }
    let rt = b.enable_all().build().map_err(|e| e.to_string())?;
    // Clients hold tokio handles (rustls, hyper): made inside the runtime.
    let _guard = rt.enter();
    let target = Arc::new(target(&args, peak)?);
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
    let plan = Plan {
        args,
        role,
        stages,
        peak,
        target,
    };
    rt.block_on(drive(plan, publish, shared))
}

/// The run: subscribers (ramped or staged) and publishing, the drain, then the report.
async fn drive(
    plan: Plan,
    publish: Option<(HttpClient, Vec<Url>)>,
    shared: Arc<Run>,
) -> Result<Report, String> {
    let (args, role) = (&plan.args, plan.role);
    let progress = tokio::spawn(progress(
        shared.clone(),
        args.quiet,
        plan.peak,
        role.is_some(),
    ));
    let started = Instant::now();
    // The server is sampled while the run publishes: not while its streams close at the end.
    let sampling = CancellationToken::new();
    let sampler = match role {
        None => super::samples::start(args, shared.began, sampling.clone())?,
        Some(_) => None,
    };
    let (subs, (acked, publish_failed)) = match &plan.stages {
        // Stages: publishing runs from the start, beside the ramps.
        Some(st) => {
            let p = tokio::spawn(publishing(
                publish,
                role,
                args.rate,
                series::total(st),
                shared.clone(),
            ));
            let subs = follow_stages(st, &plan.target, &shared, role).await;
            (subs, p.await.unwrap_or_default())
        }
        None => {
            let subs = ramp(&plan, &shared).await;
            let published =
                publishing(publish, role, args.rate, args.duration, shared.clone()).await;
            (subs, published)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    sampling.cancel();
    tokio::time::sleep(args.drain).await;
    shared.stop.cancel();
    let _ = progress.await;
    let sent_at = std::mem::take(&mut *shared.sent_at.lock().unwrap_or_else(|p| p.into_inner()));
    let mut tally = Tally::default();
    for (_, task) in subs {
        if let Ok(outcome) = task.await {
            tally.add(outcome, &acked, &sent_at, args.drain, shared.topics);
        }
    }
    let published = (acked.len() as u64, publish_failed);
    let samples = match sampler {
        Some(s) => s.await.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(report(&plan, &shared, tally, published, seconds, samples))
}

/// Publishes for `duration`: from here (`--publish-url`); in a bench worker, waits for its
/// parent to say what it published; else only waits. Returns the acknowledged sequence
/// numbers and the failed count.
async fn publishing(
    publish: Option<(HttpClient, Vec<Url>)>,
    role: Option<WorkerRole>,
    rate: f64,
    duration: Duration,
    shared: Arc<Run>,
) -> (Vec<u64>, u64) {
    match publish {
        Some((client, url)) => publisher(client, url, rate, duration, shared).await,
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

/// Starts this process's subscribers at `--ramp` a second and lets the ramp settle: every
/// subscriber connected (or failed) first, 10 s at most.
async fn ramp(plan: &Plan, shared: &Arc<Run>) -> Vec<Running> {
    let (args, role) = (&plan.args, plan.role);
    let mine = plan.peak;
    let mut subs = Vec::with_capacity(mine);
    let ramp = role.map_or(args.ramp, |r| args.ramp / r.of as f64);
    let gap = Duration::from_secs_f64(1.0 / ramp.max(1.0));
    let ramp_start = Instant::now();
    for k in 0..mine {
        let idx = role.map_or(k, |r| r.global(k));
        subs.push(spawn_subscriber(idx, &plan.target, shared));
        tokio::time::sleep_until((ramp_start + gap * (k as u32 + 1)).into()).await;
    }
    let settle = Instant::now() + Duration::from_secs(10);
    while shared.counters.first_attempts.load(Ordering::Relaxed) < mine && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    subs
}

/// The report of a finished run; a bench worker sends it to its parent, else its thresholds
/// are checked.
fn report(
    plan: &Plan,
    shared: &Run,
    mut tally: Tally,
    (published, publish_failed): (u64, u64),
    seconds: f64,
    samples: Vec<super::samples::Sample>,
) -> Report {
    let (args, c) = (&plan.args, &shared.counters);
    let latency = shared.latency.merged();
    let first_event = shared.first_event.merged();
    let comebacks_ms = tally.comebacks.clone();
    let mut report = Report {
        subscribers: plan.peak,
        connections_attempted: c.attempted.load(Ordering::Relaxed),
        transport_connections: match &*plan.target {
            Target::Http { client, .. } => client.connections.load(Ordering::Relaxed),
            Target::Fcgi { .. } => c.established.load(Ordering::Relaxed),
        },
        protocol: protocol_of(&plan.target, args.http),
        connections_established: c.established.load(Ordering::Relaxed),
        connections_failed: c.failures.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        reconnects: c.reconnects.load(Ordering::Relaxed),
        server_closed: shared.server_closed.load(Ordering::Relaxed),
        published,
        publish_failed,
        events_expected: tally.expected,
        events_received: c.events.load(Ordering::Relaxed),
        events_lost: tally.lost,
        events_duplicated: tally.duplicated,
        events_out_of_order: tally.out_of_order,
        events_misrouted: tally.misrouted,
        latency_ms: percentiles(&latency),
        first_event_ms: percentiles(&first_event),
        comebacks: Comebacks::of(&mut tally.comebacks),
        seconds,
        failures: Vec::new(),
        stages: args.stages.clone(),
        series: std::mem::take(&mut *shared.series.lock().unwrap_or_else(|p| p.into_inner())),
        samples,
    };
    if plan.role.is_some() {
        // For the parent: the figures and what it needs to merge them.
        super::protocol::report_to_parent(&report, &latency, &first_event, comebacks_ms);
        return report;
    }
    report.failures = Thresholds::of(args).check(&report);
    report
}

/// What the subscribers speak: `http HTTP/1.1`, `https HTTP/2`, `FastCGI`.
fn protocol_of(target: &Target, version: HttpVersion) -> String {
    match target {
        Target::Http { urls, .. } => format!(
            "{} HTTP/{}",
            if urls[0].https { "https" } else { "http" },
            if version == HttpVersion::Http2 {
                "2"
            } else {
                "1.1"
            }
        ),
        Target::Fcgi { .. } => "FastCGI".into(),
    }
}
