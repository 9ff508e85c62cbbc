//! A per-stream command: one process per browser, with a CGI-style environment (what a PHP SSE
//! endpoint reads: `QUERY_STRING`, `REQUEST_URI`, `REMOTE_ADDR`, `REMOTE_USER`, `HTTP_*`
//! including `HTTP_LAST_EVENT_ID`), its stdout the stream. It is ended — SIGTERM, then SIGKILL
//! after `kill_grace` — the moment the stream ends: the browser left, the program's output
//! ended, or the server stops. Past `max_processes`, 503.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};

use super::output::{DropReport, OutputParser, OutputRules};
use super::slots::{Slot, Slots};
use super::{end, Program};
use crate::request::Request;
use crate::response::FullResponse;
use crate::source::{NextEvent, Source};
use crate::sse::EncodedEvent;

/// The CGI variables a per-stream program gets from its request (besides every `HTTP_*`).
const CGI_VARS: &[&str] = &[
    "QUERY_STRING",
    "REQUEST_URI",
    "REQUEST_METHOD",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REMOTE_USER",
    "SCRIPT_NAME",
    "PATH_INFO",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "HTTPS",
];

/// Request variables a client can set that a program must never see: `HTTP_PROXY` is a
/// `Proxy:` header, read by Guzzle, curl's PHP bindings and Go as the proxy for every
/// outgoing request (httpoxy, CVE-2016-5385).
const NEVER_PASSED: &[&str] = &["HTTP_PROXY"];

/// The environment a per-stream program gets from its request's variables: the CGI ones and
/// every `HTTP_*` header, less those in [`NEVER_PASSED`] and values no environment can hold
/// (a NUL byte).
fn program_env<'a>(vars: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    vars.filter(|(k, _)| k.starts_with("HTTP_") || CGI_VARS.contains(k))
        .filter(|(k, v)| !NEVER_PASSED.contains(k) && !v.contains('\0'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One per-stream command route.
pub struct PerStream {
    program: Program,
    output: OutputRules,
    /// `max_processes`, counted across reloads and workers.
    pub slots: Arc<Slots>,
    /// Events the programs printed that were dropped (over `max_event_bytes`).
    pub dropped: Arc<AtomicU64>,
}

impl PerStream {
    /// A per-stream route running `program`, one per slot at most.
    pub fn new(program: Program, output: OutputRules, slots: Arc<Slots>) -> PerStream {
        PerStream {
            program,
            output,
            slots,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the program for `req`; a 503 past `max_processes`, a 500 when it cannot start.
    pub fn open(&self, req: &Request) -> Result<ProcessSource, FullResponse> {
        let Some(slot) = self.slots.try_take() else {
            return Err(FullResponse::text(
                503,
                format!(
                    "{}: all {} programs are running (max_processes); retry",
                    self.program.route,
                    self.slots.len()
                ),
            )
            .with_header("Retry-After", "5"));
        };
        let mut env = program_env(req.vars());
        env.push(("GATEWAY_INTERFACE".into(), "CGI/1.1".into()));
        let mut child = self.program.spawn(&env).map_err(|e| {
            log::error!(
                "req={} route={}: cannot start {:?}: {e}",
                req.id,
                self.program.route,
                self.program.argv
            );
            FullResponse::text(
                500,
                format!("{}: the program could not be started", self.program.route),
            )
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let pid = child.id().unwrap_or(0);
        Ok(ProcessSource {
            child: Some(child),
            stdout,
            parser: self.output.parser(),
            report: DropReport::new(&self.program.route, pid, self.output.max_event_bytes),
            dropped: self.dropped.clone(),
            pending: VecDeque::new(),
            grace: self.program.kill_grace,
            _slot: slot,
        })
    }
}

/// One browser's program.
pub struct ProcessSource {
    child: Option<Child>,
    stdout: ChildStdout,
    parser: OutputParser,
    report: DropReport,
    dropped: Arc<AtomicU64>,
    pending: VecDeque<Bytes>,
    grace: std::time::Duration,
    _slot: Slot,
}

impl Source for ProcessSource {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move {
            let mut buf = [0u8; 8192];
            loop {
                if let Some(ev) = self.pending.pop_front() {
                    return Some(EncodedEvent::from_shared(ev));
                }
                // Cancel-safe: a read that is dropped has taken nothing.
                let n = match self.stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => n,
                };
                for ev in self.parser.feed(&buf[..n]) {
                    if let Ok(e) = ev.to_event().encode() {
                        self.pending.push_back(e.into_bytes());
                    }
                }
                self.report.update(&self.parser, &self.dropped);
            }
        })
    }
}

impl Drop for ProcessSource {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            end(child, self.grace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn httpoxy_and_daemon_variables_never_reach_the_program() {
        let vars = [
            ("HTTP_PROXY", "http://evil.example:8080"),
            ("HTTP_ACCEPT", "text/event-stream"),
            ("HTTP_X_NUL", "a\0b"),
            ("QUERY_STRING", "a=1"),
            ("SCRIPT_FILENAME", "/srv/secret/path.php"),
            ("DOCUMENT_ROOT", "/srv"),
        ];
        let env = program_env(vars.into_iter());
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["HTTP_ACCEPT", "QUERY_STRING"]);
    }
}
