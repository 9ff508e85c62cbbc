//! `fastsse bench sse --processes N`: the subscribers spread over N bench processes (one
//! process may open only `ulimit -n` files), driven by this one, which publishes and merges
//! their figures into one report.
//!
//! The lines they exchange are in [`super::protocol`].

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::args::LoadArgs;
use super::load::Run;
use super::protocol::{End, WorkerReport};
use super::publisher::publisher;
use super::report::{percentiles, Comebacks, Report, Thresholds};
use super::series::{self, Second};

/// This process's arguments for a worker: the same, without the parent's own options.
fn worker_args(index: usize, of: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in std::env::args().skip(1) {
        if skip_value {
            skip_value = false;
            continue;
        }
        let name = a.split('=').next().unwrap_or("");
        match name {
            "--processes" | "--report" => skip_value = !a.contains('='),
            "--json" | "--quiet" => {}
            _ => out.push(a),
        }
    }
    out.extend([
        "--json".into(),
        "--quiet".into(),
        "--bench-worker".into(),
        format!("{index}/{of}"),
    ]);
    out
}

struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    lines: mpsc::Receiver<(usize, String)>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(of: usize) -> Result<Workers, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (tx, lines) = mpsc::channel();
    let (mut children, mut stdins) = (Vec::new(), Vec::new());
    for i in 0..of {
        let mut c = Command::new(&exe)
            .args(worker_args(i, of))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting bench process {i}: {e}"))?;
        stdins.push(c.stdin.take().ok_or("no stdin")?);
        let out = c.stdout.take().ok_or("no stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
            let _ = tx.send((i, "EXIT".into()));
        });
        children.push(c);
    }
    Ok(Workers {
        children,
        stdins,
        lines,
    })
}

/// Per-second figures of the workers, merged as their lines arrive.
#[derive(Default)]
struct Seconds {
    by_t: BTreeMap<u64, Vec<Second>>,
}

impl Seconds {
    fn add(&mut self, s: Second, of: usize, quiet: bool, peak: usize) {
        let t = s.t;
        let v = self.by_t.entry(t).or_default();
        v.push(s);
        if v.len() == of && !quiet {
            let m = merge_second(v, 0);
            eprintln!(
                "t={:>4}s connected={}/{peak} events/s={} p50={:.1}ms p99={:.1}ms (over {of} bench processes)",
                m.t, m.connected, m.events, m.p50_ms, m.p99_ms
            );
        }
    }
}

/// One second of several workers: sums, the p50 weighted by events, the highest p99.
fn merge_second(parts: &[Second], published: u64) -> Second {
    let events: u64 = parts.iter().map(|s| s.events).sum();
    let mut errors = BTreeMap::new();
    for s in parts {
        for (k, v) in &s.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    Second {
        t: parts.first().map_or(0, |s| s.t),
        connected: parts.iter().map(|s| s.connected).sum(),
        events,
        published,
        p50_ms: parts
            .iter()
            .map(|s| s.p50_ms * s.events as f64)
            .sum::<f64>()
            / events.max(1) as f64,
        p99_ms: parts.iter().map(|s| s.p99_ms).fold(0.0, f64::max),
        errors,
    }
}

fn histogram(parts: &[WorkerReport], f: fn(&WorkerReport) -> &Vec<(u64, u64)>) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for p in parts {
        for &(v, n) in f(p) {
            let _ = h.record_n(v.clamp(1, 600_000_000), n);
        }
    }
    h
}

/// What the parent of a spread run keeps while it drives its workers.
struct Parent {
    args: LoadArgs,
    /// Bench processes.
    of: usize,
    /// Most subscribers at once, over every process.
    peak: usize,
    w: Workers,
    seconds: Seconds,
}

impl Parent {
    /// Takes a `SEC` line into the merged seconds.
    fn second(&mut self, json: &str) {
        if let Ok(s) = serde_json::from_str(json) {
            let (of, quiet, peak) = (self.of, self.args.quiet, self.peak);
            self.seconds.add(s, of, quiet, peak);
        }
    }

