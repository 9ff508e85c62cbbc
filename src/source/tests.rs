//! Unit tests of run_stream: coalescing, shutdown spreads, heartbeats, aborts, the lifetime
//! (and the backlog sent when it ends), failed writes.

use super::*;
use crate::sse::Event;
use tokio::sync::mpsc;

struct ChanWriter(mpsc::UnboundedSender<Bytes>);

impl BodyWriter for ChanWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BodyClosed> {
        self.0.send(chunk).map_err(|_| BodyClosed)
    }
}

struct Every(tokio::time::Interval, u32);

impl Source for Every {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            self.0.tick().await;
            self.1 += 1;
            Event::new().id(self.1.to_string()).data("x").encode().ok()
        })
    }
}

/// Events that are all ready at once: `next` gives the first, `try_next` the others.
struct Burst(std::collections::VecDeque<u32>);

impl Burst {
    fn take(&mut self) -> Option<EncodedEvent> {
        let id = self.0.pop_front()?;
        Event::new().id(id.to_string()).data("x").encode().ok()
    }
}

impl Source for Burst {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            match self.take() {
                Some(ev) => Some(ev),
                None => std::future::pending().await,
            }
        })
    }
    fn try_next(&mut self) -> Option<EncodedEvent> {
        self.take()
    }
    fn backlog(&self) -> bool {
        !self.0.is_empty()
    }
}

#[tokio::test(start_paused = true)]
async fn events_ready_together_are_written_together_in_order() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let abort = CancellationToken::new();
    let mut src = Burst((1..=2000).collect());
    let a2 = abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a2.cancel();
    });
    let end = run_stream(
        &mut src,
        &mut ChanWriter(tx),
        &timing(60_000),
        &abort,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(end, StreamEnd::ClientGone);
    let mut writes = Vec::new();
    while let Ok(b) = rx.try_recv() {
        writes.push(b);
    }
    // The retry hint, then 2,000 events (about 13 bytes each) in writes of at most 64 KiB.
    let events: Vec<u32> = writes[1..]
        .iter()
        .flat_map(|w| {
            std::str::from_utf8(w)
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix("id: ").map(|i| i.parse().unwrap()))
                .collect::<Vec<u32>>()
        })
        .collect();
    assert_eq!(
        events,
        (1..=2000).collect::<Vec<_>>(),
        "every event, in order"
    );
    assert!(
        writes.len() <= 3,
        "{} writes for 2,000 ready events",
        writes.len()
    );
    assert!(writes.iter().all(|w| w.len() <= COALESCE_BYTES + 64));
}

/// Runs `src` with `t` until the stream ends by itself (no abort, no shutdown): how it ended
/// and every byte written.
async fn run_to_end(src: &mut dyn Source, t: &StreamTiming) -> (StreamEnd, String) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let none = CancellationToken::new();
    let end = run_stream(src, &mut ChanWriter(tx), t, &none, &none).await;
    let mut all = Vec::new();
    while let Ok(b) = rx.try_recv() {
        all.extend_from_slice(&b);
    }
    (end, String::from_utf8(all).unwrap())
}

fn timing(heartbeat_ms: u64) -> StreamTiming {
    StreamTiming {
        heartbeat: Duration::from_millis(heartbeat_ms),
        retry: Duration::from_millis(1500),
        max_lifetime: None,
        drain: Duration::ZERO,
        end_jitter: Duration::ZERO,
    }
}

#[test]
fn shutdown_hints_are_spread_over_the_drain_period() {
    let values: Vec<u128> = (0..200)
        .map(|_| (Duration::from_millis(1500) + spread(Duration::from_secs(10))).as_millis())
        .collect();
    assert!(
        values.iter().all(|v| (1500..11500).contains(v)),
        "{values:?}"
    );
    let early = values.iter().filter(|&&v| v < 6500).count();
    assert!(
        (50..150).contains(&early),
        "not spread: {early} of 200 in the first half"
    );
    assert_eq!(spread(Duration::ZERO), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_when_idle_and_ends_on_shutdown() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut src = Every(
        tokio::time::interval_at(
            Instant::now() + Duration::from_secs(100),
            Duration::from_secs(100),
        ),
        0,
    );
    let abort = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let s2 = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        s2.cancel();
    });
    let end = run_stream(
        &mut src,
        &mut ChanWriter(tx),
        &timing(1000),
        &abort,
        &shutdown,
    )
    .await;
    assert_eq!(end, StreamEnd::Shutdown);
    let mut got = Vec::new();
    while let Ok(b) = rx.try_recv() {
        got.push(String::from_utf8(b.to_vec()).unwrap());
    }
    assert_eq!(
        got,
        vec![
            "retry: 1500\n\n",
            ":\n\n",
            ":\n\n",
            ":\n\n",
            "retry: 1500\n\n"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn abort_stops_an_idle_stream_and_writes_nothing_more() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut src = Every(tokio::time::interval(Duration::from_secs(1000)), 0);
    let abort = CancellationToken::new();
    let a2 = abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        a2.cancel();
    });
    let end = run_stream(
        &mut src,
        &mut ChanWriter(tx),
        &timing(60_000),
        &abort,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(end, StreamEnd::ClientGone);
    rx.recv().await.unwrap(); // retry hint
    rx.recv().await.unwrap(); // first tick fires at once
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn lifetime_ends_with_a_retry_hint() {
    let mut src = Every(tokio::time::interval(Duration::from_secs(1)), 0);
    let mut t = timing(60_000);
    t.max_lifetime = Some(Duration::from_millis(2500));
    let (end, text) = run_to_end(&mut src, &t).await;
    assert_eq!(end, StreamEnd::Lifetime);
    assert_eq!(
        text,
        "retry: 1500\n\nid: 1\ndata: x\n\nid: 2\ndata: x\n\nid: 3\ndata: x\n\nretry: 1500\n\n"
    );
}

#[tokio::test]
async fn a_failed_write_is_client_gone() {
    let (tx, rx) = mpsc::unbounded_channel();
    drop(rx);
    let mut src = Every(tokio::time::interval(Duration::from_secs(1)), 0);
    let end = run_stream(
        &mut src,
        &mut ChanWriter(tx),
        &timing(1000),
        &CancellationToken::new(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(end, StreamEnd::ClientGone);
}

#[tokio::test(start_paused = true)]
async fn a_lifetime_of_zero_sends_the_backlog_then_a_jittered_retry() {
    let mut hints = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let mut src = Burst((1..=300).collect());
        let mut t = timing(60_000);
        t.max_lifetime = Some(Duration::ZERO);
        t.end_jitter = Duration::from_millis(375);
        let (end, text) = run_to_end(&mut src, &t).await;
        assert_eq!(end, StreamEnd::Lifetime);
        let ids: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|id| id.parse().unwrap())
            .collect();
        assert_eq!(ids, (1..=300).collect::<Vec<_>>());
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        let ms: u64 = last.strip_prefix("retry: ").unwrap().parse().unwrap();
        assert!((1500..1875).contains(&ms), "{ms}");
        hints.insert(ms);
    }
    assert!(hints.len() > 1, "the hint is jittered: {hints:?}");
}
