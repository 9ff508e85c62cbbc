//! The `metrics` route's document: Prometheus text exposition format (0.0.4), which
//! Prometheus, VictoriaMetrics, Grafana Agent and OpenMetrics parsers read. Process figures use
//! the standard `process_*` names; everything else is `fastsse_*`.

use std::fmt::Write as _;

/// Builds one exposition document.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// A metric's kind.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up (name ends in `_total`).
    Counter,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
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
