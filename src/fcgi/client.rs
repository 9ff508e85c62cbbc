//! fastsse as a FastCGI *client*: one responder request written as a web server writes it
//! (BEGIN_REQUEST, PARAMS, STDIN), and the application's reply read back (STDOUT's CGI header
//! block: `Status:`, fields, body). Hooks call a PHP application through php-fpm's socket with
//! it; `fastsse publish` posts to the daemon's. The records are fastsse's own codec.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

use super::codec::{encode_record, Record, RecordCodec};
use super::params::encode_pair;
use super::{
    FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDERR, FCGI_STDIN, FCGI_STDOUT,
};

/// The records of one responder request (id 1, the connection closed after it): `params`,
/// then `body` on STDIN (split into records as long as it needs).
pub fn request_records(params: &[(&str, &str)], body: &[u8]) -> BytesMut {
    let mut p = BytesMut::new();
    for (k, v) in params {
        encode_pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut out = BytesMut::with_capacity(p.len() + body.len() + 64);
    let mut records = vec![
        Record::new(FCGI_BEGIN_REQUEST, 1, vec![0, 1, 0, 0, 0, 0, 0, 0]),
        Record::new(FCGI_PARAMS, 1, p.freeze()),
        Record::new(FCGI_PARAMS, 1, Vec::new()),
    ];
    // An empty record ends a stream: the body's only when there is one.
    if !body.is_empty() {
        records.push(Record::new(FCGI_STDIN, 1, body.to_vec()));
    }
    records.push(Record::new(FCGI_STDIN, 1, Vec::new()));
    for r in &records {
        // Only the stream types can be long, and those are split: encoding cannot fail.
        let _ = encode_record(r, &mut out);
    }
    out
}

/// An application's answer: its status (`Status:`, else 200 as CGI says), its header fields
/// and its body; what it wrote to STDERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status the application gave.
    pub status: u16,
    /// Header fields other than `Status`, as written.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// STDERR (php-fpm's "Primary script unknown" comes there).
    pub stderr: Vec<u8>,
}

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The socket could not be reached.
    Connect(String),
    /// Reading or writing failed, or the application closed before END_REQUEST.
    Io(String),
    /// The reply broke the protocol, or had no header block.
    Protocol(String),
    /// No whole reply within the deadline.
    Timeout(Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connect: {e}"),
            CallError::Io(e) => write!(f, "{e}"),
            CallError::Protocol(e) => write!(f, "bad FastCGI reply: {e}"),
            CallError::Timeout(d) => write!(f, "no reply within {} ms", d.as_millis()),
        }
    }
}

/// Parses the STDOUT of a responder: the CGI header block, then the body.
pub fn parse_reply(stdout: &[u8], stderr: Vec<u8>) -> Result<Reply, CallError> {
    let (head, body) = match find(stdout, b"\r\n\r\n") {
        Some(p) => (&stdout[..p], &stdout[p + 4..]),
        None => match find(stdout, b"\n\n") {
            Some(p) => (&stdout[..p], &stdout[p + 2..]),
            None => return Err(CallError::Protocol("no header block".into())),
        },
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else {
            return Err(CallError::Protocol(format!(
                "header line without ':': {line:?}"
            )));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            status = v
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|s| (100..1000).contains(s))
                .ok_or_else(|| CallError::Protocol(format!("bad Status: {v:?}")))?;
        } else {
            headers.push((k.to_string(), v.to_string()));
        }
    }
    Ok(Reply {
        status,
        headers,
        body: body.to_vec(),
        stderr,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request to `addr` (`unix:/path` or `host:port`) and reads the reply, all within
/// `deadline`; of a long reply, the first `max` bytes of STDOUT (its head, the status) and of
/// STDERR are kept, and the rest is read and dropped.
pub async fn call(
    addr: &str,
    params: &[(&str, &str)],
    body: &[u8],
    deadline: Duration,
    max: usize,
) -> Result<Reply, CallError> {
    let request = request_records(params, body);
    match tokio::time::timeout(deadline, exchange(addr, &request, max)).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout(deadline)),
    }
}

