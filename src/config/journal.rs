//! `[journal]`: where topics are kept — the local journal (directory, fsync policy, segment
//! sizes, retention, lock wait, what to do about damage) or Redis (URL, key prefix, TLS CA) —
//! and the storage each `topics`, `mercure` or `command` route with a topic gets from it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{de_positive_duration, RouteConfig};

/// `[journal]`: the durable event journal of `topics` routes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Data directory; each topics route journals to a folder in it. `--data-dir` overrides.
    pub dir: PathBuf,
    /// `always` (fsync each event), `batch` (one fsync per group of concurrent publishes) or
    /// `never`.
    pub fsync: crate::hub::journal::FsyncPolicy,
    /// Segment size before a new segment file is started.
    #[serde(deserialize_with = "de_positive_u64")]
    pub segment_bytes: u64,
    /// Total journal size kept per route; the oldest segments go first.
    #[serde(deserialize_with = "de_positive_u64")]
    pub max_bytes: u64,
    /// Segments older than this are deleted.
    #[serde(deserialize_with = "de_positive_duration")]
    pub max_age: Duration,
    /// Longest a publish waits for the journal lock (held by `fastsse publish` or a CGI
    /// request) before it is answered `503` (not stored).
    #[serde(deserialize_with = "de_positive_duration")]
    pub lock_timeout: Duration,
    /// Damage in a journal (bad records followed by good ones): `skip` it with a log line
    /// (clients resuming across it get a reset), or `refuse` to start.
    pub on_corruption: crate::hub::journal::CorruptionPolicy,
    /// Where topics are kept: `local` (the journal in `dir`) or `redis` (one Redis stream per
    /// route, shared by every instance that points at it).
    pub backend: JournalBackend,
    /// `redis`: `redis://[user:pass@]host:port/db` or `redis+unix:///path/redis.sock`.
    pub url: Option<toml::Spanned<String>>,
    /// `redis`: prefix of the keys (`<prefix><route>` stream, `<prefix><route>:seq` counter).
    pub key_prefix: String,
    /// `redis` over TLS (`rediss://`): a CA certificate (PEM) to check the server with, in
    /// place of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

/// `[journal] backend`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JournalBackend {
    /// The local journal (segments in `dir`, flock, inotify).
    #[default]
    Local,
    /// Redis Streams: several instances, on several hosts, share one history.
    Redis,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: PathBuf::from("fastsse-data"),
            fsync: crate::hub::journal::FsyncPolicy::Batch,
            segment_bytes: 16 << 20,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 86400),
            lock_timeout: Duration::from_secs(2),
            on_corruption: crate::hub::journal::CorruptionPolicy::Skip,
            backend: JournalBackend::Local,
            url: None,
            key_prefix: "fastsse:".to_string(),
            tls_ca_file: None,
        }
    }
}

fn de_positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(v)
}

impl JournalConfig {
    /// Where one topics or mercure route keeps its events.
    pub fn storage_for(&self, route: &RouteConfig) -> crate::hub::Storage {
        #[cfg(feature = "redis")]
        let hub = route.settings.hub().cloned().unwrap_or_default();
        match (self.backend, &self.url) {
            #[cfg(feature = "redis")]
            (JournalBackend::Redis, Some(url)) => {
                crate::hub::Storage::Redis(crate::hub::redis::RedisSettings {
                    url: url.get_ref().clone(),
                    key: format!("{}{}", self.key_prefix, route.journal_name()),
                    max_len: hub.history_events,
                    max_age: hub.history_age,
                    timeout: self.lock_timeout,
                    tls_ca: self.tls_ca_file.clone(),
                })
            }
            _ => crate::hub::Storage::Local(self.settings_for(route)),
        }
    }

    /// The journal of one topics route: its own folder in the data directory.
    pub fn settings_for(&self, route: &RouteConfig) -> crate::hub::journal::JournalSettings {
        crate::hub::journal::JournalSettings {
            dir: self.dir.join(route.journal_name()),
            fsync: self.fsync,
            segment_bytes: self.segment_bytes,
            max_bytes: self.max_bytes,
            max_age: self.max_age,
            lock_timeout: self.lock_timeout,
            on_corruption: self.on_corruption,
        }
    }
}
