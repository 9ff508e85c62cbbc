//! A source that ends at a deadline: the stream of a subscriber whose token expires is ended
//! then, with a `retry:` hint, so the browser comes back (with a fresh cookie or token) and
//! resumes with `Last-Event-ID`.

use tokio::time::{sleep_until, Instant};

use super::{DirectWriter, NextEvent, Source};
use crate::sse::EncodedEvent;

/// `inner` until `deadline`, then a `retry:` hint, then the end.
pub struct Expiring {
    inner: Box<dyn Source>,
    deadline: Instant,
    retry_ms: u64,
    expired: bool,
}

impl Expiring {
    /// Wraps `inner`; at `deadline` the stream gets `retry: retry_ms` and ends.
    pub fn new(inner: Box<dyn Source>, deadline: Instant, retry_ms: u64) -> Expiring {
        Expiring {
            inner,
            deadline,
            retry_ms,
            expired: false,
        }
    }
}

impl Source for Expiring {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            if self.expired {
                return None;
            }
            tokio::select! {
                ev = self.inner.next() => ev,
                _ = sleep_until(self.deadline) => {
                    self.expired = true;
                    Some(EncodedEvent::retry_hint(self.retry_ms))
                }
            }
        })
    }

    fn attach_direct(&mut self, writer: std::sync::Arc<dyn DirectWriter>) {
        self.inner.attach_direct(writer);
    }

    fn park(&mut self) -> bool {
        !self.expired && Instant::now() < self.deadline && self.inner.park()
    }

    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.inner.poll_wake(cx)
    }

    fn wake_at(&self) -> Option<Instant> {
        Some(
            self.inner
                .wake_at()
                .map_or(self.deadline, |t| t.min(self.deadline)),
        )
    }

    // No `try_next`: every event goes through `next`, which checks the deadline first.
    fn backlog(&self) -> bool {
        !self.expired && self.inner.backlog()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ClockSource;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn ends_with_a_retry_hint_at_the_deadline() {
        let clock = Box::new(ClockSource::new(Duration::from_secs(1)));
        let mut s = Expiring::new(clock, Instant::now() + Duration::from_millis(2500), 1500);
        let mut events = 0;
        let last = loop {
            let ev = s.next().await.expect("not ended before the hint");
            if ev.as_bytes().starts_with(b"retry:") {
                break ev;
            }
            events += 1;
        };
        assert_eq!(last.as_bytes(), b"retry: 1500\n\n");
        assert!((2..=3).contains(&events), "{events}");
        assert!(s.next().await.is_none());
    }
}
