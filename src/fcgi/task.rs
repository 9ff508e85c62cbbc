//! One request's handler task: route the request, write the response through the one
//! [`respond`] road, end the request, and tell the connection (through [`Finished`]) that its id
//! is free again.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::writer::{ConnWriter, FcgiBody, FcgiSocket, RequestOut};
use super::FCGI_REQUEST_COMPLETE;
use crate::app::App;
use crate::request::Request;
use crate::response::{respond, FullResponse, Response, Sent};

/// The ids of requests that ended, for the connection's reader to retire: a mailbox the
/// connection owns (lighter than a channel per connection).
#[derive(Default)]
pub(super) struct Finished {
    ids: Mutex<Vec<u16>>,
    /// Wakes the reader when `ids` gains one.
    pub(super) notify: Notify,
}

impl Finished {
    /// Reports request `id` as ended.
    pub(super) fn push(&self, id: u16) {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        self.notify.notify_one();
    }

    /// Takes the ids of requests that ended.
    pub(super) fn take(&self) -> Vec<u16> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One request's handler: route it, write the response, end it.
pub(super) struct RequestTask<S> {
    pub(super) app: Arc<App>,
    pub(super) id: u16,
    pub(super) conn_id: u64,
    pub(super) writer: Arc<ConnWriter<S>>,
    pub(super) finished: Arc<Finished>,
    pub(super) abort: CancellationToken,
    pub(super) shutdown: CancellationToken,
}

impl<S: FcgiSocket> RequestTask<S> {
    /// `input` is boxed: an async fn keeps its arguments for its whole life, and an open
    /// stream's task should not keep room for the request it no longer needs.
    ///
    /// The task's fields are taken apart before its future: the future keeps only those it
    /// uses (the writer lives on in `out`). tokio allocates a task in steps of 128 bytes, and
    /// these 16 bytes bring an open stream's request task from 1,024 bytes to 896.
    pub(super) fn run(
        self,
        input: Box<Result<Request, FullResponse>>,
    ) -> impl std::future::Future<Output = ()> {
        let RequestTask {
            app,
            id,
            conn_id,
            writer,
            finished,
            abort,
            shutdown,
        } = self;
        let out = Arc::new(RequestOut::new(id, writer));
        async move {
            let mut body = FcgiBody(&out);
            let (response, head_only) = match *input {
                Ok(req) => {
                    // Boxed: routing, authorization and publishing need a large future for a
                    // moment; an open stream's task must not keep room for it (thousands wait).
                    let response = Box::pin(app.handle(&req)).await;
                    // Logged now: nothing of the request is kept across the stream (thousands wait).
                    match &response {
                        Response::Stream(s) => log::debug!(
                            "conn={} id={} peer={} route={}: stream open",
                            conn_id,
                            id,
                            req.peer,
                            s.route
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
            let sent = respond(
                response,
                head_only,
                &mut body,
                Some(out.clone()),
                &abort,
                &shutdown,
            )
            .await;
            if let Sent::Stream(end) = sent {
                log::debug!("conn={} id={}: stream ended ({end:?})", conn_id, id);
            }
            // Retire the id before END_REQUEST can reach the peer: a client that reuses the id as
            // soon as it reads END_REQUEST must find it free.
            finished.push(id);
            if !out.connection_closed() {
                let _ = out.end(FCGI_REQUEST_COMPLETE).await;
            }
        }
    }
}
