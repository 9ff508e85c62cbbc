//! What a bench parent and its worker processes (`--processes`) say to each other, one line
//! each on the worker's stdout and stdin: a worker says `READY` once its share is connected (at
//! once with `--stages`), `SEC <json>` each second, and after its parent sent `END <json>` (the
//! acknowledged sequence numbers and when each was sent) it drains, counts and says
//! `REPORT <json>`.

use std::io::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::report::Report;

/// What a worker hands its parent at the end.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct WorkerReport {
    pub(super) report: Report,
    /// Latency histogram buckets: (µs, count).
    pub(super) latency: Vec<(u64, u64)>,
    pub(super) first_event: Vec<(u64, u64)>,
    pub(super) comebacks_ms: Vec<u64>,
}

/// What the parent published.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct End {
    pub(super) acked: Vec<u64>,
    /// When each sequence number was sent, in unix µs (index `seq - 1`).
    pub(super) sent_at_us: Vec<u64>,
}

/// Writes one protocol line to stdout (a worker's, read by its parent).
pub(super) fn say<T: serde::Serialize>(tag: &str, value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{tag} {}",
        serde_json::to_string(value).unwrap_or_default()
    );
    let _ = out.flush();
}

pub(super) fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// In a worker: hands the figures to the parent.
pub(super) fn report_to_parent(
    report: &Report,
    latency: &Histogram<u64>,
    first_event: &Histogram<u64>,
    comebacks_ms: Vec<u64>,
) {
    let r = serde_json::to_value(report)
        .and_then(serde_json::from_value)
        .expect("a report round-trips");
    say(
        "REPORT",
        &WorkerReport {
            report: r,
            latency: buckets(latency),
            first_event: buckets(first_event),
            comebacks_ms,
        },
    );
}

/// In a worker, instead of publishing: says `READY`, waits for the parent's `END`, and
/// returns what it published: the acknowledged sequence numbers and when each was sent (as
/// this process's instants). Nothing when the parent is gone.
pub(super) async fn await_end() -> (Vec<u64>, Vec<Instant>) {
    use tokio::io::AsyncBufReadExt;
    say("READY", &());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(json) = line.strip_prefix("END ") else {
            continue;
        };
        let Ok(end) = serde_json::from_str::<End>(json) else {
            break;
        };
        let (now, now_us) = (
            Instant::now(),
            crate::source::clock::unix_now().as_micros() as u64,
        );
        let sent_at = end
            .sent_at_us
            .iter()
            .map(|&t| now - Duration::from_micros(now_us.saturating_sub(t)))
            .collect();
        return (end.acked, sent_at);
    }
    (Vec::new(), Vec::new())
}
