//! The bench's subscriptions: an SSE response body read as it arrives, through a web server
//! (HTTP/1.1 or HTTP/2 over hyper, in [`super::http`]) or as FastCGI STDOUT straight from a
//! backend socket (written here on fastsse's own record codec, as a web server would send it).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use super::http::{HttpBody, HttpClient, Url};

use crate::fcgi::codec::{encode_record, Record, RecordCodec};
use crate::fcgi::params::encode_pair;
use crate::fcgi::{FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT};

/// Where subscribers connect: through a web server (subscriber `i` takes URL `i mod n`), or
/// straight to FastCGI sockets (address `i mod n`, with one request path).
pub(super) enum Target {
    Http { client: HttpClient, urls: Vec<Url> },
    Fcgi { addrs: Vec<String>, path: String },
}

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) async fn dial(addr: &str) -> std::io::Result<Box<dyn Io>> {
    if let Some(p) = addr.strip_prefix("unix:") {
        Ok(Box::new(tokio::net::UnixStream::connect(p).await?))
    } else {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// An open SSE response body: HTTP (through hyper) or FastCGI STDOUT.
pub(super) enum Body {
    Http(HttpBody),
    Fcgi(FcgiBody),
}

impl Body {
    /// The next piece of the body; `None` when the response ended.
    pub(super) async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Body::Http(b) => b.next_chunk().await,
            Body::Fcgi(b) => b.next_chunk().await,
        }
    }
}

/// FastCGI STDOUT of one request, read record by record as the backend writes them.
pub(super) struct FcgiBody {
    io: Box<dyn Io>,
    raw: BytesMut,
}

impl FcgiBody {
    pub(super) async fn fill(&mut self) -> Result<bool, String> {
        if self.raw.capacity() - self.raw.len() < 1024 {
            self.raw.reserve(8192);
        }
        Ok(self
            .io
            .read_buf(&mut self.raw)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?
            > 0)
    }

    /// The next STDOUT content; `None` when the request ended.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            while let Some(r) = RecordCodec
                .decode(&mut self.raw)
                .map_err(|e| e.to_string())?
            {
                match r.record_type {
                    FCGI_STDOUT if !r.content.is_empty() => {
                        return Ok(Some(Bytes::copy_from_slice(&r.content[..])))
                    }
                    FCGI_END_REQUEST => return Ok(None),
                    _ => {}
                }
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

impl Body {
    /// Opens the stream and checks the response head. Returns the body and any body bytes that
    /// came with the head; `Err` is the failure cause.
    /// `headers` (`-H`) go with every request: HTTP headers, or `HTTP_*` params over FastCGI.
    pub(super) async fn open(
        target: &Target,
        idx: usize,
        last_event_id: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<(Body, Vec<u8>), String> {
        match target {
            Target::Http { client, urls } => {
                let mut extra: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if let Some(id) = last_event_id {
                    extra.push(("Last-Event-ID", id));
                }
                let (head, body) = client.get(&urls[idx % urls.len()], idx, &extra).await?;
                if head.status != 200 {
                    return Err(format!("http {}", head.status.as_u16()));
                }
                Ok((Body::Http(body), Vec::new()))
            }
            Target::Fcgi { addrs, path } => {
                let io = dial(&addrs[idx % addrs.len()])
                    .await
                    .map_err(|e| format!("connect: {}", e.kind()))?;
                let mut body = FcgiBody {
                    io,
                    raw: BytesMut::with_capacity(8192),
                };
                let request = fcgi_request(path, last_event_id, headers)?;
                body.io
                    .write_all(&request)
                    .await
                    .map_err(|e| format!("write: {}", e.kind()))?;
                let rest = body.head().await?;
                Ok((Body::Fcgi(body), rest))
            }
        }
    }
}

/// The records of a FastCGI GET of `path` as a browser's EventSource sends it.
fn fcgi_request(
    path: &str,
    last_event_id: Option<&str>,
    headers: &[(String, String)],
) -> Result<BytesMut, String> {
    let (uri, query) = path.split_once('?').unwrap_or((path, ""));
    let mut p = BytesMut::new();
    for (k, v) in [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", path),
        ("DOCUMENT_URI", uri),
        ("SCRIPT_NAME", uri),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_ACCEPT", "text/event-stream"),
    ] {
        encode_pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    if let Some(id) = last_event_id {
        encode_pair(&mut p, b"HTTP_LAST_EVENT_ID", id.as_bytes());
    }
    for (k, v) in headers {
        let name = format!("HTTP_{}", k.to_ascii_uppercase().replace('-', "_"));
        encode_pair(&mut p, name.as_bytes(), v.as_bytes());
    }
    let mut out = BytesMut::new();
    for (t, c) in [
        (FCGI_BEGIN_REQUEST, &[0u8, 1, 0, 0, 0, 0, 0, 0][..]),
        (FCGI_PARAMS, &p[..]),
        (FCGI_PARAMS, b""),
        (FCGI_STDIN, b""),
    ] {
        encode_record(&Record::new(t, 1, c.to_vec()), &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

impl FcgiBody {
    /// Reads the response head (a `Status:` other than 200 is the failure); returns the body
    /// bytes that came with it.
    async fn head(&mut self) -> Result<Vec<u8>, String> {
        let mut head = Vec::new();
        loop {
            let Some(chunk) = self.next_chunk().await? else {
                return Err("closed before the response head".into());
            };
            head.extend_from_slice(&chunk);
            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..p]).to_string();
                if let Some(status) = text
                    .strip_prefix("Status: ")
                    .and_then(|s| s.split_whitespace().next())
                {
                    if status != "200" {
                        return Err(format!("http {status}"));
                    }
                }
                return Ok(head[p + 4..].to_vec());
            }
        }
    }
}
