//! A subscriber's bounded event queue: the fan-out pushes under the hub lock and never waits;
//! the subscriber's task takes (or, while its stream is parked, its connection is woken). Lighter than a channel on purpose: every open stream holds
//! one, most of them never use it (their events go straight to the socket), so it is one small
//! allocation until an event has to wait.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::StoredEvent;

/// The queue both ends hold.
struct Queue {
    state: Mutex<State>,
    capacity: usize,
}

struct State {
    events: VecDeque<Arc<StoredEvent>>,
    /// The pushing side is gone: once the queue is empty, no event will come.
    closed: bool,
    /// Who waits for an event (one taker): woken by a push or the close.
    waker: Option<Waker>,
}

impl State {
    fn wait(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fan-out's end. Dropping it closes the queue.
pub struct QueueTx(Arc<Queue>);

/// The subscriber task's end.
pub struct QueueRx(Arc<Queue>);

/// The queue was full: the event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// A queue holding at most `capacity` events.
pub fn queue(capacity: usize) -> (QueueTx, QueueRx) {
    let shared = Arc::new(Queue {
        state: Mutex::new(State {
            events: VecDeque::new(),
            closed: false,
            waker: None,
        }),
        capacity: capacity.max(1),
    });
    (QueueTx(shared.clone()), QueueRx(shared))
}

impl QueueTx {
    /// Queues `ev` unless the queue is full; never waits.
    pub fn try_send(&self, ev: Arc<StoredEvent>) -> Result<(), Full> {
        let mut st = self.0.lock();
        if st.events.len() >= self.0.capacity {
            return Err(Full);
        }
        st.events.push_back(ev);
        st.wake();
        Ok(())
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.closed = true;
        st.wake();
    }
}

impl QueueRx {
    /// The next event; `None` once the queue is closed and empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Arc<StoredEvent>> {
        poll_fn(|cx| {
            let mut st = self.0.lock();
            if let Some(ev) = st.events.pop_front() {
                if st.events.is_empty() {
                    // Give the buffer back: most streams queue an event only now and then.
                    st.events = VecDeque::new();
                }
                return Poll::Ready(Some(ev));
            }
            if st.closed {
                return Poll::Ready(None);
            }
            st.wait(cx);
            Poll::Pending
        })
        .await
    }

    /// `Ready` when an event waits or the queue is closed; otherwise `cx` is woken then.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.0.lock();
        if !st.events.is_empty() || st.closed {
            return Poll::Ready(());
        }
        st.wait(cx);
        Poll::Pending
    }

    /// Whether the pushing side is gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }

    /// The next event if one waits.
    pub fn try_recv(&mut self) -> Option<Arc<StoredEvent>> {
        self.0.lock().events.pop_front()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.0.lock().events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(id: u64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            id,
            unix_ms: 0,
            topics: vec![],
            private: false,
            public_id: None,
            wire: Bytes::new(),
        })
    }

    #[tokio::test]
    async fn events_come_out_in_order_then_none_after_the_sender_is_gone() {
        let (tx, mut rx) = queue(3);
        for i in 1..=3 {
            tx.try_send(ev(i)).unwrap();
        }
        assert_eq!(tx.try_send(ev(4)), Err(Full), "bounded");
        assert_eq!(rx.recv().await.unwrap().id, 1);
        tx.try_send(ev(4)).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(e) = rx.recv().await {
            got.push(e.id);
        }
        assert_eq!(
            got,
            vec![2, 3, 4],
            "what was queued still comes out after close"
        );
    }

    #[tokio::test]
    async fn a_waiting_taker_is_woken_by_a_push_from_another_task() {
        let (tx, mut rx) = queue(8);
        let taker = tokio::spawn(async move { rx.recv().await.map(|e| e.id) });
        tokio::task::yield_now().await;
        tx.try_send(ev(7)).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), taker)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(7));
    }
}
