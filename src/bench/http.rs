//! The bench's HTTP side, on hyper + rustls: `http://` and `https://` URLs, HTTP/1.1 (one
//! connection per stream, as a browser without HTTP/2) or HTTP/2 (many streams on one
//! connection, as a browser with it; h2c prior knowledge on `http://`), a CA file or
//! `--insecure` for self-signed certificates, and source addresses to spread connections over.
//! [`HttpClient::open`] answers a GET with the response head and its body as it arrives;
//! [`HttpClient::post`] publishes.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};

use super::client::Io;
use super::tls::tls_config;

/// Longest wait for a TCP connect plus TLS handshake plus the response head.
pub(crate) const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// [`HttpClient::get`]'s error when [`OPEN_TIMEOUT`] passed.
pub(crate) const NO_HEAD: &str = "no response head within 10 s";

/// An `http://` or `https://` URL.
#[derive(Debug, Clone)]
pub(crate) struct Url {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query (`/events?topic=a`).
    pub(crate) path: String,
}

impl Url {
    /// `host:port` as the Host header (the port left out when it is the scheme's default).
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (false, 80) | (true, 443) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
    fn absolute(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }
}

/// Parses `http://HOST[:PORT]/PATH?QUERY` or `https://…`.
pub(crate) fn parse_url(url: &str) -> Result<Url, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("{url}: give an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: bad IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port"))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{url}: bad port"))?,
            ),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok(Url {
        https,
        host,
        port,
        path: path.to_string(),
    })
}

/// Which HTTP the bench speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpVersion {
    /// HTTP/1.1: one connection per stream.
    #[value(name = "1.1")]
    Http1,
    /// HTTP/2: streams share connections (`--streams-per-connection`).
    #[value(name = "2")]
    Http2,
}

/// How the client reaches servers: TLS settings, HTTP version, source addresses.
pub(crate) struct ClientSettings {
    pub version: HttpVersion,
    pub insecure: bool,
    pub cacert: Option<std::path::PathBuf>,
    pub sources: Vec<IpAddr>,
    pub streams_per_connection: usize,
}

/// A connected HTTP/2 connection's handle, shared by up to `streams_per_connection` streams.
type H2Slot = tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>;

/// Opens streams and posts; counts the transport connections it made.
pub(crate) struct HttpClient {
    settings: ClientSettings,
    tls: tokio_rustls::TlsConnector,
    h2: Vec<H2Slot>,
    /// TCP connections opened (HTTP/2 shares them; the report shows it).
    pub(crate) connections: AtomicU64,
}

/// An HTTP/1.1 connection: hyper's state machine for one socket, polled by whoever reads its
/// response (no task of its own: a stream is one task, not two, and an event wakes it once).
type H1Conn = Pin<Box<http1::Connection<TokioIo<Box<dyn Io>>, Full<Bytes>>>>;

/// The body of an open response: data as it arrives. Over HTTP/1.1 the body drives its own
/// connection (dropped with it); over HTTP/2 the shared connection has a task.
pub(crate) struct HttpBody {
    body: Incoming,
    conn: Option<H1Conn>,
}

/// Waits for `fut` while driving `conn` (until the connection ends: then `fut` alone, which
/// hyper then resolves, with what the connection delivered or with its error).
async fn driving<F: std::future::Future>(conn: &mut Option<H1Conn>, fut: F) -> F::Output {
    tokio::pin!(fut);
    loop {
        let Some(c) = conn.as_mut() else {
            return fut.await;
        };
        tokio::select! {
            biased;
            out = &mut fut => return out,
            _ = c.as_mut() => *conn = None,
        }
    }
}

impl HttpBody {
    /// The next data of the body; `None` when the response ended — cleanly, or cut off by the
    /// server closing the connection (an EventSource reconnects after either).
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match driving(&mut self.conn, self.body.frame()).await {
                None => return Ok(None),
                Some(Err(e)) if cut_off(&e) => return Ok(None),
                Some(Err(e)) => return Err(format!("read: {}", short(&e))),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        if !d.is_empty() {
                            return Ok(Some(d));
                        }
                    }
                }
            }
        }
    }
}

/// Whether the server closed the connection mid-body (a truncated chunked body, an HTTP/2
/// stream reset or connection closed by the peer).
fn cut_off(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_closed() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        src = inner.source();
    }
    false
}

