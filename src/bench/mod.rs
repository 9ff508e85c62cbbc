//! Benchmarks printed as figures, never asserted: `fastsse bench sse` load-tests any SSE server
//! ([`load`]), `fastsse bench floor` is the least possible FastCGI SSE upstream for comparison
//! ([`floor`]), and `fastsse bench journal` measures publish throughput of the journal under
//! each fsync policy.

mod args;
pub(crate) mod client;
pub mod floor;
pub mod html;
pub(crate) mod http;
pub mod load;
mod progress;
mod protocol;
mod publisher;
pub mod report;
pub mod samples;
mod seen;
pub mod series;
mod spread;
mod subscriber;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::journal::{CorruptionPolicy, FsyncPolicy, JournalSettings, Publication};
use crate::hub::replay::ReplayBounds;
use crate::hub::{Hub, HubSettings};

/// Runs `fastsse bench sse`: prints the report (or its JSON), writes `--report`; `Ok(false)`
/// when the run failed its thresholds.
pub fn sse(args: load::LoadArgs) -> Result<bool, String> {
    let (json, html) = (args.json, args.report.clone());
    if args.bench_worker.is_some() {
        // A bench worker's figures went to its parent (stdout), which judges the run.
        load::run(args)?;
        return Ok(true);
    }
    // Said here, before any worker starts: a worker's refusal would only read "ended early".
    publisher::check_topics(&args)?;
    // --processes: this process drives workers (spread) instead of subscribing itself.
    let report = if args.processes > 1 {
        spread::run(args)?
    } else {
        load::run(args)?
    };
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        report.print();
    }
    if let Some(path) = html {
        let title = format!("fastsse bench sse: {}", report.protocol);
        html::write(
            &path,
            None,
            &title,
            &[("run".into(), report_clone(&report)?)],
        )?;
        eprintln!("report written to {}", path.display());
    }
    Ok(!report.failed())
}

fn report_clone(r: &report::Report) -> Result<report::Report, String> {
    serde_json::to_value(r)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())
}

/// Options of `fastsse bench report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Saved `fastsse bench sse --json` outputs, as NAME=FILE (or FILE: named by its stem).
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// The HTML page to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Also write each chart as an SVG file in this folder (latency.svg, connected.svg,
    /// events.svg).
    #[arg(long)]
    pub svg_dir: Option<PathBuf>,
    /// The page's title.
    #[arg(long, default_value = "fastsse bench")]
    pub title: String,
}

/// `fastsse bench report`: one page (and SVG files) with saved runs side by side.
pub fn report(args: ReportArgs) -> Result<(), String> {
    let mut runs = Vec::new();
    for spec in &args.runs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), PathBuf::from(f)),
            None => {
                let f = PathBuf::from(spec);
                let stem = f.file_stem().map(|s| s.to_string_lossy().to_string());
                (stem.unwrap_or_else(|| spec.clone()), f)
            }
        };
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let r: report::Report = serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "{}: not a `fastsse bench sse --json` report: {e}",
                file.display()
            )
        })?;
        runs.push((name, r));
    }
    html::write(&args.out, args.svg_dir.as_deref(), &args.title, &runs)
}

/// Options of `fastsse bench journal`.
#[derive(Debug, clap::Args)]
pub struct JournalBenchArgs {
    /// Events to publish per fsync policy.
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Concurrent publishers (concurrent publishes share an fsync under `batch`).
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    /// Bytes of data per event.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Directory for the scratch journals (default: a new folder under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A scratch hub on a local journal in `dir` under `policy`.
fn bench_hub(dir: &std::path::Path, policy: FsyncPolicy) -> Result<Arc<Hub>, String> {
    Hub::open(
        "bench",
        crate::hub::Storage::Local(JournalSettings {
            dir: dir.to_path_buf(),
            fsync: policy,
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(2),
            on_corruption: CorruptionPolicy::Skip,
        }),
        HubSettings {
            history: ReplayBounds {
                events: 1000,
                bytes: 64 << 20,
                age: Duration::from_secs(3600),
            },
            subscriber_queue: 16,
            retry: Duration::from_secs(3),
            publish_timeout: Duration::from_secs(2),
            unretained_prefix: None,
            load_after: 0,
        },
    )
    .map_err(|e| e.to_string())
}

/// Publishes `--events` from `--publishers` tasks at once; the time it took and each
/// acknowledged publish's latency.
async fn publish_all(hub: &Arc<Hub>, args: &JournalBenchArgs) -> (Duration, Vec<Duration>) {
    let data = "x".repeat(args.size);
    let start = Instant::now();
    let per = args.events.div_ceil(args.publishers);
    let mut tasks = Vec::new();
    for _ in 0..args.publishers {
        let (hub, data) = (Arc::clone(hub), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let p = Publication {
                    topics: vec!["bench".into()],
                    data: data.clone(),
                    ..Default::default()
                };
                if hub.publish(p).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    (start.elapsed(), all)
}

/// Runs the journal benchmark for `always`, `batch` and `never`, printing one line each.
pub fn journal(args: JournalBenchArgs) -> Result<(), String> {
    let base = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("fastsse-bench-{}", std::process::id()))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "journal publish benchmark: {} events of {} bytes, {} concurrent publishers, in {}",
        args.events,
        args.size,
        args.publishers,
        base.display()
    );
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>12}",
        "fsync", "events/s", "ack p50", "ack p99", "ack max"
    );
    for policy in [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::Never] {
        let dir = base.join(format!("{policy:?}").to_lowercase());
        let _ = std::fs::remove_dir_all(&dir);
        let hub = bench_hub(&dir, policy)?;
        let (elapsed, mut lat) = rt.block_on(publish_all(&hub, &args));
        lat.sort_unstable();
        println!(
            "{:<8} {:>12.0} {:>10.2}ms {:>10.2}ms {:>10.2}ms",
            format!("{policy:?}").to_lowercase(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
        drop(hub);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    Ok(())
}
