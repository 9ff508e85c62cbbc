//! The `ping` source: MDN's EventSource example — `event: ping` with a JSON time every interval,
//! plus plain messages at random intervals.

use std::time::Duration;

use tokio::time::{interval, sleep_until, Instant, Interval, MissedTickBehavior};

use super::clock::{rfc3339, unix_now};
use super::{NextEvent, Source};
use crate::sse::Event;

/// MDN's demo stream: pings on a fixed interval, messages at random multiples of it.
pub struct PingSource {
    tick: Interval,
    every: Duration,
    next_message: Instant,
    rng: u64,
    counter: u64,
}

impl PingSource {
    /// Pings every `every`; a message comes after 1 to 10 pings' worth of time.
    pub fn new(every: Duration) -> Self {
        let mut tick = interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let seed = crate::random::u64() | 1;
        let mut s = PingSource {
            tick,
            every,
            next_message: Instant::now(),
            rng: seed,
            counter: 0,
        };
        s.next_message = Instant::now() + s.random_gap();
        s
    }

    /// xorshift64: plenty for demo jitter.
    fn random_gap(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.every * (1 + (self.rng % 10) as u32)
    }
}

impl Source for PingSource {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            let now = unix_now();
            tokio::select! {
                _ = self.tick.tick() => {
                    Event::new()
                        .event("ping")
                        .data(format!("{{\"time\": \"{}\"}}", rfc3339(now.as_secs())))
                        .encode()
                        .ok()
                }
                _ = sleep_until(self.next_message) => {
                    self.next_message = Instant::now() + self.random_gap();
                    self.counter += 1;
                    Event::new()
                        .id(self.counter.to_string())
                        .data(format!("This is a message at time {}", rfc3339(now.as_secs())))
                        .encode()
                        .ok()
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_and_messages() {
        let mut p = PingSource::new(Duration::from_secs(1));
        let (mut pings, mut messages) = (0, 0);
        for _ in 0..40 {
            let ev = p.next().await.unwrap();
            let text = std::str::from_utf8(ev.as_bytes()).unwrap().to_string();
            if text.starts_with("event: ping\ndata: {\"time\": \"") {
                pings += 1;
            } else {
                assert!(text.contains("data: This is a message at time "), "{text}");
                messages += 1;
            }
        }
        assert!(
            pings >= 20 && messages >= 2,
            "{pings} pings, {messages} messages"
        );
    }
}