    /// Waits until every worker is READY: its share connected (10 s of settling at most).
    fn await_ready(&mut self) -> Result<(), String> {
        let of = self.of;
        let ramp = Duration::from_secs_f64(self.args.subscribers as f64 / self.args.ramp.max(1.0));
        let ready_by = Instant::now() + ramp + Duration::from_secs(30);
        let mut ready = 0;
        while ready < of {
            let left = ready_by.saturating_duration_since(Instant::now());
            let (i, line) = self
                .w
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("{ready} of {of} bench processes ready in time"))?;
            match line.split_once(' ').unwrap_or((line.as_str(), "")) {
                ("READY", _) => ready += 1,
                ("SEC", json) => self.second(json),
                ("EXIT", _) => return Err(format!("bench process {i} ended before it was ready")),
                _ => {}
            }
        }
        Ok(())
    }

    /// Tells every worker what was published (`END`): the acknowledged sequence numbers and
    /// when each was sent, on the wall clock.
    fn send_end(&mut self, shared: &Run, acked: &[u64]) {
        let (now, now_us) = (
            Instant::now(),
            crate::source::clock::unix_now().as_micros() as u64,
        );
        let end = End {
            sent_at_us: shared
                .sent_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|&t| now_us - (now - t).as_micros() as u64)
                .collect(),
            acked: acked.to_vec(),
        };
        let end = format!("END {}\n", serde_json::to_string(&end).unwrap_or_default());
        for s in &mut self.w.stdins {
            let _ = s.write_all(end.as_bytes());
            let _ = s.flush();
        }
    }

    /// Every worker's report (within the drain and a minute).
    fn reports(&mut self) -> Result<Vec<WorkerReport>, String> {
        let of = self.of;
        let mut parts = Vec::new();
        let mut reported = vec![false; of];
        let report_by = Instant::now() + self.args.drain + Duration::from_secs(60);
        while parts.len() < of {
            let left = report_by.saturating_duration_since(Instant::now());
            let (i, line) =
                self.w.lines.recv_timeout(left).map_err(|_| {
                    format!("{} of {of} bench processes reported in time", parts.len())
                })?;
            if let Some(json) = line.strip_prefix("REPORT ") {
                reported[i] = true;
                parts.push(
                    serde_json::from_str::<WorkerReport>(json)
                        .map_err(|e| format!("bench process {i}: {e}"))?,
                );
            } else if let Some(json) = line.strip_prefix("SEC ") {
                self.second(json);
            } else if line == "EXIT" && !reported[i] {
                return Err(format!("bench process {i} ended without its report"));
            }
        }
        Ok(parts)
    }
}

/// Runs the spread run: starts the workers, publishes, merges.
pub(super) fn run(args: LoadArgs) -> Result<Report, String> {
    let of = args.processes;
    let stages = args
        .stages
        .as_deref()
        .map(series::parse_stages)
        .transpose()?;
    let peak = stages.as_deref().map_or(args.subscribers, series::peak);
    let duration = stages.as_deref().map_or(args.duration, series::total);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _guard = rt.enter();
    let publish = super::publisher::publisher_client(&args)?;
    let mut parent = Parent {
        w: start(of)?,
        of,
        peak,
        seconds: Seconds::default(),
        args,
    };
    // Counted from the workers' start, as their seconds are.
    let shared = Arc::new(Run::new(&parent.args));
    let progress = rt.spawn(super::progress::progress(shared.clone(), true, peak, false));
    parent.await_ready()?;
    let started = Instant::now();
    // The server is sampled while the run publishes: not while its streams close at the end.
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = super::samples::start(&parent.args, shared.began, sampling.clone())?;
    let publishing = rt.spawn({
        let (shared, rate) = (shared.clone(), parent.args.rate);
        async move {
            match publish {
                Some((client, url)) => publisher(client, url, rate, duration, shared).await,
                None => {
                    tokio::time::sleep(duration).await;
                    (Vec::new(), 0)
                }
            }
        }
    });
    while !publishing.is_finished() {
        if let Ok((_, line)) = parent.w.lines.recv_timeout(Duration::from_millis(100)) {
            if let Some(json) = line.strip_prefix("SEC ") {
                parent.second(json);
            }
        }
    }
    let (acked, publish_failed) = rt.block_on(publishing).unwrap_or_default();
    sampling.cancel();
    let secs = started.elapsed().as_secs_f64();
    parent.send_end(&shared, &acked);
    let parts = parent.reports()?;
    shared.stop();
    let _ = rt.block_on(progress);
    let samples = match sampler {
        Some(s) => rt.block_on(s).unwrap_or_default(),
        None => Vec::new(),
    };
    let thresholds = Thresholds::of(&parent.args);
    let mut report = merged(parent, &parts, &shared);
    report.published = acked.len() as u64;
    report.publish_failed = publish_failed;
    report.seconds = secs;
    report.samples = samples;
    report.failures = thresholds.check(&report);
    Ok(report)
}

