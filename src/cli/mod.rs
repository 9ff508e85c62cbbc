//! The command line: the argument types, which role this process takes (a subcommand, FastCGI
//! on an inherited socket, a CGI program), and errors turned into exit codes. The tools live
//! beside it: [`serve`], [`publish`], [`check_config`].

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ListenAddr};
use crate::listen;
use check_config::check_config;
use publish::publish;
use serve::serve;

mod check_config;
mod publish;
mod serve;

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
        Some(p) => Config::load(&p, crate::routes::kinds()).map_err(|e| e.to_string()),
        None => Ok(Config::embedded(crate::routes::kinds())),
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
