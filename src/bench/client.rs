//! The bench's clients: an SSE response body read as it arrives — HTTP/1.1 (plain or chunked)
//! through a web server, or FastCGI STDOUT straight from a backend socket — and the publisher's
//! HTTP POST. Hand-written on purpose: the bench must see every byte as the wire delivers it.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use crate::fcgi::codec::{encode_record, Record, RecordCodec};
use crate::fcgi::params::encode_pair;
use crate::fcgi::{FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT};

#[derive(Debug, Clone)]
pub(crate) struct HttpUrl {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path: String,
}

pub(crate) fn parse_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.to_string(),
            p.parse().map_err(|_| format!("{url}: bad port"))?,
        ),
        _ => (authority.to_string(), 80),
    };
    Ok(HttpUrl {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        path: path.to_string(),
    })
}

pub(super) enum Target {
    Http(HttpUrl),
    Fcgi(String, String),
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

/// An open SSE response body, HTTP (plain or chunked) or FastCGI STDOUT.
pub(crate) struct Body {
    io: Box<dyn Io>,
    raw: BytesMut,
    kind: BodyKind,
}

#[derive(Clone, Copy)]
pub(super) enum BodyKind {
    Plain,
    Chunked(ChunkState),
    Fcgi,
}

#[derive(Clone, Copy)]
pub(super) enum ChunkState {
    Size,
    Data(usize),
    Crlf,
}

impl Body {
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

    /// The next piece of the body; `None` when the response ended.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<BytesMut>, String> {
        loop {
            match self.kind {
                BodyKind::Plain => {
                    if !self.raw.is_empty() {
                        return Ok(Some(self.raw.split()));
                    }
                }
                BodyKind::Chunked(ChunkState::Size) => {
                    if let Some(p) = self.raw.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(&self.raw[..p]).to_string();
                        self.raw.advance(p + 2);
                        let size =
                            usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                                .map_err(|_| format!("bad chunk size {line:?}"))?;
                        if size == 0 {
                            return Ok(None);
                        }
                        self.kind = BodyKind::Chunked(ChunkState::Data(size));
                        continue;
                    }
                }
                BodyKind::Chunked(ChunkState::Data(n)) => {
                    if !self.raw.is_empty() {
                        let take = n.min(self.raw.len());
                        let chunk = self.raw.split_to(take);
                        self.kind = BodyKind::Chunked(if take == n {
                            ChunkState::Crlf
                        } else {
                            ChunkState::Data(n - take)
                        });
                        return Ok(Some(chunk));
                    }
                }
                BodyKind::Chunked(ChunkState::Crlf) => {
                    if self.raw.len() >= 2 {
                        self.raw.advance(2);
                        self.kind = BodyKind::Chunked(ChunkState::Size);
                        continue;
                    }
                }
                BodyKind::Fcgi => {
                    while let Some(r) = RecordCodec
                        .decode(&mut self.raw)
                        .map_err(|e| e.to_string())?
                    {
                        match r.record_type {
                            FCGI_STDOUT if !r.content.is_empty() => {
                                return Ok(Some(BytesMut::from(&r.content[..])))
                            }
                            FCGI_END_REQUEST => return Ok(None),
                            _ => {}
                        }
                    }
                }
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Sends an EventSource's GET (plus `extra` headers) and reads the response head, whatever
    /// its status; returns the body positioned after the head, and the head (lowercased).
    pub(crate) async fn open_http(
        u: &HttpUrl,
        extra: &[(&str, &str)],
    ) -> Result<(Body, String), String> {
        let io = dial(&format!("{}:{}", u.host, u.port))
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let mut body = Body {
            io,
            raw: BytesMut::with_capacity(8192),
            kind: BodyKind::Plain,
        };
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
            u.path, u.host
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        body.io
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        let head_end = loop {
            if let Some(p) = body.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if body.raw.len() > 16384 || !body.fill().await? {
                return Err("closed before the response head".into());
            }
        };
        let head = String::from_utf8_lossy(&body.raw[..head_end]).to_ascii_lowercase();
        if head.contains("transfer-encoding: chunked") {
            body.kind = BodyKind::Chunked(ChunkState::Size);
        }
        body.raw.advance(head_end);
        Ok((body, head))
    }

    /// Opens the stream and checks the response head. Returns the body and any body bytes that
    /// came with the head; `Err` is the failure cause.
    /// `headers` (`-H`) go with every request: HTTP headers, or `HTTP_*` params over FastCGI.
    pub(super) async fn open(
        target: &Target,
        last_event_id: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<(Body, Vec<u8>), String> {
        match target {
            Target::Http(u) => {
                let mut extra: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if let Some(id) = last_event_id {
                    extra.push(("Last-Event-ID", id));
                }
                let (body, head) = Body::open_http(u, &extra).await?;
                let status = head.split_whitespace().nth(1).unwrap_or("?").to_string();
                if status != "200" {
                    return Err(format!("http {status}"));
                }
                Ok((body, Vec::new()))
            }
            Target::Fcgi(addr, path) => {
                let io = dial(addr)
                    .await
                    .map_err(|e| format!("connect: {}", e.kind()))?;
                let mut body = Body {
                    io,
                    raw: BytesMut::with_capacity(8192),
                    kind: BodyKind::Fcgi,
                };
                let (uri, query) = path.split_once('?').unwrap_or((path, ""));
                let mut p = BytesMut::new();
                for (k, v) in [
                    ("REQUEST_METHOD", "GET"),
                    ("REQUEST_URI", path.as_str()),
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
                    encode_record(&Record::new(t, 1, c.to_vec()), &mut out)
                        .map_err(|e| e.to_string())?;
                }
                body.io
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("write: {}", e.kind()))?;
                let mut head = Vec::new();
                loop {
                    let Some(chunk) = body.next_chunk().await? else {
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
                        return Ok((body, head[p + 4..].to_vec()));
                    }
                }
            }
        }
    }
}

pub(crate) async fn post(url: &HttpUrl, body: &str) -> Result<(), String> {
    let mut io = dial(&format!("{}:{}", url.host, url.port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        url.path,
        url.host,
        body.len()
    );
    io.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut resp)).await;
    let status = String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_string();
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("http {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/events?topic=a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/events?topic=a")
        );
        let u = parse_url("http://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(parse_url("https://x").is_err());
    }
}
