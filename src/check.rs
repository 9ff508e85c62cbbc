//! `fastsse check URL`: connects through the whole chain as a browser's `EventSource` would and
//! says what breaks Server-Sent Events in the field, each finding with the config line to
//! change: a status or Content-Type an `EventSource` gives up on, compression, a missing
//! `Cache-Control`, buffering (probe events published 300 ms apart that arrive in a burst), an
//! idle timeout shorter than the heartbeat, CORS for `--origin`, the retry hint, HTTP/1.1's six
//! streams per origin. Exits non-zero when anything would break a browser.

use std::time::{Duration, Instant};

use crate::bench::http::{
    head_text, parse_url, ClientSettings, HttpBody, HttpClient, HttpVersion, Url, NO_HEAD,
};
use crate::sse::SseParser;

/// Options of `fastsse check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The stream, as a browser opens it: http://HOST:PORT/PATH?QUERY.
    pub url: String,
    /// A topics route to publish probe events to (same topic as the stream), for the buffering
    /// check: http://HOST:PORT/events?topic=T.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Check CORS for a page on this origin (https://app.example.com).
    #[arg(long)]
    pub origin: Option<String>,
    /// How long to watch the stream for an idle timeout (longer than the heartbeat).
    #[arg(long, default_value = "20s", value_parser = |s: &str| crate::config::parse_duration(s))]
    pub idle: Duration,
    /// Accept any TLS certificate (a self-signed test server).
    #[arg(long, short = 'k')]
    pub insecure: bool,
}

const COMPRESSION_FIX: &str = "never compress text/event-stream: nginx `gzip off;` in the stream's location and text/event-stream out of `gzip_types` (in every proxy in front too); Apache `SetEnvIf Request_URI ^/events no-gzip` (or `SetEnv no-gzip 1` in its <Location>, and no `AddOutputFilterByType DEFLATE text/event-stream`); PHP `zlib.output_compression = Off`";

const BUFFERING_FIX: &str = "turn buffering off: nginx `fastcgi_buffering off;` and no `fastcgi_ignore_headers X-Accel-Buffering` (in a proxy in front: `proxy_buffering off;`); Apache `flushpackets=on`; lighttpd `server.stream-response-body = 2`";

