//! Opening streams: the `max_streams` limit (a permit per stream), the answer when every slot is
//! taken, each stream's timing (heartbeat, retry, lifetime, `[cgi] hold`) and its access-log
//! line. Every route that streams opens its streams here; none counts them itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::access_log::{AccessLog, StreamLog};
use crate::config::Config;
use crate::request::Request;
use crate::response::{stream_headers, FullResponse, Response, StreamResponse};
use crate::source::{Source, StreamTiming};
use crate::stats::{Stats, StreamPermit};

/// The streams of one process: their counters, the access log, and whether this process
/// serves one CGI request (where `[cgi] hold` applies).
pub struct Streams {
    /// The shared counters (streams, connections, input).
    pub stats: Arc<Stats>,
    /// The access log, when `[server] access_log` is set (opened at start).
    pub access_log: Option<Arc<AccessLog>>,
    /// When the process started (`uptime_seconds`).
    pub started: Instant,
    /// Serving one CGI request: `[cgi] hold` applies.
    pub cgi: bool,
    /// The timing the last stream was opened with, shared by the streams opened with the same
    /// (every open stream would otherwise keep its own 80 bytes of it).
    pub(crate) shared_timing: std::sync::Mutex<Option<Arc<StreamTiming>>>,
}

impl Streams {
    /// Streams of this CGI request end after `[cgi] hold`.
    pub fn held(&self, config: &Config) -> bool {
        self.cgi && config.cgi.hold.is_some()
    }

    /// The timing of a stream opened under `config`.
    pub fn timing(&self, config: &Config) -> StreamTiming {
        let hold = config.cgi.hold.filter(|_| self.cgi);
        let max_lifetime = match (config.stream.max_lifetime, hold) {
            (Some(life), Some(hold)) => Some(life.min(hold)),
            (life, hold) => life.or(hold),
        };
        StreamTiming {
            heartbeat: config.stream.heartbeat,
            retry: config.stream.retry,
            max_lifetime,
            drain: config.stream.drain_period,
            // Held CGI streams end all the time: their browsers come back spread over a
            // quarter of `retry`, not in step.
            end_jitter: hold.map_or(Duration::ZERO, |_| config.stream.retry / 4),
        }
    }

    /// [`Streams::timing`], shared with the streams opened before under the same settings.
    fn shared_timing(&self, config: &Config) -> Arc<StreamTiming> {
        let timing = self.timing(config);
        let mut last = self.shared_timing.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some(t) if **t == timing => t.clone(),
            _ => last.insert(Arc::new(timing)).clone(),
        }
    }

    /// Takes a stream slot, or `None` when `max_streams` are open.
    pub fn try_acquire(&self, config: &Config) -> Option<StreamPermit> {
        let max = config.server.max_streams;
        let mut cur = self.stats.active_streams.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return None;
            }
            match self.stats.active_streams.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.stats.total_streams.fetch_add(1, Ordering::Relaxed);
                    return Some(StreamPermit(self.stats.clone()));
                }
                Err(now) => cur = now,
            }
        }
    }

    /// A stream of `source` on `route` for `req` (headers only for HEAD), if a slot is free.
    pub fn stream(
        &self,
        config: &Config,
        route: &str,
        req: &Request,
        source: Box<dyn Source>,
    ) -> Response {
        if req.is_head() {
            return head_only();
        }
        let Some(permit) = self.try_acquire(config) else {
            return self.refuse_full(config, route, req);
        };
        self.open(config, route, source, permit, req)
    }

    /// The `503` sent when every stream slot is taken.
    pub fn server_full(&self, config: &Config) -> FullResponse {
        let secs = config.stream.retry_after_secs;
        FullResponse::text(
            503,
            format!(
                "server full: {} streams open (max_streams); retry after {secs} s",
                self.stats.active_streams()
            ),
        )
        .with_header("Retry-After", secs.to_string())
        .with_header("Cache-Control", "no-cache")
    }

    /// Every stream slot is taken. An `EventSource` (it sends `Accept: text/event-stream`)
    /// gets a `200` stream holding only a `retry:` hint, spread over a second so that a crowd
    /// does not come back at once — any other status would make it close for good. Other
    /// clients get `503` with `Retry-After`.
    pub fn refuse_full(&self, config: &Config, route: &str, req: &Request) -> Response {
        static FULL: crate::flood::Flood =
            crate::flood::Flood::new("streams refused (server full)");
        self.stats.rejected_streams.fetch_add(1, Ordering::Relaxed);
        let max = config.server.max_streams;
        let event_source = req
            .header("Accept")
            .is_some_and(|a| a.contains("text/event-stream"));
        if !event_source {
            FULL.warn(|| {
                format!(
                    "req={} route={route} peer={}: 503, all {max} stream slots taken",
                    req.id, req.peer
                )
            });
            return self.server_full(config).into();
        }
        let spread = crate::random::below(1000);
        let retry_ms = config.stream.retry_after_secs as u64 * 1000 + spread;
        FULL.warn(|| {
            format!(
                "req={} route={route} peer={}: all {max} stream slots taken; EventSource told to retry in {retry_ms} ms",
                req.id, req.peer
            )
        });
        FullResponse {
            status: 200,
            headers: stream_headers(),
            body: Bytes::from(format!(
                ": server full ({max} streams open); come back in {retry_ms} ms\nretry: {retry_ms}\n\n"
            )),
        }
        .into()
    }

    /// The stream of `source` on `route`, holding `permit`.
    pub fn open(
        &self,
        config: &Config,
        route: &str,
        source: Box<dyn Source>,
        permit: StreamPermit,
        req: &Request,
    ) -> Response {
        let access = self.access_log.as_ref().map(|log| {
            Box::new((
                log.clone(),
                StreamLog {
                    req: req.id.clone(),
                    route: route.to_string(),
                    uri: crate::access_log::redact_uri(req.var("REQUEST_URI").unwrap_or(&req.path)),
                    peer: req.peer.clone(),
                    started: Instant::now(),
                },
            ))
        });
        Response::Stream(StreamResponse {
            source,
            timing: self.shared_timing(config),
            permit,
            access,
            extra_headers: Vec::new(),
            watch: None,
        })
    }
}

/// The answer to `HEAD` on a stream: its headers, no body.
pub fn head_only() -> Response {
    FullResponse {
        status: 200,
        headers: stream_headers(),
        body: Bytes::new(),
    }
    .into()
}
