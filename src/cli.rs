//! The command line: subcommands, start-up mode detection, and turning errors into exit codes.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::app::App;
use crate::config::{Config, ListenAddr};
use crate::listen;
use crate::server;

/// Server-Sent Events behind the web server you already run (FastCGI daemon or CGI program).
#[derive(Debug, Parser)]
#[command(name = "fastsse", version, about, long_about = None)]
pub struct Cli {
    /// What to run; with none, fastsse detects how it was started (a listening socket on fd 0:
    /// FastCGI on it; a CGI environment: CGI) or prints this help.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Force the start-up mode instead of detecting it.
    #[arg(long, value_enum, global = true)]
    pub mode: Option<Mode>,
}

/// Forced start-up modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// FastCGI on the listening socket inherited on fd 0.
    Fastcgi,
    /// A CGI program (one request from the environment and stdin).
    Cgi,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the FastCGI daemon.
    Serve(ServeArgs),
    /// Check a config file as the daemon would (settings, and each topics route's journal:
    /// that it can be created or written by this user, and damage per `on_corruption`), and
    /// print the routes it defines.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
        /// Data directory holding the journals (overrides [journal] dir), as for `serve`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Benchmarks that print figures.
    #[cfg(feature = "client")]
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Check an SSE URL through the whole chain as a browser would: buffering, compression,
    /// Cache-Control, idle timeouts, CORS, the retry hint. Exits 1 on a problem.
    #[cfg(feature = "client")]
    Check(crate::check::CheckArgs),
    /// Publish one event to a topics route's journal (works with or without a running daemon:
    /// every process on this host serving that route delivers it).
    Publish(PublishArgs),
}

/// `fastsse bench` subcommands.
#[cfg(feature = "client")]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load-test any SSE server: N subscribers (through a web server or straight to a FastCGI
    /// socket), a publisher, churn; reports delivery and latency. Exits 1 when events were lost
    /// or connections failed.
    Sse(Box<crate::bench::load::LoadArgs>),
    /// The least possible FastCGI SSE upstream (for comparisons): one pre-encoded record per
    /// tick to every connection.
    Floor(crate::bench::floor::FloorArgs),
    /// Publish throughput and acknowledgement latency of the journal under each fsync policy.
    Journal(crate::bench::JournalBenchArgs),
    /// One HTML page (and SVG charts) from saved `bench sse --json` reports, side by side.
    Report(crate::bench::ReportArgs),
}

/// `fastsse publish` options.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Topic; repeatable.
    #[arg(long, short, required = true)]
    pub topic: Vec<String>,
    /// Event name (`event:` field).
    #[arg(long, short)]
    pub event: Option<String>,
    /// `retry:` hint in milliseconds.
    #[arg(long)]
    pub retry: Option<u64>,
    /// The topics route to publish to (default: the first one in the config).
    #[arg(long)]
    pub route: Option<String>,
    /// TOML config file (default: FASTSSE_CONFIG, else /etc/fastsse/fastsse.toml when it
    /// exists, else the embedded default).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Write straight into the journals in this data directory (created if missing) instead of
    /// publishing through the running daemon.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Publish through the daemon listening on this unix socket (default: the config's first
    /// unix `listen` address, when a daemon answers there).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The data; `-` reads it from standard input.
    pub data: String,
}

