//! The one list of figures that `/status` (JSON) and `/metrics` (Prometheus text) are both
//! rendered from: every figure names its `/status` key and its metric (family, labels, kind,
//! help) side by side, so the two documents cannot drift apart. Three scopes: the process, each
//! hub (a topics or mercure route, a command's topic), and what a route kind reports of its own
//! ([`RouteFigures`]: a command's programs, in its own file). Only what has no
//! one-number form stays in one document: the append-latency histogram (metrics) and the
//! identity fields (`/status`: version, pid, worker, a command's mode).

use std::sync::atomic::Ordering::Relaxed;

use super::Cx;
use crate::hub::Hub;
use crate::metrics::Kind::{self, Counter, Gauge};

/// One reading of a figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A count, a size or whole seconds: an integer in `/status`.
    Count(u64),
    /// A state: its word in `/status`, its number in `/metrics` (1 up, 0 down).
    State(&'static str, f64),
}

impl Value {
    /// The sample value.
    pub(super) fn metric(self) -> f64 {
        match self {
            Value::Count(n) => n as f64,
            Value::State(_, x) => x,
        }
    }

    /// The `/status` value.
    pub(super) fn json(self) -> serde_json::Value {
        match self {
            Value::Count(n) => n.into(),
            Value::State(word, _) => word.into(),
        }
    }
}

/// One figure of a scope `T`.
pub struct Figure<T: ?Sized> {
    /// The key in `/status`; a `.` nests (`limits.max_streams`).
    pub key: &'static str,
    /// The metric family; figures that share one are adjacent and differ by `labels`.
    pub metric: &'static str,
    /// This figure's labels within its family (beside `route` and `worker`).
    pub labels: &'static [(&'static str, &'static str)],
    pub kind: Kind,
    pub help: &'static str,
    /// The reading; `None` where the figure does not apply (a per-stream command's pid).
    pub read: fn(&T) -> Option<Value>,
    /// How the workers' readings make the box's (`[server] processes`).
    pub combine: Combine,
}

/// How the readings of a box's workers make the box's figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Added up: what each worker holds or did (streams, publishes, memory).
    Sum,
    /// The largest: what the workers share (the journal, its last id) or a time.
    Max,
    /// The worst state: one worker failing is the box failing.
    Worst,
}

/// `f`, combined as the largest reading.
pub(super) const fn combined_max<T: ?Sized>(mut f: Figure<T>) -> Figure<T> {
    f.combine = Combine::Max;
    f
}

/// `f`, combined as the worst state.
pub(super) const fn combined_worst<T: ?Sized>(mut f: Figure<T>) -> Figure<T> {
    f.combine = Combine::Worst;
    f
}

pub(super) const fn fig<T: ?Sized>(
    key: &'static str,
    metric: &'static str,
    kind: Kind,
    help: &'static str,
    read: fn(&T) -> Option<Value>,
) -> Figure<T> {
    Figure {
        key,
        metric,
        labels: &[],
        kind,
        help,
        read,
        combine: Combine::Sum,
    }
}

pub(super) fn count(n: impl TryInto<u64>) -> Option<Value> {
    Some(Value::Count(n.try_into().unwrap_or(u64::MAX)))
}

