//! `fastsse serve` (and FastCGI on an inherited socket): the config, the listeners, the
//! worker processes or the server itself.

use std::path::PathBuf;

use super::ServeArgs;
use crate::app::App;
use crate::config::{Config, ListenAddr};
use crate::listen;
use crate::server;

pub(super) fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.or_else(|| std::env::var_os("FASTSSE_CONFIG").map(PathBuf::from));
    match path {
        Some(p) => Config::load(&p, crate::routes::kinds()).map_err(|e| e.to_string()),
        None => Ok(Config::embedded(crate::routes::kinds())),
    }
}

pub(super) fn serve(args: ServeArgs, inherited_only: bool) -> Result<(), String> {
    // Before any thread starts (the environment is changed).
    let activated = if inherited_only {
        None
    } else {
        crate::process::handover::inherited_listeners().or_else(listen::systemd_activated)
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
    raise_open_files(config.server.max_connections);
    // Several processes: this one binds and supervises; the workers open the journals.
    let supervising =
        config.server.processes > 1 && !inherited_only && !crate::process::is_worker();
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
        None => crate::process::workers::supervise(
            config.server.processes,
            listeners,
            config.server.shutdown_timeout,
        ),
    }
}

/// Every stream is an open file: raises the soft open-file limit to the hard one (as a unit's
/// `LimitNOFILE=` would), so a daemon started by hand — `runuser … fastsse serve` on a host
/// without systemd, where the soft limit is often 1,024 — can hold `max_connections`. Says so
/// when even the hard limit is lower.
fn raise_open_files(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        log::debug!("open files: soft limit raised from {soft} to {hard}");
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    if limit < max_connections as u64 + 64 {
        log::warn!(
            "open files: the limit is {limit}, under [server] max_connections ({max_connections}) and the daemon's own files; raise it (ulimit -n, LimitNOFILE=) or lower max_connections"
        );
    }
}
