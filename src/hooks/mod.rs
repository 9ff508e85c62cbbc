//! Hooks: a route tells the application when a stream opens (`connect`) and ends (`leave`,
//! with the reason), by an HTTP(S) POST or a FastCGI request straight into its php-fpm pool.
//! At least once and never lost: each call is in the hook journal before it is sent, retried
//! while the application is down, and taken over by the next process when this one dies — with
//! a `leave` (`process_died`) for every stream it held. A connect hook may also decide: with
//! `hook_connect_wait`, a 401/403 from the application refuses the stream.
//!
//! [`HookConfig`] is the route keys (every streaming kind takes them), [`Hooks`] a route's
//! hooks, [`Watch`] one stream's; `call.rs` is what a call says, `journal.rs` the journal,
//! `store.rs` the queue and its sender, `send.rs` one attempt.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

pub mod call;
pub mod journal;
pub mod presence;
pub mod send;
pub mod store;

pub use call::{BodyFormat, Call, Event, Reason};
pub use store::Store;

use crate::config::{Config, HookConfig, OnTimeout, RouteConfig};
use crate::request::Request;
use crate::response::{stream_headers, FullResponse};
use crate::source::StreamEnd;
use send::{Delivery, Outcome, Target};

/// The delivery these keys describe, for the route at `route`.
fn delivery(hc: &HookConfig, route: &str) -> Result<Option<Delivery>, String> {
    let target = match (&hc.hook_url, &hc.hook_fastcgi, &hc.hook_script) {
        (Some(url), _, _) => http_target(url)?,
        (None, Some(addr), Some(script)) => Target::Fastcgi {
            addr: addr.clone(),
            script: script.clone(),
        },
        _ => return Ok(None),
    };
    Ok(Some(Delivery {
        route: route.to_string(),
        target,
        format: hc.hook_body,
        timeout: hc.hook_timeout,
        concurrency: hc.hook_concurrency,
        queue_bytes: hc.hook_queue_bytes,
        secret: hc.hook_secret.clone(),
    }))
}

#[cfg(feature = "client")]
fn http_target(url: &str) -> Result<Target, String> {
    use crate::bench::http::{ClientSettings, HttpClient, HttpVersion};
    let client = HttpClient::new(
        ClientSettings {
            version: HttpVersion::Http1,
            insecure: false,
            cacert: None,
            sources: Vec::new(),
            streams_per_connection: 1,
        },
        1,
    )?;
    Ok(Target::Http {
        parsed: crate::bench::http::parse_url(url)?,
        client,
    })
}

#[cfg(not(feature = "client"))]
fn http_target(_: &str) -> Result<Target, String> {
    Err(
        "this build has no HTTP client (built without the `client` feature): use hook_fastcgi"
            .into(),
    )
}

/// Every route's hook store in this process, by folder: a reload keeps a route's queue.
static STORES: LazyLock<Mutex<HashMap<PathBuf, Arc<Store>>>> = LazyLock::new(Default::default);

/// Why this process's streams end when it stops: 0 shutdown, 1 restart (an upgrade).
static STOPPING_FOR: AtomicU8 = AtomicU8::new(0);

/// A route's hooks.
pub struct Hooks {
    store: Arc<Store>,
    route: String,
    connect_wait: Option<Duration>,
    on_timeout: OnTimeout,
    retry_after_secs: u32,
}

impl Hooks {
    /// The hooks of route `r` under `config`, if it has any (opens the journal: config time
    /// only). `cgi`: one CGI request cannot keep a promise to deliver later.
    pub fn build(
        hc: &HookConfig,
        config: &Config,
        r: &RouteConfig,
        cgi: bool,
    ) -> Result<Option<Arc<Hooks>>, String> {
        let path = r.path.get_ref();
        let Some(delivery) = delivery(hc, path)? else {
            return Ok(None);
        };
        if cgi {
            return Err("hooks need the daemon (fastsse serve): one CGI request ends before it could deliver them".into());
        }
        let dir = config
            .journal
            .dir
            .join(format!("{}.hooks", r.journal_name()));
        let fsync = config.journal.fsync != crate::hub::journal::FsyncPolicy::Never;
        let delivery = Arc::new(delivery);
        let store = {
            let mut all = STORES.lock().unwrap_or_else(|p| p.into_inner());
            match all.get(&dir) {
                Some(s) => {
                    s.set_delivery(delivery);
                    s.clone()
                }
                None => {
                    let s = Arc::new(Store::open(dir.clone(), fsync, delivery)?);
                    all.insert(dir, s.clone());
                    s
                }
            }
        };
        Ok(Some(Arc::new(Hooks {
            store,
            route: path.clone(),
            connect_wait: hc.hook_connect_wait,
            on_timeout: hc.hook_on_timeout,
            retry_after_secs: config.stream.retry_after_secs,
        })))
    }

