//! The write side of one FastCGI connection, shared by its requests: [`ConnWriter`] writes
//! records straight to the socket with one non-blocking write (queueing only what the socket
//! does not take, flushed in order), and [`RequestOut`] is one request's output — written by its
//! task through [`FcgiBody`] or straight from the hub's fan-out as a [`DirectWriter`] — which
//! remembers, per stream, when the fan-out last wrote (so heartbeats go to idle streams only).

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::Notify;
use tokio_util::codec::Encoder;

use super::codec::{padding_for, record_header, CodecError, Record, RecordCodec};
use super::idle::Close;
use super::task::Finished;
use super::*;
use crate::source::{BodyClosed, BodyWriter, DirectWriter};

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
            // Poll functions, not tokio's `readable()`: its future is ~170 bytes and every
            // idle connection's task holds one while it waits.
            fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
                std::future::poll_fn(move |cx| <$t>::poll_read_ready(self, cx))
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                <$t>::try_read_buf(self, buf)
            }
            fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
                std::future::poll_fn(move |cx| <$t>::poll_write_ready(self, cx))
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

/// What a connection writes, encoded to records by [`encode`].
#[derive(Debug)]
pub(super) enum Outgoing {
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

pub(super) fn encode(msg: Outgoing, buf: &mut BytesMut) -> Result<(), CodecError> {
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

/// What a connection's tasks share: its socket, its write side and the mailbox its requests
/// report to the reader through (one allocation per connection). Bytes are written at once when
/// nothing is queued; otherwise they queue behind earlier bytes (order is kept) and the caller
/// flushes until the queue is empty. The lock is never held across an `.await`.
pub(super) struct ConnWriter<S> {
    pub(super) io: S,
    /// Requests that ended and streams that parked; its `notify` also wakes the reader when
    /// the connection is closed from outside its task.
    pub(super) mail: Finished<S>,
    pending: Mutex<BytesMut>,
    /// Set when the connection closes (a failed write, its reader's end, an eviction): a
    /// lock-free check for the fan-out's hot path.
    closed: AtomicBool,
    /// Wakes the writers waiting for room ([`ConnWriter::flush`]) when it closes.
    closing: Notify,
    /// Runs the flush of a direct write the socket took only part of.
    runtime: tokio::runtime::Handle,
}

impl<S: FcgiSocket> ConnWriter<S> {
    /// The shared state of a connection on `io`.
    pub(super) fn new(io: S) -> ConnWriter<S> {
        ConnWriter {
            io,
            mail: Finished::default(),
            pending: Mutex::new(BytesMut::new()),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BytesMut> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn broken(&self, e: io::Error) -> BodyClosed {
        log::debug!("write failed, client gone: {e}");
        self.close();
        BodyClosed
    }

    /// Encodes and writes `msg`; returns once its bytes are in the kernel.
    // Not an `async fn`: that would keep `msg` twice in the future (see `run_stream`).
    pub(super) fn send(
        &self,
        msg: Outgoing,
    ) -> impl std::future::Future<Output = Result<(), BodyClosed>> + '_ {
        async move {
            if self.is_closed() {
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
            // Boxed: the slow path (a full socket) is rare, and every open stream's task holds a
            // write future; this keeps that future small (thousands of streams wait at once).
            Box::pin(self.flush()).await
        }
    }

    /// Writes queued bytes until none are left (whoever queued them).
    pub(super) async fn flush(&self) -> Result<(), BodyClosed> {
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
                _ = self.closed() => return Err(BodyClosed),
            }
        }
    }
}

impl<S> ConnWriter<S> {
    /// Whether the connection is closed: nothing more is written on it.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Returns once the connection is closed.
    async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            // Registered before the check: a close between the two still wakes it.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl<S: FcgiSocket> Close for ConnWriter<S> {
    /// Closes the connection: writers waiting for room give up, and the reader is woken
    /// and ends it.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.closing.notify_waiters();
        }
        self.mail.notify.notify_one();
    }
}

/// One request's output on its connection.
pub(super) struct RequestOut<S> {
    id: u16,
    conn: Arc<ConnWriter<S>>,
    /// When the fan-out last wrote to this stream (ms since [`epoch`]; 0 = never).
    direct_at_ms: AtomicU64,
    /// Events and bytes the fan-out wrote to this stream (for the access log).
    direct_events: AtomicU64,
    direct_bytes: AtomicU64,
}

/// The instant direct-write times count from (one for the process: a stream keeps 8 bytes).
fn epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

impl<S: FcgiSocket> RequestOut<S> {
    /// The output of request `id` on `conn`.
    pub(super) fn new(id: u16, conn: Arc<ConnWriter<S>>) -> RequestOut<S> {
        RequestOut {
            id,
            conn,
            direct_at_ms: AtomicU64::new(0),
            direct_events: AtomicU64::new(0),
            direct_bytes: AtomicU64::new(0),
        }
    }

    /// The connection's mailbox.
    pub(super) fn mail(&self) -> &Finished<S> {
        &self.conn.mail
    }

    /// Whether the connection is gone (the peer closed it, a write failed, or its reader
    /// stopped): nothing more can be written on it.
    pub(super) fn connection_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Ends the request: an empty STDOUT, then END_REQUEST.
    pub(super) async fn end(&self, protocol_status: u8) -> Result<(), BodyClosed> {
        self.conn
            .send(Outgoing::End {
                id: self.id,
                protocol_status,
                terminate_stdout: true,
            })
            .await
    }
}

impl<S: FcgiSocket> DirectWriter for RequestOut<S> {
    fn try_write_now(&self, event: &[u8]) -> bool {
        let w = &self.conn;
        if event.is_empty() || event.len() > FCGI_MAX_CONTENT_LEN || w.is_closed() {
            return false;
        }
        let header = record_header(FCGI_STDOUT, self.id, event.len());
        let pad = padding_for(event.len());
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
            // Never 0, which means "never".
            let ms = epoch().elapsed().as_millis() as u64 + 1;
            self.direct_at_ms.store(ms, Ordering::Relaxed);
            self.direct_events.fetch_add(1, Ordering::Relaxed);
            self.direct_bytes
                .fetch_add(event.len() as u64, Ordering::Relaxed);
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

/// One request's body as STDOUT records, written by its task.
pub(super) struct FcgiBody<'a, S>(pub(super) &'a RequestOut<S>);

impl<S: FcgiSocket> BodyWriter for FcgiBody<'_, S> {
    /// The connection keeps a parked stream and resumes it ([`super::task::ParkedRequest`]).
    fn can_park(&self) -> bool {
        true
    }

    fn direct_writes(&self) -> (u64, u64) {
        (
            self.0.direct_events.load(Ordering::Relaxed),
            self.0.direct_bytes.load(Ordering::Relaxed),
        )
    }

    fn written_elsewhere_at(&self) -> Option<tokio::time::Instant> {
        let ms = self.0.direct_at_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| epoch() + std::time::Duration::from_millis(ms - 1))
    }

    // Not an `async fn`: that would keep `chunk` twice in the future (see `run_stream`).
    fn write(
        &mut self,
        chunk: Bytes,
    ) -> impl std::future::Future<Output = Result<(), BodyClosed>> + Send {
        async move {
            if chunk.is_empty() {
                // An empty STDOUT record would end the stream: an empty write is a no-op.
                return Ok(());
            }
            self.0
                .conn
                .send(Outgoing::Stdout {
                    id: self.0.id,
                    data: chunk,
                })
                .await
        }
    }
}
