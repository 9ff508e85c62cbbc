//! Responses, written the same way by both transports: [`FullResponse`] (status, headers,
//! body), [`StreamResponse`] (an SSE stream), the CGI header block both transports send, and
//! [`respond`], the one function that writes a response through a transport's [`BodyWriter`]
//! (with [`resume`], which goes on with a stream that gave up its task while idle).

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::access_log::{AccessLog, StreamLog};
use crate::publish::Refusal;
use crate::source::{
    run_or_park, BodyWriter, DirectWriter, Ran, Source, StreamClock, StreamEnd, StreamTiming,
};
use crate::stats::StreamPermit;

/// A complete (non-streaming) response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullResponse {
    /// HTTP status.
    pub status: u16,
    /// Header fields besides `Status`.
    pub headers: Vec<(String, String)>,
    /// Body (not sent for HEAD).
    pub body: Bytes,
}

/// An open SSE stream: the header block is [`stream_head`]; then [`crate::source::run_stream`].
pub struct StreamResponse {
    /// Where events come from.
    pub source: Box<dyn Source>,
    /// Heartbeat, retry and lifetime (shared by the streams opened with the same).
    pub timing: Arc<StreamTiming>,
    /// The stream's place in `max_streams`, given back when the stream ends.
    pub permit: StreamPermit,
    /// Where its access line goes when it ends (when an access log is configured).
    pub access: Option<Box<(Arc<AccessLog>, StreamLog)>>,
    /// Header fields besides those of every stream (CORS, Mercure's `Last-Event-ID`).
    pub extra_headers: Vec<(String, String)>,
    /// The route's hooks for this stream: told how it ended (its leave).
    pub watch: Option<Box<crate::hooks::Watch>>,
}

/// What the application answers.
pub enum Response {
    /// Headers and a body, then the end.
    Full(FullResponse),
    /// A stream.
    Stream(StreamResponse),
}

