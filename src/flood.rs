//! Log lines that come in floods — refused connections, a full server — summarised: the first
//! line of a burst is logged whole, the rest of that second are counted, and one line says how
//! many more there were (with the last of them), so a burst of 300 refusals is two lines, not
//! 300.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long one logged line stands for the ones like it.
const WINDOW: Duration = Duration::from_secs(1);

/// One kind of line that can flood (a `static`, shared by every task).
pub struct Flood {
    what: &'static str,
    state: Mutex<State>,
}

struct State {
    /// When the last line was logged whole.
    logged_at: Option<Instant>,
    /// Lines counted, not logged, since.
    held: u64,
    /// The last of them.
    last: String,
    /// A summary is due at the window's end.
    summary_due: bool,
}

impl Flood {
    /// A kind of line; `what` names it in the summary ("connections refused").
    pub const fn new(what: &'static str) -> Flood {
        Flood {
            what,
            state: Mutex::new(State {
                logged_at: None,
                held: 0,
                last: String::new(),
                summary_due: false,
            }),
        }
    }

    /// Logs `line()` as a warning, or counts it when one was logged less than a second ago.
    pub fn warn(&'static self, line: impl FnOnce() -> String) {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.logged_at.is_none_or(|t| now.duration_since(t) >= WINDOW) {
            let held = std::mem::take(&mut s.held);
            let last = std::mem::take(&mut s.last);
            s.logged_at = Some(now);
            drop(s);
            if held > 0 {
                self.summarise(held, &last);
            }
            log::warn!("{}", line());
            return;
        }
        s.held += 1;
        s.last = line();
        if s.summary_due {
            return;
        }
        // Said at the window's end even when no later line comes to say it.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        s.summary_due = true;
        let at = s.logged_at.unwrap_or(now) + WINDOW;
        drop(s);
        rt.spawn(async move {
            tokio::time::sleep_until(at).await;
            self.flush();
        });
    }

    fn flush(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.summary_due = false;
        let held = std::mem::take(&mut s.held);
        let last = std::mem::take(&mut s.last);
        drop(s);
        if held > 0 {
            self.summarise(held, &last);
        }
    }

    fn summarise(&self, held: u64, last: &str) {
        log::warn!(
            "{held} more {} in the last second, not logged one by one; the last: {last}",
            self.what
        );
    }

    /// Lines counted and not yet summarised (for tests).
    #[cfg(test)]
    fn held(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST: Flood = Flood::new("test lines");

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_line_then_a_count_at_the_window_end() {
        for i in 0..300 {
            TEST.warn(|| format!("line {i}"));
        }
        // The first is logged, 299 are held for the summary.
        assert_eq!(TEST.held(), 299);
        tokio::time::sleep(WINDOW + Duration::from_millis(10)).await;
        tokio::task::yield_now().await;
        assert_eq!(TEST.held(), 0, "summarised at the window's end");
        TEST.warn(|| "after".into());
        assert_eq!(TEST.held(), 0, "a new window logs whole");
    }
}
