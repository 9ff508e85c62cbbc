//! The `metrics` route's document: Prometheus text exposition format (0.0.4), which
//! Prometheus, VictoriaMetrics, Grafana Agent and OpenMetrics parsers read. Process figures use
//! the standard `process_*` names; everything else is `fastsse_*`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Builds one exposition document.
#[derive(Default)]
pub struct Exposition {
    out: String,
    /// Labels every sample carries (`worker` under `[server] processes`: each worker's
    /// counters are a series of their own, never one series that seems to reset).
    common: Vec<(String, String)>,
}

/// A metric's kind.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Observations in cumulative buckets (`_bucket{le}`, `_sum`, `_count`).
    Histogram,
}

/// Upper bounds of [`Latency`]'s buckets, in seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram with fixed buckets, recorded from any thread without a lock.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Latency {
    /// Records one observation.
    pub fn record(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut running = 0;
        let cumulative = LATENCY_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(&b, n)| {
                running += n.load(Ordering::Relaxed);
                (b, running)
            })
            .collect();
        (
            cumulative,
            self.count.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    /// A document whose every sample carries `labels` too.
    pub fn with_labels(labels: &[(&str, &str)]) -> Exposition {
        Exposition {
            out: String::new(),
            common: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() || !self.common.is_empty() {
            let inner: Vec<String> = self
                .common
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(labels.iter().copied())
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// The samples of a histogram family just started, for one set of labels.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Latency) -> &mut Self {
        let (buckets, count, sum) = h.snapshot();
        for (le, n) in buckets {
            let le = le.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, n as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, count as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64)
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Open file descriptors and resident memory of this process, from /proc (Linux). Reading
/// /proc is served from memory by the kernel: it does not wait on a disk.
pub fn process_figures() -> (Option<usize>, Option<u64>) {
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count());
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096);
    (fds, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative() {
        let h = Latency::default();
        for ms in [0, 3, 3, 40, 5000] {
            h.record(std::time::Duration::from_millis(ms));
        }
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 5.046).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[3], (0.005, 3));
        assert_eq!(buckets[6], (0.05, 4));
        assert_eq!(buckets.last().unwrap().1, 4, "5 s is only in +Inf");
    }

    #[test]
    fn common_labels_go_first_on_every_sample() {
        let mut e = Exposition::with_labels(&[("worker", "2")]);
        e.single("fastsse_up", Kind::Gauge, "Up.", 1.0);
        e.family("fastsse_x_total", Kind::Counter, "X.").sample(
            "fastsse_x_total",
            &[("route", "/events")],
            5.0,
        );
        let text = e.finish();
        assert!(text.contains("fastsse_up{worker=\"2\"} 1\n"), "{text}");
        assert!(
            text.contains("fastsse_x_total{worker=\"2\",route=\"/events\"} 5\n"),
            "{text}"
        );
    }

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut e = Exposition::default();
        e.single(
            "fastsse_streams_active",
            Kind::Gauge,
            "Streams open now.",
            3.0,
        );
        e.family(
            "fastsse_events_published_total",
            Kind::Counter,
            "Events published.",
        )
        .sample("fastsse_events_published_total", &[("route", "/a\"b")], 7.0);
        assert_eq!(
            e.finish(),
            "# HELP fastsse_streams_active Streams open now.\n# TYPE fastsse_streams_active gauge\n\
             fastsse_streams_active 3\n\
             # HELP fastsse_events_published_total Events published.\n# TYPE fastsse_events_published_total counter\n\
             fastsse_events_published_total{route=\"/a\\\"b\"} 7\n"
        );
    }
}
