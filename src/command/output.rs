//! A program's stdout as events, pure: with `format = "sse"` exactly what a PHP SSE loop prints
//! (`data:`, `event:`, `id:`, `retry:` lines, a blank line ends an event; parsed by the same
//! WHATWG parser the bench uses), with `format = "lines"` every line one event. Lines are
//! bounded: a longer one is dropped (and counted), so a program that never prints a newline
//! cannot grow memory.

use crate::sse::{Event, SseParser};

/// Longest line kept from a program's output.
pub const MAX_LINE: usize = 1 << 20;

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
    line: Vec<u8>,
    /// Inside a line that passed [`MAX_LINE`]: its rest is skipped.
    skipping: bool,
    after_cr: bool,
    sse: SseParser,
    last_id: String,
    last_retry: Option<u64>,
    /// Lines dropped for being longer than [`MAX_LINE`].
    pub dropped_lines: u64,
}

impl OutputParser {
    /// A parser for `format`.
    pub fn new(format: Format) -> OutputParser {
        OutputParser {
            format,
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
            if self.line.len() >= MAX_LINE {
                self.line.clear();
                self.skipping = true;
                self.dropped_lines += 1;
                continue;
            }
            self.line.push(b);
        }
        out
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
        OutputParser::new(format).feed(input)
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
            let mut p = OutputParser::new(Format::Sse);
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
        let mut p = OutputParser::new(Format::Lines);
        let mut got = Vec::new();
        for _ in 0..(MAX_LINE / 4096 + 2) {
            got.extend(p.feed(&[b'x'; 4096]));
        }
        got.extend(p.feed(b" end of the long line\nshort\n"));
        assert_eq!(p.dropped_lines, 1);
        assert!(p.line.capacity() <= MAX_LINE + 4096);
        assert_eq!(
            got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["short"]
        );
    }

    #[test]
    fn output_that_is_not_sse_gives_no_events() {
        assert!(all(Format::Sse, b"<html>Fatal error</html>\nWarning: x\n").is_empty());
    }
}
