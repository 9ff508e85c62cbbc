//! A program's stdout as events, pure: with `format = "sse"` exactly what a PHP SSE loop prints
//! (`data:`, `event:`, `id:`, `retry:` lines, a blank line ends an event; parsed by the same
//! WHATWG parser the bench uses), with `format = "lines"` every line one event. Events are
//! bounded in bytes (`max_event_bytes`): a longer line, or an event whose lines add up to more
//! (a loop that never prints the blank line), is dropped whole and counted, so no output can
//! grow memory.

use crate::sse::{Event, SseParser};

/// `max_event_bytes` when the route does not set it.
pub const DEFAULT_MAX_EVENT: usize = 64 * 1024;

/// How a program's output is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Server-Sent Events, as a PHP SSE endpoint prints them.
    #[default]
    Sse,
    /// Every line is the data of one event.
    Lines,
}

/// How a route reads its program's output.
#[derive(Clone, Copy, Debug)]
pub struct OutputRules {
    /// `format`.
    pub format: Format,
    /// `max_event_bytes`.
    pub max_event_bytes: usize,
}

impl OutputRules {
    /// A parser for one run of the program.
    pub fn parser(&self) -> OutputParser {
        OutputParser::new(self.format, self.max_event_bytes)
    }
}

/// Hands what a parser dropped to the route's counter and logs it: the first drop at once,
/// then at most one line every 10 s with the count since (a flood is a line, not thousands).
#[derive(Debug)]
pub struct DropReport {
    route: String,
    pid: u32,
    max: usize,
    counted: u64,
    unlogged: u64,
    last_log: Option<std::time::Instant>,
}

impl DropReport {
    /// For the program `pid` of `route`, whose events may have `max` bytes.
    pub fn new(route: &str, pid: u32, max: usize) -> DropReport {
        DropReport {
            route: route.to_string(),
            pid,
            max,
            counted: 0,
            unlogged: 0,
            last_log: None,
        }
    }

    /// Counts what `parser` dropped since the last call into `counter`, and logs it when due.
    pub fn update(&mut self, parser: &OutputParser, counter: &std::sync::atomic::AtomicU64) {
        let new = parser.dropped - self.counted;
        if new == 0 {
            return;
        }
        self.counted = parser.dropped;
        self.unlogged += new;
        counter.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10))
        {
            log::warn!(
                "route {}: program {} printed {} event(s) over max_event_bytes ({}) or never ended one; dropped ({} in all)",
                self.route,
                self.pid,
                self.unlogged,
                self.max,
                self.counted
            );
            self.unlogged = 0;
            self.last_log = Some(std::time::Instant::now());
        }
    }
}

/// One event out of a program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramEvent {
    /// `event:` (none for `message`).
    pub event: Option<String>,
    /// `data:` lines joined by LF.
    pub data: String,
    /// `id:`, when the program set one for this event.
    pub id: Option<String>,
    /// `retry:`, when the program sent one since the previous event.
    pub retry_ms: Option<u64>,
}

impl ProgramEvent {
    /// The event as SSE.
    pub fn to_event(&self) -> Event {
        let mut e = Event::new().data(self.data.clone());
        if let Some(n) = &self.event {
            e = e.event(n.clone());
        }
        if let Some(id) = &self.id {
            e = e.id(id.clone());
        }
        if let Some(ms) = self.retry_ms {
            e = e.retry(ms);
        }
        e
    }
}

/// Turns output bytes, in any pieces, into events.
#[derive(Debug, Default)]
pub struct OutputParser {
    format: Format,
    /// Most bytes of one event (a line, or the lines of one SSE event).
    max: usize,
    line: Vec<u8>,
    /// Inside a line that passed `max`: its rest is skipped.
    skipping: bool,
    after_cr: bool,
    sse: SseParser,
    /// Bytes of the SSE event being read so far.
    pending: usize,
    /// Inside an SSE event that passed `max`: its lines are skipped up to the blank line.
    discarding: bool,
    last_id: String,
    last_retry: Option<u64>,
    /// Events dropped for being longer than `max` (a long line counts as one).
    pub dropped: u64,
}

impl OutputParser {
    /// A parser for `format` keeping events of at most `max_event_bytes`.
    pub fn new(format: Format, max_event_bytes: usize) -> OutputParser {
        OutputParser {
            format,
            max: max_event_bytes.max(1),
            ..OutputParser::default()
        }
    }

