//! The FastCGI connection driver: one reader for the connection's whole life, a request table by
//! id (multiplexing), KEEP_CONN, GET_VALUES, ABORT_REQUEST, and cancellation of every request the
//! moment the peer closes the connection.
//!
//! Writes go straight to the socket: a request encodes its records and writes them with one
//! non-blocking `try_write` (one event, one syscall, no task hand-off); only when the socket is
//! full do bytes wait in a small per-connection queue, flushed in order when it is writable.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::Notify;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{CodecError, Record, RecordCodec};
use super::idle::IdleConnections;
use super::params::{decode_params, encode_pair, ParamsLimits};
use super::*;
use crate::app::{stream_head, App, ConnectionGuard, FullResponse, InputCharge, Response};
use crate::request::{PathFrom, Request};
use crate::source::{run_stream, BodyClosed, BodyWriter, DirectWriter, StreamEnd};

/// What a connection writes, encoded to records by [`encode`].
#[derive(Debug)]
enum Outgoing {
    /// Response bytes for one request (never empty).
    Stdout { id: u16, data: Bytes },
    /// End of a request: optional empty STDOUT, then END_REQUEST.
    End {
        id: u16,
        protocol_status: u8,
        terminate_stdout: bool,
    },
    /// A management record.
    Management(Record),
}

/// Read buffer growth step while a request arrives.
const READ_BUFFER: usize = 2048;

/// A connected socket the driver reads and writes through `&self`, without splitting it.
pub trait FcgiSocket: Send + Sync + 'static {
    /// Waits until the socket may be readable.
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
    /// Reads what is there without blocking.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Waits until the socket may be writable.
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
    /// Writes what fits without blocking.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Writes what fits of several buffers without blocking.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

