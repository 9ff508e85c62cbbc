//! One request's handler task: route the request, write the response through the one
//! [`respond`] road, end the request, and tell the connection (through [`Finished`]) that its id
//! is free again. A stream with nothing to write gives up its task: it is handed to the
//! connection as a [`ParkedRequest`], which the connection resumes (a task again) when an event
//! waits, a heartbeat or its end is due, the client leaves or the server stops.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::writer::{ConnWriter, FcgiBody, FcgiSocket, RequestOut};
use super::FCGI_REQUEST_COMPLETE;
use crate::app::App;
use crate::request::Request;
use crate::response::{respond, resume, FullResponse, ParkedStream, Response, Sent};
use crate::stats::{ParkedGuard, Stats};

/// What requests tell their connection's reader: ids that ended, streams that parked. A
/// mailbox the connection owns (lighter than a channel per connection).
pub(super) struct Finished<S> {
    mail: Mutex<Mail<S>>,
    /// Wakes the reader when the mailbox gains something.
    pub(super) notify: Notify,
}

struct Mail<S> {
    ids: Vec<u16>,
    parked: Vec<ParkedRequest<S>>,
    /// The connection's reader is gone: no stream may park any more.
    closed: bool,
}

impl<S> Default for Finished<S> {
    fn default() -> Self {
        Finished {
            mail: Mutex::new(Mail {
                ids: Vec::new(),
                parked: Vec::new(),
                closed: false,
            }),
            notify: Notify::new(),
        }
    }
}

impl<S> Finished<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mail<S>> {
        self.mail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports request `id` as ended.
    pub(super) fn push(&self, id: u16) {
        self.lock().ids.push(id);
        self.notify.notify_one();
    }

    /// Hands a parked stream to the connection; given back when the connection is closing.
    fn park(&self, p: ParkedRequest<S>) -> Option<ParkedRequest<S>> {
        {
            let mut mail = self.lock();
            if mail.closed {
                return Some(p);
            }
            mail.parked.push(p);
        }
        self.notify.notify_one();
        None
    }

    /// Takes the ids of requests that ended and the streams that parked.
    pub(super) fn take(&self) -> (Vec<u16>, Vec<ParkedRequest<S>>) {
        let mut mail = self.lock();
        (
            std::mem::take(&mut mail.ids),
            std::mem::take(&mut mail.parked),
        )
    }

    /// The connection is closing: no stream parks any more; those already handed over are
    /// returned (to be resumed, so they end).
    pub(super) fn close(&self) -> Vec<ParkedRequest<S>> {
        let mut mail = self.lock();
        mail.closed = true;
        std::mem::take(&mut mail.parked)
    }
}

/// One request's handler: route it, write the response, end it.
pub(super) struct RequestTask<S> {
    pub(super) app: Arc<App>,
    pub(super) id: u16,
    pub(super) conn_id: u64,
    pub(super) writer: Arc<ConnWriter<S>>,
    pub(super) abort: CancellationToken,
    pub(super) shutdown: CancellationToken,
}

/// What a request keeps once its response is under way: enough to write, park, resume and end.
pub(super) struct Handle<S> {
    pub(super) id: u16,
    conn_id: u64,
    out: Arc<RequestOut<S>>,
    /// Fires when the client leaves (the connection's reader cancels it).
    pub(super) abort: CancellationToken,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
}

/// An open stream without a task, kept by its connection until [`ParkedRequest::resumed`].
pub(super) struct ParkedRequest<S> {
    pub(super) handle: Handle<S>,
    /// In a mutex only to be `Sync` (a source need not be): the connection holds it `&mut`.
    stream: Mutex<ParkedStream>,
    /// Counts it in `parked_streams` while it is parked.
    counted: ParkedGuard,
}

impl<S: FcgiSocket> ParkedRequest<S> {
    /// When it must run again even if nothing wakes it (a heartbeat, its end).
    pub(super) fn due(&self) -> tokio::time::Instant {
        let stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        stream.due(crate::source::BodyWriter::written_elsewhere_at(&FcgiBody(
            &self.handle.out,
        )))
    }

