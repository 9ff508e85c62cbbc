//! The `command` route: a program's output as events. Building one from its config (the shared
//! program's supervisor, or the per-stream launcher; a hub when it has a `topic`) and answering
//! its requests — a stream of the program's events, or a POST to its topic.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::figures::{combined_max, count, fig, Figure, RouteFigures};
use super::journaled::{self, AuthConfig};
use super::topics::{Publishing, Rules};
use super::{not_allowed, ready, settings, Answer, Build, BuildError, Cx, Kind, Route};
use crate::command::{output::Format, Mode, Start};
use crate::config::de::{de_duration, de_positive, de_positive_duration};
use crate::config::{
    field_names, Config, ConfigError, HubConfig, RouteConfig, RouteKind, RouteSettings, RouteTable,
};
use crate::hub::{Hub, Interest, Resume};
use crate::metrics::Kind::{Counter, Gauge};
use crate::request::Request;
use crate::response::Response;
use crate::source::Source;

/// Most `max_processes`: each slot is a lock file held open (an fd) by every worker.
const MAX_PROCESSES: usize = 4096;

/// The keys of the program a command route runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct ProgramKeys {
    /// The program and its arguments (an argv list, never a shell).
    command: Vec<String>,
    /// `shared` (one process for every subscriber) or `per-stream`.
    mode: Mode,
    /// `sse` (what a PHP SSE loop prints) or `lines` (each line one event).
    format: Format,
    /// Shared: `on-demand` (with the first subscriber) or `always` (at start).
    start: Start,
    /// Shared: how long the process runs on after its last subscriber left.
    #[serde(deserialize_with = "de_duration")]
    idle_stop: Duration,
    /// The program's working directory (default: the daemon's).
    working_dir: Option<PathBuf>,
    /// Names of the daemon's environment variables the program gets (besides PATH; nothing
    /// else is passed).
    env: Vec<String>,
    /// The user to run the program as when fastsse runs as root.
    user: Option<String>,
    /// Per-stream: most programs at once; past it, 503.
    #[serde(deserialize_with = "de_max_processes")]
    max_processes: usize,
    /// After SIGTERM, how long a program has before SIGKILL.
    #[serde(deserialize_with = "de_positive_duration")]
    kill_grace: Duration,
    /// The largest event a program may print, in bytes (its lines added up); a larger one (or
    /// a loop that never prints the blank line) is dropped whole, counted in `/status` and
    /// logged.
    #[serde(deserialize_with = "de_positive")]
    max_event_bytes: usize,
    /// Shared: publish the program's events to this topic of the route's own hub (journal,
    /// ids, Last-Event-ID replay, POST from elsewhere too); unset: live only.
    topic: Option<String>,
}

impl Default for ProgramKeys {
    fn default() -> Self {
        ProgramKeys {
            command: Vec::new(),
            mode: Mode::default(),
            format: Format::default(),
            start: Start::default(),
            idle_stop: Duration::from_secs(30),
            working_dir: None,
            env: Vec::new(),
            user: None,
            max_processes: 100,
            kill_grace: Duration::from_secs(2),
            max_event_bytes: crate::command::output::DEFAULT_MAX_EVENT,
            topic: None,
        }
    }
}

fn de_max_processes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=MAX_PROCESSES).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "must be 1 to {MAX_PROCESSES} (each is a lock file kept open)"
        )));
    }
    Ok(v)
}

/// A command route's settings: its program, and (with a `topic`) publishing, its hub and its
/// authorization as on a topics route.
#[derive(Debug)]
struct CommandSettings {
    program: ProgramKeys,
    publishing: Publishing,
    hub: HubConfig,
    auth: AuthConfig,
    hooks: crate::config::HookConfig,
}

impl RouteSettings for CommandSettings {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn check(&self, t: &RouteTable, _: &Config) -> Result<(), ConfigError> {
        let (p, path) = (&self.program, t.path.get_ref());
        if let Err(why) =
            crate::command::check(&p.command, p.working_dir.as_deref(), p.user.as_deref())
        {
            return Err(t.refuse("command", format!("route {path}: {why}")));
        }
        if p.topic.is_some() && p.mode == Mode::PerStream {
            let why = "topic is for shared commands (a per-stream program serves one browser)";
            return Err(t.refuse("topic", format!("route {path}: {why}")));
        }
        if self.hooks.hook_publish {
            let why = "hook_publish is for topics and mercure routes (a command route takes no publications)";
            return Err(t.refuse("hook_publish", format!("route {path}: {why}")));
        }
        self.publishing.check(t)?;
        self.auth.check(t)
    }

    fn hub(&self) -> Option<&HubConfig> {
        self.program.topic.as_ref().map(|_| &self.hub)
    }

