//! The FastCGI connection driver: one reader for the connection's whole life, a request table by
//! id (multiplexing), KEEP_CONN, GET_VALUES, ABORT_REQUEST, cancellation of every request the
//! moment the peer closes the connection, and the streams that parked here while idle (resumed
//! when woken, due, aborted, or at shutdown).
//!
//! Writing is [`super::writer`]'s job, each request's handler [`super::task`]'s; this file
//! (with `input.rs`, `reader.rs` and `parking.rs`) reads records and keeps the request table,
//! deadlines, the idle registry and the parked streams.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{CodecError, Record};
use super::idle::{Close, IdleConnections};
use super::params::{decode_params, encode_pair, ParamsLimits};
use super::slots::Slots;
use super::task::ParkedRequest;
use super::writer::{ConnWriter, Outgoing};
use super::*;
use crate::app::App;
use crate::response::FullResponse;
use crate::source::BodyClosed;
use crate::stats::{ConnectionGuard, InputCharge};

pub use super::writer::FcgiSocket;

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
    /// The web server's address on this connection, for logs (shared by a unix socket's
    /// connections).
    pub peer: Arc<str>,
    /// Connection number, for logs.
    pub conn_id: u64,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

enum Phase<S> {
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
    /// A stream with nothing to write, without a task until it is resumed.
    Parked(ParkedRequest<S>),
}

impl<S> Phase<S> {
    /// Whether the request's handler has started (it runs, or its stream is parked).
    fn started(&self) -> bool {
        matches!(self, Phase::Running(_) | Phase::Parked(_))
    }
}

struct Slot<S> {
    keep_conn: bool,
    phase: Phase<S>,
    /// When BEGIN_REQUEST arrived: the input must be complete by `request_timeout` after it.
    begun: tokio::time::Instant,
    /// The request's input bytes, counted against `max_input_bytes` until the slot goes.
    charge: InputCharge,
}

struct Conn<S> {
    ctx: ConnContext,
    slots: Slots<Slot<S>>,
    /// The socket, its write side and the mailbox: ids of requests that ended and streams
    /// that parked, reported by their tasks.
    writer: Arc<ConnWriter<S>>,
    close_when_idle: bool,
    /// Since when no request has been running (`None` while one runs).
    idle_since: Option<tokio::time::Instant>,
}

/// Serves one FastCGI connection until the peer closes it, a protocol error, shutdown, or
/// `request_timeout` without a whole request. `counted` holds its place in `max_connections`.
/// Not an `async fn`: the connection's state is built before its future, which then holds
/// only that state (an async fn would also keep room for its arguments, for the connection's
/// whole life, on every connection). Call it inside the runtime.
pub fn serve_connection<S: FcgiSocket>(
    io: S,
    ctx: ConnContext,
    counted: ConnectionGuard,
) -> impl std::future::Future<Output = ()> {
    let writer = Arc::new(ConnWriter::new(io));
    let mut reader = RecordReader {
        conn: writer.clone(),
        buf: BytesMut::new(),
        charge: ctx.app.input_charge(),
    };
    let shutdown = ctx.shutdown.clone();
    let mut conn = Conn {
        ctx,
        slots: Slots::default(),
        writer,
        close_when_idle: false,
        idle_since: None,
    };
    async move {
        let _counted = counted;
        log::debug!("conn={} peer={}: open", conn.ctx.conn_id, conn.ctx.peer);
        conn.update_idle();
        let mut draining = false;
        // Boxed, and only while a deadline exists: a connection whose stream runs has none, and
        // thousands of them wait here.
        let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // Closed from outside the task (a failed write, an eviction), the connection is
        // closed and its mailbox woken: the loop notices here.
        while !conn.writer.is_closed() {
            match (conn.deadline(), timer.as_mut()) {
                (None, _) => timer = None,
                (Some(d), Some(t)) => t.as_mut().reset(d),
                (Some(d), None) => timer = Some(Box::pin(tokio::time::sleep_until(d))),
            }
            let flow = tokio::select! {
                biased;
                _ = async { timer.as_mut().expect("guarded").await }, if timer.is_some() => {
                    timer = None;
                    conn.on_deadline()
                }
                _ = conn.writer.mail.notify.notified() => conn.on_mail(),
                id = std::future::poll_fn(|cx| poll_parked(&mut conn.slots, cx)) => {
                    conn.resume(id);
                    Flow::Continue
                }
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.close_when_idle = true;
                    conn.resume_all();
                    conn.close_if_idle()
                }
                // Boxed: handling a record needs a large future for a moment; the connection's
                // task, waiting for the next one, keeps only the select.
                record = reader.next() => Box::pin(conn.on_read(record)).await,
            };
            if flow == Flow::Close {
                break;
            }
            conn.update_idle();
        }
        if !conn.slots.is_empty() {
            // Streams still running lose their connection: stop them now.
            conn.writer.close();
            conn.abort_all();
        }
        // Parked streams go on long enough to end (their leave, their access line).
        conn.resume_all();
        for p in conn.writer.mail.close() {
            conn.ctx.tracker.spawn(p.resumed());
        }
        // The socket closes when the last request task lets go of it.
        log::debug!("conn={}: closed", conn.ctx.conn_id);
    }
}

