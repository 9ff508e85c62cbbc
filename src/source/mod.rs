//! Stream sources: the [`Source`] trait a route's events come from, the built-in sources, and
//! [`run_stream`], the transport-neutral loop that writes a source's events, heartbeats and
//! `retry:` hints to a [`BodyWriter`] until the source ends, the client leaves or the server stops.
//!
//! A source is the PHP loop (`while (true) { echo "data: …\n\n"; flush(); sleep(1); }`) turned
//! inside out: each call to [`Source::next`] is one turn of the loop. Writing, flushing, heartbeats
//! and noticing that the browser left are done for it.

pub mod clock;
pub mod expiring;
pub mod ping;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::sse::EncodedEvent;

pub use clock::ClockSource;
pub use ping::PingSource;

/// The future returned by [`Source::next`].
pub type NextEvent<'a> = Pin<Box<dyn Future<Output = Option<EncodedEvent>> + Send + 'a>>;

/// Where a stream's events come from.
///
/// `next` waits for the next event and returns it, or `None` to end the stream. It must be
/// cancel-safe: the returned future may be dropped at any await (a heartbeat is due, the client
/// left) and `next` called again, so keep state in `self`, not in the future.
///
/// ```
/// use fastsse::source::{NextEvent, Source};
/// use fastsse::sse::Event;
///
/// /// Counts down once a second, then ends the stream.
/// struct Countdown {
///     left: u32,
///     tick: tokio::time::Interval,
/// }
///
/// impl Source for Countdown {
///     fn next(&mut self) -> NextEvent<'_> {
///         Box::pin(async move {
///             if self.left == 0 {
///                 return None;
///             }
///             self.tick.tick().await; // cancel-safe: a dropped tick is not lost
///             self.left -= 1;
///             Event::new().id(self.left.to_string()).data(format!("{} left", self.left)).encode().ok()
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut s = Countdown { left: 2, tick: tokio::time::interval(std::time::Duration::from_millis(1)) };
/// assert_eq!(s.next().await.unwrap().as_bytes(), b"id: 1\ndata: 1 left\n\n");
/// assert!(s.next().await.is_some());
/// assert!(s.next().await.is_none());
/// # }
/// ```
///
/// Register it with [`crate::app::App::add_source`].
pub trait Source: Send + 'static {
    /// One turn of the loop: the next event, or `None` when the stream is over.
    fn next(&mut self) -> NextEvent<'_>;

    /// Offers a way to write events straight to the client's socket from the thread that
    /// produces them, skipping this stream's task (fan-out sources use it; others ignore it).
    /// The transport calls it after the stream's first bytes are written.
    fn attach_direct(&mut self, _writer: std::sync::Arc<dyn DirectWriter>) {}

    /// The next event if one is ready now (queued or in a replay), without waiting; `None`
    /// says "ask [`Source::next`]". [`run_stream`] writes what is ready together: one write and
    /// one record for several events, not one each.
    fn try_next(&mut self) -> Option<EncodedEvent> {
        None
    }

    /// True while events that were already due when asked are still to be handed out (a
    /// reset, a replay being filtered, queued events): a stream whose time is up (a CGI
    /// `hold`) sends these before it ends, so a poll answers everything after its id.
    fn backlog(&self) -> bool {
        false
    }

    /// Asked when the stream has nothing to write: true lets the stream give up its task
    /// until [`Source::poll_wake`] says an event waits (or [`Source::wake_at`] passes). Only
    /// a source whose events otherwise reach the socket without its task (the hub's
    /// subscribers) says yes; an idle stream then costs its connection, not a task.
    fn park(&mut self) -> bool {
        false
    }

    /// While parked: `Ready` once [`Source::next`] has something to say (an event queued,
    /// the subscription ended); otherwise `cx` is woken when that happens.
    fn poll_wake(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }

    /// While parked: when [`Source::next`] must be asked even if nothing woke it (a token's
    /// expiry).
    fn wake_at(&self) -> Option<Instant> {
        None
    }
}

