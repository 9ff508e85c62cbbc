//! The FastCGI connection driver: one reader for the connection's whole life, a request table by
//! id (multiplexing), a writer task that batches and flushes records, KEEP_CONN, GET_VALUES,
//! ABORT_REQUEST, and cancellation of every request the moment the peer closes the connection.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{CodecError, Record, RecordCodec};
use super::params::{decode_params, encode_pair, ParamsLimits};
use super::*;
use crate::app::{stream_head, App, FullResponse, Response};
use crate::request::{PathFrom, Request};
use crate::source::{run_stream, BodyClosed, BodyWriter, StreamEnd};

/// Messages queued to the connection's writer, in the order they must reach the wire.
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
    /// Flush and close the connection.
    Close,
}

/// Queue between a connection's requests and its writer, in messages.
const OUTGOING_QUEUE: usize = 64;
/// Initial read buffer: enough for nginx's usual PARAMS record.
const READ_BUFFER: usize = 2048;
/// The writer flushes at least this often while messages keep coming.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Everything a connection needs from the server.
#[derive(Clone)]
pub struct ConnContext {
    /// The application.
    pub app: Arc<App>,
    /// Server shutdown: streams end with a `retry:` hint.
    pub shutdown: CancellationToken,
    /// Tracks the connection's tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
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
}

/// Reads whole records from the connection, with the codec doing the framing.
struct RecordReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// The next record; `Ok(None)` at a clean EOF. Cancel-safe.
    async fn next(&mut self) -> Result<Option<Record>, CodecError> {
        loop {
            if let Some(record) = RecordCodec.decode(&mut self.buf)? {
                if self.buf.is_empty() && self.buf.capacity() > 16 * READ_BUFFER {
                    self.buf = BytesMut::with_capacity(READ_BUFFER);
                }
                return Ok(Some(record));
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_BUFFER);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return RecordCodec.decode_eof(&mut self.buf);
            }
        }
    }
}

/// Writes one request's body as STDOUT records through the connection's writer.
struct FcgiBody {
    id: u16,
    out: mpsc::Sender<Outgoing>,
}

impl BodyWriter for FcgiBody {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BodyClosed> {
        if chunk.is_empty() {
            // An empty STDOUT record would end the stream: an empty write is a no-op.
            return Ok(());
        }
        self.out
            .send(Outgoing::Stdout {
                id: self.id,
                data: chunk,
            })
            .await
            .map_err(|_| BodyClosed)
    }
}

struct Conn {
    ctx: ConnContext,
    slots: HashMap<u16, Slot>,
    out: mpsc::Sender<Outgoing>,
    done_tx: mpsc::UnboundedSender<u16>,
    cancel: CancellationToken,
    close_when_idle: bool,
}

