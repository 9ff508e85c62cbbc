//! The access log: one JSON line per stream that ended (when, request id, route, request URI,
//! peer, duration, events and bytes written, why it ended), in a file that log tools (jq,
//! Loki, Vector, `tail -f`) read. Written by a thread of its own through a bounded queue, so a
//! slow disk never holds up a stream; a full queue drops lines and counts them. SIGHUP reopens
//! the file (after logrotate moved it).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Lines waiting for the writer thread before new ones are dropped.
const QUEUE: usize = 8192;

/// An open access log.
pub struct AccessLog {
    tx: SyncSender<String>,
    reopen: Arc<AtomicBool>,
    /// Lines dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

/// What an access line says of one stream, gathered when it opens.
#[derive(Debug)]
pub struct StreamLog {
    /// Request id.
    pub req: String,
    /// Route path.
    pub route: String,
    /// `REQUEST_URI` as sent (path and query: the topics asked for).
    pub uri: String,
    /// The browser's address.
    pub peer: String,
    /// When the stream opened.
    pub started: Instant,
}

/// Query parameters whose values are credentials (Mercure's `authorization` holds a JWT).
const SECRET_PARAMS: &[&str] = &["authorization", "access_token", "token"];

/// `uri` with the values of credential parameters replaced by `REDACTED`, so that an access
/// log never stores a token (the parameter's name is matched as a server decodes it).
pub fn redact_uri(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_encoding::percent_decode_str(&k.replace('+', " "))
                .decode_utf8_lossy()
                .to_ascii_lowercase();
            if SECRET_PARAMS.contains(&name.as_str()) {
                format!("{k}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

fn open_file(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl AccessLog {
    /// Opens (creating) `path` for appending and starts the writer thread. Blocking: call it
    /// before serving.
    pub fn open(path: PathBuf) -> Result<Arc<AccessLog>, String> {
        let mut file =
            open_file(&path).map_err(|e| format!("access_log {}: {e}", path.display()))?;
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    if flag.swap(false, Ordering::AcqRel) {
                        match open_file(&path) {
                            Ok(f) => file = f,
                            Err(e) => log::error!("access_log {}: reopen: {e}", path.display()),
                        }
                    }
                    let mut batch = first;
                    while let Ok(more) = rx.try_recv() {
                        batch.push_str(&more);
                        if batch.len() > 1 << 16 {
                            break;
                        }
                    }
                    if let Err(e) = file.write_all(batch.as_bytes()) {
                        log::error!("access_log {}: {e}", path.display());
                    }
                }
            })
            .map_err(|e| format!("access_log thread: {e}"))?;
        Ok(Arc::new(AccessLog {
            tx,
            reopen,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Reopens the file before the next line (SIGHUP, after logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Queues the line for a stream that ended; never waits.
    pub fn stream_ended(&self, s: &StreamLog, end: &str, events: u64, bytes: u64) {
        let line = serde_json::json!({
            "ts": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            "req": s.req,
            "route": s.route,
            "uri": s.uri,
            "peer": s.peer,
            "duration_ms": s.started.elapsed().as_millis() as u64,
            "events": events,
            "bytes": bytes,
            "end": end,
        });
        let mut text = line.to_string();
        text.push('\n');
        if let Err(TrySendError::Full(_)) = self.tx.try_send(text) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_the_log() {
        assert_eq!(
            redact_uri("/hub?topic=a%2Fb&authorization=eyJ.x.y&lastEventID=3"),
            "/hub?topic=a%2Fb&authorization=REDACTED&lastEventID=3"
        );
        assert_eq!(
            redact_uri("/hub?%61uthorization=eyJ"),
            "/hub?%61uthorization=REDACTED"
        );
        assert_eq!(
            redact_uri("/hub?Authorization=eyJ&token"),
            "/hub?Authorization=REDACTED&token=REDACTED"
        );
        assert_eq!(redact_uri("/events?topic=t"), "/events?topic=t");
        assert_eq!(redact_uri("/events"), "/events");
    }
}
