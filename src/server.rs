//! The FastCGI daemon: accept loops over every listener, the connection limit, signals, and
//! graceful shutdown (a `CancellationToken` for the server and a `TaskTracker` for every task).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::fcgi::conn::{serve_connection, ConnContext, FcgiSocket};
use crate::fcgi::idle::IdleConnections;
use crate::listen::BoundListener;
use crate::stats::ConnectionGuard;

/// Counter for connection ids in logs.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Peers allowed on TCP listeners: `server.web_server_addrs` plus `FCGI_WEB_SERVER_ADDRS`.
fn allowed_peers(app: &App) -> Vec<IpAddr> {
    let mut names = app.config().server.web_server_addrs.clone();
    if let Ok(env) = std::env::var("FCGI_WEB_SERVER_ADDRS") {
        names.extend(
            env.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        );
    }
    names
        .iter()
        .filter_map(|n| match n.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                log::warn!("ignoring web server address `{n}`: not an IP address");
                None
            }
        })
        .collect()
}

/// How long a worker near its limits leaves new connections to its siblings before it takes
/// what they left (only under `processes > 1`).
const SIBLINGS_FIRST: Duration = Duration::from_millis(10);
/// Most connections a worker near its limits takes after each pause.
const LEFT_BATCH: usize = 64;

struct Acceptor {
    app: Arc<App>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    allowed: Arc<Vec<IpAddr>>,
    idle: Arc<IdleConnections>,
}

impl Acceptor {
    /// Counts the connection at accept, so a burst cannot pass `max_connections`. When full,
    /// the oldest connection with no request running is closed to make room; with none, the new
    /// connection is refused (closed) and logged.
    fn admit(&self, peer: &str) -> Option<ConnectionGuard> {
        if let Some(guard) = self.app.try_open_connection(false) {
            return Some(guard);
        }
        if self.idle.evict_oldest() {
            return self.app.try_open_connection(true);
        }
        self.app.connection_refused();
        let max = self.app.config().server.max_connections;
        static REFUSED: crate::flood::Flood = crate::flood::Flood::new("connections refused");
        REFUSED.warn(|| {
            format!(
                "peer={peer}: refusing connection, {max} open (max_connections), every one busy"
            )
        });
        None
    }

    fn spawn<S: FcgiSocket>(&self, io: S, peer: Arc<str>, counted: ConnectionGuard) {
        let ctx = ConnContext {
            app: self.app.clone(),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
            idle: self.idle.clone(),
            peer,
            conn_id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        };
        self.tracker.spawn(serve_connection(io, ctx, counted));
    }

