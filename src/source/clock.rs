//! The `clock` source: the server time every interval, with the unix time as `id:`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{interval, Interval, MissedTickBehavior};

use super::{NextEvent, Source};
use crate::sse::Event;

/// Formats a unix time (seconds) as RFC 3339 UTC, e.g. `2026-11-21T23:45:17Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86400) as i64;
    let secs = unix_secs % 86400;
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Seconds since the unix epoch, now.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Sends `data: <RFC 3339 time>` with `id: <unix seconds>` every tick, the first one at once.
pub struct ClockSource {
    tick: Interval,
    ticked: bool,
}

impl ClockSource {
    /// A clock that ticks every `every`.
    pub fn new(every: Duration) -> Self {
        let mut tick = interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ClockSource {
            tick,
            ticked: false,
        }
    }
}

impl Source for ClockSource {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            self.tick.tick().await;
            self.ticked = true;
            let now = unix_now().as_secs();
            Event::new()
                .id(now.to_string())
                .data(rfc3339(now))
                .encode()
                .ok()
        })
    }

    /// The time is due at once: a stream that ends at once (a CGI poll) still tells it.
    fn backlog(&self) -> bool {
        !self.ticked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_391_117), "2026-11-22T23:45:17Z");
    }

    #[tokio::test(start_paused = true)]
    async fn ticks() {
        let mut c = ClockSource::new(Duration::from_secs(1));
        let start = tokio::time::Instant::now();
        let a = c.next().await.unwrap();
        let _ = c.next().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(a.as_bytes().starts_with(b"id: "));
        assert!(std::str::from_utf8(a.as_bytes())
            .unwrap()
            .contains("\ndata: 20"));
    }
}