/// Serves one FastCGI connection until the peer closes it, a protocol error, or shutdown.
pub async fn serve_connection<S>(io: S, ctx: ConnContext)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let _counted = ctx.app.connection_opened();
    let (rd, wr) = tokio::io::split(io);
    let mut reader = RecordReader {
        io: rd,
        buf: BytesMut::with_capacity(READ_BUFFER),
    };
    let cancel = CancellationToken::new();
    let (out, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    ctx.tracker
        .spawn(write_loop(wr, out_rx, cancel.clone(), ctx.conn_id));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let shutdown = ctx.shutdown.clone();
    let mut conn = Conn {
        ctx,
        slots: HashMap::new(),
        out,
        done_tx,
        cancel,
        close_when_idle: false,
    };
    log::debug!("conn={} peer={}: open", conn.ctx.conn_id, conn.ctx.peer);
    let mut draining = false;
    loop {
        let flow = tokio::select! {
            biased;
            _ = conn.cancel.cancelled() => Flow::Close,
            Some(id) = done_rx.recv() => conn.finished(id).await,
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.close_when_idle = true;
                conn.close_if_idle().await
            }
            record = reader.next() => match record {
                Ok(Some(record)) => conn.on_record(record).await,
                Ok(None) => {
                    log::debug!("conn={}: peer closed the connection", conn.ctx.conn_id);
                    conn.cancel.cancel();
                    Flow::Close
                }
                Err(CodecError::Io(e)) => {
                    log::debug!("conn={}: read error: {e}", conn.ctx.conn_id);
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
    }
    if !conn.slots.is_empty() {
        // Streams still running lose their connection: stop them now.
        conn.cancel.cancel();
    }
    log::debug!("conn={}: closed", conn.ctx.conn_id);
}

impl Conn {
    async fn send(&self, msg: Outgoing) -> Flow {
        tokio::select! {
            r = self.out.send(msg) => if r.is_ok() { Flow::Continue } else { Flow::Close },
            _ = self.cancel.cancelled() => Flow::Close,
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

    async fn close_if_idle(&mut self) -> Flow {
        if self.close_when_idle && self.slots.is_empty() {
            self.send(Outgoing::Close).await;
            return Flow::Close;
        }
        Flow::Continue
    }

    /// A request ended (END_REQUEST already queued): apply KEEP_CONN.
    async fn finished(&mut self, id: u16) -> Flow {
        if let Some(slot) = self.slots.remove(&id) {
            if !slot.keep_conn {
                self.close_when_idle = true;
            }
        }
        self.close_if_idle().await
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
        self.close_if_idle().await
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
                slot.phase = Phase::Body {
                    vars,
                    body: BytesMut::with_capacity(n),
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
        body.extend_from_slice(&r.content[..r.content.len().min(room)]);
        if !r.content.is_empty() && body.len() < *expected {
            return Flow::Continue;
        }
        let Phase::Body { vars, body, .. } =
            std::mem::replace(&mut slot.phase, Phase::Params(None))
        else {
            unreachable!("matched above")
        };
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
        let task = RequestTask {
            app: self.ctx.app.clone(),
            id,
            conn_id: self.ctx.conn_id,
            out: self.out.clone(),
            abort,
            conn_cancel: self.cancel.clone(),
            shutdown: self.ctx.shutdown.clone(),
            done: self.done_tx.clone(),
        };
        let input = input.map(|(vars, body)| Request::from_vars(vars, body, PathFrom::RequestUri));
        self.ctx.tracker.spawn(task.run(input));
        Flow::Continue
    }
}

/// One request's handler: route it, write the response, end it.
struct RequestTask {
    app: Arc<App>,
    id: u16,
    conn_id: u64,
    out: mpsc::Sender<Outgoing>,
    abort: CancellationToken,
    conn_cancel: CancellationToken,
    shutdown: CancellationToken,
    done: mpsc::UnboundedSender<u16>,
}

impl RequestTask {
    async fn run(self, input: Result<Request, FullResponse>) {
        let mut body = FcgiBody {
            id: self.id,
            out: self.out.clone(),
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
        if !self.conn_cancel.is_cancelled() {
            let end = Outgoing::End {
                id: self.id,
                protocol_status: FCGI_REQUEST_COMPLETE,
                terminate_stdout: true,
            };
            tokio::select! {
                _ = self.out.send(end) => {}
                _ = self.conn_cancel.cancelled() => {}
            }
        }
        let _ = self.done.send(self.id);
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
        Outgoing::Close => Ok(()),
    }
}

/// The connection's writer: takes every queued message, encodes them into one buffer and writes
/// it with one syscall; flushes as soon as the queue is empty, so each event reaches the wire at
/// once while bursts share syscalls.
async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut rx: mpsc::Receiver<Outgoing>,
    cancel: CancellationToken,
    conn_id: u64,
) {
    let mut wr = std::pin::pin!(wr);
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            m = rx.recv() => m,
        };
        let Some(mut msg) = first else { break };
        let mut close = false;
        loop {
            if matches!(msg, Outgoing::Close) {
                close = true;
                break;
            }
            if let Err(e) = encode(msg, &mut buf) {
                log::error!("conn={conn_id}: cannot encode a record: {e}");
            }
            if buf.len() >= WRITE_BATCH_BYTES {
                break;
            }
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            r = async { wr.write_all_buf(&mut buf).await?; wr.flush().await } => r,
            _ = cancel.cancelled() => return,
        };
        if let Err(e) = written {
            log::debug!("conn={conn_id}: write failed, client gone: {e}");
            cancel.cancel();
            return;
        }
        if buf.capacity() > 4 * WRITE_BATCH_BYTES {
            buf = BytesMut::with_capacity(4096);
        }
        if close {
            break;
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wr.shutdown()).await;
}