/// `fastsse serve` options.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (default: FASTSSE_CONFIG, else the embedded default).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Listen address, `unix:PATH` or `HOST:PORT`; repeatable; replaces the config's `listen`.
    #[arg(long, short, value_parser = |s: &str| s.parse::<ListenAddr>())]
    pub listen: Vec<ListenAddr>,
    /// Data directory holding the topic journals (overrides [journal] dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.or_else(|| std::env::var_os("FASTSSE_CONFIG").map(PathBuf::from));
    match path {
        Some(p) => Config::load(&p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn serve(args: ServeArgs, inherited_only: bool) -> Result<(), String> {
    // Before any thread starts (the environment is changed).
    let activated = if inherited_only {
        None
    } else {
        crate::upgrade::inherited_listeners().or_else(listen::systemd_activated)
    };
    let config_path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("FASTSSE_CONFIG").map(PathBuf::from));
    let reload = config_path.clone().map(|path| server::ReloadFrom {
        path,
        data_dir: args.data_dir.clone(),
    });
    let mut config = load_config(config_path)?;
    if !args.listen.is_empty() {
        config.server.listen = args.listen;
    }
    if let Some(dir) = args.data_dir {
        config.journal.dir = dir;
    }
    // Several processes: this one binds and supervises; the workers open the journals.
    let supervising =
        config.server.processes > 1 && !inherited_only && !crate::workers::is_worker();
    // Journals are opened (and recovered) before anything listens.
    let app = if supervising {
        None
    } else {
        Some(App::new(config.clone())?)
    };
    let mut listeners = Vec::new();
    if let Some(activated) = activated {
        listeners = activated.map_err(|e| e.to_string())?;
        log::info!(
            "{} listener(s) handed over (systemd socket activation or an upgrade); [server] listen is not used",
            listeners.len()
        );
    } else if inherited_only || config.server.listen.is_empty() {
        match listen::inherited(0) {
            Some(l) => listeners.push(l.map_err(|e| e.to_string())?),
            None if inherited_only => return Err("fd 0 is not a listening socket".into()),
            None => {
                return Err("nothing to listen on: pass --listen unix:PATH or HOST:PORT, or set [server] listen in the config".into())
            }
        }
    }
    if !inherited_only && listeners.is_empty() {
        // TCP first: a unix socket appearing at its path is what scripts (and tests) wait for,
        // so it appears only once every listener is bound.
        let (unix, tcp): (Vec<&ListenAddr>, Vec<&ListenAddr>) = config
            .server
            .listen
            .iter()
            .partition(|a| matches!(a, ListenAddr::Unix(_)));
        for addr in tcp.into_iter().chain(unix) {
            listeners.push(listen::bind(addr, &config.server).map_err(|e| e.to_string())?);
        }
    }
    // Spawned by a web server on fd 0: h2o adds a lifeline pipe on fd 5.
    let lifeline = if inherited_only {
        listen::lifeline_fd()
    } else {
        None
    };
    match app {
        Some(app) => server::run_daemon(app, listeners, lifeline, reload)
            .map_err(|e| format!("runtime: {e}")),
        None => crate::workers::supervise(
            config.server.processes,
            listeners,
            config.server.shutdown_timeout,
        ),
    }
}

fn publish(args: PublishArgs) -> Result<(), String> {
    use crate::config::RouteKind;
    use crate::hub::journal::Publication;
    use crate::publish::{check_event_name, validate_topics};
    use crate::publish_client::{into_journal, live_socket, via_socket, SYSTEM_CONFIG};
    let system = PathBuf::from(SYSTEM_CONFIG);
    let config_path = args
        .config
        .or_else(|| std::env::var_os("FASTSSE_CONFIG").map(PathBuf::from))
        .or_else(|| system.is_file().then_some(system));
    let mut config = load_config(config_path)?;
    let explicit_dir = args.data_dir.is_some();
    if let Some(dir) = args.data_dir {
        config.journal.dir = dir;
    }
    let route = config
        .routes
        .iter()
        .filter(|r| r.kind == RouteKind::Topics)
        .find(|r| args.route.as_deref().is_none_or(|p| r.path.get_ref() == p))
        .ok_or_else(|| match &args.route {
            Some(p) => format!("no topics route {p} in the config"),
            None => "the config has no topics route".to_string(),
        })?;
    validate_topics(&args.topic, route.max_topics).map_err(|e| e.to_string())?;
    check_event_name(args.event.as_deref()).map_err(|e| e.to_string())?;
    let data = if args.data == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("reading standard input: {e}"))?;
        s
    } else {
        args.data
    };
    let publication = Publication {
        topics: args.topic,
        event: args.event,
        retry_ms: args.retry,
        data,
        ..Default::default()
    };
    let socket = args
        .socket
        .or_else(|| (!explicit_dir).then(|| live_socket(&config)).flatten());
    let id = match socket {
        Some(s) => via_socket(&s, route, &publication)?,
        None => into_journal(&config, route, publication, explicit_dir)?,
    };
    println!("{id}");
    Ok(())
}

