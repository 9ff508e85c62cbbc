//! The Redis backend behind a hub: one Redis stream per route, shared by every instance that
//! points at it, so an event published on one node reaches browsers on all of them and any
//! node can resume any browser.
//!
//! Ids: a counter and the `XADD` in one Lua script, run atomically by Redis. Ids stay `u64`
//! sequence numbers, strictly increasing across instances, exactly as the local journal's — so
//! replay, `Last-Event-ID` and `fastsse-reset` work the same on every instance. (Redis's own
//! entry ids are time-based and would differ in form between the backends.) The entry id is
//! `<id>-0`. The script never issues an id at or below the stream's newest entry, nor below the
//! newest id the appending instance has seen, so a Redis that lost its counter (restarted
//! without persistence) cannot hand out an id twice. A stream with neither entries nor counter
//! — new, or whose data was lost (`FLUSHALL`, a restart without persistence) — numbers from
//! Redis's clock in microseconds: above every id issued before the loss, even by an instance
//! that never saw them (ids stay below 2^53, exact in JavaScript, for two centuries). An
//! instance that had seen the old ids finds the jump when it reads, and its subscribers are
//! told `lost` (the reader's gap check), never handed a reused id. Where such a numbering
//! starts is kept in `<key>:start`: ids below it were never issued by this stream (a resume
//! from one of them is told `lost`; `0`, "from the start", replays everything).
//!
//! Two threads per route, as for the local journal: the appender (one connection; each batch
//! of waiting publications is one script call; one truthful answer per publication) and the
//! reader (`XREAD BLOCK` from the last id delivered — one per route per instance, whatever the
//! number of subscribers — feeding the hub's fan-out). Both reconnect with backoff and log one
//! line per outage. Every call has a deadline (socket timeouts).

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamId, StreamRangeReply};
use redis::{Client, Connection, RedisError, Script, Value};

use super::backend::{AppendJob, JobQueue};
use super::journal::{decode_record, encode_record, now_ms, Decoded, JournalError, JournalRecord};
use super::Hub;

mod threads;

/// Most publications in one script call.
pub(super) const BATCH: usize = 256;
/// How long one `XREAD` blocks waiting for new entries.
pub(super) const BLOCK: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and how a route's events are kept in Redis.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://…` URL.
    pub url: String,
    /// The stream's key (the counter is `<key>:seq`; where numbering last started from the
    /// clock, `<key>:start`).
    pub key: String,
    /// Entries kept (`MAXLEN ~`): the route's `history_events`.
    pub max_len: usize,
    /// Entries older than this are trimmed (`MINID`): the route's `history_age`.
    pub max_age: Duration,
    /// Deadline of connecting and of each call.
    pub timeout: Duration,
    /// `rediss://`: the CA certificate (PEM) the server's certificate is checked against;
    /// `None`: the system's roots.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// A client for `s` (TLS for `rediss://`, with `tls_ca` as the root when set). Reads the CA
/// file: call it while loading config or from a blocking thread.
pub fn client(s: &RedisSettings) -> Result<Client, String> {
    if s.url.starts_with("rediss://") {
        // rustls needs a process-wide crypto provider; ring is the one built in.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match (&s.tls_ca, s.url.starts_with("rediss://")) {
        (Some(ca), true) => {
            let root = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            Client::build_with_tls(
                s.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                },
            )
            .map_err(|e| e.to_string())
        }
        _ => Client::open(s.url.as_str()).map_err(|e| e.to_string()),
    }
}

/// Checks a Redis URL without connecting.
pub fn check_url(url: &str) -> Result<(), String> {
    Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("not a Redis URL ({e}); use redis://host:6379/0"))
}

/// Appends records; see the module documentation for the id rule.
pub(super) const APPEND: &str = r"
local floor = tonumber(ARGV[2])
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then
  local t = tonumber(string.match(top[1][1], '^(%d+)'))
  if t > floor then floor = t end
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  local us = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if us > floor then floor = us end
  redis.call('SET', KEYS[3], floor + 1)
