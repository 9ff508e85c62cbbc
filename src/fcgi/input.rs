//! A request's input on its connection: PARAMS gathered (within `max_params_bytes`, decoded
//! within `max_params_pairs`), the body gathered to its CONTENT_LENGTH (within
//! `max_body_bytes`), every buffered byte charged against `max_input_bytes`; then its handler
//! task is started with the request, or with the refusal it gets.

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use super::{Conn, Flow, Phase};
use crate::fcgi::codec::Record;
use crate::fcgi::params::{decode_params, ParamsLimits};
use crate::fcgi::task::RequestTask;
use crate::fcgi::writer::FcgiSocket;
use crate::request::{PathFrom, Request};
use crate::response::FullResponse;

/// A request's decoded params and body, or the answer it gets instead.
type Input = Result<(Vec<(Bytes, Bytes)>, Bytes), FullResponse>;

impl<S: FcgiSocket> Conn<S> {
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

    /// A PARAMS record: gathered until the empty one, then decoded.
    pub(super) async fn on_params(&mut self, r: Record) -> Flow {
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
        let params = buf.take();
        self.end_of_params(r.request_id, params, (max_bytes, max_pairs, max_body))
    }

    /// The whole PARAMS of request `id` (`None`: over `max_params_bytes`): decoded, then the
    /// request starts, or waits for its body.
    fn end_of_params(
        &mut self,
        id: u16,
        params: Option<BytesMut>,
        (max_bytes, max_pairs, max_body): (usize, usize, usize),
    ) -> Flow {
        let Some(params) = params else {
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
                let Some(slot) = self.slots.get_mut(&id) else {
                    return Flow::Continue;
                };
                slot.phase = Phase::Body {
                    vars,
                    body: BytesMut::new(),
                    expected: n,
                };
                Flow::Continue
            }
        }
    }

    /// A STDIN record: the body gathered until CONTENT_LENGTH (or the empty record).
    pub(super) async fn on_stdin(&mut self, r: Record) -> Flow {
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
    pub(super) fn dispatch(&mut self, id: u16, input: Input) -> Flow {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Flow::Continue;
        };
        // Its own token, not a child of the connection's (a child costs the connection a list
        // of its children): the connection cancels it when it closes (`abort_all`).
        let abort = CancellationToken::new();
        slot.phase = Phase::Running(abort.clone());
        // The input is decoded into the request now: its buffers no longer count.
        slot.charge = self.ctx.app.input_charge();
        let task = RequestTask {
            app: self.ctx.app.clone(),
            id,
            conn_id: self.ctx.conn_id,
            writer: self.writer.clone(),
            abort,
            shutdown: self.ctx.shutdown.clone(),
        };
        let input = input.map(|(vars, body)| Request::from_vars(vars, body, PathFrom::RequestUri));
        self.ctx.tracker.spawn(task.run(Box::new(input)));
        Flow::Continue
    }
}