    /// Starts its sender (needs a runtime).
    pub fn start(&self) {
        self.store.start();
    }

    /// Its queue.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A stream of `req` on `topics` for `user` is about to open: its connect is journaled
    /// (and, with `hook_connect_wait`, answered). `Ok`: the stream's [`Watch`]; `Err`: the
    /// answer that refuses it.
    pub async fn admit(
        &self,
        req: &Request,
        topics: Vec<String>,
        user: Option<String>,
        expires: Option<SystemTime>,
    ) -> Result<Watch, FullResponse> {
        self.store.start();
        let connect = Call {
            id: call::new_id(),
            event: Event::Connect,
            route: self.route.clone(),
            topics,
            user,
            subscriber: call::new_id(),
            remote_addr: req.var("REMOTE_ADDR").map(str::to_string),
            reason: None,
            time_ms: call::now_ms(),
            connected_ms: None,
        };
        let seq = match self
            .store
            .connect(connect.clone(), self.connect_wait.is_some())
        {
            Ok(seq) => seq,
            Err(store::Refused::Full) => return Err(self.queue_full(req)),
        };
        let watch = Watch {
            store: Some(self.store.clone()),
            subscriber: connect.subscriber.clone(),
            expires,
            armed: true,
            seat: None,
        };
        let Some(wait) = self.connect_wait else {
            return Ok(watch);
        };
        let started = tokio::time::Instant::now();
        let outcome = if self.store.written(seq, wait).await {
            let left = wait.saturating_sub(started.elapsed());
            let delivery = self.store.delivery();
            match tokio::time::timeout(left, delivery.send(&connect)).await {
                Ok(o) => o,
                Err(_) => Outcome::Failed(format!("no answer within {} ms", wait.as_millis())),
            }
        } else {
            Outcome::Failed("the hook journal was not written in time".into())
        };
        self.decide(req, watch, seq, &connect, outcome)
    }

    /// The connect's outcome made into the stream's fate.
    fn decide(
        &self,
        req: &Request,
        mut watch: Watch,
        seq: u64,
        connect: &Call,
        outcome: Outcome,
    ) -> Result<Watch, FullResponse> {
        let a = match outcome {
            Outcome::Answered(a) if a.refuses() => a,
            other => return self.allow_or_not(req, watch, seq, connect, other.judged()),
        };
        self.store.stats.refused.fetch_add(1, Relaxed);
        self.store.refused(&connect.subscriber, seq);
        watch.armed = false;
        log::info!(
            "req={} route={} peer={}: stream refused by the connect hook ({})",
            req.id,
            self.route,
            req.peer,
            a.status
        );
        let body = String::from_utf8_lossy(&a.body[..a.body.len().min(4096)]).to_string();
        Err(FullResponse::text(a.status, body.trim_end().to_string()))
    }

    /// A connect that was not refused: made (the stream opens), or not (`hook_on_timeout`).
    fn allow_or_not(
        &self,
        req: &Request,
        mut watch: Watch,
        seq: u64,
        connect: &Call,
        outcome: Outcome,
    ) -> Result<Watch, FullResponse> {
        let stats = &self.store.stats;
        match outcome {
            Outcome::Answered(a) => {
                self.store.settle(seq, connect, Outcome::Answered(a));
                Ok(watch)
            }
            Outcome::Failed(why) => {
                stats.timed_out.fetch_add(1, Relaxed);
                self.store.settle(seq, connect, Outcome::Failed(why));
                match self.on_timeout {
                    OnTimeout::Allow => Ok(watch),
                    OnTimeout::Refuse => {
                        watch.armed = false;
                        let _ = self.store.leave(&connect.subscriber, Reason::HookTimeout);
                        Err(self.come_back(
                            req,
                            "the application did not answer the connect hook in time",
                        ))
                    }
                }
            }
        }
    }

