//! The Redis backend's two threads per route: the appender (each batch of waiting
//! publications is one script call, one truthful answer per publication) and the reader
//! (`XREAD BLOCK` from the last id delivered, into the hub's fan-out). Both reconnect with
//! backoff and log one line per outage; every call has a socket deadline.

use std::sync::Weak;
use std::time::{Duration, Instant};

use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{Client, Connection, RedisError, Script, Value};

use super::{connect, record_of, RedisSettings, APPEND, BATCH, BLOCK, MAX_BACKOFF};
use crate::hub::backend::{next_batch, AppendJob};
use crate::hub::journal::{encode_record, now_ms, Damage, JournalRecord};
use crate::hub::{Hub, HubError};

/// One log line when an outage starts and one when it ends, not one per retry.
struct Outage {
    since: Option<Instant>,
    backoff: Duration,
}

impl Outage {
    fn new() -> Outage {
        Outage {
            since: None,
            backoff: Duration::from_millis(100),
        }
    }
    fn failed(&mut self, what: &str, key: &str, e: &RedisError, hub: &Weak<Hub>) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            log::error!("redis {key}: {what}: {e}; retrying");
            if let Some(h) = hub.upgrade() {
                h.stats
                    .backend_failing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    fn ok(&mut self, key: &str, hub: &Weak<Hub>) {
        if let Some(since) = self.since.take() {
            log::warn!(
                "redis {key}: answering again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
            if let Some(h) = hub.upgrade() {
                h.stats
                    .backend_failing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.backoff = Duration::from_millis(100);
    }
    fn wait(&mut self) {
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// The appender: each batch of waiting publications is one script call.
pub(super) fn append_loop(
    s: &RedisSettings,
    client: &Client,
    jobs: std::sync::mpsc::Receiver<AppendJob>,
    hub: Weak<Hub>,
) {
    let script = Script::new(APPEND);
    let mut con: Option<Connection> = None;
    let mut outage = Outage::new();
    while let Some(batch) = next_batch(&jobs, BATCH, "Redis") {
        // Every publication in the batch is answered by the earliest deadline among them.
        let deadline = batch.iter().map(|j| j.deadline).min();
        let (encoded, waiting) = encode(batch);
        if waiting.is_empty() {
            continue;
        }
        let left = deadline
            .map_or(s.timeout, |d| d.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(50))
            .min(s.timeout.max(Duration::from_millis(50)));
        if con.is_none() {
            match connect(client, left, left) {
                Ok(c) => con = Some(c),
                Err(e) => outage.failed("cannot connect", &s.key, &e, &hub),
            }
        }
        let Some(c) = con.as_mut() else {
            for reply in waiting {
                let _ = reply.send(Err(HubError::Busy(
                    "Redis is not answering; not stored".into(),
                )));
            }
            continue;
        };
        let _ = c.set_read_timeout(Some(left));
        let _ = c.set_write_timeout(Some(left));
        let floor = hub.upgrade().map_or(0, |h| h.last_id());
        let mut call = script.prepare_invoke();
        call.key(&s.key)
            .key(format!("{}:seq", s.key))
            .key(format!("{}:start", s.key))
            .arg(s.max_len)
            .arg(floor);
        for bytes in &encoded {
            call.arg(bytes.as_slice());
        }
        let started = Instant::now();
        match call.invoke::<Vec<Value>>(c) {
            Ok(answers) => {
                outage.ok(&s.key, &hub);
                if let Some(h) = hub.upgrade() {
                    h.stats.append_latency.record(started.elapsed());
                }
                answer_ids(s, answers, waiting, &hub);
            }
            // Redis answered with an error (a key of the wrong type, a counter that is not a
            // number): the script stopped before it wrote, so nothing is stored.
            Err(e) if !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped()) => {
                outage.ok(&s.key, &hub);
                answer_refusal(s, &e, waiting, &hub);
            }
            Err(e) => {
                outage.failed("append failed", &s.key, &e, &hub);
                con = None;
                answer_lost(&e, waiting);
            }
        }
    }
}

/// A publication's answer, sent once.
type Reply = tokio::sync::oneshot::Sender<Result<u64, HubError>>;

/// The batch's records; a publication that cannot be encoded is answered at once and left out.
fn encode(batch: Vec<AppendJob>) -> (Vec<Vec<u8>>, Vec<Reply>) {
    let (mut encoded, mut waiting) = (Vec::new(), Vec::new());
    for j in batch {
        match encode_record(&JournalRecord::of(&j.publication, 0, now_ms())) {
            Ok(bytes) => {
                encoded.push(bytes);
                waiting.push(j.reply);
            }
            Err(e) => {
                let _ = j.reply.send(Err(HubError::Journal(e)));
            }
        }
    }
    (encoded, waiting)
}

/// The script's answers: an id per stored publication, a refusal per other.
fn answer_ids(s: &RedisSettings, answers: Vec<Value>, waiting: Vec<Reply>, hub: &Weak<Hub>) {
    let mut answers = answers.into_iter();
    for reply in waiting {
        let answer = match answers.next() {
            Some(Value::Int(id)) if id > 0 => Ok(id as u64),
            other => {
                let why = match other {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Value::SimpleString(t)) => t,
                    _ => "no answer".into(),
                };
                Err(refused(s, &why, hub))
            }
        };
        let _ = reply.send(answer);
    }
}

/// Redis answered with an error: nothing is stored. Redis loading its data, running a long
/// script, a replica: worth a retry (503), unlike a key of the wrong type (500).
fn answer_refusal(s: &RedisSettings, e: &RedisError, waiting: Vec<Reply>, hub: &Weak<Hub>) {
    let why = e.to_string();
    let transient = e.code().is_some_and(|c| {
        [
            "LOADING",
            "BUSY",
            "READONLY",
            "TRYAGAIN",
            "CLUSTERDOWN",
            "MASTERDOWN",
        ]
        .contains(&c)
    });
    for reply in waiting {
        let answer = if transient {
            log::warn!("redis {}: append refused for now, not stored: {why}", s.key);
            HubError::Busy(format!(
                "Redis cannot take it now ({}); not stored",
                e.code().unwrap_or("busy")
            ))
        } else {
            refused(s, &why, hub)
        };
        let _ = reply.send(Err(answer));
    }
}

/// The connection failed. Refused before anything was sent: not stored. Lost while waiting
/// for the answer: Redis may have run the script, and the publisher is told so.
fn answer_lost(e: &RedisError, waiting: Vec<Reply>) {
    for reply in waiting {
        let answer = if e.is_connection_refusal() {
            HubError::Busy("Redis is not answering; not stored".into())
        } else {
            HubError::Unknown(
                "Redis did not answer in time: the event may or may not be stored".into(),
            )
        };
        let _ = reply.send(Err(answer));
    }
}

/// Redis refused a publication: logged whole (with the key), counted, and answered with the
/// error's code only (`WRONGTYPE`, `ERR`): no script hashes or key names in a response body.
fn refused(s: &RedisSettings, why: &str, hub: &Weak<Hub>) -> HubError {
    log::error!("redis {}: append refused, not stored: {why}", s.key);
    if let Some(h) = hub.upgrade() {
        h.stats
            .append_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let code = why
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase()))
        .unwrap_or("ERR");
    HubError::Refused(format!(
        "Redis refused the event ({code}: see the server's log); not stored"
    ))
}

/// The reader: every entry after the last one delivered, in order, to the hub.
pub(super) fn read_loop(s: &RedisSettings, client: &Client, hub: Weak<Hub>) {
    let Some(last) = hub.upgrade().map(|h| h.last_id()) else {
        return;
    };
    let mut r = Reader {
        s,
        hub,
        last,
        cursor: None,
        lag_checked: Instant::now(),
        age_trimmed: Instant::now(),
    };
    let mut con: Option<Connection> = None;
    let mut outage = Outage::new();
    loop {
        if r.hub.strong_count() == 0 {
            return;
        }
        let Some(c) = con.as_mut() else {
            match connect(client, s.timeout, BLOCK + s.timeout) {
                Ok(mut c) => {
                    if let Some(h) = r.hub.upgrade() {
                        numbering_start(&mut c, s, &h);
                    }
                    con = Some(c)
                }
                Err(e) => {
                    outage.failed("cannot connect", &s.key, &e, &r.hub);
                    outage.wait();
                }
            }
            continue;
        };
        match r.read(c) {
            Ok(reply) => {
                outage.ok(&s.key, &r.hub);
                if !r.deliver(c, reply) {
                    return;
                }
            }
            Err(e) => {
                outage.failed("read failed", &s.key, &e, &r.hub);
                con = None;
                outage.wait();
            }
        }
    }
}

/// What the reader keeps between reads.
struct Reader<'a> {
    s: &'a RedisSettings,
    hub: Weak<Hub>,
    /// The last id delivered.
    last: u64,
    /// The full id of the last entry read, when it was not `<last>-0` (another tool's entry,
    /// such as Redis's own `<ms>-1`): reading on from `<last>-0` would fetch it again at once.
    cursor: Option<String>,
    lag_checked: Instant,
    age_trimmed: Instant,
}

impl Reader<'_> {
    /// `XREAD BLOCK` from the last entry read.
    fn read(&self, c: &mut Connection) -> redis::RedisResult<Option<StreamReadReply>> {
        redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH * 4)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.s.key)
            .arg(
                self.cursor
                    .as_deref()
                    .map_or_else(|| format!("{}-0", self.last), str::to_string),
            )
            .query(c)
    }

    /// Hands what was read to the hub (and now and then measures the lag and trims by age);
    /// `false` once the hub is gone.
    fn deliver(&mut self, c: &mut Connection, reply: Option<StreamReadReply>) -> bool {
        let s = self.s;
        let entries: Vec<redis::streams::StreamId> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        let records: Vec<JournalRecord> = entries.iter().filter_map(record_of).collect();
        // Entries that are not ours (another tool's XADD) are skipped, counted and logged
        // once: reading on from the same id would fetch them again at once.
        let newest = entries
            .iter()
            .filter_map(|e| e.id.split('-').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(self.last);
        if entries.len() > records.len() {
            skipped_unreadable(s, entries.len() - records.len(), &self.hub);
        }
        if let Some(e) = entries.last() {
            self.cursor = Some(e.id.clone());
        }
        if self.lag_checked.elapsed() >= Duration::from_secs(1) {
            self.lag_checked = Instant::now();
            let seen = records.last().map_or(self.last, |r| r.id);
            measure_lag(c, s, seen, &self.hub);
        }
        // Entries older than history_age go, checked a few times per history_age.
        if self.age_trimmed.elapsed() >= (s.max_age / 4).clamp(BLOCK, Duration::from_secs(30)) {
            self.age_trimmed = Instant::now();
            trim_by_age(c, s);
        }
        let Some(first) = records.first().map(|r| r.id) else {
            self.last = self.last.max(newest);
            return true;
        };
        let Some(h) = self.hub.upgrade() else {
            return false;
        };
        if first > self.last + 1 {
            trimmed_past(c, s, self.last, &h);
        }
        self.last = self.last.max(newest);
        h.take_records(records);
        true
    }
}

