//! The `status` and `metrics` routes: the documents fastsse serves about itself, `/status`
//! (JSON) and `/metrics` (Prometheus text), both rendered from the one list of figures in
//! [`super::figures`]. They read the counters, each hub and what each route reports of its own;
//! nothing here changes anything.

use std::sync::Arc;

use bytes::Bytes;

use super::figures::{self, Figure, RouteFigures, Value};
use super::{not_allowed, read_only, ready, Answer, Build, BuildError, Cx, Kind, Route};
use crate::config::{ConfigError, RouteConfig, RouteKind, RouteSettings, RouteTable};
use crate::hub::Hub;
use crate::metrics::{self, process_figures, Exposition};
use crate::request::Request;
use crate::response::FullResponse;

/// `/status` or `/metrics`.
struct Document {
    path: String,
    metrics: bool,
}

/// `type = "status"`: JSON counters and limits.
pub(super) struct StatusKind;
/// `type = "metrics"`: the same figures for Prometheus (text exposition format).
pub(super) struct MetricsKind;

/// A document route takes no key: its settings are its name.
#[derive(Debug)]
struct Named(&'static str);

impl RouteSettings for Named {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        self.0.to_string()
    }
}

impl RouteKind for StatusKind {
    fn name(&self) -> &'static str {
        "status"
    }

    fn keys(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn read(&self, _: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(Named("status")))
    }
}

impl RouteKind for MetricsKind {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn keys(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn read(&self, _: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(Named("metrics")))
    }
}

impl Kind for StatusKind {
    fn build(&self, _: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        Ok(Arc::new(Document {
            path: r.path.get_ref().clone(),
            metrics: false,
        }))
    }
}

impl Kind for MetricsKind {
    fn build(&self, _: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        Ok(Arc::new(Document {
            path: r.path.get_ref().clone(),
            metrics: true,
        }))
    }
}

impl Route for Document {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        if !read_only(req) {
            return ready(not_allowed(&self.path, req, "GET, HEAD"));
        }
        Box::pin(async move {
            let (body, content_type) = if self.metrics {
                let text = super::box_figures::metrics(cx, own_metrics(cx).await).await;
                (text, "text/plain; version=0.0.4; charset=utf-8")
            } else {
                let doc = super::box_figures::status(cx, own_status(cx).await).await;
                (
                    serde_json::Value::Object(doc).to_string(),
                    "application/json",
                )
            };
            FullResponse {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), content_type.into()),
                    ("Cache-Control".into(), "no-cache".into()),
                ],
                body: Bytes::from(body),
            }
            .into()
        })
    }
}

/// Things of one scope, each with its route's path.
type ByPath<T> = Vec<(String, T)>;

/// The hook stores of the routes in force, by path.
fn hook_stores(cx: &Cx) -> ByPath<Arc<crate::hooks::Store>> {
    cx.set
        .routes
        .iter()
        .filter_map(|r| r.route.hooks().map(|h| (r.path.clone(), h.store().clone())))
        .collect()
}

/// Presence: each counting route's busiest topics (users named where `presence_users`).
fn presence_status(cx: &Cx) -> serde_json::Map<String, serde_json::Value> {
    use crate::hooks::presence::SHOWN_TOPICS;
    let mut doc = serde_json::Map::new();
    for r in &cx.set.routes {
        let Some(b) = r.route.board() else { continue };
        let mut by_topic = serde_json::Map::new();
        for t in b.presence.busiest(SHOWN_TOPICS) {
            let mut one = serde_json::json!({ "subscribers": t.subscribers });
            if b.users {
                one["users"] = t.users.into();
                one["user_count"] = t.user_count.into();
            }
            by_topic.insert(t.topic, one);
        }
        let route = serde_json::json!({
            "topics": b.presence.topic_count(),
            "by_topic": by_topic,
        });
        doc.insert(r.path.clone(), route);
    }
    doc
}

/// Presence in `/metrics`: topics per route, and the subscribers of the busiest ones.
fn presence_metrics(e: &mut Exposition, cx: &Cx) {
    use crate::hooks::presence::SHOWN_TOPICS;
    let boards: Vec<_> = cx
        .set
        .routes
        .iter()
        .filter_map(|r| r.route.board().map(|b| (r.path.as_str(), b)))
        .collect();
    e.family(
        "fastsse_presence_topics",
        metrics::Kind::Gauge,
        "Topics someone is subscribed to now (routes with presence).",
    );
    for (route, b) in &boards {
        let n = b.presence.topic_count() as f64;
        e.sample("fastsse_presence_topics", &[("route", route)], n);
    }
    e.family(
        "fastsse_presence_subscribers",
        metrics::Kind::Gauge,
        "Streams subscribed to a topic now (the 100 busiest topics of each route).",
    );
    for (route, b) in &boards {
        for t in b.presence.busiest(SHOWN_TOPICS) {
            let labels = [("route", *route), ("topic", t.topic.as_str())];
            e.sample(
                "fastsse_presence_subscribers",
                &labels,
                t.subscribers as f64,
            );
        }
    }
}