/// Reason phrase for the statuses this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The CGI header block (`Status:` line, fields, blank line) shared by both transports.
pub fn header_block(status: u16, headers: &[(String, String)]) -> Bytes {
    let mut s = String::with_capacity(128);
    let _ = write!(s, "Status: {status} {}\r\n", reason(status));
    for (k, v) in headers {
        let _ = write!(s, "{k}: {v}\r\n");
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

/// The header block of every SSE stream.
pub fn stream_head() -> Bytes {
    header_block(200, &stream_headers())
}

/// The header fields of every SSE stream.
pub(crate) fn stream_headers() -> Vec<(String, String)> {
    [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("X-Accel-Buffering", "no"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl FullResponse {
    /// A `text/plain` response with a one-line reason.
    pub fn text(status: u16, message: impl Into<String>) -> Self {
        let mut body = message.into();
        body.push('\n');
        FullResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from(body),
        }
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Header block plus body (no body for HEAD) as one buffer.
    pub fn to_bytes(&self, head_only: bool) -> Bytes {
        let head = header_block(self.status, &self.headers);
        if head_only || self.body.is_empty() {
            return head;
        }
        let mut all = Vec::with_capacity(head.len() + self.body.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&self.body);
        Bytes::from(all)
    }
}

impl From<FullResponse> for Response {
    fn from(r: FullResponse) -> Self {
        Response::Full(r)
    }
}

impl From<Refusal> for FullResponse {
    fn from(r: Refusal) -> Self {
        FullResponse::text(r.status, r.reason)
    }
}

/// How a response went out.
#[derive(Debug)]
pub enum Sent {
    /// A full response with this status (or the client left while it was written).
    Full(u16),
    /// A stream, and how it ended.
    Stream(StreamEnd),
    /// A stream with nothing to write gave up its task (only where the writer allows it,
    /// [`BodyWriter::can_park`]): the transport keeps it and calls [`resume`] when it is woken
    /// ([`ParkedStream::poll_wake`]) or due ([`ParkedStream::due`]), or when the client leaves
    /// or the server stops.
    Parked(ParkedStream),
}

/// An open stream without a task: what [`resume`] needs to go on with it.
pub struct ParkedStream {
    stream: StreamResponse,
    clock: StreamClock,
    /// Events and bytes its task had written (for its access line).
    counted: (u64, u64),
}

impl std::fmt::Debug for ParkedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedStream")
            .field("clock", &self.clock)
            .finish()
    }
}

impl ParkedStream {
    /// `Ready` when the source has something to say; otherwise `cx` is woken then.
    pub fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.stream.source.poll_wake(cx)
    }

    /// When it must run again (a heartbeat, its lifetime, its source's own deadline), given
    /// when bytes last reached the client without its task.
    pub fn due(&self, written_elsewhere: Option<tokio::time::Instant>) -> tokio::time::Instant {
        let due = self
            .clock
            .due(self.stream.timing.heartbeat, written_elsewhere);
        self.stream.source.wake_at().map_or(due, |t| t.min(due))
    }
}

/// Writes `response` through `body` — the one road for both transports. A stream gets its
/// header block, then [`run_stream`]; `direct` (when the transport has one) lets the stream's
/// source write events straight to the socket. `abort` means the client left (nothing more is
/// written); `shutdown` ends a stream with a `retry:` hint.
///
/// Not an `async fn`: its future is one of two smaller ones, so an open stream's task keeps
/// only what the stream needs (thousands of them wait at once).
pub fn respond<'a, W: BodyWriter>(
    response: Response,
    head_only: bool,
    body: &'a mut W,
    direct: Option<Arc<dyn DirectWriter>>,
    abort: &'a CancellationToken,
    shutdown: &'a CancellationToken,
) -> impl Future<Output = Sent> + Send + 'a {
    match response {
        Response::Full(full) => Either::Left(write_full(full, head_only, body, abort)),
        Response::Stream(mut stream) => {
            if let Some(d) = direct {
                stream.source.attach_direct(d);
            }
            Either::Right(write_stream(stream, body, abort, shutdown, None))
        }
    }
}

fn write_full<'a, W: BodyWriter>(
    full: FullResponse,
    head_only: bool,
    body: &'a mut W,
    abort: &'a CancellationToken,
) -> impl Future<Output = Sent> + 'a {
    async move {
        let bytes = full.to_bytes(head_only);
        tokio::select! {
            _ = body.write(bytes) => {}
            _ = abort.cancelled() => {}
        }
        Sent::Full(full.status)
    }
}

/// Goes on with a parked stream, exactly where it stopped: the same road as [`respond`]'s.
pub fn resume<'a, W: BodyWriter>(
    parked: ParkedStream,
    body: &'a mut W,
    abort: &'a CancellationToken,
    shutdown: &'a CancellationToken,
) -> impl Future<Output = Sent> + Send + 'a {
    let ParkedStream {
        stream,
        clock,
        counted,
    } = parked;
    write_stream(stream, body, abort, shutdown, Some((clock, counted)))
}

/// How a stream's run came back: ended, or parked with its clock and what its task counted.
enum Outcome {
    Ended(StreamEnd),
    Parked(StreamClock, (u64, u64)),
}

fn write_stream<'a, W: BodyWriter>(
    mut stream: StreamResponse,
    body: &'a mut W,
    abort: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    resumed: Option<(StreamClock, (u64, u64))>,
) -> impl Future<Output = Sent> + 'a {
    async move {
        let ran = match stream.access.take() {
            None => {
                match head_and_run(&mut stream, body, abort, shutdown, resumed.map(|r| r.0)).await {
                    Ran::Ended(end) => Outcome::Ended(end),
                    Ran::Parked(clock) => Outcome::Parked(clock, (0, 0)),
                }
            }
            // Boxed: only streams that are access-logged carry the counting future.
            Some(access) => {
                Box::pin(logged(&mut stream, body, access, abort, shutdown, resumed)).await
            }
        };
        match ran {
            Outcome::Parked(clock, counted) => Sent::Parked(ParkedStream {
                stream,
                clock,
                counted,
            }),
            Outcome::Ended(end) => {
                if let Some(w) = stream.watch.take() {
                    w.ended(end);
                }
                Sent::Stream(end)
            }
        }
    }
}

