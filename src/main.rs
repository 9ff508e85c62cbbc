//! The `fastsse` binary: parse the command line, start logging, run.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // A command route's program guard: no logging, no runtime (fastsse::command::guard).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == fastsse::command::guard::ARG)
    {
        let status = fastsse::command::guard::run(&args[2..]);
        return std::process::ExitCode::from(status.clamp(0, 255) as u8);
    }
    let cli = fastsse::cli::Cli::parse();
    let mut logger = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(fastsse::cli::default_log_level()),
    );
    // Worker processes share the supervisor's log: each line says which worker wrote it.
    if let Some(n) = fastsse::process::worker_number() {
        use std::io::Write;
        logger.format(move |buf, record| {
            writeln!(
                buf,
                "[{} {:<5} {} worker={n}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    logger.init();
    fastsse::cli::run(cli)
}
