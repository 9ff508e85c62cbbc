//! `command` routes in the application: building one from its config (the shared program's
//! supervisor, or the per-stream launcher; a hub when it has a `topic`) and answering its
//! requests — a stream of the program's events, or a POST to its topic.

use std::sync::Arc;

use super::{route_hub, App, Route};
use crate::auth::RouteAuth;
use crate::config::{Config, RouteConfig};
use crate::hub::{Interest, Resume};
use crate::request::Request;
use crate::response::{FullResponse, Response};
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

/// A `command` route's handler; its shared program's supervisor starts when a runtime is up.
pub(super) fn command_route(
    config: &Config,
    r: &RouteConfig,
    keep: &[Route],
    load_after: u64,
) -> Result<CommandRoute, String> {
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
                Some(t) => Some((
                    route_hub(config, r, keep, load_after).map_err(|e| e.to_string())?,
                    t.clone(),
                )),
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
    Ok(CommandRoute {
        conf: r.clone(),
        auth: super::route_auth(r)?,
        kind,
    })
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

impl App {
    /// Answers a request to a `command` route.
    pub(super) async fn command(&self, route: &Route, c: &CommandRoute, req: &Request) -> Response {
        if let (CommandKind::Shared(s), "POST") = (&c.kind, req.method.as_str()) {
            if let Some((hub, _)) = s.hub() {
                return self.publish(&c.conf, &c.auth, hub, req).await.into();
            }
        }
        if req.method != "GET" && req.method != "HEAD" {
            return FullResponse::text(
                405,
                format!("{} does not accept {}", route.path, req.method),
            )
            .with_header("Allow", "GET, HEAD")
            .into();
        }
        if req.is_head() {
            return self.stream_head_only();
        }
        let Some(permit) = self.try_acquire_stream() else {
            return self.refuse_full(route, req);
        };
        let source: Box<dyn Source> = match &c.kind {
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
        self.open_stream(route, source, permit, req)
    }
}