macro_rules! fcgi_socket {
    ($t:ty) => {
        impl FcgiSocket for $t {
            async fn readable(&self) -> io::Result<()> {
                <$t>::readable(self).await
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                <$t>::try_read_buf(self, buf)
            }
            async fn writable(&self) -> io::Result<()> {
                <$t>::writable(self).await
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
        }
    };
}
fcgi_socket!(tokio::net::UnixStream);
fcgi_socket!(tokio::net::TcpStream);

/// The write side of a connection, shared by its requests. Bytes are written at once when
/// nothing is queued; otherwise they queue behind earlier bytes (order is kept) and the caller
/// flushes until the queue is empty. The lock is never held across an `.await`.
struct ConnWriter<S> {
    io: Arc<S>,
    pending: Mutex<BytesMut>,
    /// Cancelled when a write fails: the peer is gone.
    cancel: CancellationToken,
    /// Set with `cancel` on a failed write: a lock-free check for the fan-out's hot path.
    closed: std::sync::atomic::AtomicBool,
    /// When the fan-out last wrote here (ms since `born`), for heartbeats.
    direct_at_ms: std::sync::atomic::AtomicU64,
    born: tokio::time::Instant,
    /// Ids of requests that ended (END_REQUEST written), for the reader to retire.
    finished: Mutex<Vec<u16>>,
    /// Wakes the reader when `finished` gains an id. (Lighter than a channel per connection.)
    finished_notify: Notify,
    /// Runs the flush of a direct write the socket took only part of.
    runtime: tokio::runtime::Handle,
}

/// Writes one stream's events straight to its connection from the thread that fans them out.
struct FcgiDirect<S> {
    id: u16,
    writer: Arc<ConnWriter<S>>,
}

impl<S: FcgiSocket> DirectWriter for FcgiDirect<S> {
    fn try_write_now(&self, event: &[u8]) -> bool {
        let w = &self.writer;
        if event.is_empty()
            || event.len() > FCGI_MAX_CONTENT_LEN
            || w.closed.load(std::sync::atomic::Ordering::Relaxed)
        {
            return false;
        }
        let pad = (8 - event.len() % 8) % 8;
        let len = (event.len() as u16).to_be_bytes();
        let id = self.id.to_be_bytes();
        let header = [
            FCGI_VERSION_1,
            FCGI_STDOUT,
            id[0],
            id[1],
            len[0],
            len[1],
            pad as u8,
            0,
        ];
        let zeros = [0u8; 8];
        let parts = [&header[..], event, &zeros[..pad]];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut pending = w.lock();
        if !pending.is_empty() {
            return false;
        }
        let slices = parts.map(IoSlice::new);
        let written = w.io.try_write_vectored(&slices);
        if matches!(written, Ok(n) if n > 0) {
            let ms = w.born.elapsed().as_millis() as u64;
            w.direct_at_ms
                .store(ms, std::sync::atomic::Ordering::Relaxed);
        }
        match written {
            Ok(n) if n == total => true,
            Ok(n) => {
                // The socket took part of it: queue the rest and flush it on the runtime.
                let mut skip = n;
                for p in parts {
                    let from = skip.min(p.len());
                    pending.extend_from_slice(&p[from..]);
                    skip -= from;
                }
                drop(pending);
                let writer = w.clone();
                w.runtime.spawn(async move {
                    let _ = writer.flush().await;
                });
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                drop(pending);
                let _ = w.broken(e);
                true
            }
        }
    }
}

impl<S: FcgiSocket> ConnWriter<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, BytesMut> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a request as ended to the connection's reader.
    fn request_finished(&self, id: u16) {
        self.finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        self.finished_notify.notify_one();
    }

    /// Takes the ids of requests that ended.
    fn take_finished(&self) -> Vec<u16> {
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn broken(&self, e: io::Error) -> BodyClosed {
        log::debug!("write failed, client gone: {e}");
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cancel.cancel();
        BodyClosed
    }

    /// Encodes and writes `msg`; returns once its bytes are in the kernel.
    async fn send(&self, msg: Outgoing) -> Result<(), BodyClosed> {
        if self.cancel.is_cancelled() {
            return Err(BodyClosed);
        }
        let mut bytes = BytesMut::new();
        if let Err(e) = encode(msg, &mut bytes) {
            log::error!("cannot encode a record: {e}");
            return Ok(());
        }
        {
            let mut pending = self.lock();
            if pending.is_empty() {
                match self.io.try_write(&bytes) {
                    Ok(n) if n == bytes.len() => return Ok(()),
                    Ok(n) => pending.extend_from_slice(&bytes[n..]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        pending.extend_from_slice(&bytes)
                    }
                    Err(e) => return Err(self.broken(e)),
                }
            } else {
                pending.extend_from_slice(&bytes);
            }
        }
        self.flush().await
    }

    /// Writes queued bytes until none are left (whoever queued them).
    async fn flush(&self) -> Result<(), BodyClosed> {
        loop {
            {
                let mut pending = self.lock();
                while !pending.is_empty() {
                    match self.io.try_write(&pending) {
                        Ok(n) => pending.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(self.broken(e)),
                    }
                }
                if pending.is_empty() {
                    *pending = BytesMut::new();
                    return Ok(());
                }
            }
            tokio::select! {
                r = self.io.writable() => r.map_err(|e| self.broken(e))?,
                _ = self.cancel.cancelled() => return Err(BodyClosed),
            }
        }
    }
}

/// Everything a connection needs from the server.
#[derive(Clone)]
pub struct ConnContext {
    /// The application.
    pub app: Arc<App>,
    /// Server shutdown: streams end with a `retry:` hint.
    pub shutdown: CancellationToken,
    /// Tracks the connection's tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Connections with no request running (closed first when the server is full).
    pub idle: Arc<IdleConnections>,
    /// The web server's address on this connection, for logs.
    pub peer: String,
    /// Connection number, for logs.
    pub conn_id: u64,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

enum Phase {
    /// Collecting PARAMS; `None` once they exceeded `max_params_bytes`.
    Params(Option<BytesMut>),
    /// Collecting STDIN up to CONTENT_LENGTH.
    Body {
        vars: Vec<(Bytes, Bytes)>,
        body: BytesMut,
        expected: usize,
    },
    /// The handler task runs; its token aborts it.
    Running(CancellationToken),
}

struct Slot {
    keep_conn: bool,
    phase: Phase,
    /// When BEGIN_REQUEST arrived: the input must be complete by `request_timeout` after it.
    begun: tokio::time::Instant,
    /// The request's input bytes, counted against `max_input_bytes` until the slot goes.
    charge: InputCharge,
}

/// Reads whole records from the connection, with the codec doing the framing. Holds no buffer
/// while waiting: thousands of idle streams wait here.
struct RecordReader<S> {
    io: Arc<S>,
    buf: BytesMut,
    /// The read buffer past its first [`READ_BUFFER`] bytes counts against `max_input_bytes`
    /// (a partial record of up to 64 KiB may wait here on every connection).
    charge: InputCharge,
}

impl<S: FcgiSocket> RecordReader<S> {
    /// The next record; `Ok(None)` at a clean EOF. Cancel-safe.
    async fn next(&mut self) -> Result<Option<Record>, CodecError> {
        loop {
            if let Some(record) = RecordCodec.decode(&mut self.buf)? {
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                    self.charge.set(0);
                }
                return Ok(Some(record));
            }
            self.io.readable().await?;
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_BUFFER);
                if !self
                    .charge
                    .set(self.buf.capacity().saturating_sub(READ_BUFFER))
                {
                    return Err(io::Error::other(
                        "max_input_bytes of request input already buffered",
                    )
                    .into());
                }
            }
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) => return RecordCodec.decode_eof(&mut self.buf),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Writes one request's body as STDOUT records.
struct FcgiBody<S> {
    id: u16,
    writer: Arc<ConnWriter<S>>,
}

impl<S: FcgiSocket> BodyWriter for FcgiBody<S> {
    fn written_elsewhere_at(&self) -> Option<tokio::time::Instant> {
        let ms = self
            .writer
            .direct_at_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        (ms > 0).then(|| self.writer.born + std::time::Duration::from_millis(ms))
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), BodyClosed> {
        if chunk.is_empty() {
            // An empty STDOUT record would end the stream: an empty write is a no-op.
            return Ok(());
        }
        self.writer
            .send(Outgoing::Stdout {
                id: self.id,
                data: chunk,
            })
            .await
    }
}

struct Conn<S> {
    ctx: ConnContext,
    slots: HashMap<u16, Slot>,
    writer: Arc<ConnWriter<S>>,
    cancel: CancellationToken,
    close_when_idle: bool,
    /// Since when no request has been running (`None` while one runs).
    idle_since: Option<tokio::time::Instant>,
}

/// Serves one FastCGI connection until the peer closes it, a protocol error, shutdown, or
/// `request_timeout` without a whole request. `counted` holds its place in `max_connections`.
pub async fn serve_connection<S: FcgiSocket>(io: S, ctx: ConnContext, counted: ConnectionGuard) {
    let _counted = counted;
    let io = Arc::new(io);
    let mut reader = RecordReader {
        io: io.clone(),
        buf: BytesMut::new(),
        charge: ctx.app.input_charge(),
    };
    let cancel = CancellationToken::new();
    let writer = Arc::new(ConnWriter {
        io,
        pending: Mutex::new(BytesMut::new()),
        cancel: cancel.clone(),
        closed: std::sync::atomic::AtomicBool::new(false),
        direct_at_ms: std::sync::atomic::AtomicU64::new(0),
        born: tokio::time::Instant::now(),
        finished: Mutex::new(Vec::new()),
        finished_notify: Notify::new(),
        runtime: tokio::runtime::Handle::current(),
    });
    let shutdown = ctx.shutdown.clone();
    let mut conn = Conn {
        ctx,
        slots: HashMap::new(),
        writer,
        cancel,
        close_when_idle: false,
        idle_since: None,
    };
    log::debug!("conn={} peer={}: open", conn.ctx.conn_id, conn.ctx.peer);
    conn.update_idle();
    let mut draining = false;
    loop {
        let deadline = conn.deadline();
        let flow = tokio::select! {
            biased;
            _ = conn.cancel.cancelled() => Flow::Close,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                conn.on_deadline()
            }
            _ = conn.writer.finished_notify.notified() => {
                let mut flow = Flow::Continue;
                for id in conn.writer.take_finished() {
                    flow = conn.finished(id);
                }
                flow
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.close_when_idle = true;
                conn.close_if_idle()
            }
            record = reader.next() => match record {
                Ok(Some(record)) => conn.on_record(record).await,
                Ok(None) => {
                    log::debug!("conn={}: peer closed the connection", conn.ctx.conn_id);
                    conn.cancel.cancel();
                    Flow::Close
                }
                Err(CodecError::Io(e)) => {
                    if e.kind() == io::ErrorKind::Other {
                        log::warn!("conn={} peer={}: closing: {e}", conn.ctx.conn_id, conn.ctx.peer);
                    } else {
                        log::debug!("conn={}: read error: {e}", conn.ctx.conn_id);
                    }
                    conn.cancel.cancel();
                    Flow::Close
                }
                Err(e) => {
                    log::warn!("conn={} peer={}: closing: {e}", conn.ctx.conn_id, conn.ctx.peer);
                    conn.cancel.cancel();
                    Flow::Close
                }
            },
        };
        if flow == Flow::Close {
            break;
        }
        conn.update_idle();
    }
    if !conn.slots.is_empty() {
        // Streams still running lose their connection: stop them now.
        conn.cancel.cancel();
    }
    // The socket closes when the last request task lets go of it.
    log::debug!("conn={}: closed", conn.ctx.conn_id);
}

