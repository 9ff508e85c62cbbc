//! Streams parked on their connection: an open stream with nothing to write gives up its task
//! ([`crate::response::Sent::Parked`]) and its connection keeps it in the request table. The
//! connection's one task then waits for all of them: an event queued for one (its socket was
//! full), a heartbeat or its end coming due, its abort, the connection's close or the server's
//! shutdown gives it a task again. An idle stream costs its connection, not a task of its own.

use super::{Conn, Flow, Phase, Slot};
use crate::fcgi::slots::Slots;
use crate::fcgi::task::ParkedRequest;
use crate::fcgi::writer::FcgiSocket;

impl<S: FcgiSocket> Conn<S> {
    /// What the requests' tasks reported: ids that ended, streams that parked.
    pub(super) fn on_mail(&mut self) -> Flow {
        let (ids, parked) = self.writer.mail.take();
        for p in parked {
            self.keep_parked(p);
        }
        let mut flow = Flow::Continue;
        for id in ids {
            flow = self.finished(id);
        }
        flow
    }

    /// Keeps a stream that parked, unless it must go on at once (its client left or the
    /// server stops while it was parking).
    fn keep_parked(&mut self, p: ParkedRequest<S>) {
        let id = p.handle.id;
        let at_once = p.handle.abort.is_cancelled() || self.ctx.shutdown.is_cancelled();
        match self.slots.get_mut(&id) {
            Some(slot) if !at_once => slot.phase = Phase::Parked(p),
            _ => {
                self.ctx.tracker.spawn(p.resumed());
            }
        }
    }

    /// Gives parked stream `id` its task again.
    pub(super) fn resume(&mut self, id: u16) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Phase::Parked(p) = &slot.phase else {
            return;
        };
        let token = p.handle.abort.clone();
        let Phase::Parked(p) = std::mem::replace(&mut slot.phase, Phase::Running(token)) else {
            unreachable!("matched above")
        };
        self.ctx.tracker.spawn(p.resumed());
    }

    /// Resumes every parked stream (shutdown, the connection's end).
    pub(super) fn resume_all(&mut self) {
        let parked: Vec<u16> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Parked(_)))
            .map(|(&id, _)| id)
            .collect();
        for id in parked {
            self.resume(id);
        }
    }
}

/// The id of a parked stream whose source has something to say; pending (with every parked
/// source told to wake the connection) while none has.
pub(super) fn poll_parked<S: FcgiSocket>(
    slots: &mut Slots<Slot<S>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<u16> {
    for (id, slot) in slots.iter_mut() {
        if let Phase::Parked(p) = &mut slot.phase {
            if p.poll_wake(cx).is_ready() {
                return std::task::Poll::Ready(*id);
            }
        }
    }
    std::task::Poll::Pending
}