fn short(e: &hyper::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

impl HttpClient {
    /// A client for `subscribers` streams (the HTTP/2 connections are shared among them).
    pub(crate) fn new(settings: ClientSettings, subscribers: usize) -> Result<Self, String> {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(&settings)?));
        let per = settings.streams_per_connection.max(1);
        let slots = match settings.version {
            HttpVersion::Http1 => 0,
            HttpVersion::Http2 => subscribers.div_ceil(per) + 1,
        };
        Ok(HttpClient {
            h2: (0..slots).map(|_| tokio::sync::Mutex::new(None)).collect(),
            settings,
            tls,
            connections: AtomicU64::new(0),
        })
    }

    /// A client for one request at a time over HTTP/1.1, https checked against the system's
    /// CAs: what hooks and JWK Set fetches use.
    pub(crate) fn plain() -> Result<Self, String> {
        HttpClient::new(
            ClientSettings {
                version: HttpVersion::Http1,
                insecure: false,
                cacert: None,
                sources: Vec::new(),
                streams_per_connection: 1,
            },
            1,
        )
    }

    /// A TCP connection (from the `idx`th source address), then TLS for https.
    async fn transport(&self, url: &Url, idx: usize) -> Result<Box<dyn Io>, String> {
        let addr: SocketAddr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("resolve {}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("resolve {}: no address", url.host))?;
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if !self.settings.sources.is_empty() {
            let src = self.settings.sources[idx % self.settings.sources.len()];
            // The port is chosen at connect, by the whole address pair, not at bind: a bind
            // to port 0 makes the kernel search for a port no other socket on this address
            // holds, which with thousands open spends whole seconds of system time per batch
            // of connects (the ramp of bench-50k stalled at ~9,000 streams with 100% system
            // CPU in the bench processes) and caps each address at ~28,000 ports.
            use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
            let _ = setsockopt(&sock, IpBindAddressNoPort, &true);
            sock.bind(SocketAddr::new(src, 0))
                .map_err(|e| format!("bind {src}: {}", e.kind()))?;
        }
        let tcp: TcpStream = sock
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        self.connections.fetch_add(1, Ordering::Relaxed);
        if !url.https {
            return Ok(Box::new(tcp));
        }
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| format!("{}: not a TLS server name", url.host))?;
        let s = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        if self.settings.version == HttpVersion::Http2
            && s.get_ref().1.alpn_protocol() != Some(b"h2")
        {
            return Err("tls: the server did not offer HTTP/2 (ALPN h2)".into());
        }
        Ok(Box::new(s))
    }

    /// A sender on the shared HTTP/2 connection for stream `idx`, connecting it when needed.
    async fn h2_sender(
        &self,
        url: &Url,
        idx: usize,
    ) -> Result<http2::SendRequest<Full<Bytes>>, String> {
        let per = self.settings.streams_per_connection.max(1);
        // Subscribers of later stages (indexes past the peak) take the slots again in turn.
        let slot = &self.h2[(idx / per) % self.h2.len()];
        // The slot's lock is held while its connection is made, so the streams that share it
        // wait for one connection instead of each making one; the connect has a deadline.
        let mut guard = slot.lock().await;
        if let Some(s) = guard.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let io = self.transport(url, idx / per).await?;
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.initial_connection_window_size(16 << 20)
            .initial_stream_window_size(1 << 20);
        let (sender, conn) = b
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("h2 handshake: {}", short(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *guard = Some(sender.clone());
        Ok(sender)
    }

    fn request(
        &self,
        url: &Url,
        method: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let h2 = self.settings.version == HttpVersion::Http2;
        let mut b = http::Request::builder().method(method).uri(if h2 {
            url.absolute()
        } else {
            url.path.clone()
        });
        let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !h2 && !has_host {
            b = b.header("host", url.authority());
        }
        for (k, v) in headers {
            if h2 && k.eq_ignore_ascii_case("host") {
                continue;
            }
            b = b.header(*k, *v);
        }
        b.body(Full::new(body)).map_err(|e| e.to_string())
    }

    /// Sends a request for stream `idx` and waits for the response head.
    pub(crate) async fn send(
        &self,
        url: &Url,
        idx: usize,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, HttpBody), String> {
        let (resp, conn) = match self.settings.version {
            HttpVersion::Http2 => {
                let mut s = self.h2_sender(url, idx).await?;
                s.ready().await.map_err(|e| format!("h2: {}", short(&e)))?;
                let r = s
                    .send_request(req)
                    .await
                    .map_err(|e| format!("request: {}", short(&e)))?;
                (r, None)
            }
            HttpVersion::Http1 => {
                let io = self.transport(url, idx).await?;
                let (mut s, conn) = http1::handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| format!("handshake: {}", short(&e)))?;
                let mut conn = Some(Box::pin(conn));
                let r = driving(&mut conn, s.send_request(req))
                    .await
                    .map_err(|e| format!("request: {}", short(&e)))?;
                (r, conn)
            }
        };
        let (parts, body) = resp.into_parts();
        Ok((parts, HttpBody { body, conn }))
    }

    /// An EventSource's GET (plus `extra` headers), whatever the status; the head within
    /// [`OPEN_TIMEOUT`].
    pub(crate) async fn get(
        &self,
        url: &Url,
        idx: usize,
        extra: &[(&str, &str)],
    ) -> Result<(http::response::Parts, HttpBody), String> {
        let mut h = vec![
            ("accept", "text/event-stream"),
            ("cache-control", "no-cache"),
        ];
        h.extend_from_slice(extra);
        let req = self.request(url, "GET", &h, Bytes::new())?;
        tokio::time::timeout(OPEN_TIMEOUT, self.send(url, idx, req))
            .await
            .map_err(|_| NO_HEAD.to_string())?
    }

    /// A plain GET (no EventSource headers) of a whole page: its status and body, at most
    /// `max` bytes.
    pub(crate) async fn fetch(&self, url: &Url, max: usize) -> Result<(u16, Vec<u8>), String> {
        let req = self.request(url, "GET", &[], Bytes::new())?;
        let (parts, mut b) = self.send(url, usize::MAX / 4, req).await?;
        let mut page = Vec::new();
        while let Some(chunk) = b.next_chunk().await? {
            page.extend_from_slice(&chunk);
            if page.len() > max {
                return Err(format!("the page is over {max} bytes"));
            }
        }
        Ok((parts.status.as_u16(), page))
    }

    /// POSTs `body` with `headers`; the status and at most `max` bytes of the body, whatever
    /// the status (a hook's caller decides). No deadline of its own: the caller's.
    pub(crate) async fn post_full(
        &self,
        url: &Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        max: usize,
    ) -> Result<(u16, Vec<u8>), String> {
        let req = self.request(url, "POST", headers, Bytes::from(body))?;
        let (parts, mut b) = self.send(url, 0, req).await?;
        let mut page = Vec::new();
        while let Some(chunk) = b.next_chunk().await? {
            if page.len() < max {
                page.extend_from_slice(&chunk[..chunk.len().min(max - page.len())]);
            }
        }
        Ok((parts.status.as_u16(), page))
    }

    /// POSTs `body` (text/plain); `Ok` on a 2xx answer, within 5 s.
    pub(crate) async fn post(&self, url: &Url, body: &str) -> Result<(), String> {
        let req = self.request(
            url,
            "POST",
            &[("content-type", "text/plain")],
            Bytes::copy_from_slice(body.as_bytes()),
        )?;
        let work = async {
            let (parts, mut b) = self.send(url, usize::MAX / 2, req).await?;
            while b.next_chunk().await?.is_some() {}
            Ok::<_, String>(parts.status)
        };
        let status = tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .map_err(|_| "no answer within 5 s".to_string())??;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("http {}", status.as_u16()))
        }
    }
}

/// The response head as text (`http/1.1 200 ok` then `name: value` lines, lowercased), for
/// checks that read it as a browser's network panel shows it.
pub(crate) fn head_text(parts: &http::response::Parts) -> String {
    let mut s = format!("{:?} {}\r\n", parts.version, parts.status.as_str());
    for (k, v) in &parts.headers {
        s.push_str(&format!(
            "{}: {}\r\n",
            k,
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    s.push_str("\r\n");
    s.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/events?topic=a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.https),
            ("127.0.0.1", 8080, "/events?topic=a", false)
        );
        let u = parse_url("http://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = parse_url("https://example.test/e").unwrap();
        assert_eq!(
            (u.port, u.https, u.authority()),
            (443, true, "example.test".into())
        );
        let u = parse_url("https://[::1]:8443/e").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8443));
        assert_eq!(u.absolute(), "https://[::1]:8443/e");
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://h:port/").is_err());
    }
}