impl<S> Drop for Conn<S> {
    /// Leaves the idle registry however the connection ends (a panic included).
    fn drop(&mut self) {
        self.ctx.idle.set(self.ctx.conn_id, &self.cancel, false);
    }
}

impl<S: FcgiSocket> Conn<S> {
    /// Keeps the idle registry and `idle_since` in step with whether a request runs.
    fn update_idle(&mut self) {
        let running = self
            .slots
            .values()
            .any(|s| matches!(s.phase, Phase::Running(_)));
        if running == self.idle_since.is_none() {
            return;
        }
        self.idle_since = (!running).then(tokio::time::Instant::now);
        self.ctx.idle.set(self.ctx.conn_id, &self.cancel, !running);
    }

    /// When the next request-input deadline falls: an idle connection must deliver a whole
    /// request, and each request its whole input, within `request_timeout`.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let timeout = self.ctx.app.config().server.request_timeout;
        if self.slots.is_empty() {
            return self.idle_since.map(|t| t + timeout);
        }
        self.slots
            .values()
            .filter(|s| !matches!(s.phase, Phase::Running(_)))
            .map(|s| s.begun + timeout)
            .min()
    }

    /// A deadline passed: requests whose input is late get 408; a connection idle for too long
    /// is closed.
    fn on_deadline(&mut self) -> Flow {
        let now = tokio::time::Instant::now();
        let timeout = self.ctx.app.config().server.request_timeout;
        let late: Vec<u16> = self
            .slots
            .iter()
            .filter(|(_, s)| !matches!(s.phase, Phase::Running(_)) && s.begun + timeout <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            log::warn!(
                "conn={} id={id} peer={}: request not complete within {timeout:?} (request_timeout); answering 408",
                self.ctx.conn_id,
                self.ctx.peer
            );
            let resp = FullResponse::text(
                408,
                format!("request not received completely within {timeout:?} (request_timeout)"),
            );
            self.dispatch(id, Err(resp));
        }
        match self.idle_since {
            Some(t) if self.slots.is_empty() && t + timeout <= now => {
                log::debug!(
                    "conn={} peer={}: no request within {timeout:?}; closing",
                    self.ctx.conn_id,
                    self.ctx.peer
                );
                self.cancel.cancel();
                Flow::Close
            }
            _ => Flow::Continue,
        }
    }

    /// The 503 for a request whose input would pass `max_input_bytes`.
    fn input_full(&self, id: u16) -> FullResponse {
        let max = self.ctx.app.config().server.max_input_bytes;
        log::warn!(
            "conn={} id={id} peer={}: {max} bytes of request input already buffered (max_input_bytes); answering 503",
            self.ctx.conn_id,
            self.ctx.peer
        );
        FullResponse::text(503, "server busy: too much request input buffered; retry")
            .with_header("Retry-After", "1")
    }

    /// Writes a record from the reader's own loop (management answers, refusals). A peer that
    /// does not read them within `request_timeout` is closed: the loop never waits unbounded.
    async fn send(&self, msg: Outgoing) -> Flow {
        let timeout = self.ctx.app.config().server.request_timeout;
        match tokio::time::timeout(timeout, self.writer.send(msg)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(BodyClosed)) => Flow::Close,
            Err(_) => {
                log::warn!(
                    "conn={} peer={}: not reading its answers for {timeout:?}; closing",
                    self.ctx.conn_id,
                    self.ctx.peer
                );
                self.cancel.cancel();
                Flow::Close
            }
        }
    }

    fn protocol_error(&self, what: &str) -> Flow {
        log::warn!(
            "conn={} peer={}: FastCGI protocol error, closing: {what}",
            self.ctx.conn_id,
            self.ctx.peer
        );
        self.cancel.cancel();
        Flow::Close
    }

    /// Closes the connection (by leaving the loop) when asked to and no request is left.
    fn close_if_idle(&mut self) -> Flow {
        if self.close_when_idle && self.slots.is_empty() {
            return Flow::Close;
        }
        Flow::Continue
    }

    /// A request ended (END_REQUEST already written): apply KEEP_CONN.
    fn finished(&mut self, id: u16) -> Flow {
        if let Some(slot) = self.slots.remove(&id) {
            if !slot.keep_conn {
                self.close_when_idle = true;
            }
        }
        self.close_if_idle()
    }

    /// Ends a request that never started a handler.
    async fn end_unstarted(&mut self, id: u16, keep_conn: bool, protocol_status: u8) -> Flow {
        self.slots.remove(&id);
        if self
            .send(Outgoing::End {
                id,
                protocol_status,
                terminate_stdout: false,
            })
            .await
            == Flow::Close
        {
            return Flow::Close;
        }
        if !keep_conn {
            self.close_when_idle = true;
        }
        self.close_if_idle()
    }

    async fn on_record(&mut self, r: Record) -> Flow {
        if r.request_id == FCGI_NULL_REQUEST_ID {
            return self.on_management(r).await;
        }
        match r.record_type {
            FCGI_BEGIN_REQUEST => self.on_begin(r).await,
            FCGI_ABORT_REQUEST => self.on_abort(r.request_id).await,
            FCGI_PARAMS => self.on_params(r).await,
            FCGI_STDIN => self.on_stdin(r).await,
            // DATA (filter role only), records a web server never sends, unknown types on a
            // request id, and records for inactive ids are ignored (spec 3.3).
            _ => Flow::Continue,
        }
    }

    async fn on_management(&mut self, r: Record) -> Flow {
        if r.record_type != FCGI_GET_VALUES {
            let mut body = vec![0u8; 8];
            body[0] = r.record_type;
            return self
                .send(Outgoing::Management(Record::new(
                    FCGI_UNKNOWN_TYPE,
                    0,
                    body,
                )))
                .await;
        }
        let asked = decode_params(&r.content, ParamsLimits { max_pairs: 64 }).unwrap_or_default();
        let server = &self.ctx.app.config().server;
        let mut answer = BytesMut::new();
        let mut answered: Vec<&[u8]> = Vec::new();
        for (name, _) in &asked {
            let value = match &name[..] {
                n if n == FCGI_MAX_CONNS.as_bytes() => server.max_connections.to_string(),
                n if n == FCGI_MAX_REQS.as_bytes() => server.max_streams.to_string(),
                n if n == FCGI_MPXS_CONNS.as_bytes() => "1".to_string(),
                _ => continue,
            };
            if answered.contains(&&name[..]) {
                continue;
            }
            answered.push(&name[..]);
            encode_pair(&mut answer, name, value.as_bytes());
        }
        self.send(Outgoing::Management(Record::new(
            FCGI_GET_VALUES_RESULT,
            0,
            answer.freeze(),
        )))
        .await
    }

    async fn on_begin(&mut self, r: Record) -> Flow {
        let id = r.request_id;
        if r.content.len() != 8 {
            return self.protocol_error(&format!(
                "BEGIN_REQUEST for id {id} has {} content bytes, not 8",
                r.content.len()
            ));
        }
        if self.slots.contains_key(&id) {
            // The request may have ended a moment ago, its notice not yet handled.
            for done in self.writer.take_finished() {
                self.finished(done);
            }
        }
        if self.slots.contains_key(&id) {
            return self.protocol_error(&format!("BEGIN_REQUEST for id {id}, which is active"));
        }
        let role = u16::from_be_bytes([r.content[0], r.content[1]]);
        let keep_conn = r.content[2] & FCGI_KEEP_CONN != 0;
        if role != FCGI_RESPONDER {
            log::warn!(
                "conn={} id={id}: role {role} is not RESPONDER; answering UNKNOWN_ROLE",
                self.ctx.conn_id
            );
            return self.end_unstarted(id, keep_conn, FCGI_UNKNOWN_ROLE).await;
        }
        let limit = self.ctx.app.config().server.max_requests_per_connection;
        if self.slots.len() >= limit {
            log::warn!(
                "conn={} id={id}: {limit} requests already multiplexed; answering OVERLOADED",
                self.ctx.conn_id
            );
            return self.end_unstarted(id, keep_conn, FCGI_OVERLOADED).await;
        }
        self.slots.insert(
            id,
            Slot {
                keep_conn,
                phase: Phase::Params(Some(BytesMut::new())),
                begun: tokio::time::Instant::now(),
                charge: self.ctx.app.input_charge(),
            },
        );
        Flow::Continue
    }

    async fn on_abort(&mut self, id: u16) -> Flow {
        let Some(slot) = self.slots.get(&id) else {
            return Flow::Continue;
        };
        match &slot.phase {
            // The handler ends, queues END_REQUEST{REQUEST_COMPLETE} and reports back.
            Phase::Running(token) => {
                token.cancel();
                Flow::Continue
            }
            _ => {
                let keep_conn = slot.keep_conn;
                self.end_unstarted(id, keep_conn, FCGI_REQUEST_COMPLETE)
                    .await
            }
        }
    }

    async fn on_params(&mut self, r: Record) -> Flow {
        let server = &self.ctx.app.config().server;
        let (max_bytes, max_pairs, max_body) = (
            server.max_params_bytes,
            server.max_params_pairs,
            server.max_body_bytes,
        );
        let Some(slot) = self.slots.get_mut(&r.request_id) else {
            return Flow::Continue;
        };
        let Phase::Params(buf) = &mut slot.phase else {
            return Flow::Continue;
        };
        if !r.content.is_empty() {
            if let Some(b) = buf {
                if b.len() + r.content.len() > max_bytes {
                    *buf = None;
                } else if !slot.charge.add(r.content.len()) {
                    let full = self.input_full(r.request_id);
                    return self.dispatch(r.request_id, Err(full));
                } else {
                    b.extend_from_slice(&r.content);
                }
            }
            return Flow::Continue;
        }
        // End of PARAMS: decode the concatenation.
        let id = r.request_id;
        let Some(params) = buf.take() else {
            log::warn!(
                "conn={} id={id}: PARAMS over max_params_bytes ({max_bytes}); answering 431",
                self.ctx.conn_id
            );
            let resp = FullResponse::text(
                431,
                format!("request headers exceed {max_bytes} bytes (max_params_bytes)"),
            );
            return self.dispatch(id, Err(resp));
        };
        let vars = match decode_params(&params.freeze(), ParamsLimits { max_pairs }) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("conn={} id={id}: bad PARAMS: {e}", self.ctx.conn_id);
                return self.dispatch(
                    id,
                    Err(FullResponse::text(
                        400,
                        format!("malformed FastCGI PARAMS: {e}"),
                    )),
                );
            }
        };
        let content_length = vars
            .iter()
            .find(|(k, _)| &k[..] == b"CONTENT_LENGTH")
            .map(|(_, v)| std::str::from_utf8(v).ok().map(str::trim))
            // nginx sends CONTENT_LENGTH empty when the request has no body.
            .filter(|v| v != &Some(""))
            .map(|v| v.and_then(|s| s.parse::<usize>().ok()));
        match content_length {
            None | Some(Some(0)) => self.dispatch(id, Ok((vars, Bytes::new()))),
            Some(None) => self.dispatch(
                id,
                Err(FullResponse::text(400, "CONTENT_LENGTH is not a number")),
            ),
            Some(Some(n)) if n > max_body => self.dispatch(
                id,
                Err(FullResponse::text(
                    413,
                    format!("request body of {n} bytes exceeds max_body_bytes ({max_body})"),
                )),
            ),
            Some(Some(n)) => {
                // Grown as bytes arrive, never sized from CONTENT_LENGTH up front: a
                // half-sent body costs only what was sent.
                slot.phase = Phase::Body {
                    vars,
                    body: BytesMut::new(),
                    expected: n,
                };
                Flow::Continue
            }
        }
    }

    async fn on_stdin(&mut self, r: Record) -> Flow {
        let Some(slot) = self.slots.get_mut(&r.request_id) else {
            return Flow::Continue;
        };
        let Phase::Body { body, expected, .. } = &mut slot.phase else {
            return Flow::Continue;
        };
        let room = *expected - body.len();
        let take = r.content.len().min(room);
        if !slot.charge.add(take) {
            let full = self.input_full(r.request_id);
            return self.dispatch(r.request_id, Err(full));
        }
        body.extend_from_slice(&r.content[..take]);
        if !r.content.is_empty() && body.len() < *expected {
            return Flow::Continue;
        }
        let Phase::Body {
            vars,
            body,
            expected,
        } = std::mem::replace(&mut slot.phase, Phase::Params(None))
        else {
            unreachable!("matched above")
        };
        if body.len() < expected {
            let got = body.len();
            return self.dispatch(
                r.request_id,
                Err(FullResponse::text(
                    400,
                    format!("request body ended after {got} of {expected} bytes (CONTENT_LENGTH)"),
                )),
            );
        }
        self.dispatch(r.request_id, Ok((vars, body.freeze())))
    }

    /// Starts the handler task for a request whose input is complete (or already refused).
    fn dispatch(
        &mut self,
        id: u16,
        input: Result<(Vec<(Bytes, Bytes)>, Bytes), FullResponse>,
    ) -> Flow {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Flow::Continue;
        };
        let abort = self.cancel.child_token();
        slot.phase = Phase::Running(abort.clone());
        // The input is decoded into the request now: its buffers no longer count.
        slot.charge = self.ctx.app.input_charge();
        let task = RequestTask {
            app: self.ctx.app.clone(),
            id,
            conn_id: self.ctx.conn_id,
            writer: self.writer.clone(),
            abort,
            conn_cancel: self.cancel.clone(),
            shutdown: self.ctx.shutdown.clone(),
        };
        let input = input.map(|(vars, body)| Request::from_vars(vars, body, PathFrom::RequestUri));
        self.ctx.tracker.spawn(task.run(input));
        Flow::Continue
    }
}

