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
use crate::source::DirectWriter;

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
    pub(super) conn_cancel: CancellationToken,
    pub(super) shutdown: CancellationToken,
}

impl<S: FcgiSocket> RequestTask<S> {
    pub(super) async fn run(self, input: Result<Request, FullResponse>) {
        let out = Arc::new(RequestOut::new(self.id, self.writer.clone()));
        let mut body = FcgiBody(out.clone());
        let (response, head_only, peer) = match input {
            Ok(req) => (self.app.handle(&req).await, req.is_head(), req.peer.clone()),
            Err(refusal) => (Response::Full(refusal), false, "-".to_string()),
        };
        let route = match &response {
            Response::Stream(s) => s.route.clone(),
            Response::Full(_) => String::new(),
        };
        let direct: Arc<dyn DirectWriter> = out.clone();
        let sent = respond(
            response,
            head_only,
            &mut body,
            Some(direct),
            &self.abort,
            &self.shutdown,
        )
        .await;
        match sent {
            Sent::Full(status) => {
                log::debug!("conn={} id={} peer={peer}: {status}", self.conn_id, self.id)
            }
            Sent::Stream(end) => log::debug!(
                "conn={} id={} peer={peer} route={route}: stream ended ({end:?})",
                self.conn_id,
                self.id
            ),
        }
        // Retire the id before END_REQUEST can reach the peer: a client that reuses the id as
        // soon as it reads END_REQUEST must find it free.
        self.finished.push(self.id);
        if !self.conn_cancel.is_cancelled() {
            let _ = out.end(FCGI_REQUEST_COMPLETE).await;
        }
    }
}