    /// Consumes `input`, returning the events it completes.
    pub fn feed(&mut self, input: &[u8]) -> Vec<ProgramEvent> {
        let mut out = Vec::new();
        for &b in input {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            if b == b'\n' || b == b'\r' {
                self.after_cr = b == b'\r';
                if !std::mem::take(&mut self.skipping) {
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, &mut out);
                }
                continue;
            }
            if self.skipping {
                continue;
            }
            if self.line.len() >= self.max {
                self.line = Vec::new();
                self.skipping = true;
                self.drop_event();
                continue;
            }
            self.line.push(b);
        }
        out
    }

    /// Drops the event being read: counted, its data forgotten, the rest of it skipped.
    fn drop_event(&mut self) {
        match self.format {
            Format::Lines => self.dropped += 1,
            Format::Sse if !self.discarding => {
                self.dropped += 1;
                self.discarding = true;
                self.sse.discard_event();
            }
            Format::Sse => {}
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<ProgramEvent>) {
        match self.format {
            Format::Lines => {
                if !line.is_empty() {
                    out.push(ProgramEvent {
                        data: String::from_utf8_lossy(line).into_owned(),
                        ..ProgramEvent::default()
                    });
                }
            }
            Format::Sse => {
                if line.is_empty() {
                    self.pending = 0;
                    if std::mem::take(&mut self.discarding) {
                        return;
                    }
                } else {
                    self.pending += line.len() + 1;
                    if self.discarding {
                        return;
                    }
                    if self.pending > self.max {
                        self.drop_event();
                        return;
                    }
                }
                let mut bytes = line.to_vec();
                bytes.push(b'\n');
                for ev in self.sse.feed(&bytes) {
                    let id = (ev.last_event_id != self.last_id).then(|| ev.last_event_id.clone());
                    self.last_id = ev.last_event_id;
                    let retry = self.sse.retry_ms.filter(|r| Some(*r) != self.last_retry);
                    self.last_retry = self.sse.retry_ms;
                    out.push(ProgramEvent {
                        event: (ev.event != "message").then_some(ev.event),
                        data: ev.data,
                        id,
                        retry_ms: retry,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHP_LOOP: &[u8] =
        b"retry: 2000\nid: 1\nevent: priceUp\ndata: {\"p\": 1}\n\n: comment\r\ndata: a\r\ndata: b\r\n\r\nid: 3\ndata: c\n\n";

    fn all(format: Format, input: &[u8]) -> Vec<ProgramEvent> {
        OutputParser::new(format, DEFAULT_MAX_EVENT).feed(input)
    }

    #[test]
    fn a_php_sse_loop_split_at_every_position() {
        let whole = all(Format::Sse, PHP_LOOP);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event.as_deref(), Some("priceUp"));
        assert_eq!(
            (whole[0].id.as_deref(), whole[0].retry_ms),
            (Some("1"), Some(2000))
        );
        assert_eq!(
            (whole[1].data.as_str(), whole[1].id.as_deref()),
            ("a\nb", None)
        );
        assert_eq!(whole[2].id.as_deref(), Some("3"));
        for cut in 0..PHP_LOOP.len() {
            let mut p = OutputParser::new(Format::Sse, DEFAULT_MAX_EVENT);
            let mut got = p.feed(&PHP_LOOP[..cut]);
            got.extend(p.feed(&PHP_LOOP[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn lines_are_events_and_long_lines_are_dropped_not_kept() {
        let got = all(Format::Lines, b"one\r\ntwo\n\nthree");
        assert_eq!(
            got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        let mut p = OutputParser::new(Format::Lines, DEFAULT_MAX_EVENT);
        let mut got = Vec::new();
        for _ in 0..(DEFAULT_MAX_EVENT / 4096 + 2) {
            got.extend(p.feed(&[b'x'; 4096]));
        }
        got.extend(p.feed(b" end of the long line\nshort\n"));
        assert_eq!(p.dropped, 1);
        assert!(p.line.capacity() <= DEFAULT_MAX_EVENT + 4096);
        assert_eq!(
            got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["short"]
        );
    }

    #[test]
    fn an_event_that_never_ends_is_dropped_and_memory_stays_bounded() {
        // `yes 'data: xxx'`: data lines forever, never the blank line.
        let mut p = OutputParser::new(Format::Sse, 1000);
        let mut got = Vec::new();
        for _ in 0..10_000 {
            got.extend(p.feed(b"data: xxxxxxxxxxxxxxxxxxxx\n"));
        }
        assert!(got.is_empty());
        assert_eq!(p.dropped, 1, "one event, counted once");
        assert!(p.sse.pending_bytes() <= 1000, "{}", p.sse.pending_bytes());
        // The blank line ends the dropped event; the next one is whole and arrives.
        got.extend(p.feed(b"\nid: 7\ndata: after\n\n"));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].data.as_str(), got[0].id.as_deref()),
            ("after", Some("7"))
        );
        // Just under the bound is kept; a multi-line event over it is dropped whole.
        let mut p = OutputParser::new(Format::Sse, 30);
        let got = p.feed(b"data: 0123456789\n\ndata: 0123456789\ndata: 0123456789\n\ndata: ok\n\n");
        let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["0123456789", "ok"]);
        assert_eq!(p.dropped, 1);
    }

    #[test]
    fn output_that_is_not_sse_gives_no_events() {
        assert!(all(Format::Sse, b"<html>Fatal error</html>\nWarning: x\n").is_empty());
    }
}