/// [`head_and_run`], counting what reaches the client, then the stream's access line (or,
/// when it parks, the count kept for when it resumes).
async fn logged<W: BodyWriter>(
    stream: &mut StreamResponse,
    body: &mut W,
    access: Box<(Arc<AccessLog>, StreamLog)>,
    abort: &CancellationToken,
    shutdown: &CancellationToken,
    resumed: Option<(StreamClock, (u64, u64))>,
) -> Outcome {
    let (events, bytes) = resumed.map_or((0, 0), |r| r.1);
    let mut counted = Counting {
        inner: body,
        events,
        bytes,
    };
    let end = match head_and_run(stream, &mut counted, abort, shutdown, resumed.map(|r| r.0)).await
    {
        Ran::Ended(end) => end,
        Ran::Parked(clock) => {
            stream.access = Some(access);
            return Outcome::Parked(clock, (counted.events, counted.bytes));
        }
    };
    let (direct_events, direct_bytes) = counted.inner.direct_writes();
    let (log, line) = &*access;
    log.stream_ended(
        line,
        end.as_str(),
        counted.events + direct_events,
        counted.bytes + direct_bytes,
    );
    Outcome::Ended(end)
}

/// The stream's header block (unless it is resumed), then its run.
fn head_and_run<'a, W: BodyWriter>(
    stream: &'a mut StreamResponse,
    body: &'a mut W,
    abort: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    resumed: Option<StreamClock>,
) -> impl Future<Output = Ran> + 'a {
    async move {
        let run = |stream: &'a mut StreamResponse, body: &'a mut W| {
            run_or_park(
                stream.source.as_mut(),
                body,
                &stream.timing,
                abort,
                shutdown,
                resumed,
            )
        };
        if resumed.is_some() {
            return run(stream, body).await;
        }
        let head = if stream.extra_headers.is_empty() {
            stream_head()
        } else {
            let mut fields = stream_headers();
            fields.append(&mut stream.extra_headers);
            header_block(200, &fields)
        };
        tokio::select! {
            r = body.write(head) => match r {
                Ok(()) => run(stream, body).await,
                Err(_) => Ran::Ended(StreamEnd::ClientGone),
            },
            _ = abort.cancelled() => Ran::Ended(StreamEnd::ClientGone),
        }
    }
}

/// Counts what a stream's task writes, for its access line.
struct Counting<'a, W> {
    inner: &'a mut W,
    events: u64,
    bytes: u64,
}

impl<W: BodyWriter> BodyWriter for Counting<'_, W> {
    async fn write(&mut self, chunk: Bytes) -> Result<(), crate::source::BodyClosed> {
        let event = !(chunk.starts_with(b":")
            || chunk.starts_with(b"retry:")
            || chunk.starts_with(b"Status:"));
        let len = chunk.len() as u64;
        self.inner.write(chunk).await?;
        self.events += event as u64;
        self.bytes += len;
        Ok(())
    }

    fn written_elsewhere_at(&self) -> Option<tokio::time::Instant> {
        self.inner.written_elsewhere_at()
    }

    fn direct_writes(&self) -> (u64, u64) {
        self.inner.direct_writes()
    }

    fn can_park(&self) -> bool {
        self.inner.can_park()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks() {
        assert_eq!(
            &stream_head()[..],
            b"Status: 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n"
        );
        let r = FullResponse::text(404, "x");
        assert!(r.to_bytes(true).ends_with(b"\r\n\r\n"));
        assert!(r.to_bytes(false).ends_with(b"\r\n\r\nx\n"));
    }
}