impl<S> Drop for Conn<S> {
    /// Leaves the idle registry however the connection ends (a panic included), and drops
    /// what is left in the mailbox: a parked stream there holds the mailbox's own connection.
    fn drop(&mut self) {
        self.ctx.idle.set(self.ctx.conn_id, None);
        drop(self.writer.mail.close());
    }
}

impl<S: FcgiSocket> Conn<S> {
    /// Keeps the idle registry and `idle_since` in step with whether a request runs.
    fn update_idle(&mut self) {
        let running = self.slots.values().any(|s| s.phase.started());
        if running == self.idle_since.is_none() {
            return;
        }
        self.idle_since = (!running).then(tokio::time::Instant::now);
        let close = (!running).then(|| self.writer.clone() as Arc<dyn Close>);
        self.ctx.idle.set(self.ctx.conn_id, close);
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
            .filter_map(|s| match &s.phase {
                Phase::Running(_) => None,
                Phase::Parked(p) => Some(p.due()),
                _ => Some(s.begun + timeout),
            })
            .min()
    }

    /// A deadline passed: parked streams that are due run again, requests whose input is late
    /// get 408; a connection idle for too long is closed.
    fn on_deadline(&mut self) -> Flow {
        let now = tokio::time::Instant::now();
        let timeout = self.ctx.app.config().server.request_timeout;
        let due: Vec<u16> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(&s.phase, Phase::Parked(p) if p.due() <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.resume(id);
        }
        let late: Vec<u16> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.phase.started() && s.begun + timeout <= now)
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
                self.writer.close();
                Flow::Close
            }
            _ => Flow::Continue,
        }
    }

    /// Writes a record from the reader's own loop (management answers, refusals). A peer that
    /// does not read them within `request_timeout` is closed: the loop never waits unbounded.
    async fn send(&self, msg: Outgoing) -> Flow {
        let timeout = self.ctx.app.config().server.request_timeout;
        // Boxed: rare, and it would otherwise enlarge every connection's future.
        match Box::pin(tokio::time::timeout(timeout, self.writer.send(msg))).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(BodyClosed)) => Flow::Close,
            Err(_) => {
                log::warn!(
                    "conn={} peer={}: not reading its answers for {timeout:?}; closing",
                    self.ctx.conn_id,
                    self.ctx.peer
                );
                self.writer.close();
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
        self.writer.close();
        Flow::Close
    }

    /// Tells every started request that its client is gone.
    fn abort_all(&self) {
        for slot in self.slots.values() {
            match &slot.phase {
                Phase::Running(token) => token.cancel(),
                Phase::Parked(p) => p.handle.abort.cancel(),
                _ => {}
            }
        }
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

    /// What the reader got: a record, the peer's close, or an error that ends the connection.
    async fn on_read(&mut self, read: Result<Option<Record>, CodecError>) -> Flow {
        let (conn_id, peer) = (self.ctx.conn_id, &self.ctx.peer);
        match read {
            Ok(Some(record)) => return self.on_record(record).await,
            Ok(None) => log::debug!("conn={conn_id}: peer closed the connection"),
            Err(CodecError::Io(e)) if e.kind() != io::ErrorKind::Other => {
                log::debug!("conn={conn_id}: read error: {e}")
            }
            Err(e) => log::warn!("conn={conn_id} peer={peer}: closing: {e}"),
        }
        self.writer.close();
        Flow::Close
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
            // Mail the reader has not read yet (the id may be free, a stream parked).
            let _ = self.on_mail();
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
            Phase::Parked(p) => {
                p.handle.abort.cancel();
                self.resume(id);
                Flow::Continue
            }
            _ => {
                let keep_conn = slot.keep_conn;
                self.end_unstarted(id, keep_conn, FCGI_REQUEST_COMPLETE)
                    .await
            }
        }
    }
}

#[path = "input.rs"]
mod input;
#[path = "reader.rs"]
mod reader;
use reader::RecordReader;
#[path = "parking.rs"]
mod parking;
use parking::poll_parked;