    fn hooks(&self) -> Option<&crate::config::HookConfig> {
        Some(&self.hooks)
    }

    fn describe(&self) -> String {
        let p = &self.program;
        format!(
            "command {:?}, {:?}{}",
            p.command,
            p.mode,
            p.topic
                .as_ref()
                .map(|t| format!(", events to topic {t}"))
                .unwrap_or_default()
        )
    }
}

/// `type = "command"`: a program's output as events — one process for every subscriber
/// (`shared`) or one per stream (`per-stream`), e.g. an unchanged PHP SSE loop.
pub(super) struct CommandKind;

impl RouteKind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
    }

    fn keys(&self) -> Vec<&'static str> {
        // With a `topic`, its hub and the POSTs to it as on a topics route.
        [
            field_names::<ProgramKeys>(),
            field_names::<Publishing>(),
            field_names::<HubConfig>(),
            field_names::<AuthConfig>(),
            field_names::<crate::config::HookConfig>(),
        ]
        .concat()
    }

    fn read(&self, t: &RouteTable) -> Result<Arc<dyn RouteSettings>, ConfigError> {
        Ok(Arc::new(CommandSettings {
            program: t.read()?,
            publishing: t.read()?,
            hub: t.read()?,
            auth: t.read()?,
            hooks: t.read()?,
        }))
    }
}

impl Kind for CommandKind {
    fn figures(&self) -> Option<(&'static str, Vec<super::figures::About>)> {
        Some(("commands", FIGURES.iter().map(Figure::about).collect()))
    }

    /// Its shared program's supervisor starts when a runtime is up. Whatever it cannot build
    /// now (its journal, a key file) leaves it unavailable.
    fn build(&self, b: &Build, r: &RouteConfig) -> Result<Arc<dyn Route>, BuildError> {
        let unavailable = |e: BuildError| match e {
            BuildError::Unavailable { detail, .. } | BuildError::Invalid(detail) => {
                BuildError::Unavailable {
                    reason: "its program or journal is unavailable",
                    detail,
                }
            }
        };
        let s = settings::<CommandSettings>(r)?;
        let programs = programs(b, r, s).map_err(unavailable)?;
        let rules = Rules::new(r.path.get_ref(), &s.publishing, &s.auth).map_err(unavailable)?;
        Ok(Arc::new(CommandRoute { rules, programs }))
    }
}

/// The programs of route `r`: a shared one's supervisor (and its hub, with a `topic`), or the
/// per-stream launcher.
fn programs(b: &Build, r: &RouteConfig, s: &CommandSettings) -> Result<Programs, BuildError> {
    use crate::command::{per_stream::PerStream, shared::SharedProgram, Program};
    let p = &s.program;
    let program = Program::new(
        r.path.get_ref(),
        &p.command,
        (p.working_dir.as_deref(), &p.env),
        p.user.as_deref(),
        p.kill_grace,
    );
    let output = crate::command::output::OutputRules {
        format: p.format,
        max_event_bytes: p.max_event_bytes,
    };
    Ok(match p.mode {
        Mode::PerStream => {
            let slots = process_slots(b.config, r, p.max_processes);
            Programs::PerStream(PerStream::new(program, output, slots))
        }
        Mode::Shared => {
            let hub = match &p.topic {
                Some(t) => Some((journaled::hub(b, r, None)?, t.clone())),
                None => None,
            };
            // Under `[server] processes`, worker 0 runs the program for the box; the others
            // follow it.
            let follows = match crate::process::worker_number() {
                Some(n) if n > 0 && b.config.server.processes > 1 => {
                    Some(b.config.journal.dir.clone())
                }
                _ => None,
            };
            let shared = SharedProgram::new(
                program,
                output,
                (p.start, p.idle_stop),
                (s.hub.subscriber_queue, b.config.stream.retry),
                hub,
                follows,
            );
            shared.ensure_started();
            Programs::Shared(shared)
        }
    })
}

/// A `command` route: who may publish to its topic, and its programs.
pub(super) struct CommandRoute {
    rules: Rules,
    programs: Programs,
}

/// A shared program, or the per-stream launcher.
enum Programs {
    Shared(Arc<crate::command::shared::SharedProgram>),
    PerStream(crate::command::per_stream::PerStream),
}