/// The process: streams, connections, input, limits, uptime.
pub(super) const PROCESS: &[Figure<Cx>] = &[
    combined_max(fig(
        "up",
        "fastsse_up",
        Gauge,
        "1 while fastsse serves.",
        |_| count(1u64),
    )),
    combined_max(fig(
        "uptime_secs",
        "fastsse_uptime_seconds",
        Gauge,
        "Seconds since start.",
        |a| count(a.streams.started.elapsed().as_secs()),
    )),
    fig(
        "active_streams",
        "fastsse_streams_active",
        Gauge,
        "SSE streams open now.",
        |a| count(a.streams.stats.active_streams()),
    ),
    fig(
        "parked_streams",
        "fastsse_streams_parked",
        Gauge,
        "Open SSE streams with nothing to write, kept by their connection without a task of their own (their events go straight to the socket).",
        |a| count(a.streams.stats.parked_streams.load(Relaxed)),
    ),
    fig(
        "tasks",
        "fastsse_tasks",
        Gauge,
        "Tasks alive in the runtime (streams, connections, sources): a count that only grows is a leak.",
        |_| count(tokio::runtime::Handle::try_current().ok()?.metrics().num_alive_tasks()),
    ),
    fig(
        "limits.max_streams",
        "fastsse_streams_max",
        Gauge,
        "max_streams.",
        |a| count(a.config().server.max_streams),
    ),
    fig(
        "total_streams",
        "fastsse_streams_total",
        Counter,
        "SSE streams opened.",
        |a| count(a.streams.stats.total_streams.load(Relaxed)),
    ),
    Figure {
        labels: &[("reason", "max_streams")],
        ..fig(
            "rejected_streams",
            "fastsse_streams_rejected_total",
            Counter,
            "Stream requests refused, by reason.",
            |a| count(a.streams.stats.rejected_streams.load(Relaxed)),
        )
    },
    fig(
        "active_connections",
        "fastsse_connections_active",
        Gauge,
        "FastCGI connections open now.",
        |a| count(a.streams.stats.active_connections()),
    ),
    fig(
        "limits.max_connections",
        "fastsse_connections_max",
        Gauge,
        "max_connections.",
        |a| count(a.config().server.max_connections),
    ),
    fig(
        "total_connections",
        "fastsse_connections_total",
        Counter,
        "FastCGI connections accepted.",
        |a| count(a.streams.stats.total_connections.load(Relaxed)),
    ),
    Figure {
        labels: &[("reason", "refused_full")],
        ..fig(
            "refused_connections",
            "fastsse_connections_closed_total",
            Counter,
            "Connections closed by the server to protect it, by reason.",
            |a| count(a.streams.stats.refused_connections.load(Relaxed)),
        )
    },
    Figure {
        labels: &[("reason", "evicted_idle")],
        ..fig(
            "evicted_connections",
            "fastsse_connections_closed_total",
            Counter,
            "Connections closed by the server to protect it, by reason.",
            |a| count(a.streams.stats.evicted_connections.load(Relaxed)),
        )
    },
    fig(
        "input_bytes",
        "fastsse_input_bytes",
        Gauge,
        "Request input buffered now (bounded by max_input_bytes).",
        |a| count(a.streams.stats.input_bytes.load(Relaxed)),
    ),
    fig(
        "limits.max_input_bytes",
        "fastsse_input_bytes_max",
        Gauge,
        "max_input_bytes.",
        |a| count(a.config().server.max_input_bytes),
    ),
    fig(
        "limits.max_params_bytes",
        "fastsse_params_bytes_max",
        Gauge,
        "max_params_bytes.",
        |a| count(a.config().server.max_params_bytes),
    ),
    fig(
        "limits.max_body_bytes",
        "fastsse_body_bytes_max",
        Gauge,
        "max_body_bytes.",
        |a| count(a.config().server.max_body_bytes),
    ),
];

/// What a process figure is also published as, under the names php-fpm's exporter uses: a
/// stream is what held a worker there, so dashboards built for the PHP endpoint keep working.
pub(super) const PHP_FPM: &[(&str, Kind, &str, &str)] = &[
    (
        "phpfpm_up",
        Gauge,
        "1 while the pool serves (fastsse_up).",
        "up",
    ),
    (
        "phpfpm_start_since",
        Counter,
        "Seconds since start (fastsse_uptime_seconds).",
        "uptime_secs",
    ),
    (
        "phpfpm_accepted_connections",
        Counter,
        "Connections accepted (fastsse_connections_total).",
        "total_connections",
    ),
    (
        "phpfpm_active_processes",
        Gauge,
        "Busy workers: here, SSE streams open now (fastsse_streams_active).",
        "active_streams",
    ),
    (
        "phpfpm_max_children_reached",
        Counter,
        "Requests refused at the limit (fastsse_streams_rejected_total{reason=max_streams}).",
        "rejected_streams",
    ),
];