/// How long a stream whose time is up may take to send its backlog.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(10);

/// Most bytes of events written together in one write.
pub const COALESCE_BYTES: usize = 64 * 1024;

/// Writes a complete event to a stream's client now, from any thread, if that can be done
/// without waiting and without overtaking bytes already queued for the stream.
pub trait DirectWriter: Send + Sync {
    /// Writes `event` (complete SSE bytes) and returns true, or returns false having written
    /// nothing: the caller then hands the event to the stream's task instead.
    fn try_write_now(&self, event: &[u8]) -> bool;
}

/// The client is gone: the body can no longer be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyClosed;

/// A transport's writer for one response body. Each `write` is one flush: when it returns, the
/// bytes have been handed to the socket (or queued to the connection's writer in order).
pub trait BodyWriter: Send {
    /// Writes and flushes `chunk`; an error means the client is gone.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), BodyClosed>> + Send;

    /// When bytes last reached this stream's client by another way than `write` (a
    /// [`DirectWriter`]), so heartbeats are only sent to streams that are really idle.
    fn written_elsewhere_at(&self) -> Option<Instant> {
        None
    }

    /// Events and bytes written to this stream's client by another way than `write` (for the
    /// access log).
    fn direct_writes(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Whether a stream on this writer may give up its task while idle ([`Ran::Parked`]):
    /// true where the transport keeps the stream and resumes it (FastCGI's connection).
    fn can_park(&self) -> bool {
        false
    }
}

/// Where a parked stream's clock stood: when it last wrote, and when its lifetime ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClock {
    /// When the stream's own task last wrote (direct writes are asked of the writer).
    pub last_write: Instant,
    /// When the lifetime ends (far in the future without one).
    pub end_at: Instant,
}

impl StreamClock {
    /// When a parked stream must run again, for a heartbeat or its lifetime's end, given when
    /// bytes last reached the client another way.
    pub fn due(&self, heartbeat: Duration, written_elsewhere: Option<Instant>) -> Instant {
        let last = written_elsewhere.map_or(self.last_write, |t| t.max(self.last_write));
        (last + heartbeat).min(self.end_at)
    }
}

/// How [`run_or_park`] left a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// It ended.
    Ended(StreamEnd),
    /// It is idle and gave up its task: resume it with this clock.
    Parked(StreamClock),
}

impl StreamEnd {
    /// The name used in logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamEnd::SourceDone => "source_done",
            StreamEnd::ClientGone => "client_gone",
            StreamEnd::Shutdown => "shutdown",
            StreamEnd::Lifetime => "lifetime",
        }
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The source returned `None`.
    SourceDone,
    /// The client left (write failed, connection closed, request aborted).
    ClientGone,
    /// The server is shutting down; a `retry:` hint was sent.
    Shutdown,
    /// The configured maximum lifetime passed; a `retry:` hint was sent.
    Lifetime,
}

/// Timing of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTiming {
    /// Idle interval after which a heartbeat comment is sent.
    pub heartbeat: Duration,
    /// `retry:` hint value.
    pub retry: Duration,
    /// End the stream after this long.
    pub max_lifetime: Option<Duration>,
    /// At shutdown, the `retry:` hint is `retry` plus a random share of this, so that the
    /// browsers of a restarting server come back spread over it, not all at once.
    pub drain: Duration,
    /// When the lifetime ends a stream, its `retry:` hint is `retry` plus a random share of
    /// this, so that polling browsers do not come back in step.
    pub end_jitter: Duration,
}

use crate::random::duration_below as spread;

