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
    let client = crate::bench::http::HttpClient::plain()?;
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

/// Whether this process is stopping, and why: 0 running, 1 shutdown, 2 restart (an upgrade).
static STOPPING_FOR: AtomicU8 = AtomicU8::new(0);

/// A route's hooks.
pub struct Hooks {
    store: Arc<Store>,
    /// The settings of this config, given to the store when it is applied.
    delivery: Arc<Delivery>,
    route: String,
    connect_wait: Option<Duration>,
    on_timeout: OnTimeout,
    retry_after_secs: u32,
    /// `hook_publish`.
    publish: bool,
}

impl crate::hub::PublishHook for Hooks {
    fn has_room(&self, p: &crate::hub::journal::Publication) -> bool {
        if self.store.has_room(self.publish_call(p, None, "").size()) {
            return true;
        }
        static FULL: crate::flood::Flood =
            crate::flood::Flood::new("publications refused (hook queue full)");
        self.store
            .stats
            .queue_full
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FULL.warn(|| {
            format!(
                "route {}: hook queue full (hook_queue_bytes); publications refused (not stored) until the application takes its calls",
                self.route
            )
        });
        false
    }

    fn published(&self, p: &crate::hub::journal::Publication, by: Option<&str>, id: &str) {
        self.store.start();
        if self.store.notify(self.publish_call(p, by, id)).is_err() {
            log::warn!(
                "route {}: publication {id} stored while the server stops: its publish call is not made",
                self.route
            );
        }
    }
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
        if let Some(addr) = &hc.hook_fastcgi {
            if let Some(why) = send::probe_unix(addr) {
                log::warn!("route {path}: hook_fastcgi {addr}: {why}; calls wait until it can");
            }
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
                // Its settings change when this config is applied (a refused reload keeps
                // the old ones).
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Store::open(dir.clone(), fsync, delivery.clone())?);
                    all.insert(dir, s.clone());
                    s
                }
            }
        };
        Ok(Some(Arc::new(Hooks {
            store,
            delivery,
            route: path.clone(),
            connect_wait: hc.hook_connect_wait,
            on_timeout: hc.hook_on_timeout,
            retry_after_secs: config.stream.retry_after_secs,
            publish: hc.hook_publish,
        })))
    }

    /// Whether the route's publications are told (`hook_publish`).
    pub fn on_publish(&self) -> bool {
        self.publish
    }

    /// The call telling of publication `p` (stored, seen as `id`) by `by`.
    fn publish_call(
        &self,
        p: &crate::hub::journal::Publication,
        by: Option<&str>,
        id: &str,
    ) -> Call {
        Call {
            id: call::new_id(),
            event: Event::Publish,
            route: self.route.clone(),
            topics: p.topics.clone(),
            user: by.map(str::to_string),
            subscriber: String::new(),
            remote_addr: None,
            reason: None,
            time_ms: call::now_ms(),
            connected_ms: None,
            published: Some(call::Published {
                event_id: id.to_string(),
                data: p.data.clone(),
                event_type: p.event.clone(),
                private: p.private,
            }),
        }
    }

    /// This config is in force: the queue takes its delivery settings.
    pub fn apply(&self) {
        if !Arc::ptr_eq(&self.store.delivery(), &self.delivery) {
            self.store.set_delivery(self.delivery.clone());
        }
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
            published: None,
        };
        let seq = match self
            .store
            .connect(connect.clone(), self.connect_wait.is_some())
        {
            Ok(seq) => seq,
            Err(store::Refused::Full) => return Err(self.queue_full(req)),
            Err(store::Refused::Closed) => {
                return Err(self.come_back(req, "the server is stopping"))
            }
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
        if !self.store.written(seq, wait).await {
            // Never sent: the sender takes it from here, and the application is not to blame.
            self.store.retry_later(seq);
            let why = "the hook journal was not written in time";
            return self.allow_or_not(req, watch, &connect, why);
        }
        // The attempt runs to its own end (hook_timeout) even when the wait passes first: its
        // outcome is the call's, and says whether the application is up.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (store, call) = (self.store.clone(), connect.clone());
        tokio::spawn(async move {
            let outcome = store.delivery().send(&call).await;
            if let Err(outcome) = tx.send(outcome) {
                store.settle(seq, &call, outcome);
            }
        });
        let left = wait.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(outcome)) => self.decide(req, watch, seq, &connect, outcome),
            _ => {
                let why = "the application did not answer the connect hook in time";
                self.allow_or_not(req, watch, &connect, why)
            }
        }
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
            other => {
                let made = matches!(other.clone().judged(), Outcome::Answered(_));
                self.store.settle(seq, connect, other);
                if made {
                    return Ok(watch);
                }
                let why = "the application did not answer the connect hook";
                return self.allow_or_not(req, watch, connect, why);
            }
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

    /// A connect not made within `hook_connect_wait` (no answer, or one other than a 2xx,
    /// 401 or 403): `hook_on_timeout` opens the stream or refuses it. The connect is
    /// delivered later either way.
    fn allow_or_not(
        &self,
        req: &Request,
        mut watch: Watch,
        connect: &Call,
        why: &str,
    ) -> Result<Watch, FullResponse> {
        self.store.stats.timed_out.fetch_add(1, Relaxed);
        match self.on_timeout {
            OnTimeout::Allow => Ok(watch),
            OnTimeout::Refuse => {
                watch.armed = false;
                let _ = self.store.leave(&connect.subscriber, Reason::HookTimeout);
                Err(self.come_back(req, why))
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
/// is dropped without being told, with the stop's (the process is stopping) or `browser_left`
/// (the stream went before it was written: its connection failed).
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
            let reason = match STOPPING_FOR.load(Relaxed) {
                0 => Reason::BrowserLeft,
                _ => stopping_reason(),
            };
            let _ = store.leave(&self.subscriber, reason);
        }
    }
}

fn stopping_reason() -> Reason {
    match STOPPING_FOR.load(Relaxed) {
        2 => Reason::ServerRestart,
        _ => Reason::ServerShutdown,
    }
}

/// The process is stopping; `restart`: a successor takes over (SIGUSR2).
pub fn stopping(restart: bool) {
    STOPPING_FOR.store(if restart { 2 } else { 1 }, Relaxed);
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
