//! The documents the application serves about itself: `/status` (JSON) and `/metrics`
//! (Prometheus text), both rendered from the one list of figures in [`super::figures`]. They
//! read the counters, each hub and each command route; nothing here changes anything.

use bytes::Bytes;

use super::figures::{self, Figure, Value};
use super::{App, Handler};
use crate::metrics::{process_figures, Exposition, Kind};
use crate::response::FullResponse;

/// Things of one scope, each with its route's path.
type ByPath<T> = Vec<(String, std::sync::Arc<T>)>;

impl App {
    /// The hubs and command routes in force, by path.
    fn scopes(
        &self,
    ) -> (
        ByPath<crate::hub::Hub>,
        ByPath<super::command::CommandRoute>,
    ) {
        let current = self.current();
        let hubs = current
            .routes
            .iter()
            .filter_map(|r| r.handler.hub().map(|h| (r.path.clone(), h.clone())))
            .collect();
        let commands = current
            .routes
            .iter()
            .filter_map(|r| match &r.handler {
                Handler::Command(c) => Some((r.path.clone(), c.clone())),
                _ => None,
            })
            .collect();
        (hubs, commands)
    }

    /// The metrics document (Prometheus text format).
    pub(super) async fn metrics(&self) -> FullResponse {
        // Under `[server] processes`, each worker answers for itself: its samples say which.
        let worker = crate::process::worker_number().map(|n| n.to_string());
        let mut e = match &worker {
            Some(n) => Exposition::with_labels(&[("worker", n)]),
            None => Exposition::default(),
        };
        let mut family = "";
        for f in figures::PROCESS {
            if f.metric != family {
                e.family(f.metric, f.kind, f.help);
                family = f.metric;
            }
            if let Some(v) = (f.read)(self) {
                e.sample(f.metric, f.labels, v.metric());
            }
        }
        let (hubs, commands) = self.scopes();
        per_route(&mut e, figures::HUB, &hubs);
        per_route(&mut e, figures::COMMAND, &commands);
        e.family(
            "fastsse_journal_append_seconds",
            Kind::Histogram,
            "Time to append a batch to the journal: the lock, the write, the fsync per policy.",
        );
        for (route, hub) in &hubs {
            e.histogram(
                "fastsse_journal_append_seconds",
                &[("route", route)],
                &hub.stats.append_latency,
            );
        }
        for (name, kind, help, key) in figures::PHP_FPM {
            let value = figures::PROCESS
                .iter()
                .find(|f| f.key == *key)
                .and_then(|f| (f.read)(self));
            if let Some(v) = value {
                e.single(name, *kind, help, v.metric());
            }
        }
        // /proc is cheap, but listing 10,000 descriptors is not nothing: off the runtime.
        let (fds, rss) = tokio::task::spawn_blocking(process_figures)
            .await
            .unwrap_or((None, None));
        if let Some(fds) = fds {
            e.single(
                "process_open_fds",
                Kind::Gauge,
                "Open file descriptors.",
                fds as f64,
            );
        }
        if let Some(rss) = rss {
            e.single(
                "process_resident_memory_bytes",
                Kind::Gauge,
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
    pub(super) async fn status(&self) -> FullResponse {
        let (hubs, commands) = self.scopes();
        let topics: serde_json::Map<String, serde_json::Value> = hubs
            .iter()
            .map(|(path, hub)| (path.clone(), figures::object(figures::HUB, hub).into()))
            .collect();
        let commands: serde_json::Map<String, serde_json::Value> = commands
            .iter()
            .map(|(path, c)| {
                let mut doc = figures::object(figures::COMMAND, c);
                let mode = match c.kind {
                    super::CommandKind::Shared(_) => "shared",
                    super::CommandKind::PerStream(_) => "per-stream",
                };
                doc.insert("mode".into(), mode.into());
                (path.clone(), doc.into())
            })
            .collect();
        let mut doc = figures::object(figures::PROCESS, self);
        let (fds, rss) = tokio::task::spawn_blocking(process_figures)
            .await
            .unwrap_or((None, None));
        if let Some(fds) = fds {
            figures::insert(&mut doc, "open_fds", Value::Count(fds as u64));
        }
        if let Some(rss) = rss {
            figures::insert(&mut doc, "rss_bytes", Value::Count(rss));
        }
        doc.insert("commands".into(), commands.into());
        doc.insert("topics".into(), topics.into());
        doc.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        // With `[server] processes`: which worker answered (each counts its own streams).
        doc.insert("pid".into(), std::process::id().into());
        doc.insert("worker".into(), crate::process::worker_number().into());
        FullResponse {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            body: Bytes::from(serde_json::Value::Object(doc).to_string()),
        }
    }
}

/// The samples of per-route figures: a family each, a sample per route where it applies.
fn per_route<T>(e: &mut Exposition, figures: &[Figure<T>], routes: &ByPath<T>) {
    for f in figures {
        e.family(f.metric, f.kind, f.help);
        for (route, of) in routes {
            if let Some(v) = (f.read)(of) {
                e.sample(f.metric, &[("route", route)], v.metric());
            }
        }
    }
}
