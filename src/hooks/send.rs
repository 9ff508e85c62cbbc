//! Making one hook call: a POST to the application's URL, or a FastCGI request straight into
//! its php-fpm pool (`SCRIPT_FILENAME` set, as nginx would send it, no web server between).
//! What counts as made: a 2xx; anything else (no connection, a timeout, php-fpm's 404 for a
//! script it cannot find, a 5xx, a 401 for a secret that does not match) is tried again. A
//! connect that waits takes a 401/403 as the application's refusal.

use std::time::Duration;

use super::call::{BodyFormat, Call};

/// Where calls go.
pub(crate) enum Target {
    /// `hook_url`: HTTP(S) POST.
    #[cfg(feature = "client")]
    Http {
        /// It, parsed.
        parsed: crate::bench::http::Url,
        /// The client (TLS with the system's roots).
        client: crate::bench::http::HttpClient,
    },
    /// `hook_fastcgi` + `hook_script`: a FastCGI request to the application's pool.
    Fastcgi {
        /// `unix:/run/php/php8.2-fpm.sock` or `host:port`.
        addr: String,
        /// The script's absolute path (`SCRIPT_FILENAME`).
        script: String,
    },
}

/// How a route's calls are made, from its config (a reload replaces it).
pub struct Delivery {
    /// The route's path, for logs.
    pub route: String,
    /// Where to.
    pub(crate) target: Target,
    /// Form or JSON.
    pub format: BodyFormat,
    /// Longest one attempt may take.
    pub timeout: Duration,
    /// Most calls in flight at once.
    pub concurrency: usize,
    /// Most bytes of calls held (`hook_queue_bytes`).
    pub queue_bytes: usize,
    /// Sent as `Authorization: Bearer …` so the application can tell calls are fastsse's.
    pub secret: Option<String>,
}

/// Why this process cannot connect to the unix socket of `addr` now, with the fix when it is
/// a permission (php-fpm's socket is `www-data` 0660 on Debian). Blocking: config time only.
pub fn probe_unix(addr: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = addr.strip_prefix("unix:")?;
    let e = std::os::unix::net::UnixStream::connect(path).err()?;
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return Some(format!(
            "cannot connect: {e} (is the application's pool running?)"
        ));
    }
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
    let group = std::fs::metadata(path).ok().and_then(|m| {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
            .ok()
            .flatten()
            .map(|g| g.name)
    });
    Some(match group {
        Some(g) => format!(
            "permission denied to user {me}: add it to the socket's group (adduser {me} {g}) and \
             restart fastsse, or set the pool's listen.acl_users"
        ),
        None => format!("permission denied to user {me}"),
    })
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The application answered with this status and body.
    Answered(Answer),
    /// No answer: why (tried again later).
    Failed(String),
}

impl Outcome {
    /// A call is made when the application answers 2xx; any other answer (php-fpm's 404, a
    /// 500, a 401 from a secret that does not match) is a failure, tried again — a refusal
    /// means something only to a connect that waits ([`Answer::refuses`]).
    pub fn judged(self) -> Outcome {
        match self {
            Outcome::Answered(a) if !(200..300).contains(&a.status) => Outcome::Failed(format!(
                "the application answered {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body[..a.body.len().min(200)]).trim()
            )),
            other => other,
        }
    }
}

impl Answer {
    /// 401 or 403: a connect hook that waits refuses the stream with it.
    pub fn refuses(&self) -> bool {
        self.status == 401 || self.status == 403
    }
}

/// The application's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its body (at most [`MAX_REPLY`] bytes), for a refused stream's browser.
    pub body: Vec<u8>,
}

/// Most bytes of an application's reply that are read.
pub const MAX_REPLY: usize = 64 * 1024;

impl Delivery {
    /// Makes one attempt at `call`, within `timeout`.
    pub async fn send(&self, call: &Call) -> Outcome {
        let (body, content_type) = call.body(self.format);
        let r = match &self.target {
            #[cfg(feature = "client")]
            Target::Http { parsed, client, .. } => {
                let auth = self.secret.as_ref().map(|s| format!("Bearer {s}"));
                let mut headers = vec![
                    ("content-type", content_type),
                    ("x-fastsse-hook", call.event.as_str()),
                    ("x-fastsse-hook-id", call.id.as_str()),
                ];
                if let Some(a) = &auth {
                    headers.push(("authorization", a.as_str()));
                }
                let work = client.post_full(parsed, &headers, body, MAX_REPLY);
                match tokio::time::timeout(self.timeout, work).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
                }
            }
            Target::Fastcgi { addr, script } => {
                self.fastcgi(addr, script, call, &body, content_type).await
            }
        };
        match r {
            Ok((status, body)) => Outcome::Answered(Answer { status, body }),
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn fastcgi(
        &self,
        addr: &str,
        script: &str,
        call: &Call,
        body: &[u8],
        content_type: &str,
    ) -> Result<(u16, Vec<u8>), String> {
        let name = std::path::Path::new(script)
            .file_name()
            .map(|n| format!("/{}", n.to_string_lossy()))
            .unwrap_or_else(|| "/".into());
        let len = body.len().to_string();
        let auth = self.secret.as_ref().map(|s| format!("Bearer {s}"));
        let mut params = vec![
            ("SCRIPT_FILENAME", script),
            ("SCRIPT_NAME", name.as_str()),
            ("REQUEST_URI", name.as_str()),
            ("DOCUMENT_URI", name.as_str()),
            ("QUERY_STRING", ""),
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", content_type),
            ("CONTENT_LENGTH", len.as_str()),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            (
                "SERVER_SOFTWARE",
                concat!("fastsse/", env!("CARGO_PKG_VERSION")),
            ),
            ("SERVER_NAME", "localhost"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_HOST", "localhost"),
            (
                "HTTP_USER_AGENT",
                concat!("fastsse/", env!("CARGO_PKG_VERSION")),
            ),
            ("HTTP_X_FASTSSE_HOOK", call.event.as_str()),
            ("HTTP_X_FASTSSE_HOOK_ID", call.id.as_str()),
        ];
        if let Some(a) = &auth {
            params.push(("HTTP_AUTHORIZATION", a.as_str()));
        }
        let reply = crate::fcgi::client::call(addr, &params, body, self.timeout, MAX_REPLY)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        if reply.status == 404 && !reply.stderr.is_empty() {
            // php-fpm: "Primary script unknown" — the path, not the application.
            return Err(format!(
                "{addr}: {} (is hook_script the path php-fpm sees?)",
                String::from_utf8_lossy(&reply.stderr).trim()
            ));
        }
        Ok((reply.status, reply.body))
    }
}
