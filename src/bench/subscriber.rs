//! One subscriber of `fastsse bench sse` for the whole run: it connects (backing off while
//! connecting fails), reads and tallies what it gets, and reconnects with Last-Event-ID when
//! churned or when the server ends the stream — then after the last `retry:` the server sent,
//! as a browser's EventSource does (100 ms when it sent none).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{Body, Target};
use super::load::{Counters, Run};
use super::seen::{field, Outcome, Seen};
use crate::source::clock::unix_now;
use crate::sse::SseParser;

/// Microseconds since the epoch: what a published event carries in `t`.
pub(super) fn now_us() -> u64 {
    unix_now().as_micros() as u64
}

/// How a connection ended.
enum Ended {
    /// The server ended the stream (or it failed): come back after `retry`.
    Server,
    /// Churn: leave and come back at once.
    Churned,
    /// The run (or the stage) is over.
    Quit,
}

/// What one subscriber keeps across its connections.
struct Subscriber {
    idx: usize,
    target: Arc<Target>,
    shared: Arc<Run>,
    quit: CancellationToken,
    seen: Seen,
    retry: Duration,
    backoff: Duration,
    comebacks_ms: Vec<u64>,
    last_id: Option<String>,
    rng: u64,
    first_connection: bool,
    failed_once: bool,
    before_publishing: bool,
}

/// One subscriber for the whole run. `quit` ends it: the run's end, or a stage that lowers the
/// subscriber count.
pub(super) async fn subscriber(
    idx: usize,
    target: Arc<Target>,
    shared: Arc<Run>,
    quit: CancellationToken,
) -> Outcome {
    let mut s = Subscriber {
        idx,
        target,
        shared,
        quit,
        seen: Seen::default(),
        retry: Duration::from_millis(100),
        backoff: Duration::from_millis(250),
        comebacks_ms: Vec::new(),
        last_id: None,
        rng: (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        first_connection: true,
        failed_once: false,
        before_publishing: false,
    };
    while !s.quit.is_cancelled() {
        let Some((body, initial, started)) = s.connect().await else {
            continue;
        };
        match s.read(body, initial, started).await {
            Ended::Quit => break,
            Ended::Churned => {}
            Ended::Server => {
                // Come back as a browser would, after `retry`.
                tokio::select! {
                    _ = tokio::time::sleep(s.retry) => {}
                    _ = s.quit.cancelled() => break,
                }
                let at = s.shared.began.elapsed().as_millis() as u64;
                s.comebacks_ms.push(at);
            }
        }
    }
    Outcome {
        left_at: (!s.shared.stop.is_cancelled()).then(Instant::now),
        seen: s.seen,
        before_publishing: s.before_publishing,
        comebacks_ms: s.comebacks_ms,
        idx: s.idx,
    }
}

impl Subscriber {
    /// One connection attempt: the stream and its first bytes, or `None` (failed: backed off
    /// 250 ms doubling to 5 s, so that a URL that answers 404 is not hammered; or quit).
    async fn connect(&mut self) -> Option<(Body, Vec<u8>, Instant)> {
        let shared = self.shared.clone();
        let c: &Counters = &shared.counters;
        c.attempted.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let opened = tokio::select! {
            r = Body::open(&self.target, self.idx, self.last_id.as_deref(), &shared.headers) => r,
            _ = self.quit.cancelled() => return None,
        };
        let (body, initial) = match opened {
            Ok(x) => x,
            Err(cause) => {
                if self.first_connection && !self.failed_once {
                    self.failed_once = true;
                    c.first_attempts.fetch_add(1, Ordering::Relaxed);
                }
                c.fail(cause);
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.quit.cancelled() => {}
                }
                return None;
            }
        };
        self.backoff = Duration::from_millis(250);
        c.established.fetch_add(1, Ordering::Relaxed);
        c.connected.fetch_add(1, Ordering::Relaxed);
        if self.first_connection {
            self.before_publishing = shared.publishing.load(Ordering::Acquire) == 0;
            if !self.failed_once {
                c.first_attempts.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            c.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        Some((body, initial, started))
    }

    /// Reads one connection until it ends; keeps its `retry:` and last id for the next.
    async fn read(&mut self, mut body: Body, initial: Vec<u8>, started: Instant) -> Ended {
        let shared = self.shared.clone();
        let c = &shared.counters;
        let mut parser = SseParser::new();
        let idx = self.idx;
        let mut got_first = !self.first_connection;
        self.first_connection = false;
        let mut handle = |bytes: &[u8], seen: &mut Seen| {
            for ev in parser.feed(bytes) {
                c.events.fetch_add(1, Ordering::Relaxed);
                if !got_first {
                    got_first = true;
                    let us = started.elapsed().as_micros() as u64;
                    shared.first_event.record(idx, us);
                }
                if let Some(t) = field(&ev.data, "\"t\"") {
                    let us = now_us().saturating_sub(t);
                    shared.latency.record(idx, us);
                    shared.this_second.record(idx, us);
                }
                if let Some(seq) = field(&ev.data, "\"seq\"") {
                    seen.add(seq);
                }
            }
        };
        handle(&initial, &mut self.seen);
        let mut next_churn = tokio::time::Instant::now() + Duration::from_secs(1);
        // Registered once for the connection, not once per event: a `cancelled()` made in the
        // loop would lock the token's waiter list (shared by every subscriber) twice per event.
        let quit = self.quit.clone();
        let cancelled = quit.cancelled();
        tokio::pin!(cancelled);
        let ended = loop {
            tokio::select! {
                r = body.next_chunk() => match r {
                    Ok(Some(chunk)) => handle(&chunk, &mut self.seen),
                    Ok(None) => {
                        shared.server_closed.fetch_add(1, Ordering::Relaxed);
                        break Ended::Server;
                    }
                    Err(e) => {
                        c.fail(e);
                        break Ended::Server;
                    }
                },
                _ = tokio::time::sleep_until(next_churn), if shared.churn > 0.0 => {
                    next_churn += Duration::from_secs(1);
                    if self.churns() {
                        break Ended::Churned;
                    }
                }
                _ = &mut cancelled => break Ended::Quit,
            }
        };
        c.connected.fetch_sub(1, Ordering::Relaxed);
        if let Some(ms) = parser.retry_ms {
            self.retry = Duration::from_millis(ms);
        }
        let id = parser.last_event_id();
        if !id.is_empty() {
            self.last_id = Some(id.to_string());
        }
        ended
    }

    /// Whether this second's draw says to leave (`--churn` percent a second).
    fn churns(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 10_000) as f64 / 100.0 < self.shared.churn
    }
}
