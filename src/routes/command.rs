//! The `command` route: a program's output as events. Building one from its config (the shared
//! program's supervisor, or the per-stream launcher; a hub when it has a `topic`) and answering
//! its requests — a stream of the program's events, or a POST to its topic.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::figures::{count, fig, Figure, RouteFigures};
use super::{journaled, not_allowed, ready, Answer, Build, BuildError, Cx, Route};
use crate::auth::RouteAuth;
use crate::config::{Config, RouteConfig};
use crate::hub::{Hub, Interest, Resume};
use crate::metrics::Kind::{Counter, Gauge};
use crate::request::Request;
use crate::response::Response;
use crate::source::Source;

/// A `command` route: its config and authorization (for POSTs to its topic) and its programs.
pub(super) struct CommandRoute {
    pub(super) conf: RouteConfig,
    pub(super) auth: RouteAuth,
    pub(super) kind: CommandKind,
}

pub(super) enum CommandKind {
    Shared(Arc<crate::command::shared::SharedProgram>),
    PerStream(crate::command::per_stream::PerStream),
}

/// The route of a `type = "command"` table; its shared program's supervisor starts when a
/// runtime is up.
pub(super) fn build(b: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
    let unavailable = |e: BuildError| match e {
        BuildError::Unavailable { detail, .. } => BuildError::Unavailable {
            reason: "its program or journal is unavailable",
            detail,
        },
        e => e,
    };
    let config = b.config;
    use crate::command::{per_stream::PerStream, shared::SharedProgram, Mode, Program};
    let program = Program::new(
        r.path.get_ref(),
        &r.command,
        (r.working_dir.as_deref(), &r.env),
        r.user.as_deref(),
        r.kill_grace,
    );
    let output = crate::command::output::OutputRules {
        format: r.format,
        max_event_bytes: r.max_event_bytes,
    };
    let kind = match r.mode {
        Mode::PerStream => {
            CommandKind::PerStream(PerStream::new(program, output, process_slots(config, r)))
        }
        Mode::Shared => {
            let hub = match &r.topic {
                Some(t) => Some((journaled::hub(b, r).map_err(unavailable)?, t.clone())),
                None => None,
            };
            let shared = SharedProgram::new(
                program,
                output,
                (r.start, r.idle_stop),
                r.subscriber_queue,
                config.stream.retry,
                hub,
            );
            shared.ensure_started();
            CommandKind::Shared(shared)
        }
    };
    let auth = journaled::auth(r).map_err(|e| match e {
        BuildError::Invalid(detail) => BuildError::Unavailable {
            reason: "its program or journal is unavailable",
            detail,
        },
        e => e,
    })?;
    Ok(Arc::new(CommandRoute {
        conf: r.clone(),
        auth,
        kind,
    }))
}

/// A per-stream route's `max_processes` slots: lock files in the data directory, shared by a
/// reloaded route and by every worker; counted in this process only where they cannot be made.
fn process_slots(config: &Config, r: &RouteConfig) -> std::sync::Arc<crate::command::slots::Slots> {
    use crate::command::slots::Slots;
    let dir = config
        .journal
        .dir
        .join(".process-slots")
        .join(r.journal_name());
    Slots::open(&dir, r.max_processes).unwrap_or_else(|e| {
        log::warn!(
            "route {}: cannot keep process slots in {} ({e}); max_processes counts this process only",
            r.path.get_ref(),
            dir.display()
        );
        Slots::in_process(r.max_processes)
    })
}

impl Route for CommandRoute {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        if let (CommandKind::Shared(s), "POST") = (&self.kind, req.method.as_str()) {
            if let Some((hub, _)) = s.hub() {
                return Box::pin(async move {
                    super::topics::publish(&self.conf, &self.auth, hub, req)
                        .await
                        .into()
                });
            }
        }
        ready(self.stream(cx, req))
    }

    fn hub(&self) -> Option<&Arc<Hub>> {
        match &self.kind {
            CommandKind::Shared(s) => s.hub().map(|(h, _)| h),
            CommandKind::PerStream(_) => None,
        }
    }

    fn start(&self) {
        if let CommandKind::Shared(s) = &self.kind {
            s.ensure_started();
        }
    }

    fn figures(&self) -> Option<RouteFigures> {
        let mode = match self.kind {
            CommandKind::Shared(_) => "shared",
            CommandKind::PerStream(_) => "per-stream",
        };
        Some(RouteFigures::read("commands", FIGURES, self).with("mode", mode))
    }
}

impl CommandRoute {
    /// `GET` (or `HEAD`): a stream of the program's events.
    fn stream(&self, cx: &Cx, req: &Request) -> Response {
        let path = self.conf.path.get_ref();
        if req.method != "GET" && req.method != "HEAD" {
            return not_allowed(path, req, "GET, HEAD");
        }
        if req.is_head() {
            return crate::streams::head_only();
        }
        let Some(permit) = cx.streams.try_acquire(cx.config()) else {
            return cx.streams.refuse_full(cx.config(), path, req);
        };
        let source: Box<dyn Source> = match &self.kind {
            CommandKind::PerStream(p) => match p.open(req) {
                Ok(source) => Box::new(source),
                Err(refusal) => return refusal.into(),
            },
            CommandKind::Shared(s) => match s.hub() {
                Some((hub, topic)) => {
                    s.wake();
                    let resume = Resume::parse(req.last_event_id().as_deref());
                    Box::new(
                        hub.subscribe(Interest::topics(vec![topic.clone()]), resume)
                            .marked(),
                    )
                }
                None => Box::new(s.subscribe()),
            },
        };
        cx.streams.open(cx.config(), path, source, permit, req)
    }
}

/// Each command route: its program(s).
pub(super) const FIGURES: &[Figure<CommandRoute>] = &[
    fig(
        "running",
        "fastsse_command_running",
        Gauge,
        "Program processes running now (shared: 0 or 1).",
        |c| match &c.kind {
            CommandKind::Shared(s) => count(u64::from(s.stats.running.load(Relaxed))),
            CommandKind::PerStream(p) => count(p.slots.running()),
        },
    ),
    fig(
        "pid",
        "fastsse_command_pid",
        Gauge,
        "A shared program's pid (0: none).",
        |c| match &c.kind {
            CommandKind::Shared(s) => count(s.stats.pid.load(Relaxed)),
            CommandKind::PerStream(_) => None,
        },
    ),
    fig(
        "restarts",
        "fastsse_command_restarts_total",
        Counter,
        "Times a shared program was started again after it exited.",
        |c| match &c.kind {
            CommandKind::Shared(s) => count(s.stats.restarts.load(Relaxed)),
            CommandKind::PerStream(_) => None,
        },
    ),
    fig(
        "events",
        "fastsse_command_events_total",
        Counter,
        "Events a shared program printed.",
        |c| match &c.kind {
            CommandKind::Shared(s) => count(s.stats.events.load(Relaxed)),
            CommandKind::PerStream(_) => None,
        },
    ),
    fig(
        "dropped",
        "fastsse_command_dropped_total",
        Counter,
        "Events dropped as larger than max_event_bytes.",
        |c| match &c.kind {
            CommandKind::Shared(s) => count(s.stats.dropped.load(Relaxed)),
            CommandKind::PerStream(p) => count(p.dropped.load(Relaxed)),
        },
    ),
    fig(
        "subscribers",
        "fastsse_command_subscribers",
        Gauge,
        "Subscribers of a shared program now.",
        |c| match &c.kind {
            CommandKind::Shared(s) => count(s.subscribers()),
            CommandKind::PerStream(_) => None,
        },
    ),
];