/// Each hub: its subscribers, journal, backend and deliveries.
pub(super) const HUB: &[Figure<Hub>] = &[
    fig(
        "subscribers",
        "fastsse_topic_subscribers",
        Gauge,
        "Subscribers of the route now.",
        |h| count(h.subscribers()),
    ),
    combined_max(fig(
        "last_id",
        "fastsse_last_event_id",
        Gauge,
        "The newest event id of the route.",
        |h| count(h.last_id()),
    )),
    combined_max(fig(
        "retained",
        "fastsse_replay_events",
        Gauge,
        "Events kept in memory for Last-Event-ID replay.",
        |h| count(h.retained()),
    )),
    combined_max(fig(
        "retained_bytes",
        "fastsse_replay_bytes",
        Gauge,
        "Bytes kept in memory for replay (bounded by history_bytes).",
        |h| count(h.retained_bytes()),
    )),
    fig(
        "published",
        "fastsse_events_published_total",
        Counter,
        "Events published through this process.",
        |h| count(h.stats.published.load(Relaxed)),
    ),
    fig(
        "delivered",
        "fastsse_events_delivered_total",
        Counter,
        "Events taken into the hub from the journal (any process).",
        |h| count(h.stats.delivered.load(Relaxed)),
    ),
    fig(
        "lagged_subscribers",
        "fastsse_subscribers_lagged_total",
        Counter,
        "Subscribers cut off for falling subscriber_queue events behind.",
        |h| count(h.stats.lagged.load(Relaxed)),
    ),
    fig(
        "direct_writes",
        "fastsse_writes_direct_total",
        Counter,
        "Deliveries written straight to a socket by the fan-out.",
        |h| count(h.stats.direct_writes.load(Relaxed)),
    ),
    fig(
        "queued_writes",
        "fastsse_writes_queued_total",
        Counter,
        "Deliveries queued to a subscriber's task.",
        |h| count(h.stats.queued_writes.load(Relaxed)),
    ),
    combined_max(fig(
        "journal_bytes",
        "fastsse_journal_bytes",
        Gauge,
        "Bytes of the route's journal on disk (updated about once a second).",
        |h| count(h.stats.journal_bytes.load(Relaxed)),
    )),
    fig(
        "append_failures",
        "fastsse_journal_append_failures_total",
        Counter,
        "Publications the journal refused (answered 5xx, not stored).",
        |h| count(h.stats.append_failures.load(Relaxed)),
    ),
    combined_worst(fig(
        "backend",
        "fastsse_backend_up",
        Gauge,
        "1 while the route's journal can be read, 0 while reading it fails.",
        |h| {
            Some(if h.stats.backend_failing.load(Relaxed) {
                Value::State("failing", 0.0)
            } else {
                Value::State("ok", 1.0)
            })
        },
    )),
    combined_max(fig(
        "backend_lag",
        "fastsse_backend_lag_events",
        Gauge,
        "Redis: events other instances published that this one has not read yet.",
        |h| count(h.stats.backend_lag.load(Relaxed)),
    )),
    combined_max(fig(
        "backend_unreadable",
        "fastsse_backend_unreadable_total",
        Counter,
        "Redis entries that are not fastsse records (written by another tool), skipped.",
        |h| count(h.stats.unreadable.load(Relaxed)),
    )),
];

/// Each route's hooks (a route with `hook_url` or `hook_fastcgi`): in `/status` under
/// `hooks` by path.
pub(super) const HOOKS: &[Figure<crate::hooks::Store>] = &[
    fig(
        "pending",
        "fastsse_hook_pending_calls",
        Gauge,
        "Hook calls journaled and not yet answered by the application.",
        |s| count(s.backlog().0),
    ),
    fig(
        "queue_bytes",
        "fastsse_hook_queue_bytes",
        Gauge,
        "Bytes the hook queue holds (pending calls, and the room kept for each open stream's \
         leave); at hook_queue_bytes new streams are refused.",
        |s| count(s.backlog().1),
    ),
    fig(
        "open_streams",
        "fastsse_hook_open_streams",
        Gauge,
        "Streams whose leave is owed to the application.",
        |s| count(s.backlog().2),
    ),
    fig(
        "delivered",
        "fastsse_hook_calls_delivered_total",
        Counter,
        "Hook calls the application answered (2xx; a 401/403 to a connect that waits, a 403 \
         to one whose stream is open).",
        |s| count(s.stats.delivered.load(Relaxed)),
    ),
    fig(
        "failed_attempts",
        "fastsse_hook_attempts_failed_total",
        Counter,
        "Hook attempts that failed (no connection, a timeout, another status); each is retried.",
        |s| count(s.stats.failed_attempts.load(Relaxed)),
    ),
    fig(
        "refused",
        "fastsse_hook_streams_refused_total",
        Counter,
        "Streams the application refused at their connect hook (401/403).",
        |s| count(s.stats.refused.load(Relaxed)),
    ),
    fig(
        "refused_open",
        "fastsse_hook_refusals_ignored_total",
        Counter,
        "Connects the application answered 403 after their stream had opened (no \
         hook_connect_wait, or it passed): the stream stays, its leave follows.",
        |s| count(s.stats.refused_open.load(Relaxed)),
    ),
    fig(
        "connect_timeouts",
        "fastsse_hook_connect_timeouts_total",
        Counter,
        "Connect hooks not answered within hook_connect_wait (the stream refused or allowed by \
         hook_on_timeout).",
        |s| count(s.stats.timed_out.load(Relaxed)),
    ),
    fig(
        "queue_full",
        "fastsse_hook_queue_full_total",
        Counter,
        "Streams (and, with hook_publish, publications) refused because the hook queue was at \
         hook_queue_bytes.",
        |s| count(s.stats.queue_full.load(Relaxed)),
    ),
    fig(
        "adopted",
        "fastsse_hook_calls_adopted_total",
        Counter,
        "Calls taken over from a process that died: its pending calls and a leave \
         (process_died) for each stream it held.",
        |s| count(s.stats.adopted.load(Relaxed)),
    ),
    fig(
        "journal_errors",
        "fastsse_hook_journal_errors_total",
        Counter,
        "Writes to the hook journal that failed (retried).",
        |s| count(s.stats.write_errors.load(Relaxed)),
    ),
    combined_worst(fig(
        "target",
        "fastsse_hook_target_up",
        Gauge,
        "1 while the application answers hook calls, 0 while the last attempt failed.",
        |s| {
            Some(if s.stats.failing.load(Relaxed) {
                Value::State("failing", 0.0)
            } else {
                Value::State("ok", 1.0)
            })
        },
    )),
];