end
local out = {}
for i = 3, #ARGV do
  local id = redis.call('INCR', KEYS[2])
  if id <= floor then
    id = floor + 1
    redis.call('SET', KEYS[2], id)
  end
  local r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], string.format('%d-0', id), 'r', ARGV[i])
  if type(r) == 'table' and r.err then
    out[#out + 1] = r.err
  else
    out[#out + 1] = id
    floor = id
  end
end
return out
";

pub(super) fn connect(
    client: &Client,
    timeout: Duration,
    read_timeout: Duration,
) -> redis::RedisResult<Connection> {
    let c = client.get_connection_with_timeout(timeout)?;
    c.set_read_timeout(Some(read_timeout))?;
    c.set_write_timeout(Some(timeout))?;
    Ok(c)
}

/// A stream entry as a record (`None` for an entry that is not one of ours).
pub(super) fn record_of(entry: &StreamId) -> Option<JournalRecord> {
    let id: u64 = entry.id.split('-').next()?.parse().ok()?;
    let Some(Value::BulkString(bytes)) = entry.map.get("r") else {
        return None;
    };
    match decode_record(bytes.as_slice()) {
        Decoded::Record(mut r, _) => {
            r.id = id;
            Some(r)
        }
        _ => None,
    }
}

/// The appender and reader threads, not yet started.
pub struct Threads {
    settings: RedisSettings,
    client: Client,
    jobs: std::sync::mpsc::Receiver<AppendJob>,
}

/// A Redis stream as a hub's storage: [`RedisJournal::open`] loads it and makes its threads.
pub struct RedisJournal;

impl RedisJournal {
    /// Loads the newest `max_len` entries (oldest first, into `each`), the last id issued and
    /// where the numbering started from the clock (if it did). A Redis that does not answer is
    /// not an error: the hub starts empty and the reader catches up once it does.
    #[allow(clippy::type_complexity)]
    pub fn open(
        settings: RedisSettings,
        mut each: impl FnMut(JournalRecord),
    ) -> Result<(JobQueue, (u64, Option<u64>), Threads), JournalError> {
        let client = client(&settings).map_err(|e| JournalError::Io {
            what: "redis client".into(),
            source: std::io::Error::other(e),
        })?;
        let load = |con: &mut Connection, each: &mut dyn FnMut(JournalRecord)| {
            let newest: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&settings.key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(settings.max_len)
                .query(con)?;
            let mut last = 0;
            for r in newest.ids.iter().rev().filter_map(record_of) {
                last = r.id;
                each(r);
            }
            let counter: Option<u64> = redis::cmd("GET")
                .arg(format!("{}:seq", settings.key))
                .query(con)?;
            let start: Option<u64> = redis::cmd("GET")
                .arg(format!("{}:start", settings.key))
                .query(con)
                .unwrap_or(None);
            Ok::<_, RedisError>((last.max(counter.unwrap_or(0)), start))
        };
        let loaded = match connect(&client, settings.timeout, settings.timeout)
            .and_then(|mut con| load(&mut con, &mut each))
        {
            Ok(loaded) => loaded,
            Err(e) => {
                log::error!(
                    "redis {}: not answering at start ({e}); serving, and catching up once it does",
                    settings.key
                );
                (0, None)
            }
        };
        let (backend, rx) = JobQueue::new("Redis");
        Ok((
            backend,
            loaded,
            Threads {
                settings,
                client,
                jobs: rx,
            },
        ))
    }
}

impl Threads {
    /// Starts the appender and reader threads of `hub`.
    pub fn start(self, hub: &Arc<Hub>) -> Result<(), JournalError> {
        let Threads {
            settings,
            client,
            jobs,
        } = self;
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map(|_| ())
                .map_err(|source| JournalError::Io {
                    what: "spawn a redis thread".into(),
                    source,
                })
        };
        let (s, c, weak) = (settings.clone(), client.clone(), Arc::downgrade(hub));
        spawn(
            format!("redis-append {}", hub.name),
            Box::new(move || threads::append_loop(&s, &c, jobs, weak)),
        )?;
        let weak = Arc::downgrade(hub);
        spawn(
            format!("redis-read {}", hub.name),
            Box::new(move || threads::read_loop(&settings, &client, weak)),
        )
    }
}

/// For `check-config`: whether Redis answers, and how many entries the stream holds.
pub fn check(s: &RedisSettings) -> Result<u64, String> {
    let client = client(s)?;
    let mut con = connect(&client, s.timeout, s.timeout).map_err(|e| e.to_string())?;
    redis::cmd("XLEN")
        .arg(&s.key)
        .query(&mut con)
        .map_err(|e| e.to_string())
}

/// Appends one publication from outside a hub (`fastsse publish` with no daemon listening).
pub fn append_once(s: &RedisSettings, p: super::journal::Publication) -> Result<u64, String> {
    let client = client(s)?;
    let mut con = connect(&client, s.timeout, s.timeout)
        .map_err(|e| format!("Redis is not answering ({e}); not stored"))?;
    let record = JournalRecord::of(&p, 0, now_ms());
    let bytes = encode_record(&record).map_err(|e| e.to_string())?;
    let answers: Vec<Value> = Script::new(APPEND)
        .key(&s.key)
        .key(format!("{}:seq", s.key))
        .key(format!("{}:start", s.key))
        .arg(s.max_len)
        .arg(0)
        .arg(bytes)
        .invoke(&mut con)
        .map_err(|e| format!("Redis did not answer ({e}): the event may or may not be stored"))?;
    match answers.first() {
        Some(Value::Int(id)) if *id > 0 => Ok(*id as u64),
        other => Err(format!("Redis refused the event ({other:?}); not stored")),
    }
}