    /// Waits a little after an accept error (EMFILE and friends) so the loop does not spin.
    async fn back_off(&self, e: std::io::Error, listener: &str) {
        log::warn!("accept on {listener}: {e}");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Accepts with `poll_accept` until shutdown, handing each connection to `take`. A worker
    /// near its limits (see [`App::leaves_accepts_to_siblings`]) does not race its siblings for
    /// the next connection: it waits [`SIBLINGS_FIRST`], then takes only what they left waiting
    /// (up to [`LEFT_BATCH`]) and waits again, so a box whose workers are all nearly full still
    /// accepts at once what arrives.
    async fn accept_loop<C>(
        &self,
        name: &str,
        poll_accept: impl Fn(&mut Context<'_>) -> Poll<std::io::Result<C>>,
        mut take: impl FnMut(C),
    ) {
        loop {
            if self.app.leaves_accepts_to_siblings() {
                tokio::select! {
                    _ = tokio::time::sleep(SIBLINGS_FIRST) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                for _ in 0..LEFT_BATCH {
                    match std::future::poll_fn(|cx| Poll::Ready(poll_accept(cx))).await {
                        Poll::Ready(Ok(c)) => take(c),
                        Poll::Ready(Err(e)) => {
                            self.back_off(e, name).await;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = std::future::poll_fn(&poll_accept) => match r {
                    Ok(c) => take(c),
                    Err(e) => self.back_off(e, name).await,
                }
            }
        }
    }

    async fn run(self, listener: BoundListener) {
        let name = listener.to_string();
        match listener {
            BoundListener::Unix { listener, .. } => {
                let listener = match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return log::error!("cannot register {name}: {e}"),
                };
                let peer: Arc<str> = Arc::from(name.as_str());
                let take = |(io, _)| {
                    if let Some(counted) = self.admit(&name) {
                        self.spawn(io, peer.clone(), counted);
                    }
                };
                self.accept_loop(&name, |cx| listener.poll_accept(cx), take)
                    .await;
            }
            BoundListener::Tcp(listener) => {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return log::error!("cannot register {name}: {e}"),
                };
                let take = |(io, addr): (tokio::net::TcpStream, std::net::SocketAddr)| {
                    let peer = addr.to_string();
                    if !self.allowed.is_empty() && !self.allowed.contains(&addr.ip()) {
                        log::warn!("peer={peer}: not in FCGI_WEB_SERVER_ADDRS, closing");
                        return;
                    }
                    if let Some(counted) = self.admit(&peer) {
                        let _ = io.set_nodelay(true);
                        self.spawn(io, Arc::from(peer), counted);
                    }
                };
                self.accept_loop(&name, |cx| listener.poll_accept(cx), take)
                    .await;
            }
        }
    }
}

/// Serves FastCGI on `listeners` until `shutdown` fires, then lets streams end (each gets a
/// `retry:` hint and a clean END_REQUEST) for at most `server.shutdown_timeout`.
pub async fn serve(app: Arc<App>, listeners: Vec<BoundListener>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let allowed = Arc::new(allowed_peers(&app));
    let idle = Arc::new(IdleConnections::default());
    let mut cleanup = Vec::new();
    let successor = Arc::new(crate::process::upgrade::Successor::default());
    tracker.spawn(crate::process::upgrade::upgrade_on_usr2(
        crate::process::handover::Handover::of(&listeners),
        successor.clone(),
        shutdown.clone(),
    ));
    for l in listeners {
        log::info!("listening on {l}");
        if let BoundListener::Unix {
            cleanup: Some(p), ..
        } = &l
        {
            cleanup.push(p.clone());
        }
        let acceptor = Acceptor {
            app: app.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            allowed: allowed.clone(),
            idle: idle.clone(),
        };
        tracker.spawn(acceptor.run(l));
    }
    // A worker of several answers its siblings (the box's figures and subscriptions).
    let config = app.config();
    if let (Some(me), true) = (crate::process::worker_number(), config.server.processes > 1) {
        let app = app.clone();
        tracker.spawn(crate::siblings::answer(
            config.journal.dir.clone(),
            me,
            Arc::new(move |question: String| {
                let app = app.clone();
                Box::pin(async move { app.answer_sibling(&question).await })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
            }),
            shutdown.clone(),
        ));
    }
    // Started by an upgrade: now that this process accepts, the old one may drain.
    crate::process::handover::relieve_predecessor();
    shutdown.cancelled().await;
    // Streams ended from here on leave for this reason (hooks).
    crate::hooks::stopping(successor.running());
    let streams = app.stats().active_streams();
    log::info!("shutting down: ending {streams} streams");
    tracker.close();
    let grace = app.config().server.shutdown_timeout;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        log::warn!(
            "{} streams still open after {grace:?}; exiting anyway",
            app.stats().active_streams()
        );
    }
    // Hooks: every stream's leave journaled, a last chance to deliver the queue.
    let _ = tokio::task::spawn_blocking(|| crate::hooks::close_all(Duration::from_secs(2))).await;
    // After an upgrade the socket files belong to the successor (same sockets).
    if !successor.running() {
        for socket in cleanup {
            socket.remove_if_ours();
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub async fn cancel_on_signals(shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received"),
        _ = int.recv() => log::info!("SIGINT received"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

/// Cancels `shutdown` when the lifeline pipe (h2o's fd 5) reaches EOF.
async fn cancel_on_lifeline_eof(fd: std::os::fd::OwnedFd, shutdown: CancellationToken) {
    use tokio::io::AsyncReadExt;
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(p) => p,
        Err(e) => return log::warn!("lifeline pipe on fd 5 unusable: {e}"),
    };
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            r = pipe.read(&mut buf) => match r {
                Ok(n) if n > 0 => continue,
                _ => break,
            },
            _ = shutdown.cancelled() => return,
        }
    }
    log::info!("lifeline (fd 5) closed: the web server is gone, shutting down");
    shutdown.cancel();
}

/// Where SIGHUP reads the config again from.
#[derive(Clone, Debug)]
pub struct ReloadFrom {
    /// The config file the daemon started with.
    pub path: std::path::PathBuf,
    /// `--data-dir`, which overrides the file's `[journal] dir` again.
    pub data_dir: Option<std::path::PathBuf>,
}

/// SIGHUP: reads the config file again and applies it to new requests (off the runtime: it may
/// open journals). A bad file is refused with file, line and key, and the old config stays.
async fn reload_on_hangup(app: Arc<App>, from: Option<ReloadFrom>, shutdown: CancellationToken) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return log::error!("cannot install the SIGHUP handler");
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(from) = from.clone() else {
            log::warn!(
                "SIGHUP: started without a config file (embedded default); nothing to reload"
            );
            continue;
        };
        let app = app.clone();
        let shown = from.path.display().to_string();
        let done = tokio::task::spawn_blocking(move || {
            let mut config = crate::config::Config::load(&from.path, crate::routes::kinds())
                .map_err(|e| e.to_string())?;
            if let Some(dir) = from.data_dir {
                config.journal.dir = dir;
            }
            app.reload(config)
        })
        .await;
        match done {
            Ok(Ok(routes)) => log::info!("SIGHUP: reloaded {shown} ({routes} routes)"),
            Ok(Err(e)) => log::error!("SIGHUP: reload refused, the old config stays: {e}"),
            Err(e) => log::error!("SIGHUP: reload failed: {e}"),
        }
    }
}

/// Runs the daemon on a new runtime until a signal (or the lifeline's EOF) ends it; SIGHUP
/// reloads the config from `reload`.
pub fn run_daemon(
    app: App,
    listeners: Vec<BoundListener>,
    lifeline: Option<std::os::fd::OwnedFd>,
    reload: Option<ReloadFrom>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(app.config().server.runtime_threads())
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let app = Arc::new(app);
        app.start_commands();
        tokio::spawn(cancel_on_signals(shutdown.clone()));
        tokio::spawn(reload_on_hangup(app.clone(), reload, shutdown.clone()));
        if let Some(fd) = lifeline {
            tokio::spawn(cancel_on_lifeline_eof(fd, shutdown.clone()));
        }
        serve(app, listeners, shutdown).await;
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