/// Writes `chunk` unless the stream is aborted first.
///
/// Not an `async fn` (here and in [`run_stream`]): an async fn keeps each argument twice in
/// its future (as given and as a local), and every open stream's task holds these futures.
/// [`run_stream`] boxes it: a stream's task spends its life waiting, not writing (events
/// mostly reach the socket from the fan-out), so the room a write needs is taken only while
/// one runs.
fn write_or_abort<'a, W: BodyWriter>(
    w: &'a mut W,
    chunk: Bytes,
    abort: &'a CancellationToken,
) -> impl Future<Output = Result<(), BodyClosed>> + 'a {
    async move {
        tokio::select! {
            r = w.write(chunk) => r,
            _ = abort.cancelled() => Err(BodyClosed),
        }
    }
}

/// `first`, followed by the events `source` has ready now (up to [`COALESCE_BYTES`]).
fn coalesce(first: Bytes, source: &mut dyn Source) -> Bytes {
    let Some(second) = source.try_next() else {
        return first;
    };
    let mut all = bytes::BytesMut::with_capacity(first.len() * 4);
    all.extend_from_slice(&first);
    all.extend_from_slice(&second.into_bytes());
    while all.len() < COALESCE_BYTES {
        match source.try_next() {
            Some(ev) => all.extend_from_slice(&ev.into_bytes()),
            None => break,
        }
    }
    all.freeze()
}

/// Runs a stream after its header block has been written: a `retry:` hint, then each event the
/// source yields, a heartbeat whenever the stream was idle for `timing.heartbeat`, until the
/// source ends, `abort` fires (client gone: nothing more is written) or `shutdown` fires / the
/// lifetime passes (a final `retry:` hint is written). Never parks.
pub fn run_stream<'a, W: BodyWriter>(
    source: &'a mut dyn Source,
    w: &'a mut W,
    timing: &'a StreamTiming,
    abort: &'a CancellationToken,
    shutdown: &'a CancellationToken,
) -> impl Future<Output = StreamEnd> + 'a {
    let run = drive(source, w, timing, abort, shutdown, None, false);
    async move {
        match run.await {
            Ran::Ended(end) => end,
            Ran::Parked(_) => unreachable!("run_stream never parks"),
        }
    }
}

/// [`run_stream`], except that a stream with nothing to write gives up its task
/// ([`Ran::Parked`]) when its writer and source allow it ([`BodyWriter::can_park`],
/// [`Source::park`]); `resumed` continues a parked stream from its clock (no `retry:` hint
/// again).
pub fn run_or_park<'a, W: BodyWriter>(
    source: &'a mut dyn Source,
    w: &'a mut W,
    timing: &'a StreamTiming,
    abort: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    resumed: Option<StreamClock>,
) -> impl Future<Output = Ran> + 'a {
    drive(source, w, timing, abort, shutdown, resumed, true)
}

/// The loop of [`run_stream`] and [`run_or_park`].
fn drive<'a, W: BodyWriter>(
    source: &'a mut dyn Source,
    w: &'a mut W,
    timing: &'a StreamTiming,
    abort: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    resumed: Option<StreamClock>,
    may_park: bool,
) -> impl Future<Output = Ran> + 'a {
    async move {
        use Ran::Ended;
        let clock = match resumed {
            Some(clock) => clock,
            None => match Box::pin(begin(w, timing, abort)).await {
                Some(clock) => clock,
                None => return Ended(StreamEnd::ClientGone),
            },
        };
        let StreamClock {
            mut last_write,
            end_at,
        } = clock;
        // One timer for both the heartbeat and the lifetime. It is not moved on every event: when
        // it fires early (events were written meanwhile) it is pushed to the real heartbeat time.
        let timer = sleep_until((last_write + timing.heartbeat).min(end_at));
        tokio::pin!(timer);
        loop {
            let clock = StreamClock { last_write, end_at };
            if may_park && parks_now(source, w, timing, clock, abort, shutdown) {
                return Ran::Parked(clock);
            }
            let chunk = tokio::select! {
                biased;
                _ = abort.cancelled() => return Ended(StreamEnd::ClientGone),
                _ = shutdown.cancelled() => {
                    let spread = (timing.retry + spread(timing.drain)).as_millis() as u64;
                    let _ = Box::pin(write_or_abort(w, EncodedEvent::retry_hint(spread).into_bytes(), abort)).await;
                    return Ended(StreamEnd::Shutdown);
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= end_at {
                        return Ended(Box::pin(end_of_life(source, w, timing, abort, shutdown)).await);
                    }
                    if let Some(t) = w.written_elsewhere_at() {
                        last_write = last_write.max(t);
                    }
                    let due = last_write + timing.heartbeat;
                    if now < due {
                        timer.as_mut().reset(due.min(end_at));
                        None
                    } else {
                        Some(EncodedEvent::heartbeat().into_bytes())
                    }
                }
                ev = source.next() => match ev {
                    Some(ev) => Some(coalesce(ev.into_bytes(), source)),
                    None => return Ended(StreamEnd::SourceDone),
                },
            };
            let Some(chunk) = chunk else { continue };
            if Box::pin(write_or_abort(w, chunk, abort)).await.is_err() {
                return Ended(StreamEnd::ClientGone);
            }
            last_write = Instant::now();
            if timer.is_elapsed() {
                timer
                    .as_mut()
                    .reset((last_write + timing.heartbeat).min(end_at));
            }
        }
    }
}