/// One request's handler: route it, write the response, end it.
struct RequestTask<S> {
    app: Arc<App>,
    id: u16,
    conn_id: u64,
    writer: Arc<ConnWriter<S>>,
    abort: CancellationToken,
    conn_cancel: CancellationToken,
    shutdown: CancellationToken,
}

impl<S: FcgiSocket> RequestTask<S> {
    async fn run(self, input: Result<Request, FullResponse>) {
        let mut body = FcgiBody {
            id: self.id,
            writer: self.writer.clone(),
        };
        let (response, head_only, peer) = match input {
            Ok(req) => (self.app.handle(&req).await, req.is_head(), req.peer.clone()),
            Err(refusal) => (Response::Full(refusal), false, "-".to_string()),
        };
        match response {
            Response::Full(full) => {
                log::debug!(
                    "conn={} id={} peer={peer}: {}",
                    self.conn_id,
                    self.id,
                    full.status
                );
                let bytes = full.to_bytes(head_only);
                tokio::select! {
                    _ = body.write(bytes) => {}
                    _ = self.abort.cancelled() => {}
                }
            }
            Response::Stream(mut stream) => {
                log::debug!(
                    "conn={} id={} peer={peer} route={}: stream open",
                    self.conn_id,
                    self.id,
                    stream.route
                );
                stream.source.attach_direct(Arc::new(FcgiDirect {
                    id: self.id,
                    writer: self.writer.clone(),
                }));
                let end = tokio::select! {
                    r = body.write(stream_head()) => match r {
                        Ok(()) => run_stream(stream.source.as_mut(), &mut body, stream.timing, &self.abort, &self.shutdown).await,
                        Err(_) => StreamEnd::ClientGone,
                    },
                    _ = self.abort.cancelled() => StreamEnd::ClientGone,
                };
                log::debug!(
                    "conn={} id={} peer={peer} route={}: stream ended ({end:?})",
                    self.conn_id,
                    self.id,
                    stream.route
                );
            }
        }
        // Retire the id before END_REQUEST can reach the peer: a client that reuses the id as
        // soon as it reads END_REQUEST must find it free.
        self.writer.request_finished(self.id);
        if !self.conn_cancel.is_cancelled() {
            let end = Outgoing::End {
                id: self.id,
                protocol_status: FCGI_REQUEST_COMPLETE,
                terminate_stdout: true,
            };
            let _ = self.writer.send(end).await;
        }
    }
}

fn encode(msg: Outgoing, buf: &mut BytesMut) -> Result<(), CodecError> {
    match msg {
        Outgoing::Stdout { id, data } => {
            RecordCodec.encode(Record::new(FCGI_STDOUT, id, data), buf)
        }
        Outgoing::End {
            id,
            protocol_status,
            terminate_stdout,
        } => {
            if terminate_stdout {
                RecordCodec.encode(Record::new(FCGI_STDOUT, id, Bytes::new()), buf)?;
            }
            let body = vec![0, 0, 0, 0, protocol_status, 0, 0, 0];
            RecordCodec.encode(Record::new(FCGI_END_REQUEST, id, body), buf)
        }
        Outgoing::Management(r) => RecordCodec.encode(r, buf),
    }
}
