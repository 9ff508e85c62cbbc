//! The bench's figures: latency histograms sharded across subscriber tasks, percentiles, and
//! the final [`Report`] (printed, or as JSON), with the pass/fail rule a deploy gate uses.

use std::collections::HashMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Latency histograms sharded so that thousands of subscriber tasks rarely contend.
pub(super) struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    pub(super) fn new() -> Shards {
        Shards(
            (0..32)
                .map(|_| Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()))
                .collect(),
        )
    }
    pub(super) fn record(&self, shard: usize, us: u64) {
        let mut h = self.0[shard % self.0.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = h.record(us.clamp(1, 600_000_000));
    }
    /// The samples so far, merged, leaving every shard empty.
    pub(super) fn take(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap();
        for s in &self.0 {
            let mut h = s.lock().unwrap_or_else(|p| p.into_inner());
            let _ = all.add(&*h);
            h.reset();
        }
        all
    }

    pub(super) fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap();
        for s in &self.0 {
            let _ = all.add(&*s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// The final figures.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Subscribers asked for.
    pub subscribers: usize,
    /// How the subscribers connected: `http HTTP/1.1`, `https HTTP/2`, `FastCGI`.
    pub protocol: String,
    /// Connection attempts (including reconnects).
    pub connections_attempted: u64,
    /// TCP (or unix) connections opened: one per stream over HTTP/1.1, shared over HTTP/2.
    pub transport_connections: u64,
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
    /// Events that reached a subscriber of another topic (several `--publish-url`).
    #[serde(default)]
    pub events_misrouted: u64,
    /// Delivery latency in milliseconds: p50, p90, p99, p99.9, max.
    pub latency_ms: Percentiles,
    /// Time from connecting to the first event, in milliseconds.
    pub first_event_ms: Percentiles,
    /// How the reconnects after server-ended streams were spread in time.
    pub comebacks: Comebacks,
    /// Seconds spent publishing (after the ramp-up).
    pub seconds: f64,
    /// Why the run failed (empty: it passed).
    pub failures: Vec<String>,
    /// `--stages` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<String>,
    /// One entry per second of the run.
    #[serde(default)]
    pub series: Vec<super::series::Second>,
    /// The server's own figures (`--sample`), one entry per reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<super::samples::Sample>,
}

/// What makes a run fail, beyond lost events and failed connections.
pub struct Thresholds {
    /// `--max-p99`.
    pub max_p99: Option<std::time::Duration>,
    /// `--max-loss`.
    pub max_loss: u64,
    /// `--min-delivered` (percent).
    pub min_delivered: Option<f64>,
    /// Whether the run published (so that events were expected).
    pub publishing: bool,
    /// `--max-duplicated`.
    pub max_duplicated: Option<u64>,
    /// `--max-out-of-order`.
    pub max_out_of_order: Option<u64>,
    /// `--max-growth` (percent) and `--settle`.
    pub max_growth: Option<(f64, std::time::Duration)>,
}

impl Thresholds {
    /// The thresholds `args` set.
    pub fn of(args: &super::args::LoadArgs) -> Thresholds {
        Thresholds {
            max_p99: args.max_p99,
            max_loss: args.max_loss,
            min_delivered: args.min_delivered,
            publishing: !args.publish_url.is_empty(),
            max_duplicated: args.max_duplicated,
            max_out_of_order: args.max_out_of_order,
            max_growth: args.max_growth.map(|g| (g, args.settle)),
        }
    }

    /// Every reason `r` fails, in words a CI log can show.
    pub fn check(&self, r: &Report) -> Vec<String> {
        let mut why = Vec::new();
        if r.events_misrouted > 0 {
            why.push(format!(
                "{} events reached subscribers of another topic",
                r.events_misrouted
            ));
        }
        if let Some(max) = self.max_out_of_order.filter(|&m| r.events_out_of_order > m) {
            why.push(format!(
                "{} events arrived after a later one (--max-out-of-order {max})",
                r.events_out_of_order
            ));
        }
        if let Some(max) = self.max_duplicated.filter(|&m| r.events_duplicated > m) {
            why.push(format!(
                "{} deliveries arrived twice (--max-duplicated {max})",
                r.events_duplicated
            ));
        }
        if let Some((pct, settle)) = self.max_growth {
            why.extend(super::samples::growth(&r.samples, settle, pct));
        }
        if r.events_lost > self.max_loss {
            why.push(format!(
                "{} expected deliveries lost (--max-loss {})",
                r.events_lost, self.max_loss
            ));
        }
        let failed: u64 = r.connections_failed.values().sum();
        if failed > 0 {
            why.push(format!("{failed} connection attempts failed"));
        }
        if r.publish_failed > 0 {
            why.push(format!("{} publishes failed", r.publish_failed));
        }
        if self.publishing && r.events_expected == 0 {
            why.push("no delivery was expected: nothing was published and acknowledged".into());
        }
        if r.events_received == 0 {
            why.push("no event was received".into());
        }
        if let Some(max) = self.max_p99 {
            let max_ms = max.as_secs_f64() * 1000.0;
            if r.latency_ms.p99 > max_ms {
                why.push(format!(
                    "latency p99 {:.1} ms is over --max-p99 {max_ms:.1} ms",
                    r.latency_ms.p99
                ));
            }
        }
        if let Some(min) = self.min_delivered {
            let delivered = r.events_expected - r.events_lost;
            let pct = 100.0 * delivered as f64 / r.events_expected.max(1) as f64;
            if pct < min {
                why.push(format!("{pct:.2}% delivered, under --min-delivered {min}%"));
            }
        }
        why
    }
}

/// How reconnects after the server ended streams (a restart, an upgrade) were spread in time:
/// what a server sees when thousands of browsers come back.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Comebacks {
    /// Reconnects after a server-ended stream.
    pub count: u64,
    /// The most of them in any 100 ms.
    pub peak_per_100ms: u64,
    /// From the first to the last of them, in milliseconds.
    pub span_ms: u64,
    /// From the 5th to the 95th percentile of them, in milliseconds.
    pub span_p5_p95_ms: u64,
}

impl Comebacks {
    /// Figures from the reconnect times (ms after the run began); sorts them.
    pub(super) fn of(times_ms: &mut [u64]) -> Comebacks {
        times_ms.sort_unstable();
        let (Some(&first), Some(&last)) = (times_ms.first(), times_ms.last()) else {
            return Comebacks::default();
        };
        let mut peak = 0;
        let mut from = 0;
        for (to, &t) in times_ms.iter().enumerate() {
            while times_ms[from] + 100 <= t {
                from += 1;
            }
            peak = peak.max(to + 1 - from);
        }
        let at = |q: f64| times_ms[((times_ms.len() - 1) as f64 * q) as usize];
        Comebacks {
            count: times_ms.len() as u64,
            peak_per_100ms: peak as u64,
            span_ms: last - first,
            span_p5_p95_ms: at(0.95) - at(0.05),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

pub(super) fn percentiles(h: &Histogram<u64>) -> Percentiles {
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

impl Report {
    /// Whether the run should fail a deploy gate (see [`Report::failures`]).
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The human-readable report.
    pub fn print(&self) {
        println!(
            "subscribers           {} ({}, {} transport connections)",
            self.subscribers, self.protocol, self.transport_connections
        );
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
            "events                expected {} received {} lost {} duplicated {} out of order {} other topic {}",
            self.events_expected,
            self.events_received,
            self.events_lost,
            self.events_duplicated,
            self.events_out_of_order,
            self.events_misrouted
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
        for (family, [first, last, min, max]) in
            super::samples::summary(&self.samples, Default::default())
        {
            println!(
                "server {family:<32} first {first} last {last} least {min} most {max} ({} readings)",
                self.samples.len()
            );
        }
        for why in &self.failures {
            println!("FAIL                  {why}");
        }
        let b = &self.comebacks;
        if b.count > 0 {
            println!(
                "comebacks             {} after server-ended streams, over {} ms (p5-p95 {} ms), peak {} per 100 ms",
                b.count, b.span_ms, b.span_p5_p95_ms, b.peak_per_100ms
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Comebacks, Shards};

    #[test]
    fn take_empties_the_window_and_merged_keeps_everything() {
        let (all, window) = (Shards::new(), Shards::new());
        for (i, us) in [1000u64, 2000, 3000].into_iter().enumerate() {
            all.record(i, us);
            window.record(i, us);
        }
        assert_eq!(window.take().len(), 3);
        assert_eq!(window.take().len(), 0, "the next second starts empty");
        window.record(0, 9000);
        assert_eq!(
            window.take().max(),
            9007,
            "only the new sample (3 significant digits)"
        );
        assert_eq!(all.merged().len(), 3);
    }

    #[test]
    fn comebacks_peak_is_the_busiest_100ms_window() {
        assert_eq!(Comebacks::of(&mut []).count, 0);
        // Ten at once, then one every 50 ms.
        let mut t: Vec<u64> = (0..10)
            .map(|_| 1000)
            .chain((1..=20).map(|i| 1000 + i * 50))
            .collect();
        let c = Comebacks::of(&mut t);
        assert_eq!((c.count, c.span_ms), (30, 1000));
        assert_eq!(c.peak_per_100ms, 11, "ten at 1000 and one at 1050");
        // Evenly spread: one every 10 ms → 10 per 100 ms.
        let mut even: Vec<u64> = (0..1000).rev().map(|i| i * 10).collect();
        let c = Comebacks::of(&mut even);
        assert_eq!((c.peak_per_100ms, c.span_ms), (10, 9990));
        assert!(
            (8900..=9000).contains(&c.span_p5_p95_ms),
            "{}",
            c.span_p5_p95_ms
        );
    }
}