/// A new stream's `retry:` hint, then its clock; `None` when the client is gone.
async fn begin<W: BodyWriter>(
    w: &mut W,
    timing: &StreamTiming,
    abort: &CancellationToken,
) -> Option<StreamClock> {
    let hint = EncodedEvent::retry_hint(timing.retry.as_millis() as u64).into_bytes();
    write_or_abort(w, hint, abort).await.ok()?;
    let now = Instant::now();
    let far_future = now + Duration::from_secs(86400 * 365);
    Some(StreamClock {
        last_write: now,
        end_at: timing.max_lifetime.map_or(far_future, |l| now + l),
    })
}

/// Whether an idle stream gives up its task now: its writer allows it, nothing is due (the
/// connection resumes it at `due`, and a stream resumed then must find its heartbeat or end
/// due, not park again), it is not ending, and its source has nothing waiting and agrees.
fn parks_now<W: BodyWriter>(
    source: &mut dyn Source,
    w: &W,
    timing: &StreamTiming,
    clock: StreamClock,
    abort: &CancellationToken,
    shutdown: &CancellationToken,
) -> bool {
    w.can_park()
        && Instant::now() < clock.due(timing.heartbeat, w.written_elsewhere_at())
        && !abort.is_cancelled()
        && !shutdown.is_cancelled()
        && !source.backlog()
        && source.park()
}

/// A stream whose lifetime is up: what was already due (the source's backlog) is sent, within
/// [`BACKLOG_DEADLINE`], then a `retry:` hint with `timing.end_jitter` spread on top.
async fn end_of_life<W: BodyWriter>(
    source: &mut dyn Source,
    w: &mut W,
    timing: &StreamTiming,
    abort: &CancellationToken,
    shutdown: &CancellationToken,
) -> StreamEnd {
    let deadline = sleep_until(Instant::now() + BACKLOG_DEADLINE);
    tokio::pin!(deadline);
    while source.backlog() {
        let chunk = tokio::select! {
            biased;
            _ = abort.cancelled() => return StreamEnd::ClientGone,
            _ = shutdown.cancelled() => break,
            _ = &mut deadline => {
                log::warn!("stream: backlog not sent within {BACKLOG_DEADLINE:?}; the client resumes from its last id");
                break;
            }
            ev = source.next() => match ev {
                Some(ev) => coalesce(ev.into_bytes(), source),
                None => break,
            },
        };
        if write_or_abort(w, chunk, abort).await.is_err() {
            return StreamEnd::ClientGone;
        }
    }
    let ms = (timing.retry + spread(timing.end_jitter)).as_millis() as u64;
    let _ = write_or_abort(w, EncodedEvent::retry_hint(ms).into_bytes(), abort).await;
    StreamEnd::Lifetime
}

#[cfg(test)]
mod tests;