/// A per-stream route's `max_processes` slots: lock files in the data directory, shared by a
/// reloaded route and by every worker; counted in this process only where they cannot be made.
fn process_slots(
    config: &Config,
    r: &RouteConfig,
    max: usize,
) -> Arc<crate::command::slots::Slots> {
    use crate::command::slots::Slots;
    let dir = config
        .journal
        .dir
        .join(".process-slots")
        .join(r.journal_name());
    Slots::open(&dir, max).unwrap_or_else(|e| {
        log::warn!(
            "route {}: cannot keep process slots in {} ({e}); max_processes counts this process only",
            r.path.get_ref(),
            dir.display()
        );
        Slots::in_process(max)
    })
}

impl Route for CommandRoute {
    fn handle<'a>(&'a self, cx: &'a Cx, req: &'a Request) -> Answer<'a> {
        if let (Programs::Shared(s), "POST") = (&self.programs, req.method.as_str()) {
            if let Some((hub, _)) = s.hub() {
                return Box::pin(async move { self.rules.publish(hub, req).await.into() });
            }
        }
        ready(self.stream(cx, req))
    }

    fn hub(&self) -> Option<&Arc<Hub>> {
        match &self.programs {
            Programs::Shared(s) => s.hub().map(|(h, _)| h),
            Programs::PerStream(_) => None,
        }
    }

    fn who<'a>(&'a self, req: &'a Request) -> super::WhoAnswer<'a> {
        let topics = match &self.programs {
            Programs::Shared(s) => s.hub().map(|(_, t)| vec![t.clone()]).unwrap_or_default(),
            Programs::PerStream(_) => Vec::new(),
        };
        Box::pin(self.rules.who(req, topics))
    }

    fn start(&self) {
        if let Programs::Shared(s) = &self.programs {
            s.ensure_started();
        }
    }

    fn follow(&self) -> Option<crate::siblings::Follow> {
        match &self.programs {
            Programs::Shared(s) => s.follow(),
            Programs::PerStream(_) => None,
        }
    }

    fn figures(&self) -> Option<RouteFigures> {
        let mode = match self.programs {
            Programs::Shared(_) => "shared",
            Programs::PerStream(_) => "per-stream",
        };
        Some(RouteFigures::read("commands", FIGURES, self).with("mode", mode))
    }
}

impl CommandRoute {
    /// `GET` (or `HEAD`): a stream of the program's events.
    fn stream(&self, cx: &Cx, req: &Request) -> Response {
        let path = self.rules.path();
        if req.method != "GET" && req.method != "HEAD" {
            return not_allowed(path, req, "GET, HEAD");
        }
        if req.is_head() {
            return crate::streams::head_only();
        }
        let Some(permit) = cx.streams.try_acquire(cx.config()) else {
            return cx.streams.refuse_full(cx.config(), path, req);
        };
        let source: Box<dyn Source> = match &self.programs {
            Programs::PerStream(p) => match p.open(req) {
                Ok(source) => Box::new(source),
                Err(refusal) => return refusal.into(),
            },
            Programs::Shared(s) => match s.hub() {
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
    combined_max(fig(
        "running",
        "fastsse_command_running",
        Gauge,
        "Program processes running now: a shared one (0 or 1, in one worker of a box), or the \
         per-stream ones of the box (their slots are the box's).",
        |c| match &c.programs {
            Programs::Shared(s) => count(u64::from(s.stats.running.load(Relaxed))),
            Programs::PerStream(p) => count(p.slots.running()),
        },
    )),
    combined_max(fig(
        "pid",
        "fastsse_command_pid",
        Gauge,
        "A shared program's pid (0: none).",
        |c| match &c.programs {
            Programs::Shared(s) => count(s.stats.pid.load(Relaxed)),
            Programs::PerStream(_) => None,
        },
    )),
    fig(
        "restarts",
        "fastsse_command_restarts_total",
        Counter,
        "Times a shared program was started again after it exited.",
        |c| match &c.programs {
            Programs::Shared(s) => count(s.stats.restarts.load(Relaxed)),
            Programs::PerStream(_) => None,
        },
    ),
    fig(
        "events",
        "fastsse_command_events_total",
        Counter,
        "Events a shared program printed.",
        |c| match &c.programs {
            Programs::Shared(s) => count(s.stats.events.load(Relaxed)),
            Programs::PerStream(_) => None,
        },
    ),
    fig(
        "dropped",
        "fastsse_command_dropped_total",
        Counter,
        "Events dropped as larger than max_event_bytes.",
        |c| match &c.programs {
            Programs::Shared(s) => count(s.stats.dropped.load(Relaxed)),
            Programs::PerStream(p) => count(p.dropped.load(Relaxed)),
        },
    ),
    fig(
        "subscribers",
        "fastsse_command_subscribers",
        Gauge,
        "Subscribers of a shared program now.",
        |c| match &c.programs {
            Programs::Shared(s) => count(s.subscribers()),
            Programs::PerStream(_) => None,
        },
    ),
];