/// The hubs in force, and what routes report of their own, by path.
fn scopes(cx: &Cx) -> (ByPath<Arc<Hub>>, ByPath<RouteFigures>) {
    let routes = &cx.set.routes;
    let hubs = routes
        .iter()
        .filter_map(|r| r.route.hub().map(|h| (r.path.clone(), h.clone())))
        .collect();
    let own = routes
        .iter()
        .filter_map(|r| r.route.figures().map(|f| (r.path.clone(), f)))
        .collect();
    (hubs, own)
}

/// This process's metrics document (Prometheus text format).
pub(crate) async fn own_metrics(cx: &Cx) -> String {
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
        if let Some(v) = (f.read)(cx) {
            e.sample(f.metric, f.labels, v.metric());
        }
    }
    let (hubs, own) = scopes(cx);
    per_route(&mut e, figures::HUB, &hubs);
    per_route(&mut e, figures::HOOKS, &hook_stores(cx));
    presence_metrics(&mut e, cx);
    own_figures(&mut e, &own);
    e.family(
        "fastsse_journal_append_seconds",
        metrics::Kind::Histogram,
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
            .and_then(|f| (f.read)(cx));
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
            metrics::Kind::Gauge,
            "Open file descriptors.",
            fds as f64,
        );
    }
    if let Some(rss) = rss {
        e.single(
            "process_resident_memory_bytes",
            metrics::Kind::Gauge,
            "Resident memory size in bytes.",
            rss as f64,
        );
    }
    e.finish()
}

/// This process's status document.
pub(crate) async fn own_status(cx: &Cx) -> serde_json::Map<String, serde_json::Value> {
    let (hubs, own) = scopes(cx);
    let topics: serde_json::Map<String, serde_json::Value> = hubs
        .iter()
        .map(|(path, hub)| (path.clone(), figures::object(figures::HUB, &**hub).into()))
        .collect();
    let mut doc = figures::object(figures::PROCESS, cx);
    let (fds, rss) = tokio::task::spawn_blocking(process_figures)
        .await
        .unwrap_or((None, None));
    if let Some(fds) = fds {
        figures::insert(&mut doc, "open_fds", Value::Count(fds as u64));
    }
    if let Some(rss) = rss {
        figures::insert(&mut doc, "rss_bytes", Value::Count(rss));
    }
    // Each kind's own figures under its group (`commands`), by path; a kind's group is there
    // (empty) while it has no route.
    for (group, _) in super::KINDS.iter().filter_map(|k| k.figures()) {
        doc.insert(group.into(), serde_json::Map::new().into());
    }
    for (path, f) in &own {
        if let serde_json::Value::Object(group) = doc
            .entry(f.group)
            .or_insert_with(|| serde_json::Map::new().into())
        {
            group.insert(path.clone(), f.object().into());
        }
    }
    doc.insert("topics".into(), topics.into());
    let hooks: serde_json::Map<String, serde_json::Value> = hook_stores(cx)
        .iter()
        .map(|(path, s)| (path.clone(), figures::object(figures::HOOKS, &**s).into()))
        .collect();
    doc.insert("hooks".into(), hooks.into());
    doc.insert("presence".into(), presence_status(cx).into());
    doc.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    // With `[server] processes`: which worker answered (each counts its own streams).
    doc.insert("pid".into(), std::process::id().into());
    doc.insert("worker".into(), crate::process::worker_number().into());
    doc
}

/// The samples of per-route figures: a family each, a sample per route where it applies.
fn per_route<T>(e: &mut Exposition, figures: &[Figure<T>], routes: &ByPath<Arc<T>>) {
    for f in figures {
        e.family(f.metric, f.kind, f.help);
        for (route, of) in routes {
            if let Some(v) = (f.read)(of) {
                e.sample(f.metric, &[("route", route)], v.metric());
            }
        }
    }
}

/// The samples of what routes report of their own: for each kind with figures of its own, a
/// family per figure of its list (there while it has no route) and a sample per route where
/// it applies.
fn own_figures(e: &mut Exposition, own: &ByPath<RouteFigures>) {
    for (group, list) in super::KINDS.iter().filter_map(|k| k.figures()) {
        let of: Vec<_> = own.iter().filter(|(_, f)| f.group == group).collect();
        for (i, f) in list.iter().enumerate() {
            e.family(f.metric, f.kind, f.help);
            for (route, r) in &of {
                if let Some(v) = r.readings.get(i).and_then(|r| r.value) {
                    e.sample(f.metric, &[("route", route)], v.metric());
                }
            }
        }
    }
}
