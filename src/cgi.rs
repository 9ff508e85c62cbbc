//! The CGI transport: one request from the environment and stdin, the response written to
//! stdout and flushed per event, until the stream ends, a write fails (the client left: EPIPE)
//! or the web server sends SIGTERM. Same application, routes and sources as FastCGI.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, Stdout};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::request::{PathFrom, Request};
use crate::response::{respond, FullResponse, Response};
use crate::source::{BodyClosed, BodyWriter};

/// Where CGI mode finds its config: `FASTSSE_CONFIG`, else a `.toml` beside the program named
/// like it (`events.cgi` -> `events.toml`), else the embedded default.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FASTSSE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::args_os().next().map(PathBuf::from)?;
    let beside = exe.with_extension("toml");
    beside.is_file().then_some(beside)
}

/// Where the journal goes when the configured data directory is relative and this process
/// cannot create it in its working directory (Apache runs CGI in the script's folder, which on
/// Debian's `/usr/lib/cgi-bin` belongs to root while the script runs as `www-data`):
/// `$XDG_STATE_HOME/fastsse/<folder>` or `$HOME/.local/state/fastsse/<folder>`, `<folder>` named
/// after the working directory so two installs never share a journal. `None`: keep the
/// configured one (it is usable, or nothing better is, and its route answers 503 with a reason).
pub fn fallback_data_dir(configured: &Path) -> Option<PathBuf> {
    use nix::unistd::{access, AccessFlags};
    if configured.is_absolute() {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let here = cwd.join(configured);
    let writable = |p: &Path| access(p, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    // The nearest existing ancestor decides whether `here` can be created.
    let existing = here.ancestors().find(|p| p.exists())?;
    if writable(existing) {
        return None;
    }
    let folder: String = cwd
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".local/state"))
                .filter(|p| p.is_absolute())
        })?;
    let there = state.join("fastsse").join(folder);
    let existing = there.ancestors().find(|p| p.exists())?;
    writable(existing).then_some(there)
}

/// stdout as a response body: each write is written and flushed before it returns.
struct CgiBody(Stdout);

impl BodyWriter for CgiBody {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BodyClosed> {
        // Rust ignores SIGPIPE: a browser that left shows up here as EPIPE.
        self.0.write_all(&chunk).await.map_err(|_| BodyClosed)?;
        self.0.flush().await.map_err(|_| BodyClosed)
    }
}

/// Reads the request body: exactly CONTENT_LENGTH bytes of stdin, at most `max` (RFC 3875 4.2).
fn read_body(max: usize) -> Result<Bytes, FullResponse> {
    let len = match std::env::var("CONTENT_LENGTH")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        None => return Ok(Bytes::new()),
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| FullResponse::text(400, "CONTENT_LENGTH is not a number"))?,
    };
    if len > max {
        return Err(FullResponse::text(
            413,
            format!("request body of {len} bytes exceeds max_body_bytes ({max})"),
        ));
    }
    let mut body = vec![0u8; len];
    std::io::stdin()
        .take(len as u64)
        .read_exact(&mut body)
        .map_err(|e| {
            FullResponse::text(
                400,
                format!("request body shorter than CONTENT_LENGTH: {e}"),
            )
        })?;
    Ok(Bytes::from(body))
}

/// The CGI environment as name-value pairs.
fn environment() -> Vec<(Bytes, Bytes)> {
    std::env::vars_os()
        .map(|(k, v): (OsString, OsString)| (Bytes::from(k.into_vec()), Bytes::from(v.into_vec())))
        .collect()
}

/// Serves one CGI request with `config`. Returns when the response is complete or the client left.
pub fn run(mut config: Config) -> Result<(), String> {
    if let Some(dir) = fallback_data_dir(&config.journal.dir) {
        log::info!(
            "cgi: cannot create {} in this folder as uid {}; journals in {}",
            config.journal.dir.display(),
            nix::unistd::getuid(),
            dir.display()
        );
        config.journal.dir = dir;
    }
    let default_route = config.cgi.default_route.clone();
    let max_body = config.server.max_body_bytes;
    // The request is read before the runtime starts: plain blocking I/O in a one-request
    // process.
    let request = read_body(max_body).map(|body| {
        let mut req = Request::from_vars(environment(), body, PathFrom::PathInfo);
        if req.path.is_empty() || req.path == "/" {
            req.path = default_route;
        }
        req
    });
    // Only a request to a route with a journal can do with part of it; /status and the like
    // report what the journal retains, so they load it all.
    let journaled = |req: &Request| {
        config
            .routes
            .iter()
            .any(|r| r.path.get_ref() == &req.path && r.has_journal())
    };
    let load_after = match &request {
        Ok(req) if journaled(req) => journal_needed_after(req),
        Ok(_) => 0,
        Err(_) => u64::MAX,
    };
    let app = Arc::new(App::for_cgi(config, load_after)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let mut out = CgiBody(tokio::io::stdout());
        let (response, head_only) = match request {
            Err(refusal) => (Response::Full(refusal), false),
            Ok(req) => {
                log::debug!("cgi {} {} peer={}", req.method, req.path, req.peer);
                (app.handle(&req).await, req.is_head())
            }
        };
        let shutdown = CancellationToken::new();
        let abort = CancellationToken::new();
        if matches!(response, Response::Stream(_)) {
            tokio::spawn(cancel_on_term(shutdown.clone()));
        }
        let sent = respond(response, head_only, &mut out, None, &abort, &shutdown).await;
        log::debug!("cgi response: {sent:?}");
    });
    // Do not wait for the journal threads: the process is done.
    rt.shutdown_timeout(std::time::Duration::from_millis(50));
    Ok(())
}

/// The journal events one CGI request can need: those after its `Last-Event-ID` when it
/// resumes after a numeric id, none when it subscribes live or does not subscribe (a publish),
/// all of them otherwise (a Mercure id named by its publisher, `earliest`). Every poll of a
/// `hold = "0s"` client resumes after an id: it reads the journal's newest segment(s), not the
/// whole of it.
fn journal_needed_after(req: &Request) -> u64 {
    use crate::hub::Resume;
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return u64::MAX;
    }
    match Resume::parse(req.last_event_id().as_deref()) {
        Resume::After(id) => id,
        Resume::Live if req.query_values("lastEventID").is_empty() => u64::MAX,
        _ => 0,
    }
}

/// SIGTERM (Apache's cleanup, a script timeout) or SIGINT ends the stream with a retry hint.
async fn cancel_on_term(shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}
