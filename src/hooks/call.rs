//! One hook call: what it says (connect, leave; route, topics, user, subscriber, reason,
//! times) and how it is written — as the journal's JSON, and as the body the application gets
//! (a form PHP reads into `$_POST`, or JSON). Pure: no I/O.

use serde::{Deserialize, Serialize};

pub use crate::config::BodyFormat;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A stream opened.
    Connect,
    /// A stream ended (or was found dead after the process that held it died).
    Leave,
    /// The route took a publication (`hook_publish`).
    Publish,
}

impl Event {
    /// Its word in bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Connect => "connect",
            Event::Leave => "leave",
            Event::Publish => "publish",
        }
    }
}

/// Why a stream ended, as the `reason` of its leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The browser closed the stream or its connection went away.
    BrowserLeft,
    /// The subscriber's token expired: the stream was ended then.
    TokenExpired,
    /// The stream reached `[stream] max_lifetime` (or `[cgi] hold`); the browser reconnects.
    Lifetime,
    /// The source ended (a program exited).
    SourceEnded,
    /// The server stopped (SIGTERM, SIGINT) and ended its streams.
    ServerShutdown,
    /// The server handed over to a new process (SIGUSR2 upgrade) or reloaded its workers.
    ServerRestart,
    /// The process holding the stream died (kill -9, a crash, the OOM killer); the next
    /// process found the stream open in its journal.
    ProcessDied,
    /// The connect hook did not answer within `hook_connect_wait` and the stream was refused.
    HookTimeout,
}

impl Reason {
    /// Its word in bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BrowserLeft => "browser_left",
            Reason::TokenExpired => "token_expired",
            Reason::Lifetime => "lifetime",
            Reason::SourceEnded => "source_ended",
            Reason::ServerShutdown => "server_shutdown",
            Reason::ServerRestart => "server_restart",
            Reason::ProcessDied => "process_died",
            Reason::HookTimeout => "hook_timeout",
        }
    }
}

/// One call, as journaled and as sent. `id` is the same on every attempt: the application
/// drops a call whose id it has seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Unique, stable across retries and restarts (a UUID).
    pub id: String,
    /// `connect` or `leave`.
    pub event: Event,
    /// The route's path.
    pub route: String,
    /// The topics the stream asked for (empty for a route without topics).
    pub topics: Vec<String>,
    /// The user: the subscriber token's `sub`, else the web server's `user_param`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The stream's id (a UUID): a connect and its leave carry the same (none for a publish).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subscriber: String,
    /// The browser's address (`REMOTE_ADDR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// Why the stream ended (leave only): a [`Reason`]'s word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it happened (unix milliseconds); for a leave found after a process died, when it
    /// was found.
    pub time_ms: u64,
    /// When the stream opened (leave only; unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_ms: Option<u64>,
    /// What was published (publish only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Published>,
}

/// A publication as a publish call tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The event's id as subscribers see it.
    pub event_id: String,
    /// Its data.
    pub data: String,
    /// Its event name (`type`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Whether it is private.
    pub private: bool,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    crate::source::clock::unix_now().as_millis() as u64
}

/// A new call id.
pub fn new_id() -> String {
    let urn = crate::random::uuid_urn();
    urn.trim_start_matches("urn:uuid:").to_string()
}

