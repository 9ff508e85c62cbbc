//! One subscriber of a hub and the rule that keeps its events in order: an event is written
//! straight to the client's socket (from the fan-out, no task wake-up) only while nothing waits
//! in the subscriber's queue; once one event had to be queued, every later one is queued too,
//! until the subscriber's task has written the queue out and says so ([`Subscriber::drained`]).
//! Both calls happen under the hub lock, so no event can overtake another.

use std::sync::Arc;

use super::queue::QueueTx;

use super::StoredEvent;
use crate::source::DirectWriter;

/// What became of an event offered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Written to the client's socket now.
    Written,
    /// Queued for the subscriber's task.
    Queued,
    /// The queue is full: the subscriber fell too far behind and must be cut off.
    Lagging,
    /// At or below the id it resumed after: not for it.
    Skipped,
}

/// A subscription: what it wants, its queue, and (when the transport offers one) a direct
/// writer.
pub struct Subscriber {
    /// Topics asked for and authorized.
    pub interest: super::Interest,
    tx: QueueTx,
    direct: Option<Arc<dyn DirectWriter>>,
    /// Direct writes keep order only while nothing waits in `tx`.
    direct_ok: bool,
    /// Events with ids up to this one are not sent (it resumed after an id this instance had
    /// not seen yet).
    pub min_id: u64,
}

impl Subscriber {
    /// A subscriber whose task reads the other end of `tx`.
    pub fn new(interest: super::Interest, tx: QueueTx) -> Subscriber {
        Subscriber {
            interest,
            tx,
            direct: None,
            direct_ok: false,
            min_id: 0,
        }
    }

    /// Lets the fan-out write straight to the client (used once [`Subscriber::drained`] says
    /// the queue is empty).
    pub fn attach(&mut self, writer: Arc<dyn DirectWriter>) {
        self.direct = Some(writer);
    }

    /// The subscriber's task has written out everything it was handed; `queue_empty` says
    /// whether anything new waits in its queue. Only then may events go direct again.
    pub fn drained(&mut self, queue_empty: bool) {
        if queue_empty && self.direct.is_some() {
            self.direct_ok = true;
        }
    }

    /// Hands `ev` on, in order: straight to the socket when nothing is queued and the socket
    /// takes it at once, else to the queue.
    pub fn offer(&mut self, ev: &Arc<StoredEvent>) -> Offer {
        if ev.id <= self.min_id {
            return Offer::Skipped;
        }
        if self.direct_ok {
            if let Some(d) = &self.direct {
                if d.try_write_now(&ev.wire) {
                    return Offer::Written;
                }
            }
            // The socket is busy: this and later events go through the queue, in order.
            self.direct_ok = false;
        }
        match self.tx.try_send(ev.clone()) {
            Ok(()) => Offer::Queued,
            Err(_) => Offer::Lagging,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A socket that refuses every `n`-th write (it is "full"), recording what it took.
    struct Flaky {
        n: usize,
        calls: AtomicUsize,
        sink: Arc<Mutex<Vec<u64>>>,
    }

    impl DirectWriter for Flaky {
        fn try_write_now(&self, event: &[u8]) -> bool {
            if self.calls.fetch_add(1, Ordering::Relaxed) % self.n == self.n - 1 {
                return false;
            }
            let id = std::str::from_utf8(event).unwrap().parse().unwrap();
            self.sink.lock().unwrap().push(id);
            true
        }
    }

    fn ev(id: u64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            id,
            unix_ms: 0,
            topics: vec![],
            private: false,
            public_id: None,
            wire: Bytes::from(id.to_string()),
        })
    }

    #[test]
    fn events_reach_the_client_in_order_whichever_road_each_takes() {
        for n in [2, 3, 7] {
            for drain_every in [1, 2, 5] {
                let sink = Arc::new(Mutex::new(Vec::new()));
                let (tx, mut rx) = super::super::queue::queue(64);
                let mut sub = Subscriber::new(Default::default(), tx);
                sub.attach(Arc::new(Flaky {
                    n,
                    calls: AtomicUsize::new(0),
                    sink: sink.clone(),
                }));
                sub.drained(true);
                let mut roads = [0, 0];
                for id in 1..=200u64 {
                    match sub.offer(&ev(id)) {
                        Offer::Written => roads[0] += 1,
                        Offer::Queued => roads[1] += 1,
                        Offer::Lagging => panic!("lagging at {id}"),
                        Offer::Skipped => panic!("skipped {id}"),
                    }
                    // The subscriber's task runs now and then: writes its queue, then says so.
                    if id % drain_every == 0 {
                        while let Some(e) = rx.try_recv() {
                            sink.lock().unwrap().push(e.id);
                        }
                        sub.drained(rx.is_empty());
                    }
                }
                while let Some(e) = rx.try_recv() {
                    sink.lock().unwrap().push(e.id);
                }
                let got = sink.lock().unwrap().clone();
                assert_eq!(
                    got,
                    (1..=200).collect::<Vec<_>>(),
                    "n={n} drain={drain_every}"
                );
                assert!(roads[0] > 0 && roads[1] > 0, "n={n}: {roads:?}");
            }
        }
    }

    #[test]
    fn without_a_direct_writer_everything_queues_and_a_full_queue_lags() {
        let (tx, mut rx) = super::super::queue::queue(3);
        let mut sub = Subscriber::new(Default::default(), tx);
        sub.drained(true);
        let offers: Vec<Offer> = (1..=4).map(|i| sub.offer(&ev(i))).collect();
        assert_eq!(
            offers,
            vec![Offer::Queued, Offer::Queued, Offer::Queued, Offer::Lagging]
        );
        assert_eq!(rx.try_recv().unwrap().id, 1);
    }

    #[test]
    fn events_up_to_the_resume_id_are_skipped() {
        let (tx, mut rx) = super::super::queue::queue(8);
        let mut sub = Subscriber::new(Default::default(), tx);
        sub.min_id = 5;
        assert_eq!(sub.offer(&ev(4)), Offer::Skipped);
        assert_eq!(sub.offer(&ev(5)), Offer::Skipped);
        assert_eq!(sub.offer(&ev(6)), Offer::Queued);
        assert_eq!(rx.try_recv().unwrap().id, 6);
        assert!(rx.try_recv().is_none());
    }
}
