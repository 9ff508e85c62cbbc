//! The progress of a `fastsse bench sse` run: a line a second on stderr (or, in a bench
//! worker, a `SEC` line for its parent) and the series of [`Second`]s the report charts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::Run;
use super::series::Second;

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