/// The id of the leave of the connect `connect_id`: derived from it (a version 5 UUID), so
/// that a leave sent by two processes (the one that held the stream and the one that took its
/// journal over) is one call to the application.
pub fn leave_id(connect_id: &str) -> String {
    let name = format!("fastsse:leave:{connect_id}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
        .hyphenated()
        .to_string()
}

impl Call {
    /// The leave of the stream this connect opened, for `reason`, now (its id: [`leave_id`]).
    pub fn leave(&self, reason: Reason) -> Call {
        Call {
            id: leave_id(&self.id),
            event: Event::Leave,
            reason: Some(reason.as_str().to_string()),
            time_ms: now_ms(),
            connected_ms: Some(self.time_ms),
            ..self.clone()
        }
    }

    /// The body the application gets, and its content type.
    pub fn body(&self, format: BodyFormat) -> (Vec<u8>, &'static str) {
        match format {
            BodyFormat::Json => (
                serde_json::to_vec(&self.fields_json()).unwrap_or_default(),
                "application/json",
            ),
            BodyFormat::Form => {
                let mut f = form_urlencoded::Serializer::new(String::new());
                f.append_pair("id", &self.id);
                f.append_pair("event", self.event.as_str());
                f.append_pair("route", &self.route);
                for t in &self.topics {
                    f.append_pair("topics[]", t);
                }
                let p = self.published.as_ref();
                let opt = [
                    ("user", self.user.as_deref()),
                    (
                        "subscriber",
                        Some(self.subscriber.as_str()).filter(|s| !s.is_empty()),
                    ),
                    ("remote_addr", self.remote_addr.as_deref()),
                    ("reason", self.reason.as_deref()),
                    ("event_id", p.map(|p| p.event_id.as_str())),
                    ("data", p.map(|p| p.data.as_str())),
                    ("type", p.and_then(|p| p.event_type.as_deref())),
                    ("private", p.map(|p| if p.private { "1" } else { "0" })),
                ];
                for (k, v) in opt {
                    if let Some(v) = v {
                        f.append_pair(k, v);
                    }
                }
                f.append_pair("time", &time_text(self.time_ms));
                f.append_pair("time_ms", &self.time_ms.to_string());
                if let Some(c) = self.connected_ms {
                    f.append_pair("connected_ms", &c.to_string());
                }
                (f.finish().into_bytes(), "application/x-www-form-urlencoded")
            }
        }
    }

    /// The JSON body: the journaled fields and `time` as RFC 3339.
    fn fields_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("time".into(), time_text(self.time_ms).into());
        }
        v
    }

    /// Bytes it holds in the queue (the bound counts these).
    pub fn size(&self) -> usize {
        160 + self.id.len()
            + self.route.len()
            + self.topics.iter().map(|t| t.len() + 8).sum::<usize>()
            + self.user.as_ref().map_or(0, String::len)
            + self.subscriber.len()
            + self.remote_addr.as_ref().map_or(0, String::len)
            + self.published.as_ref().map_or(0, |p| {
                64 + p.event_id.len() + p.data.len() + p.event_type.as_ref().map_or(0, String::len)
            })
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
fn time_text(ms: u64) -> String {
    let whole = crate::source::clock::rfc3339(ms / 1000);
    format!("{}.{:03}Z", whole.trim_end_matches('Z'), ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Call {
        Call {
            id: "c1".into(),
            event: Event::Connect,
            route: "/events".into(),
            topics: vec!["chat/1".into(), "a b".into()],
            user: Some("42".into()),
            subscriber: "s1".into(),
            remote_addr: Some("10.0.0.1".into()),
            reason: None,
            time_ms: 1_764_806_400_123,
            connected_ms: None,
            published: None,
        }
    }

    #[test]
    fn a_form_is_what_php_reads_into_post() {
        let (body, ct) = connect().body(BodyFormat::Form);
        assert_eq!(ct, "application/x-www-form-urlencoded");
        let body = String::from_utf8(body).unwrap();
        assert_eq!(
            body,
            "id=c1&event=connect&route=%2Fevents&topics%5B%5D=chat%2F1&topics%5B%5D=a+b&user=42\
             &subscriber=s1&remote_addr=10.0.0.1&time=2025-12-04T00%3A00%3A00.123Z\
             &time_ms=1764806400123"
        );
    }

    #[test]
    fn a_leave_pairs_with_its_connect() {
        let c = connect();
        let l = c.leave(Reason::BrowserLeft);
        assert_eq!((l.event, &l.subscriber), (Event::Leave, &c.subscriber));
        assert_ne!(l.id, c.id);
        // Every leave of one connect is one call (Python: uuid5(NAMESPACE_URL, name)).
        assert_eq!(l.id, "1bba1c83-7929-54e6-8e6b-8fd88f10b22a");
        assert_eq!(c.leave(Reason::ProcessDied).id, l.id);
        assert_eq!(l.connected_ms, Some(c.time_ms));
        let (body, ct) = l.body(BodyFormat::Json);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["reason"], "browser_left");
        assert_eq!(v["topics"][1], "a b");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        // The journal's form reads back as it was.
        let back: Call = serde_json::from_slice(&serde_json::to_vec(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn a_publish_call_tells_the_event_and_no_stream() {
        let p = Call {
            id: "p1".into(),
            event: Event::Publish,
            subscriber: String::new(),
            remote_addr: None,
            published: Some(Published {
                event_id: "7".into(),
                data: "hi there".into(),
                event_type: Some("chat".into()),
                private: true,
            }),
            ..connect()
        };
        let (body, _) = p.body(BodyFormat::Form);
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.starts_with("id=p1&event=publish&route=%2Fevents&"),
            "{body}"
        );
        assert!(
            body.contains("&user=42&event_id=7&data=hi+there&type=chat&private=1&"),
            "{body}"
        );
        assert!(!body.contains("subscriber="), "{body}");
        let (body, _) = p.body(BodyFormat::Json);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["published"]["data"], "hi there");
        assert!(v.get("subscriber").is_none());
        let back: Call = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