async fn exchange(addr: &str, request: &[u8], max: usize) -> Result<Reply, CallError> {
    let connect = |e: std::io::Error| CallError::Connect(e.to_string());
    let io = |e: std::io::Error| CallError::Io(e.to_string());
    match addr.strip_prefix("unix:") {
        Some(path) => {
            let mut s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect)?;
            s.write_all(request).await.map_err(io)?;
            read_reply(&mut s, max).await
        }
        None => {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(connect)?;
            s.write_all(request).await.map_err(io)?;
            read_reply(&mut s, max).await
        }
    }
}

async fn read_reply<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Reply, CallError> {
    let mut buf = BytesMut::with_capacity(4096);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        while let Some(rec) = RecordCodec
            .decode(&mut buf)
            .map_err(|e| CallError::Protocol(e.to_string()))?
        {
            match rec.record_type {
                FCGI_STDOUT => keep(&mut stdout, &rec.content, max),
                FCGI_STDERR => keep(&mut stderr, &rec.content, max),
                FCGI_END_REQUEST => return parse_reply(&stdout, stderr),
                _ => {}
            }
        }
        if r.read_buf(&mut buf)
            .await
            .map_err(|e| CallError::Io(e.to_string()))?
            == 0
        {
            return Err(CallError::Io(
                "the application closed the connection before END_REQUEST".into(),
            ));
        }
    }
}

/// Appends what fits under `max` of `bytes` to `into`.
fn keep(into: &mut Vec<u8>, bytes: &[u8], max: usize) {
    let room = max.saturating_sub(into.len());
    into.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_as_cgi_says() {
        let r = parse_reply(b"Status: 403 Forbidden\r\nX-A: b\r\n\r\nno", Vec::new()).unwrap();
        assert_eq!((r.status, &r.body[..]), (403, &b"no"[..]));
        assert_eq!(r.headers, vec![("X-A".to_string(), "b".to_string())]);
        // No Status: 200 (PHP writes none for 200); a bare \n\n head too.
        let r = parse_reply(b"Content-type: text/html\n\nok", Vec::new()).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        assert!(parse_reply(b"no head at all", Vec::new()).is_err());
        assert!(parse_reply(b"Status: abc\r\n\r\n", Vec::new()).is_err());
    }

    #[test]
    fn a_request_is_the_records_a_web_server_sends() {
        let out = request_records(&[("A", "b")], &[7u8; 70_000]);
        let mut buf = out.clone();
        let mut types = Vec::new();
        while let Some(r) = RecordCodec.decode(&mut buf).unwrap() {
            types.push((r.record_type, r.content.len()));
        }
        assert_eq!(
            types,
            vec![
                (FCGI_BEGIN_REQUEST, 8),
                (FCGI_PARAMS, 4),
                (FCGI_PARAMS, 0),
                // Split at a multiple of 8: no padding in the long records.
                (FCGI_STDIN, 65528),
                (FCGI_STDIN, 70_000 - 65528),
                (FCGI_STDIN, 0),
            ]
        );
    }

    /// A record as the spec lays it out (version 1, request id 1, no padding).
    fn record(kind: u8, content: &[u8]) -> Vec<u8> {
        let n = content.len() as u16;
        let mut v = vec![1, kind, 0, 1, (n >> 8) as u8, n as u8, 0, 0];
        v.extend_from_slice(content);
        v
    }

    #[tokio::test]
    async fn a_long_reply_keeps_its_status_and_its_first_bytes() {
        let mut wire = record(6, b"Status: 403 Forbidden\r\n\r\n");
        for _ in 0..10 {
            wire.extend(record(6, &[b'x'; 30_000]));
        }
        wire.extend(record(7, &[b'e'; 30_000]));
        wire.extend(record(3, &[0; 8]));
        let r = read_reply(&mut &wire[..], 64 * 1024).await.unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(
            r.body.len(),
            64 * 1024 - "Status: 403 Forbidden\r\n\r\n".len()
        );
        assert_eq!(r.stderr.len(), 30_000);
    }
}
