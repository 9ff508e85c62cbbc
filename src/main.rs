//! The `fastsse` binary: parse the command line, start logging, run.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fastsse::cli::Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(fastsse::cli::default_log_level()),
    )
    .init();
    fastsse::cli::run(cli)
}
