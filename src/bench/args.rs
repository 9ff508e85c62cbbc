//! The options of `fastsse bench sse`: where to connect and how (HTTP version, TLS, source
//! addresses, FastCGI), the run's shape (subscribers and ramp, or stages), publishing, churn,
//! thresholds and the outputs.

use std::time::Duration;

use super::http::HttpVersion;

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
    /// The subscribers' HTTP version: 1.1 (a connection per stream) or 2 (streams share
    /// connections, as in a browser; h2c prior knowledge on http://). The publisher speaks 1.1.
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
    /// source must produce events itself. Repeat it to publish to several topics in turn
    /// (event n goes to URL n mod m); then give `--url` as many times: subscribers of `--url` k
    /// expect only what went to `--publish-url` k.
    #[arg(long)]
    pub publish_url: Vec<String>,
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
    /// Staged ramps instead of -n/--ramp/--duration: DURATION:SUBSCRIBERS,… (30s:1000,2m:5000,30s:0),
    /// each stage moving the subscriber count linearly to its target; publishing runs
    /// throughout. Subscribers that leave are expected to have seen what was published while
    /// they were there (up to --drain before they left).
    #[arg(long)]
    pub stages: Option<String>,
    /// Fail the run when more than this many deliveries arrived twice (not checked unless given).
    #[arg(long)]
    pub max_duplicated: Option<u64>,
    /// Fail the run when more than this many deliveries arrived after a later event (not
    /// checked unless given).
    #[arg(long)]
    pub max_out_of_order: Option<u64>,
    /// Read the server's Prometheus text page at this URL (fastsse's `/metrics`) every
    /// `--sample-every`: its memory, open files, tasks, journal bytes and streams go into the
    /// report and its charts.
    #[arg(long)]
    pub sample: Option<String>,
    /// How often `--sample` reads.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Fail the run when the sampled resident memory or open files move more than this percent
    /// from their first reading after `--settle` (a soak's leak check; needs `--sample`).
    #[arg(long, requires = "sample")]
    pub max_growth: Option<f64>,
    /// When `--max-growth` starts counting: the warm-up before it is not judged.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub settle: Duration,
    /// Write the report as one self-contained HTML page (inline SVG charts) to this file.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Spread the subscribers over this many bench processes (one process may open only
    /// `ulimit -n` files: 50,000 streams need several). This one publishes, drives them and
    /// merges their figures.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Internal: run as bench process I of N (`I/N`), driven by its parent over stdin/stdout.
    #[arg(long, hide = true)]
    pub bench_worker: Option<String>,
    /// Print the final report as one JSON object (with the per-second series).
    #[arg(long)]
    pub json: bool,
    /// No progress line each second.
    #[arg(long)]
    pub quiet: bool,
}
