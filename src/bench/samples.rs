//! What the loaded server says about itself while a bench run goes on: its Prometheus text page
//! (`--sample URL`, e.g. fastsse's `/metrics`) read every `--sample-every`, a few families
//! summed over their label sets (resident memory, open files, tasks, journal bytes, streams),
//! and the check a soak is judged by: after `--settle`, memory and open files stay within
//! `--max-growth` percent of what they were then.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::http::{HttpClient, Url};

/// The families sampled (each summed over its label sets: workers, routes).
pub const FAMILIES: &[&str] = &[
    "process_resident_memory_bytes",
    "process_open_fds",
    "fastsse_tasks",
    "fastsse_journal_bytes",
    "fastsse_streams_active",
];

/// The families `--max-growth` judges: what only grows when something leaks.
pub const GROWTH: &[&str] = &["process_resident_memory_bytes", "process_open_fds"];

/// One reading of the server's figures.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the run began.
    pub t: u64,
    /// Family name → value (summed over label sets); a family the page lacks is left out.
    pub values: BTreeMap<String, f64>,
}

/// The sampled families' values in a Prometheus text page, each summed over its samples.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if !FAMILIES.contains(&name) {
            continue;
        }
        // The value follows the labels (which may hold spaces and braces inside quotes).
        let rest = line[name_end..].trim_start();
        let rest = match rest.starts_with('{') {
            true => line.rfind('}').map_or("", |i| &line[i + 1..]),
            false => rest,
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        // NaN and infinities are no reading (and JSON cannot hold them).
        if let Some(v) = value.filter(|v| v.is_finite()) {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

/// Starts [`sampler`] when `--sample` is given (HTTP/1.1, as the publisher).
pub(super) fn start(
    args: &super::args::LoadArgs,
    began: Instant,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<Vec<Sample>>>, String> {
    let Some(url) = args.sample.as_deref() else {
        return Ok(None);
    };
    let url = super::http::parse_url(url)?;
    let client = HttpClient::new(
        super::load::settings(args, super::http::HttpVersion::Http1),
        1,
    )?;
    let every = args.sample_every.max(Duration::from_millis(100));
    Ok(Some(tokio::spawn(sampler(client, url, every, began, stop))))
}

/// Reads `url` every `every` until `stop`; a failed read is logged on stderr and skipped.
pub(super) async fn sampler(
    client: HttpClient,
    url: Url,
    every: Duration,
    began: Instant,
    stop: CancellationToken,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let t = began.elapsed().as_secs();
        let got = tokio::time::timeout(Duration::from_secs(5), read(&client, &url)).await;
        if stop.is_cancelled() {
            // Read while the run was ending (its streams closing): not a reading of the run.
            break;
        }
        match got {
            Ok(Ok(values)) => samples.push(Sample { t, values }),
            Ok(Err(e)) => eprintln!("--sample at t={t}s: {e}"),
            Err(_) => eprintln!("--sample at t={t}s: no answer within 5 s"),
        }
    }
    samples
}

async fn read(client: &HttpClient, url: &Url) -> Result<BTreeMap<String, f64>, String> {
    let (status, page) = client.fetch(url, 16 << 20).await?;
    if status != 200 {
        return Err(format!("http {status}"));
    }
    let values = parse(&String::from_utf8_lossy(&page));
    if values.is_empty() {
        // Not a metrics page (a proxy's stand-in while the server is away, another route).
        return Err("the page holds none of the sampled figures".into());
    }
    Ok(values)
}

/// Why `samples` fail `--max-growth`: a [`GROWTH`] family that moved more than `max_pct`
/// percent from its first reading at or after `settle`.
pub fn growth(samples: &[Sample], settle: Duration, max_pct: f64) -> Vec<String> {
    let mut why = Vec::new();
    for family in GROWTH {
        let mut after = samples
            .iter()
            .filter(|s| s.t >= settle.as_secs())
            .filter_map(|s| s.values.get(*family).map(|v| (s.t, *v)));
        let Some((t0, base)) = after.next() else {
            why.push(format!(
                "--max-growth: no {family} sampled after {} s",
                settle.as_secs()
            ));
            continue;
        };
        let worst = after.fold((t0, base), |w, (t, v)| {
            if (v - base).abs() > (w.1 - base).abs() {
                (t, v)
            } else {
                w
            }
        });
        let pct = 100.0 * (worst.1 - base) / base.max(1.0);
        if pct.abs() > max_pct {
            why.push(format!(
                "{family} moved {pct:+.1}% from {base} at t={t0}s to {} at t={}s (--max-growth {max_pct}%)",
                worst.1, worst.0
            ));
        }
    }
    why
}

/// The spread of each family after `settle`: first, last, least and most.
pub fn summary(samples: &[Sample], settle: Duration) -> Vec<(String, [f64; 4])> {
    let mut out = Vec::new();
    for family in FAMILIES {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.t >= settle.as_secs())
            .filter_map(|s| s.values.get(*family).copied())
            .collect();
        if let (Some(first), Some(last)) = (v.first(), v.last()) {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            out.push((family.to_string(), [*first, *last, min, max]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A page as Prometheus' own exposition format writes it (written by hand, not by fastsse).
    const PAGE: &str = "# HELP process_open_fds Open files.\n\
        # TYPE process_open_fds gauge\n\
        process_open_fds{worker=\"0\"} 120\n\
        process_open_fds{worker=\"1\"} 80\n\
        process_resident_memory_bytes 1.5e7\n\
        fastsse_journal_bytes{route=\"/a b}\"} 100 1700000000000\n\
        fastsse_journal_bytes{route=\"/c\"} 50\n\
        fastsse_streams_active_total 9\n\
        fastsse_streams_active\t4\n\
        fastsse_streams_active {route=\"x\"} 3\n\
        fastsse_tasks NaN\n";

    #[test]
    fn families_are_summed_over_label_sets() {
        let v = parse(PAGE);
        assert_eq!(v["process_open_fds"], 200.0);
        assert_eq!(v["process_resident_memory_bytes"], 15_000_000.0);
        assert_eq!(v["fastsse_journal_bytes"], 150.0);
        // Tabs and a blank before the labels are the format too; `_total` is another family.
        assert_eq!(v["fastsse_streams_active"], 7.0, "{v:?}");
        assert!(!v.contains_key("fastsse_tasks"), "NaN is no reading: {v:?}");
    }

    fn samples(rss: &[f64]) -> Vec<Sample> {
        rss.iter()
            .enumerate()
            .map(|(i, &r)| Sample {
                t: i as u64 * 10,
                values: [
                    ("process_resident_memory_bytes".to_string(), r),
                    ("process_open_fds".to_string(), 100.0),
                ]
                .into(),
            })
            .collect()
    }

    #[test]
    fn growth_counts_from_the_first_reading_after_settling() {
        let settle = Duration::from_secs(20);
        // Warming up before 20 s does not count; within 5% after does not fail.
        assert!(growth(&samples(&[10.0, 50.0, 100.0, 104.0, 96.0]), settle, 5.0).is_empty());
        let why = growth(&samples(&[10.0, 50.0, 100.0, 104.0, 107.0]), settle, 5.0);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].contains("+7.0% from 100 at t=20s to 107 at t=40s"),
            "{why:?}"
        );
        let none = growth(&samples(&[1.0]), settle, 5.0);
        assert_eq!(none.len(), 2, "{none:?}");
    }
}