/// What the check found.
#[derive(Default)]
struct Findings {
    problems: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Findings {
    fn problem(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.problems.push((what.into(), fix.into()));
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Checks the response head an `EventSource` gets.
fn check_head(head: &str, origin: Option<&str>, f: &mut Findings) -> bool {
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        f.problem(
            format!("the stream answered {status}: an EventSource closes for good on anything but 200"),
            "check the URL and the route; while fastsse is down, the shipped nginx config answers EventSources with a retry hint (error_page 502 504 = @fastsse_retry)",
        );
        return false;
    }
    match header(head, "content-type") {
        Some(t) if t.starts_with("text/event-stream") => {}
        other => f.problem(
            format!("Content-Type is {other:?}, not text/event-stream: an EventSource refuses it"),
            "route the URL to fastsse (nginx: the location's fastcgi_pass; Apache: ProxyPass/SetHandler)",
        ),
    }
    if let Some(enc) = header(head, "content-encoding") {
        f.problem(
            format!(
                "the stream is compressed (Content-Encoding: {enc}): compressors hold events back"
            ),
            COMPRESSION_FIX,
        );
    }
    let cache = header(head, "cache-control").unwrap_or("");
    if !cache.contains("no-cache") && !cache.contains("no-store") {
        f.problem(
            "no Cache-Control: no-cache on the stream: a cache in the chain may hold or replay it",
            "do not let the proxy rewrite fastsse's headers (nginx: no `proxy_hide_header Cache-Control` / `add_header Cache-Control` on this location)",
        );
    }
    if let Some(origin) = origin {
        match header(head, "access-control-allow-origin") {
            Some(o) if o == "*" || o == origin.to_ascii_lowercase() => {}
            other => f.problem(
                format!("no CORS for {origin} (Access-Control-Allow-Origin: {other:?}): a page there cannot open this stream"),
                "allow the origin where the stream is served (nginx: `add_header Access-Control-Allow-Origin https://app.example.com always;`)",
            ),
        }
    }
    if head.starts_with("http/1.") {
        f.notes.push(
            "served over HTTP/1.1: a browser opens at most 6 streams per origin (the 7th tab waits); HTTP/2 over TLS lifts that (nginx 1.22: `listen 443 ssl http2;`)".into(),
        );
    }
    true
}

/// Whether `url` answers a request with `extra` headers at once: a 200 head with no
/// Content-Encoding within 10 s (a server that sends nothing until its first event still
/// sends its head).
async fn streams(client: &HttpClient, url: &Url, extra: &[(&str, &str)]) -> bool {
    let Ok((parts, _body)) = client.get(url, 1, extra).await else {
        return false;
    };
    parts.status == 200 && header(&head_text(&parts), "content-encoding").is_none()
}

/// Reads the stream until `until`, returning (seconds since start, event data) of each event,
/// whether a retry hint was seen, and when the stream ended (if it did).
async fn watch(
    body: &mut HttpBody,
    start: Instant,
    until: Instant,
    parser: &mut SseParser,
    seen: &mut Vec<(f64, String)>,
) -> Result<Option<f64>, String> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match tokio::time::timeout(left, body.next_chunk()).await {
            Err(_) => return Ok(None),
            Ok(Ok(Some(chunk))) => {
                let t = start.elapsed().as_secs_f64();
                for ev in parser.feed(&chunk) {
                    seen.push((t, ev.data));
                }
            }
            Ok(Ok(None)) => return Ok(Some(start.elapsed().as_secs_f64())),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Five probe events published 300 ms apart: a chain that hands each on at once shows the
/// gaps, one that buffers shows them together (or not at all). Returns when the stream ended,
/// if it did.
async fn probe(
    client: &std::sync::Arc<HttpClient>,
    pub_url: &Url,
    body: &mut HttpBody,
    start: Instant,
    parser: &mut SseParser,
    seen: &mut Vec<(f64, String)>,
    f: &mut Findings,
) -> Result<Option<f64>, String> {
    let probes = tokio::spawn({
        let pub_url = pub_url.clone();
        let client = client.clone();
        async move {
            for i in 0..5 {
                let data = format!("fastsse-check probe {i}");
                tokio::time::timeout(Duration::from_secs(5), client.post(&pub_url, &data))
                    .await
                    .map_err(|_| "no answer within 5 s".to_string())??;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<(), String>(())
        }
    });
    let until = Instant::now() + Duration::from_secs(5);
    let before = seen.len();
    let ended = watch(body, start, until, parser, seen).await?;
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(10), probes).await {
        f.problem(
            format!("publishing probe events failed: {e}"),
            "check --publish-url (a topics route, the stream's topic)",
        );
    }
    let arrivals: Vec<f64> = seen[before..]
        .iter()
        .filter(|(_, d)| d.starts_with("fastsse-check probe"))
        .map(|(t, _)| *t)
        .collect();
    if arrivals.len() < 5 {
        f.problem(
            format!(
                "{} of 5 probe events arrived within 5 s: something holds them back",
                arrivals.len()
            ),
            BUFFERING_FIX,
        );
    } else {
        let mut gaps: Vec<f64> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_by(|a, b| a.total_cmp(b));
        let median = gaps[gaps.len() / 2];
        if median < 0.12 {
            f.problem(
                format!("probe events sent 300 ms apart arrived {:.0} ms apart (median): the chain buffers them", median * 1000.0),
                BUFFERING_FIX,
            );
        }
    }
    Ok(ended)
}

async fn check(args: &CheckArgs) -> Result<Findings, String> {
    let url = parse_url(&args.url)?;
    let publish: Option<Url> = args.publish_url.as_deref().map(parse_url).transpose()?;
    // A browser's view: HTTP/1.1, the system's CAs (or none checked with --insecure).
    let client = std::sync::Arc::new(HttpClient::new(
        ClientSettings {
            version: HttpVersion::Http1,
            insecure: args.insecure,
            cacert: None,
            sources: Vec::new(),
            streams_per_connection: 1,
        },
        1,
    )?);
    let mut f = Findings::default();
    // What a browser sends: compression is offered, so a compressing proxy shows itself.
    let mut extra = vec![("Accept-Encoding", "gzip, deflate, br")];
    if let Some(o) = &args.origin {
        extra.push(("Origin", o.as_str()));
    }
    let start = Instant::now();
    let opened = client.get(&url, 0, &extra).await;
    if matches!(&opened, Err(e) if e == NO_HEAD) {
        // Held back whole: by a buffer, or by a compressor waiting for enough to compress.
        // Asked again without offering compression, a compressor has nothing to do.
        extra.retain(|(k, _)| *k != "Accept-Encoding");
        if streams(&client, &url, &extra).await {
            f.problem(
                "no response head within 10 s when the request offers compression (Accept-Encoding: gzip, as every browser sends), and a stream at once without it: a compressor in the chain holds the events back",
                COMPRESSION_FIX,
            );
        } else {
            f.problem(
                "no response head within 10 s: something in the chain holds the whole response back",
                BUFFERING_FIX,
            );
        }
        return Ok(f);
    };
    let (parts, mut body) = opened?;
    let head = head_text(&parts);
    if !check_head(&head, args.origin.as_deref(), &mut f)
        || header(&head, "content-encoding").is_some()
    {
        return Ok(f);
    }
    let mut parser = SseParser::new();
    let mut seen = Vec::new();
    // The first second: the retry hint fastsse sends first.
    let mut ended = watch(
        &mut body,
        start,
        start + Duration::from_secs(1),
        &mut parser,
        &mut seen,
    )
    .await?;
    if parser.retry_ms.is_none() {
        f.notes.push(
            "no retry: hint in the first second (fastsse sends one first; another server may not)"
                .into(),
        );
    }
    if let (Some(pub_url), None) = (&publish, ended) {
        ended = probe(
            &client,
            pub_url,
            &mut body,
            start,
            &mut parser,
            &mut seen,
            &mut f,
        )
        .await?;
    } else if publish.is_none() {
        f.notes.push(
            "buffering not checked: pass --publish-url (a topics route, the stream's topic)".into(),
        );
    }
    if ended.is_none() {
        ended = watch(&mut body, start, start + args.idle, &mut parser, &mut seen).await?;
    }
    if let Some(at) = ended {
        f.problem(
            format!("the stream was closed after {at:.1} s: a timeout in the chain is shorter than the silence between events"),
            "keep every read timeout above fastsse's [stream] heartbeat (15 s): nginx `fastcgi_read_timeout 120s;` (and `proxy_read_timeout` in a proxy in front); Apache `ProxyTimeout`; or lower the heartbeat",
        );
    }
    Ok(f)
}

/// Runs the check and prints its findings; `Ok(false)` when something would break a browser.
pub fn run(args: CheckArgs) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let f = rt.block_on(check(&args))?;
    for (what, fix) in &f.problems {
        println!("PROBLEM  {what}\n         fix: {fix}");
    }
    for n in &f.notes {
        println!("note     {n}");
    }
    if f.problems.is_empty() {
        println!("ok       {} streams as an EventSource needs", args.url);
    }
    Ok(f.problems.is_empty())
}
