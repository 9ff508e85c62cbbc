//! Server-Sent Events wire format (WHATWG HTML 9.2): encoding events to bytes once, and the
//! client-side parser used by tests and the benchmark.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// An SSE event to be encoded. Build it, then [`Event::encode`] it once into [`EncodedEvent`].
///
/// ```
/// use fastsse::sse::Event;
/// let bytes = Event::new().event("ping").id("7").data("a\nb").encode().unwrap();
/// assert_eq!(bytes.as_bytes(), &b"event: ping\nid: 7\ndata: a\ndata: b\n\n"[..]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    retry_ms: Option<u64>,
    comment: Option<String>,
}

/// Why an event cannot be encoded.
#[derive(Debug, PartialEq, Eq)]
pub enum EventError {
    /// The event name contains CR or LF.
    BadEventName,
    /// The id contains CR, LF or NUL.
    BadId,
    /// A comment contains CR or LF.
    BadComment,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventError::BadEventName => "event name must not contain CR or LF",
            EventError::BadId => "event id must not contain CR, LF or NUL",
            EventError::BadComment => "comment must not contain CR or LF",
        })
    }
}

impl std::error::Error for EventError {}

/// The wire bytes of one event, encoded once and shared (cheaply cloned) by every receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent(Bytes);

impl EncodedEvent {
    /// The bytes as written to the stream.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Wraps bytes that are already a complete event in wire format.
    pub fn from_shared(bytes: Bytes) -> Self {
        EncodedEvent(bytes)
    }

    /// A `retry:` hint alone (no event is dispatched by it).
    pub fn retry_hint(ms: u64) -> Self {
        EncodedEvent(Bytes::from(format!("retry: {ms}\n\n")))
    }

    /// A heartbeat comment line.
    pub fn heartbeat() -> Self {
        EncodedEvent(Bytes::from_static(b":\n\n"))
    }
}

impl Event {
    /// An empty event; add fields with the builder methods.
    pub fn new() -> Self {
        Event::default()
    }

    /// An event carrying `data`.
    pub fn data_only(data: impl Into<String>) -> Self {
        Event::new().data(data)
    }