/// The workers' reports merged, with the parent's publish failures added.
fn merged(parent: Parent, parts: &[WorkerReport], shared: &Run) -> Report {
    let published_by_t: HashMap<u64, u64> = shared
        .series
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|s| (s.t, s.published))
        .collect();
    let args = &parent.args;
    let mut report = merge(parts, args, parent.peak, parent.seconds, &published_by_t);
    for (k, v) in shared
        .counters_failures()
        .into_iter()
        .filter(|(k, _)| k.starts_with("publish"))
    {
        *report.connections_failed.entry(k).or_default() += v;
    }
    report
}

/// The workers' reports as one.
fn merge(
    parts: &[WorkerReport],
    args: &LoadArgs,
    peak: usize,
    seconds: Seconds,
    published_by_t: &HashMap<u64, u64>,
) -> Report {
    let sum = |f: fn(&Report) -> u64| parts.iter().map(|p| f(&p.report)).sum::<u64>();
    let mut failed: HashMap<String, u64> = HashMap::new();
    for p in parts {
        for (k, v) in &p.report.connections_failed {
            *failed.entry(k.clone()).or_default() += v;
        }
    }
    let mut comebacks: Vec<u64> = parts
        .iter()
        .flat_map(|p| p.comebacks_ms.iter().copied())
        .collect();
    Report {
        subscribers: peak,
        protocol: format!(
            "{} (over {} bench processes)",
            parts.first().map_or("", |p| p.report.protocol.as_str()),
            args.processes
        ),
        connections_attempted: sum(|r| r.connections_attempted),
        transport_connections: sum(|r| r.transport_connections),
        connections_established: sum(|r| r.connections_established),
        connections_failed: failed,
        reconnects: sum(|r| r.reconnects),
        server_closed: sum(|r| r.server_closed),
        published: 0,
        publish_failed: 0,
        events_expected: sum(|r| r.events_expected),
        events_received: sum(|r| r.events_received),
        events_lost: sum(|r| r.events_lost),
        events_duplicated: sum(|r| r.events_duplicated),
        events_out_of_order: sum(|r| r.events_out_of_order),
        events_misrouted: sum(|r| r.events_misrouted),
        latency_ms: percentiles(&histogram(parts, |p| &p.latency)),
        first_event_ms: percentiles(&histogram(parts, |p| &p.first_event)),
        comebacks: Comebacks::of(&mut comebacks),
        seconds: 0.0,
        failures: Vec::new(),
        stages: args.stages.clone(),
        series: seconds
            .by_t
            .values()
            .map(|v| merge_second(v, published_by_t.get(&v[0].t).copied().unwrap_or(0)))
            .collect(),
        samples: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::buckets;
    use super::*;

    #[test]
    fn seconds_merge_by_sum_weighted_p50_and_highest_p99() {
        let s = |connected, events, p50_ms, p99_ms| Second {
            t: 3,
            connected,
            events,
            published: 0,
            p50_ms,
            p99_ms,
            errors: [("http 503".to_string(), 1)].into(),
        };
        let m = merge_second(&[s(10, 300, 2.0, 9.0), s(5, 100, 6.0, 20.0)], 7);
        assert_eq!((m.t, m.connected, m.events, m.published), (3, 15, 400, 7));
        assert!((m.p50_ms - 3.0).abs() < 1e-9, "{}", m.p50_ms);
        assert_eq!(m.p99_ms, 20.0);
        assert_eq!(m.errors["http 503"], 2);
    }

    #[test]
    fn histograms_travel_as_buckets() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        for v in [1000, 1000, 2500, 90_000] {
            h.record(v).unwrap();
        }
        let part = |b| {
            WorkerReport {
            report: serde_json::from_value(serde_json::json!({
                "subscribers": 0, "protocol": "", "connections_attempted": 0,
                "transport_connections": 0, "connections_established": 0,
                "connections_failed": {}, "reconnects": 0, "server_closed": 0, "published": 0,
                "publish_failed": 0, "events_expected": 0, "events_received": 0,
                "events_lost": 0, "events_duplicated": 0, "events_out_of_order": 0,
                "latency_ms": {"samples": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0},
                "first_event_ms": {"samples": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0},
                "comebacks": {"count": 0, "peak_per_100ms": 0, "span_ms": 0, "span_p5_p95_ms": 0},
                "seconds": 0.0, "failures": []
            }))
            .unwrap(),
            latency: b,
            first_event: vec![],
            comebacks_ms: vec![],
        }
        };
        let merged = histogram(&[part(buckets(&h)), part(buckets(&h))], |p| &p.latency);
        assert_eq!(merged.len(), 8);
        assert_eq!(merged.max(), h.max());
        assert_eq!(merged.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }
}