/// Where the stream's numbering last started from the clock (`<key>:start`), told to the hub
/// so that ids below it are known never to have been issued.
fn numbering_start(c: &mut Connection, s: &RedisSettings, hub: &Hub) -> Option<u64> {
    let start: Option<u64> = redis::cmd("GET")
        .arg(format!("{}:start", s.key))
        .query(c)
        .ok()
        .flatten();
    if let Some(start) = start {
        hub.numbering_starts(start);
    }
    start
}

/// Counts entries the reader skipped; the first one is logged (the count is in /status).
fn skipped_unreadable(s: &RedisSettings, n: usize, hub: &Weak<Hub>) {
    let Some(h) = hub.upgrade() else { return };
    let before = h
        .stats
        .unreadable
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    if before == 0 {
        log::warn!(
            "redis {}: skipping stream entries that are not fastsse events (written by another \
             tool?); counted in /status as backend_unreadable",
            s.key
        );
    }
}

/// Trims entries older than `max_age` (`XTRIM MINID`), reading the oldest entries' publish
/// times 100 at a time (at most 1,000 per call). Every instance does it; it is idempotent.
fn trim_by_age(c: &mut Connection, s: &RedisSettings) {
    let cutoff = now_ms().saturating_sub(s.max_age.as_millis() as u64);
    for _ in 0..10 {
        let oldest: redis::RedisResult<StreamRangeReply> = redis::cmd("XRANGE")
            .arg(&s.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(100)
            .query(c);
        let Ok(oldest) = oldest else { return };
        let records: Vec<JournalRecord> = oldest.ids.iter().filter_map(record_of).collect();
        let Some(last) = records.last() else { return };
        let (min, more) = match records.iter().find(|r| r.unix_ms >= cutoff) {
            Some(young) => (young.id, false),
            None => (last.id + 1, true),
        };
        if let Err(e) = redis::cmd("XTRIM")
            .arg(&s.key)
            .arg("MINID")
            .arg(format!("{min}-0"))
            .query::<u64>(c)
        {
            log::warn!("redis {}: trimming by age failed: {e}", s.key);
            return;
        }
        if !more {
            return;
        }
    }
}

/// How many ids have been issued (by any instance) past `seen`, for `/status` and metrics.
fn measure_lag(c: &mut Connection, s: &RedisSettings, seen: u64, hub: &Weak<Hub>) {
    let issued: redis::RedisResult<Option<u64>> =
        redis::cmd("GET").arg(format!("{}:seq", s.key)).query(c);
    if let (Ok(Some(issued)), Some(h)) = (issued, hub.upgrade()) {
        h.stats.backend_lag.store(
            issued.saturating_sub(seen),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Entries after `last` came back with a gap: if the stream no longer holds `last + 1` —
/// trimming passed it while this instance was away, or Redis lost its data and numbering went
/// on from the clock — those ids are lost to it, and subscribers resuming across them are told
/// (`lost`), as with journal damage.
fn trimmed_past(c: &mut Connection, s: &RedisSettings, last: u64, hub: &Hub) {
    let oldest: redis::RedisResult<StreamRangeReply> = redis::cmd("XRANGE")
        .arg(&s.key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(c);
    let first_kept = oldest.ok().and_then(|r| {
        r.ids
            .first()
            .and_then(|e| e.id.split('-').next()?.parse::<u64>().ok())
    });
    let start = numbering_start(c, s, hub);
    if let Some(first) = first_kept.filter(|&f| f > last + 1) {
        if last == 0 && start == Some(first) {
            // A new stream numbering from the clock: nothing came before it.
            return;
        }
        if last == 0 {
            log::info!("redis {}: the stream starts at id {first}", s.key);
        } else {
            log::error!(
                "redis {}: ids {}..{} are not in the stream (trimmed before this instance read \
                 them, or Redis lost its data); subscribers resuming across them are told `lost`",
                s.key,
                last + 1,
                first - 1
            );
        }
        hub.on_damage(&[Damage {
            offset: 0,
            len: 0,
            after_id: last,
            next_id: first,
        }]);
    }
}
