//! The bench's publisher: its HTTP/1.1 client and `--publish-url`s (several: topics in turn,
//! each matched with a `--url`), and the loop that POSTs `{"t":<unix µs>,"seq":<n>}` at
//! `--rate`, recording when each event was sent and which were acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::LoadArgs;
use super::http::{parse_url, HttpClient, HttpVersion, Url};
use super::load::{settings, Run};
use super::subscriber::now_us;

/// POSTs `{"t":…,"seq":…}` at `rate` for `duration`, to each URL in turn; returns the
/// acknowledged sequence numbers.
pub(super) async fn publisher(
    client: HttpClient,
    urls: Vec<Url>,
    rate: f64,
    duration: Duration,
    shared: Arc<Run>,
) -> (Vec<u64>, u64) {
    let mut acked = Vec::new();
    let mut failed = 0;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let mut seq = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        seq += 1;
        shared
            .sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        shared.publishing.store(seq, Ordering::Release);
        let body = format!("{{\"t\":{},\"seq\":{seq}}}", now_us());
        let url = &urls[(seq as usize - 1) % urls.len()];
        match client.post(url, &body).await {
            Ok(()) => {
                acked.push(seq);
                shared.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                failed += 1;
                shared.counters.fail(format!("publish: {e}"));
            }
        }
    }
    (acked, failed)
}

/// The publisher's client and URLs (`--publish-url`); it speaks HTTP/1.1.
pub(super) fn publisher_client(args: &LoadArgs) -> Result<Option<(HttpClient, Vec<Url>)>, String> {
    if args.publish_url.is_empty() {
        return Ok(None);
    }
    let urls = args
        .publish_url
        .iter()
        .map(|u| parse_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((
        HttpClient::new(settings(args, HttpVersion::Http1), 1)?,
        urls,
    )))
}

/// Several topics (`--publish-url` m times) need `--url` m times: subscriber `idx` connects to
/// URL `idx % m` and expects the events of publish URL `idx % m`.
pub(super) fn check_topics(args: &LoadArgs) -> Result<(), String> {
    let m = args.publish_url.len();
    if m <= 1 {
        return Ok(());
    }
    if !args.fcgi.is_empty() {
        return Err(
            "several --publish-url need as many --url (each topic's stream); --fcgi has one path"
                .into(),
        );
    }
    if args.url.len() != m {
        return Err(format!(
            "{m} --publish-url need {m} --url (subscribers of --url k expect what went to --publish-url k), not {}",
            args.url.len()
        ));
    }
    Ok(())
}