/// What names a figure in `/status` and `/metrics`, and how a box combines it.
pub struct About {
    /// The key in `/status`.
    pub key: &'static str,
    /// The metric family.
    pub metric: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub combine: Combine,
}

impl<T: ?Sized> Figure<T> {
    /// What names it.
    pub fn about(&self) -> About {
        About {
            key: self.key,
            metric: self.metric,
            kind: self.kind,
            help: self.help,
            combine: self.combine,
        }
    }
}

/// One figure's reading and its `/status` key.
pub struct Reading {
    /// The key in `/status` (the metric is its kind's list's, at the same place).
    pub key: &'static str,
    /// `None` where it does not apply.
    pub value: Option<Value>,
}

/// What a route reports of its own, read from its kind's list of figures: in `/status` under
/// `group` (`"commands"`) by path, in `/metrics` as samples labelled with the route.
pub struct RouteFigures {
    /// The `/status` object that holds it, by path.
    pub group: &'static str,
    /// Each figure of the kind's list, in its order.
    pub readings: Vec<Reading>,
    /// Words only `/status` shows (a command's `mode`).
    pub words: Vec<(&'static str, &'static str)>,
}

impl RouteFigures {
    /// Reads every figure of `figures` of `of`.
    pub fn read<T>(group: &'static str, figures: &'static [Figure<T>], of: &T) -> RouteFigures {
        let readings = figures
            .iter()
            .map(|f| Reading {
                key: f.key,
                value: (f.read)(of),
            })
            .collect();
        RouteFigures {
            group,
            readings,
            words: Vec::new(),
        }
    }

    /// Adds a word for `/status` only.
    pub fn with(mut self, key: &'static str, word: &'static str) -> RouteFigures {
        self.words.push((key, word));
        self
    }

    /// The `/status` object.
    pub fn object(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut doc = serde_json::Map::new();
        for r in &self.readings {
            if let Some(v) = r.value {
                insert(&mut doc, r.key, v);
            }
        }
        for (k, w) in &self.words {
            doc.insert(k.to_string(), (*w).into());
        }
        doc
    }
}

/// Puts `value` at `key` in `doc`, a `.` in the key nesting objects.
pub(super) fn insert(
    doc: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    value: Value,
) {
    match key.split_once('.') {
        None => {
            doc.insert(key.to_string(), value.json());
        }
        Some((outer, inner)) => {
            let entry = doc
                .entry(outer.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let serde_json::Value::Object(map) = entry {
                insert(map, inner, value);
            }
        }
    }
}

/// The `/status` object of one thing of scope `T`: each figure that applies, at its key.
pub(super) fn object<T: ?Sized>(
    figures: &[Figure<T>],
    of: &T,
) -> serde_json::Map<String, serde_json::Value> {
    let mut doc = serde_json::Map::new();
    for f in figures {
        if let Some(v) = (f.read)(of) {
            insert(&mut doc, f.key, v);
        }
    }
    doc
}

#[cfg(test)]
#[path = "figures_tests.rs"]
mod tests;