    /// Sets the event type (`event:` field). Must not contain CR or LF.
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event = Some(name.into());
        self
    }

    /// Sets the id (`id:` field). Must not contain CR, LF or NUL.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the data; CR, LF and CRLF split it into several `data:` lines.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets the reconnection time hint in milliseconds (`retry:` field).
    pub fn retry(mut self, ms: u64) -> Self {
        self.retry_ms = Some(ms);
        self
    }

    /// Adds a comment line (`: text`), ignored by clients.
    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.comment = Some(text.into());
        self
    }

    /// Encodes the event into its wire bytes, ending with the blank line that dispatches it.
    pub fn encode(&self) -> Result<EncodedEvent, EventError> {
        let has_line_break = |s: &str| s.contains(['\r', '\n']);
        let mut len = 1;
        if let Some(c) = &self.comment {
            if has_line_break(c) {
                return Err(EventError::BadComment);
            }
            len += c.len() + 3;
        }
        if let Some(e) = &self.event {
            if has_line_break(e) {
                return Err(EventError::BadEventName);
            }
            len += e.len() + 8;
        }
        if let Some(id) = &self.id {
            if has_line_break(id) || id.contains('\0') {
                return Err(EventError::BadId);
            }
            len += id.len() + 5;
        }
        if let Some(d) = &self.data {
            len += d.len() + 7;
        }
        let mut out = BytesMut::with_capacity(len + 32);
        if let Some(c) = &self.comment {
            out.put_slice(b": ");
            out.put_slice(c.as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(e) = &self.event {
            out.put_slice(b"event: ");
            out.put_slice(e.as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(id) = &self.id {
            out.put_slice(b"id: ");
            out.put_slice(id.as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(ms) = self.retry_ms {
            out.put_slice(format!("retry: {ms}\n").as_bytes());
        }
        if let Some(d) = &self.data {
            for line in split_lines(d) {
                out.put_slice(b"data: ");
                out.put_slice(line.as_bytes());
                out.put_u8(b'\n');
            }
        }
        out.put_u8(b'\n');
        Ok(EncodedEvent(out.freeze()))
    }
}

/// Splits on CRLF, lone CR and lone LF; `"a\n"` gives `["a", ""]` so data round-trips exactly.
fn split_lines(s: &str) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&s[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&s[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    lines.push(&s[start..]);
    lines
}

/// An event as a WHATWG client dispatches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// Event type (`message` when none was given).
    pub event: String,
    /// Data, lines joined by LF.
    pub data: String,
    /// The last event id in force when it was dispatched.
    pub last_event_id: String,
}

/// Incremental WHATWG `text/event-stream` parser: feed bytes in any pieces, get events out.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    data: String,
    event: String,
    last_event_id: String,
    /// The last `retry:` value seen, in milliseconds.
    pub retry_ms: Option<u64>,
    /// Comment lines seen (heartbeats).
    pub comments: u64,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Forgets the event being read (its data and type); the last event id stays.
    pub fn discard_event(&mut self) {
        self.data = String::new();
        self.event = String::new();
    }

    /// Bytes held for the event being read.
    pub fn pending_bytes(&self) -> usize {
        self.data.len() + self.event.len() + self.line.len()
    }

    /// The current last-event-id (what a reconnect sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Consumes `input`, returning every event it completes.
    pub fn feed(&mut self, input: &[u8]) -> Vec<ReceivedEvent> {
        let mut out = Vec::new();
        let mut input = input;
        if !self.started {
            // Wait until the first three bytes can be checked for a BOM.
            self.line.extend_from_slice(input);
            if self.line.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.line) {
                return out;
            }
            self.started = true;
            let pending = std::mem::take(&mut self.line);
            let rest = pending.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&pending);
            return self.feed_lines(rest, out);
        }
        if self.after_cr && input.first() == Some(&b'\n') {
            input = &input[1..];
        }
        self.after_cr = false;
        self.feed_lines(input, std::mem::take(&mut out))
    }

    fn feed_lines(&mut self, input: &[u8], mut out: Vec<ReceivedEvent>) -> Vec<ReceivedEvent> {
        let mut i = 0;
        let mut start = 0;
        while i < input.len() {
            let b = input[i];
            if b == b'\n' || b == b'\r' {
                self.line.extend_from_slice(&input[start..i]);
                // The line's buffer is kept for the next line (no allocation per line).
                let mut line = std::mem::take(&mut self.line);
                self.process_line(&line, &mut out);
                line.clear();
                self.line = line;
                if b == b'\r' {
                    if i + 1 == input.len() {
                        self.after_cr = true;
                    } else if input[i + 1] == b'\n' {
                        i += 1;
                    }
                }
                i += 1;
                start = i;
            } else {
                i += 1;
            }
        }
        self.line.extend_from_slice(&input[start..]);
        out
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<ReceivedEvent>) {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event.clear();
                return;
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop();
            let event = std::mem::take(&mut self.event);
            out.push(ReceivedEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data,
                last_event_id: self.last_event_id.clone(),
            });
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.last_event_id.clear();
                self.last_event_id.push_str(value);
            }
            "retry" if !value.is_empty() && value.bytes().all(|c| c.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok()
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_split(input: &[u8]) -> Vec<Vec<ReceivedEvent>> {
        (0..=input.len())
            .map(|at| {
                let mut p = SseParser::new();
                let mut ev = p.feed(&input[..at]);
                ev.extend(p.feed(&input[at..]));
                ev
            })
            .collect()
    }

    #[test]
    fn data_line_breaks_become_data_lines() {
        let e = Event::new().data("a\r\nb\rc\nd").encode().unwrap();
        assert_eq!(e.as_bytes(), b"data: a\ndata: b\ndata: c\ndata: d\n\n");
        let e = Event::new().data("").encode().unwrap();
        assert_eq!(e.as_bytes(), b"data: \n\n");
        let e = Event::new().data("\n\nx\n").encode().unwrap();
        assert_eq!(e.as_bytes(), b"data: \ndata: \ndata: x\ndata: \n\n");
    }

    #[test]
    fn invalid_fields_are_refused() {
        assert_eq!(
            Event::new().event("a\nb").encode(),
            Err(EventError::BadEventName)
        );
        assert_eq!(
            Event::new().event("a\rb").encode(),
            Err(EventError::BadEventName)
        );
        assert_eq!(Event::new().id("1\n").encode(), Err(EventError::BadId));
        assert_eq!(Event::new().id("1\0").encode(), Err(EventError::BadId));
        assert_eq!(
            Event::new().comment("x\ry").encode(),
            Err(EventError::BadComment)
        );
    }

    #[test]
    fn round_trips_through_the_parser_split_anywhere() {
        let cases = [
            "plain",
            "two\nlines",
            "crlf\r\nline",
            "lone\rcr",
            "\n\nblank lines\n",
            " leading space",
            "nul\0inside",
            "trailing cr\r",
            "ünïcödé ✓",
        ];
        for data in cases {
            let enc = Event::new().event("x").id("5").data(data).encode().unwrap();
            for events in parse_split(enc.as_bytes()) {
                assert_eq!(events.len(), 1, "{data:?}");
                let expect = data.replace("\r\n", "\n").replace('\r', "\n");
                assert_eq!(events[0].data, expect);
                assert_eq!(events[0].event, "x");
                assert_eq!(events[0].last_event_id, "5");
            }
        }
    }

    #[test]
    fn parser_follows_whatwg_rules() {
        let input = b"\xEF\xBB\xBF: comment\r\nretry: 1500\rdata:x\r\ndata\nid: 3\0\n\nevent: e\n\ndata: half";
        for events in parse_split(input) {
            assert_eq!(
                events,
                vec![ReceivedEvent {
                    event: "message".into(),
                    data: "x\n".into(),
                    last_event_id: String::new(),
                }]
            );
        }
        let mut p = SseParser::new();
        p.feed(input);
        assert_eq!(p.retry_ms, Some(1500));
        assert_eq!(p.comments, 1);
    }

    #[test]
    fn retry_and_comment_encoding() {
        let e = Event::new()
            .comment("hi")
            .retry(2500)
            .data("d")
            .encode()
            .unwrap();
        assert_eq!(e.as_bytes(), b": hi\nretry: 2500\ndata: d\n\n");
        assert_eq!(
            EncodedEvent::retry_hint(3000).as_bytes(),
            b"retry: 3000\n\n"
        );
    }
}