    /// `Ready` when its source has something to say; otherwise `cx` is woken then.
    pub(super) fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let stream = self.stream.get_mut().unwrap_or_else(|p| p.into_inner());
        stream.poll_wake(cx)
    }

    /// The task that goes on with it.
    pub(super) fn resumed(self) -> impl std::future::Future<Output = ()> {
        let ParkedRequest {
            handle,
            stream,
            counted,
        } = self;
        drop(counted);
        let stream = stream.into_inner().unwrap_or_else(|p| p.into_inner());
        async move {
            let sent = {
                let mut body = FcgiBody(&handle.out);
                resume(stream, &mut body, &handle.abort, &handle.shutdown).await
            };
            handle.settle(sent).await
        }
    }
}

impl<S: FcgiSocket> Handle<S> {
    /// After the response (or a stretch of a stream): hand a parked stream to the connection,
    /// or end the request. A stream the closing connection will not take goes on here.
    fn settle(mut self, mut sent: Sent) -> impl std::future::Future<Output = ()> {
        async move {
            loop {
                match sent {
                    Sent::Parked(stream) => {
                        let out = self.out.clone();
                        let parked = ParkedRequest {
                            counted: ParkedGuard::new(&self.stats),
                            handle: self,
                            stream: Mutex::new(stream),
                        };
                        let back = match out.mail().park(parked) {
                            None => return,
                            Some(back) => back,
                        };
                        let ParkedRequest { handle, stream, .. } = back;
                        let stream = stream.into_inner().unwrap_or_else(|p| p.into_inner());
                        self = handle;
                        let mut body = FcgiBody(&self.out);
                        sent =
                            Box::pin(resume(stream, &mut body, &self.abort, &self.shutdown)).await;
                    }
                    Sent::Stream(end) => {
                        log::debug!(
                            "conn={} id={}: stream ended ({end:?})",
                            self.conn_id,
                            self.id
                        );
                        break;
                    }
                    Sent::Full(_) => break,
                }
            }
            // Retire the id before END_REQUEST can reach the peer: a client that reuses the id as
            // soon as it reads END_REQUEST must find it free.
            self.out.mail().push(self.id);
            if !self.out.connection_closed() {
                let _ = self.out.end(FCGI_REQUEST_COMPLETE).await;
            }
        }
    }
}

impl<S: FcgiSocket> RequestTask<S> {
    /// `input` is boxed: an async fn keeps its arguments for its whole life, and an open
    /// stream's task should not keep room for the request it no longer needs.
    ///
    /// The task's fields are taken apart before its future: the future keeps only those it
    /// uses (the writer lives on in `out`).
    pub(super) fn run(
        self,
        input: Box<Result<Request, FullResponse>>,
    ) -> impl std::future::Future<Output = ()> {
        let RequestTask {
            app,
            id,
            conn_id,
            writer,
            abort,
            shutdown,
        } = self;
        let handle = Handle {
            id,
            conn_id,
            out: Arc::new(RequestOut::new(id, writer)),
            abort,
            shutdown,
            stats: app.stats().clone(),
        };
        async move {
            let sent = {
                let out = &handle.out;
                let mut body = FcgiBody(out);
                let (response, head_only) = match *input {
                    Ok(req) => {
                        // Boxed: routing, authorization and publishing need a large future for a
                        // moment; an open stream's task must not keep room for it (thousands wait).
                        let response = Box::pin(app.handle(&req)).await;
                        // Logged now: nothing of the request is kept across the stream (thousands wait).
                        match &response {
                            Response::Stream(_) => log::debug!(
                                "conn={} id={} peer={}: stream open",
                                conn_id,
                                id,
                                req.peer
                            ),
                            Response::Full(f) => log::debug!(
                                "conn={} id={} peer={}: {}",
                                conn_id,
                                id,
                                req.peer,
                                f.status
                            ),
                        }
                        (response, req.is_head())
                    }
                    Err(refusal) => (Response::Full(refusal), false),
                };
                respond(
                    response,
                    head_only,
                    &mut body,
                    Some(out.clone()),
                    &handle.abort,
                    &handle.shutdown,
                )
                .await
            };
            handle.settle(sent).await
        }
    }
}
