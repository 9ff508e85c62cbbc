//! Benchmarks printed as figures, never asserted: `fastsse bench sse` load-tests any SSE server
//! ([`load`]), `fastsse bench floor` is the least possible FastCGI SSE upstream for comparison
//! ([`floor`]), and `fastsse bench journal` measures publish throughput of the journal under
//! each fsync policy.

pub(crate) mod client;
pub mod floor;
pub(crate) mod http;
pub mod load;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::journal::{CorruptionPolicy, FsyncPolicy, JournalSettings, Publication};
use crate::hub::replay::ReplayBounds;
use crate::hub::{Hub, HubSettings};

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
        let hub = Hub::open(
            "bench",
            crate::hub::Storage::Local(JournalSettings {
                dir: dir.clone(),
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
            },
        )
        .map_err(|e| e.to_string())?;
        let data = "x".repeat(args.size);
        let (elapsed, mut lat) = rt.block_on(async {
            let start = Instant::now();
            let per = args.events.div_ceil(args.publishers);
            let mut tasks = Vec::new();
            for _ in 0..args.publishers {
                let (hub, data) = (Arc::clone(&hub), data.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per);
                    for _ in 0..per {
                        let t = Instant::now();
                        let p = Publication {
                            topics: vec!["bench".into()],
                            event: None,
                            retry_ms: None,
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
        });
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
