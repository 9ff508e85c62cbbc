//! Publish requests: the body forms a topics route accepts (Mercure-style form fields, JSON, raw
//! text with `?topic=`), validated into a [`Publication`] or refused with a 4xx and a reason.

use crate::hub::journal::Publication;
use crate::request::{parse_form, Request};

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a publish request (or a topic list) is refused: an HTTP status and a one-line reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 4xx status.
    pub status: u16,
    /// What is wrong, for the client.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        reason: reason.into(),
    }
}

/// Checks a topic list from a publisher or subscriber.
pub fn validate_topics(topics: &[String], max: usize) -> Result<(), Refusal> {
    if topics.is_empty() {
        return Err(bad("missing topic: give at least one `topic`"));
    }
    if topics.len() > max {
        return Err(bad(format!(
            "{} topics given; at most {max} (max_topics)",
            topics.len()
        )));
    }
    for t in topics {
        if t.is_empty() || t.len() > MAX_TOPIC_LEN || t.chars().any(char::is_control) {
            return Err(bad(format!(
                "invalid topic {:?}: 1 to {MAX_TOPIC_LEN} bytes, no control characters",
                t.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Checks an event name from a publisher (no CR/LF, at most 256 bytes).
pub fn check_event_name(e: Option<&str>) -> Result<(), Refusal> {
    match e {
        Some(e) if e.contains(['\r', '\n']) => Err(bad("event name must not contain CR or LF")),
        Some(e) if e.len() > 256 => Err(bad("event name longer than 256 bytes")),
        _ => Ok(()),
    }
}

fn parse_retry(v: &str) -> Result<u64, Refusal> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "retry must be milliseconds in ASCII digits, not {v:?}"
        )));
    }
    v.parse().map_err(|_| bad("retry out of range"))
}

/// Parses and validates a publish request. `max_topics` bounds the topic list.
pub fn parse_publication(req: &Request, max_topics: usize) -> Result<Publication, Refusal> {
    let body = std::str::from_utf8(&req.body)
        .map_err(|e| bad(format!("body is not valid UTF-8 ({e})")))?;
    let content_type = req.var("CONTENT_TYPE").unwrap_or("").to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let mut p = match mime {
        "application/x-www-form-urlencoded" => from_form(body)?,
        "application/json" => from_json(body)?,
        "" | "text/plain" | "application/octet-stream" => from_query(req, body)?,
        other => {
            return Err(Refusal {
                status: 415,
                reason: format!("unsupported Content-Type {other:?}: use application/x-www-form-urlencoded, application/json or text/plain"),
            })
        }
    };
    topics_from_query(&mut p, req)?;
    validate_topics(&p.topics, max_topics)?;
    check_event_name(p.event.as_deref())?;
    Ok(p)
}

/// A form or JSON body without `topic` takes the query string's (`POST /events?topic=news`
/// with `data=…`, as nchan's users put the channel in the URL); the same topics in both are
/// fine, different ones are refused rather than guessed at.
fn topics_from_query(p: &mut Publication, req: &Request) -> Result<(), Refusal> {
    let in_query = req.query_values("topic");
    let set = |t: &[String]| t.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    if in_query.is_empty() || set(&in_query) == set(&p.topics) {
        return Ok(());
    }
    if p.topics.is_empty() {
        p.topics = in_query;
        return Ok(());
    }
    Err(bad(
        "`topic` is given in both the query string and the body, differently: give it in one",
    ))
}

/// A form: `topic` (repeated), `data`, `type` or `event`, `retry`.
fn from_form(body: &str) -> Result<Publication, Refusal> {
    let mut p = Publication::default();
    for (k, v) in parse_form(body) {
        match k.as_str() {
            "topic" => p.topics.push(v),
            "data" => p.data = v,
            "type" | "event" => p.event = Some(v),
            "retry" => p.retry_ms = Some(parse_retry(&v)?),
            // Mercure's other fields (id, private) have no meaning here: ids are assigned by
            // the server.
            _ => {}
        }
    }
    Ok(p)
}

/// A JSON object: `topic` (a string or a list), `data` (any JSON value; not a string: sent as
/// its compact text), `event` or `type`, `retry`.
fn from_json(body: &str) -> Result<Publication, Refusal> {
    use serde_json::Value;
    let doc: Value =
        serde_json::from_str(body).map_err(|e| bad(format!("body is not valid JSON: {e}")))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| bad("JSON body must be an object"))?;
    let mut p = Publication::default();
    match obj.get("topic") {
        Some(Value::String(t)) => p.topics.push(t.clone()),
        Some(Value::Array(a)) => {
            for t in a {
                let t = t
                    .as_str()
                    .ok_or_else(|| bad("topic array must hold strings"))?;
                p.topics.push(t.to_string());
            }
        }
        Some(_) => return Err(bad("topic must be a string or an array of strings")),
        None => {}
    }
    p.data = match obj.get("data") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    for key in ["event", "type"] {
        match obj.get(key) {
            Some(Value::String(e)) => p.event = Some(e.clone()),
            Some(Value::Null) | None => {}
            Some(_) => return Err(bad(format!("{key} must be a string"))),
        }
    }
    match obj.get("retry") {
        Some(Value::Number(n)) => {
            let ms = n.as_u64();
            p.retry_ms =
                Some(ms.ok_or_else(|| bad("retry must be a whole number of milliseconds"))?)
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(bad("retry must be a number")),
    }
    Ok(p)
}

/// A raw body (the data) with `topic`, `event` or `type`, and `retry` in the query string.
fn from_query(req: &Request, body: &str) -> Result<Publication, Refusal> {
    let first = |k: &str| req.query_values(k).into_iter().next();
    Ok(Publication {
        topics: req.query_values("topic"),
        event: first("event").or_else(|| first("type")),
        retry_ms: first("retry").map(|r| parse_retry(&r)).transpose()?,
        data: body.to_string(),
        ..Default::default()
    })
}

/// Compares a presented token with the configured one in time independent of where they differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    let mut diff = (a.len() ^ b.len()) as u64;
    for (i, &expected_byte) in b.iter().enumerate() {
        diff |= (a.get(i).copied().unwrap_or(0) ^ expected_byte) as u64;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::PathFrom;
    use bytes::Bytes;

    fn req(content_type: &str, query: &str, body: &[u8]) -> Request {
        let vars = [
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", content_type),
            ("QUERY_STRING", query),
        ]
        .iter()
        .map(|(k, v)| (Bytes::from(k.to_string()), Bytes::from(v.to_string())))
        .collect();
        Request::from_vars(vars, Bytes::copy_from_slice(body), PathFrom::RequestUri)
    }

    fn status(r: Result<Publication, Refusal>) -> u16 {
        r.err().map(|e| e.status).unwrap_or(200)
    }

    #[test]
    fn a_form_or_json_body_takes_the_topic_from_the_query_string() {
        let form = "application/x-www-form-urlencoded";
        let p = parse_publication(&req(form, "topic=news", b"data=hi"), 8).unwrap();
        assert_eq!(
            (p.topics, p.data.as_str()),
            (vec!["news".to_string()], "hi")
        );
        let json = "application/json";
        let p = parse_publication(&req(json, "topic=a&topic=b", br#"{"data":"x"}"#), 8).unwrap();
        assert_eq!(p.topics, ["a", "b"]);
        // The same in both is one topic; different ones are refused, not merged.
        let p = parse_publication(&req(form, "topic=news", b"topic=news&data=hi"), 8).unwrap();
        assert_eq!(p.topics, ["news"]);
        let body = br#"{"topic":["b","a"],"data":"x"}"#;
        let p = parse_publication(&req(json, "topic=a&topic=b", body), 8).unwrap();
        assert_eq!(p.topics, ["b", "a"]);
        let e = parse_publication(&req(form, "topic=a", b"topic=b&data=hi"), 8).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.reason.contains("both the query string and the body"),
            "{}",
            e.reason
        );
        // Neither: still the clear refusal.
        let e = parse_publication(&req(form, "", b"data=hi"), 8).unwrap_err();
        assert!(e.reason.contains("missing topic"), "{}", e.reason);
    }

    #[test]
    fn form_json_and_raw_bodies() {
        let p = parse_publication(
            &req(
                "application/x-www-form-urlencoded",
                "",
                b"topic=a&topic=b%2Fc&data=x%0Ay&type=greet&retry=500",
            ),
            8,
        )
        .unwrap();
        assert_eq!(p.topics, vec!["a", "b/c"]);
        assert_eq!(
            (p.data.as_str(), p.event.as_deref(), p.retry_ms),
            ("x\ny", Some("greet"), Some(500))
        );
        let p = parse_publication(
            &req(
                "application/json; charset=utf-8",
                "",
                br#"{"topic":["a"],"data":{"n":1},"event":"e"}"#,
            ),
            8,
        )
        .unwrap();
        assert_eq!(
            (p.data.as_str(), p.event.as_deref()),
            (r#"{"n":1}"#, Some("e"))
        );
        let p =
            parse_publication(&req("text/plain", "topic=t&event=e", b"raw\r\nbody"), 8).unwrap();
        assert_eq!(
            (p.topics[0].as_str(), p.data.as_str()),
            ("t", "raw\r\nbody")
        );
    }

    #[test]
    fn refusals_have_reasons() {
        assert_eq!(
            status(parse_publication(&req("text/plain", "", b"x"), 8)),
            400
        );
        assert_eq!(
            status(parse_publication(
                &req("application/json", "", br#"{"topic":"a","event":"a\nb"}"#),
                8
            )),
            400
        );
        assert_eq!(
            status(parse_publication(
                &req("text/plain", "topic=a", b"\xff\xfe"),
                8
            )),
            400
        );
        assert_eq!(
            status(parse_publication(&req("application/json", "", b"{"), 8)),
            400
        );
        assert_eq!(
            status(parse_publication(&req("image/png", "topic=a", b"x"), 8)),
            415
        );
        assert_eq!(
            status(parse_publication(
                &req("text/plain", "topic=a&topic=b&topic=c", b"x"),
                2
            )),
            400
        );
        assert_eq!(
            status(parse_publication(
                &req(
                    "application/x-www-form-urlencoded",
                    "",
                    b"topic=a&retry=1e3"
                ),
                8
            )),
            400
        );
        let e = parse_publication(&req("text/plain", "", b"x"), 8).unwrap_err();
        assert!(e.reason.contains("missing topic"));
    }

    #[test]
    fn tokens() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret!", "s3cret"));
        assert!(!token_matches("", "s3cret"));
        assert!(!token_matches("s3creT", "s3cret"));
    }
}