    /// The queue is full: refused, said once a second in the log.
    fn queue_full(&self, req: &Request) -> FullResponse {
        static FULL: crate::flood::Flood =
            crate::flood::Flood::new("streams refused (hook queue full)");
        FULL.warn(|| {
            format!(
                "req={} route={} peer={}: hook queue full (hook_queue_bytes); stream refused until the application takes its calls",
                req.id, self.route, req.peer
            )
        });
        self.come_back(req, "the hook queue is full")
    }

    /// A refusal that a browser recovers from: an EventSource gets a `retry:` hint (any other
    /// status would make it give up), other clients `503` with `Retry-After`.
    fn come_back(&self, req: &Request, why: &str) -> FullResponse {
        let secs = self.retry_after_secs;
        let event_source = req
            .header("Accept")
            .is_some_and(|a| a.contains("text/event-stream"));
        if !event_source {
            return FullResponse::text(503, format!("{why}; retry after {secs} s"))
                .with_header("Retry-After", secs.to_string());
        }
        let retry_ms = secs as u64 * 1000 + crate::random::below(1000);
        FullResponse {
            status: 200,
            headers: stream_headers(),
            body: bytes::Bytes::from(format!(
                ": {why}; come back in {retry_ms} ms\nretry: {retry_ms}\n\n"
            )),
        }
    }
}

/// One stream's hook: its leave is queued when the stream ends, with the reason — or, if it
/// is dropped without being told (the process is stopping), with the stop's.
pub struct Watch {
    /// The route's hooks (none: presence only).
    store: Option<Arc<Store>>,
    subscriber: String,
    expires: Option<SystemTime>,
    armed: bool,
    /// Its place in the route's presence, given back when the watch goes.
    seat: Option<presence::Seat>,
}

impl Watch {
    /// A stream's place in its route's presence, on a route without hooks.
    pub fn seated(seat: presence::Seat) -> Watch {
        Watch {
            store: None,
            subscriber: String::new(),
            expires: None,
            armed: false,
            seat: Some(seat),
        }
    }

    /// Takes `seat` (the route's presence) too.
    pub fn with_seat(mut self, seat: presence::Seat) -> Watch {
        self.seat = Some(seat);
        self
    }

    /// The stream ended this way.
    pub fn ended(mut self, end: StreamEnd) {
        let reason = match end {
            StreamEnd::ClientGone => Reason::BrowserLeft,
            StreamEnd::Lifetime => Reason::Lifetime,
            StreamEnd::Shutdown => stopping_reason(),
            StreamEnd::SourceDone => match self.expires {
                Some(e) if e <= SystemTime::now() + Duration::from_secs(1) => Reason::TokenExpired,
                _ => Reason::SourceEnded,
            },
        };
        self.armed = false;
        if let Some(store) = &self.store {
            let _ = store.leave(&self.subscriber, reason);
        }
        drop(self.seat.take());
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let (true, Some(store)) = (self.armed, &self.store) {
            let _ = store.leave(&self.subscriber, stopping_reason());
        }
    }
}

fn stopping_reason() -> Reason {
    match STOPPING_FOR.load(Relaxed) {
        1 => Reason::ServerRestart,
        _ => Reason::ServerShutdown,
    }
}

/// The process is stopping; `restart`: a successor takes over (SIGUSR2).
pub fn stopping(restart: bool) {
    STOPPING_FOR.store(u8::from(restart), Relaxed);
}

/// At the end of shutdown: a leave for every stream still open, a last chance (at most
/// `deadline`) to deliver what is queued, and every journal written. Blocking: call it off the
/// runtime.
pub fn close_all(deadline: Duration) {
    let stores: Vec<Arc<Store>> = STORES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let until = std::time::Instant::now() + deadline;
    for s in &stores {
        let subs = s.open_streams();
        for sub in subs {
            let _ = s.leave(&sub, stopping_reason());
        }
    }
    while stores.iter().any(|s| s.backlog().0 > 0) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in &stores {
        s.close(Duration::from_secs(5));
    }
}
