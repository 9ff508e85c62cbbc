//! The documents the application serves about itself: `/status` (JSON) and `metrics`
//! (Prometheus text). They read the counters and each topics route's hub; nothing here changes
//! anything.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::App;
use crate::hub::Hub;
use crate::response::FullResponse;

impl App {
    /// The metrics document (Prometheus text format).
    pub(super) async fn metrics(&self) -> FullResponse {
        use crate::metrics::{process_figures, Exposition, Kind::*};
        let s = &self.stats;
        let config = self.config();
        let c = &config.server;
        let n = |v: u64| v as f64;
        // Under `[server] processes`, each worker answers for itself: its samples say which.
        let worker = crate::workers::worker_number().map(|n| n.to_string());
        let mut e = match &worker {
            Some(n) => Exposition::with_labels(&[("worker", n)]),
            None => Exposition::default(),
        };
        e.single("fastsse_up", Gauge, "1 while fastsse serves.", 1.0)
            .single(
                "fastsse_uptime_seconds",
                Gauge,
                "Seconds since start.",
                self.started.elapsed().as_secs_f64(),
            )
            .single(
                "fastsse_streams_active",
                Gauge,
                "SSE streams open now.",
                s.active_streams() as f64,
            )
            .single(
                "fastsse_streams_max",
                Gauge,
                "max_streams.",
                c.max_streams as f64,
            )
            .single(
                "fastsse_streams_total",
                Counter,
                "SSE streams opened.",
                n(s.total_streams.load(Ordering::Relaxed)),
            )
            .family(
                "fastsse_streams_rejected_total",
                Counter,
                "Stream requests refused, by reason.",
            )
            .sample(
                "fastsse_streams_rejected_total",
                &[("reason", "max_streams")],
                n(s.rejected_streams.load(Ordering::Relaxed)),
            )
            .single(
                "fastsse_connections_active",
                Gauge,
                "FastCGI connections open now.",
                s.active_connections() as f64,
            )
            .single(
                "fastsse_connections_max",
                Gauge,
                "max_connections.",
                c.max_connections as f64,
            )
            .single(
                "fastsse_connections_total",
                Counter,
                "FastCGI connections accepted.",
                n(s.total_connections.load(Ordering::Relaxed)),
            )
            .family(
                "fastsse_connections_closed_total",
                Counter,
                "Connections closed by the server to protect it, by reason.",
            )
            .sample(
                "fastsse_connections_closed_total",
                &[("reason", "refused_full")],
                n(s.refused_connections.load(Ordering::Relaxed)),
            )
            .sample(
                "fastsse_connections_closed_total",
                &[("reason", "evicted_idle")],
                n(s.evicted_connections.load(Ordering::Relaxed)),
            )
            .single(
                "fastsse_input_bytes",
                Gauge,
                "Request input buffered now (bounded by max_input_bytes).",
                s.input_bytes.load(Ordering::Relaxed) as f64,
            );
        let current = self.current();
        let hubs: Vec<(&str, &Hub)> = current
            .routes
            .iter()
            .filter_map(|r| r.handler.hub().map(|hub| (r.path.as_str(), hub.as_ref())))
            .collect();
        type Figure = fn(&Hub) -> f64;
        let per_route: [(&str, crate::metrics::Kind, &str, Figure); 13] = [
            (
                "fastsse_journal_bytes",
                Gauge,
                "Bytes of the route's journal on disk (updated about once a second).",
                |h| h.stats.journal_bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_journal_append_failures_total",
                Counter,
                "Publications the journal refused (answered 5xx, not stored).",
                |h| h.stats.append_failures.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_backend_unreadable_total",
                Counter,
                "Redis entries that are not fastsse records (written by another tool), skipped.",
                |h| h.stats.unreadable.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_backend_up",
                Gauge,
                "1 while the route's journal can be read, 0 while reading it fails.",
                |h| {
                    if h.stats.backend_failing.load(Ordering::Relaxed) {
                        0.0
                    } else {
                        1.0
                    }
                },
            ),
            (
                "fastsse_backend_lag_events",
                Gauge,
                "Redis: events other instances published that this one has not read yet.",
                |h| h.stats.backend_lag.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_topic_subscribers",
                Gauge,
                "Subscribers of a topics route now.",
                |h| h.subscribers() as f64,
            ),
            (
                "fastsse_events_published_total",
                Counter,
                "Events published through this process.",
                |h| h.stats.published.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_events_delivered_total",
                Counter,
                "Events taken into the hub from the journal (any process).",
                |h| h.stats.delivered.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_writes_direct_total",
                Counter,
                "Deliveries written straight to a socket by the fan-out.",
                |h| h.stats.direct_writes.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_writes_queued_total",
                Counter,
                "Deliveries queued to a subscriber's task.",
                |h| h.stats.queued_writes.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_subscribers_lagged_total",
                Counter,
                "Subscribers cut off for falling subscriber_queue events behind.",
                |h| h.stats.lagged.load(Ordering::Relaxed) as f64,
            ),
            (
                "fastsse_replay_events",
                Gauge,
                "Events kept in memory for Last-Event-ID replay.",
                |h| h.retained() as f64,
            ),
            (
                "fastsse_replay_bytes",
                Gauge,
                "Bytes kept in memory for replay (bounded by history_bytes).",
                |h| h.retained_bytes() as f64,
            ),
        ];
        for (name, kind, help, figure) in per_route {
            e.family(name, kind, help);
            for (route, hub) in &hubs {
                e.sample(name, &[("route", route)], figure(hub));
            }
        }
        e.family(
            "fastsse_journal_append_seconds",
            Histogram,
            "Time to append a batch to the journal: the lock, the write, the fsync per policy.",
        );
        for (route, hub) in &hubs {
            e.histogram(
                "fastsse_journal_append_seconds",
                &[("route", route)],
                &hub.stats.append_latency,
            );
        }
        e.family(
            "fastsse_last_event_id",
            Gauge,
            "The newest event id of a topics route.",
        );
        for (route, hub) in &hubs {
            e.sample(
                "fastsse_last_event_id",
                &[("route", route)],
                hub.last_id() as f64,
            );
        }
        // The names php-fpm's exporter uses, where a fastsse figure means the same to someone
        // whose dashboards were built for the php-fpm SSE endpoint this replaces: a stream is
        // what held a worker there.
        let php_fpm = [
            ("phpfpm_up", Gauge, "1 while the pool serves (fastsse_up).", 1.0),
            (
                "phpfpm_start_since",
                Counter,
                "Seconds since start (fastsse_uptime_seconds).",
                self.started.elapsed().as_secs_f64().floor(),
            ),
            (
                "phpfpm_accepted_connections",
                Counter,
                "Connections accepted (fastsse_connections_total).",
                n(s.total_connections.load(Ordering::Relaxed)),
            ),
            (
                "phpfpm_active_processes",
                Gauge,
                "Busy workers: here, SSE streams open now (fastsse_streams_active).",
                s.active_streams() as f64,
            ),
            (
                "phpfpm_max_children_reached",
                Counter,
                "Requests refused at the limit (fastsse_streams_rejected_total{reason=max_streams}).",
                n(s.rejected_streams.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, value) in php_fpm {
            e.single(name, kind, help, value);
        }
        // /proc is cheap, but listing 10,000 descriptors is not nothing: off the runtime.
        let (fds, rss) = tokio::task::spawn_blocking(process_figures)
            .await
            .unwrap_or((None, None));
        if let Some(fds) = fds {
            e.single(
                "process_open_fds",
                Gauge,
                "Open file descriptors.",
                fds as f64,
            );
        }
        if let Some(rss) = rss {
            e.single(
                "process_resident_memory_bytes",
                Gauge,
                "Resident memory size in bytes.",
                rss as f64,
            );
        }
        FullResponse {
            status: 200,
            headers: vec![
                (
                    "Content-Type".into(),
                    "text/plain; version=0.0.4; charset=utf-8".into(),
                ),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            body: Bytes::from(e.finish()),
        }
    }

    /// The status document.
    pub(super) fn status(&self) -> FullResponse {
        let s = &self.stats;
        let config = self.config();
        let c = &config.server;
        let topics: serde_json::Map<String, serde_json::Value> = self
            .current()
            .routes
            .iter()
            .filter_map(|r| {
                let hub = r.handler.hub()?;
                Some((
                    r.path.clone(),
                    serde_json::json!({
                        "subscribers": hub.subscribers(),
                        "last_id": hub.last_id(),
                        "retained": hub.retained(),
                        "retained_bytes": hub.retained_bytes(),
                        "published": hub.stats.published.load(Ordering::Relaxed),
                        "lagged_subscribers": hub.stats.lagged.load(Ordering::Relaxed),
                        "direct_writes": hub.stats.direct_writes.load(Ordering::Relaxed),
                        "queued_writes": hub.stats.queued_writes.load(Ordering::Relaxed),
                        "journal_bytes": hub.stats.journal_bytes.load(Ordering::Relaxed),
                        "append_failures": hub.stats.append_failures.load(Ordering::Relaxed),
                        "backend": if hub.stats.backend_failing.load(Ordering::Relaxed) { "failing" } else { "ok" },
                        "backend_lag": hub.stats.backend_lag.load(Ordering::Relaxed),
                        "backend_unreadable": hub.stats.unreadable.load(Ordering::Relaxed),
                    }),
                ))
            })
            .collect();
        let commands: serde_json::Map<String, serde_json::Value> = self
            .current()
            .routes
            .iter()
            .filter_map(|r| {
                let super::Handler::Command(c) = &r.handler else {
                    return None;
                };
                let doc = match &c.kind {
                    super::CommandKind::Shared(sh) => serde_json::json!({
                        "mode": "shared",
                        "running": sh.stats.running.load(Ordering::Relaxed),
                        "pid": sh.stats.pid.load(Ordering::Relaxed),
                        "restarts": sh.stats.restarts.load(Ordering::Relaxed),
                        "events": sh.stats.events.load(Ordering::Relaxed),
                        "dropped": sh.stats.dropped.load(Ordering::Relaxed),
                        "subscribers": sh.subscribers(),
                    }),
                    super::CommandKind::PerStream(p) => serde_json::json!({
                        "mode": "per-stream",
                        "running": p.slots.running(),
                        "dropped": p.dropped.load(Ordering::Relaxed),
                    }),
                };
                Some((r.path.clone(), doc))
            })
            .collect();
        let doc = serde_json::json!({
            "commands": commands,
            "topics": topics,
            "version": env!("CARGO_PKG_VERSION"),
            // With `[server] processes`: which worker answered (each counts its own streams).
            "pid": std::process::id(),
            "worker": crate::workers::worker_number(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "active_streams": s.active_streams(),
            "total_streams": s.total_streams.load(Ordering::Relaxed),
            "rejected_streams": s.rejected_streams.load(Ordering::Relaxed),
            "active_connections": s.active_connections(),
            "total_connections": s.total_connections.load(Ordering::Relaxed),
            "refused_connections": s.refused_connections.load(Ordering::Relaxed),
            "evicted_connections": s.evicted_connections.load(Ordering::Relaxed),
            "input_bytes": s.input_bytes.load(Ordering::Relaxed),
            "limits": {
                "max_streams": c.max_streams,
                "max_connections": c.max_connections,
                "max_params_bytes": c.max_params_bytes,
                "max_body_bytes": c.max_body_bytes,
                "max_input_bytes": c.max_input_bytes,
            },
        });
        FullResponse {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            body: Bytes::from(doc.to_string()),
        }
    }
}