/// `fastsse check-config`: refuses what `serve` would refuse before it listens.
fn check_config(file: &std::path::Path, data_dir: Option<PathBuf>) -> Result<(), String> {
    use crate::config::RouteKind;
    let mut config = Config::load(file).map_err(|e| e.to_string())?;
    if let Some(dir) = data_dir {
        config.journal.dir = dir;
    }
    for r in &config.routes {
        let path = r.path.get_ref();
        match r.kind {
            RouteKind::Clock | RouteKind::Ping => {
                println!("{path} -> {:?} every {:?}", r.kind, r.interval)
            }
            RouteKind::Status => println!("{path} -> status"),
            RouteKind::Command => println!(
                "{path} -> command {:?}, {:?}{}",
                r.command,
                r.mode,
                r.topic
                    .as_ref()
                    .map(|t| format!(", events to topic {t}"))
                    .unwrap_or_default()
            ),
            RouteKind::Metrics => println!("{path} -> metrics"),
            RouteKind::Topics | RouteKind::Mercure => {
                #[cfg(feature = "redis")]
                if let crate::hub::Storage::Redis(rs) = config.journal.storage_for(r) {
                    match crate::hub::redis::check(&rs) {
                        Ok(n) => println!("{path} -> {:?}, redis {} ({n} entries)", r.kind, rs.key),
                        // Not fatal: the daemon starts and catches up once Redis answers.
                        Err(e) => println!(
                            "{path} -> {:?}, redis {}: not answering now ({e}); the daemon starts anyway and catches up",
                            r.kind, rs.key
                        ),
                    }
                    continue;
                }
                let settings = config.journal.settings_for(r);
                let damaged = check_journal(&settings).map_err(|e| format!("route {path}: {e}"))?;
                println!(
                    "{path} -> {}, journal {}{}",
                    if r.kind == RouteKind::Topics {
                        "topics"
                    } else {
                        "mercure hub"
                    },
                    settings.dir.display(),
                    if damaged > 0 {
                        format!(" ({damaged} damaged regions, skipped per on_corruption)")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    Ok(())
}

/// Whether a journal can be opened by this user without writing anything: its directory (or
/// the nearest existing parent, where it would be created) is writable, and its records read
/// back under the configured corruption policy. Returns the damaged regions skipped.
fn check_journal(settings: &crate::hub::journal::JournalSettings) -> Result<usize, String> {
    use nix::unistd::{access, AccessFlags};
    let dir = &settings.dir;
    let mut existing = dir.as_path();
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
    }
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
    if access(existing, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        return Err(format!(
            "user {user} cannot write {} (to {} the journal {})",
            existing.display(),
            if existing == dir { "use" } else { "create" },
            dir.display()
        ));
    }
    if !dir.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if access(&path, AccessFlags::W_OK).is_err() {
            return Err(format!(
                "user {user} cannot write {}; the daemon could not append to this journal",
                path.display()
            ));
        }
    }
    crate::hub::journal::read_all(dir, settings.on_corruption, |_| {})
        .map(|damage| damage.len())
        .map_err(|e| e.to_string())
}

/// The log level when `RUST_LOG` is unset: `warn` for a CGI program (its stderr is the web
/// server's error log, one line per request would flood it), `info` otherwise.
pub fn default_log_level() -> &'static str {
    if std::env::var("GATEWAY_INTERFACE").is_ok_and(|g| g.starts_with("CGI/")) {
        "warn"
    } else {
        "info"
    }
}

/// Runs a `fastsse bench` command: `Ok(false)` when the run failed its own verdict.
#[cfg(feature = "client")]
fn run_bench(bench: BenchCommand) -> Result<bool, String> {
    match bench {
        BenchCommand::Journal(args) => crate::bench::journal(args).map(|_| true),
        BenchCommand::Floor(args) => crate::bench::floor::run(args).map(|_| true),
        BenchCommand::Sse(args) => crate::bench::sse(*args),
        BenchCommand::Report(args) => crate::bench::report(args).map(|_| true),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    listen::ensure_std_fds();
    let result = match (cli.command, cli.mode) {
        (Some(Command::Serve(args)), _) => serve(args, false),
        (Some(Command::Publish(args)), _) => publish(args),
        #[cfg(feature = "client")]
        (Some(Command::Check(args)), _) => match crate::check::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        #[cfg(feature = "client")]
        (Some(Command::Bench(bench)), _) => match run_bench(bench) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        (Some(Command::CheckConfig { file, data_dir }), _) => {
            // A listing piped into `head` ends quietly, as Unix tools do, not with a panic.
            // SAFETY: setting a signal's disposition to the default has no preconditions.
            let _ = unsafe {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGPIPE,
                    nix::sys::signal::SigHandler::SigDfl,
                )
            };
            check_config(&file, data_dir)
        }
        (None, mode) => {
            // SAFETY: fd 0 stays open for the life of the process (ensure_std_fds).
            let fd0 = unsafe { BorrowedFd::borrow_raw(0) };
            let cgi_env = std::env::var("GATEWAY_INTERFACE").is_ok_and(|g| g.starts_with("CGI/"));
            match mode {
                Some(Mode::Fastcgi) => serve(
                    ServeArgs {
                        config: None,
                        listen: vec![],
                        data_dir: None,
                    },
                    true,
                ),
                None if listen::is_listening_socket(fd0) => serve(
                    ServeArgs {
                        config: None,
                        listen: vec![],
                        data_dir: None,
                    },
                    true,
                ),
                Some(Mode::Cgi) => cgi(),
                None if cgi_env => cgi(),
                None => {
                    let _ = Cli::command().print_help();
                    return ExitCode::from(2);
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Once, plainly: the log line that used to come with it said the same.
        Err(e) => {
            eprintln!("fastsse: {e}");
            ExitCode::FAILURE
        }
    }
}

/// CGI mode: config from FASTSSE_CONFIG, a `.toml` beside the program, or the default.
fn cgi() -> Result<(), String> {
    let config = match crate::cgi::config_path() {
        Some(p) => Config::load(&p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    };
    match config {
        Ok(c) => crate::cgi::run(c),
        Err(e) => {
            // Tell the web server (and the browser) what is wrong, not just the error log.
            println!(
                "Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nfastsse: {e}"
            );
            Err(e)
        }
    }
}
