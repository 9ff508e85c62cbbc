//! The shape of a bench run over time: staged ramps (`--stages 30s:1000,2m:5000,30s:0`, each
//! stage moving the subscriber count linearly to its target) and the per-second series the
//! report keeps (connected, events/s, that second's latency percentiles, errors by cause).

use std::collections::BTreeMap;
use std::time::Duration;

/// One stage: over `duration`, move linearly from the previous target to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// Subscribers at its end.
    pub target: usize,
}

/// Parses `30s:1000,2m:5000,30s:0`.
pub fn parse_stages(s: &str) -> Result<Vec<Stage>, String> {
    let stages =
        s.split(',')
            .map(|part| {
                let (d, n) = part.trim().split_once(':').ok_or_else(|| {
                    format!("stage `{part}` is not DURATION:SUBSCRIBERS (30s:1000)")
                })?;
                let duration = crate::config::parse_duration(d.trim())
                    .map_err(|e| format!("stage `{part}`: {e}"))?;
                let target = n
                    .trim()
                    .parse()
                    .map_err(|_| format!("stage `{part}`: `{n}` is not a number of subscribers"))?;
                Ok(Stage { duration, target })
            })
            .collect::<Result<Vec<_>, String>>()?;
    if stages.iter().all(|s| s.target == 0) {
        return Err("every stage has 0 subscribers".into());
    }
    Ok(stages)
}

/// All stages' time together.
pub fn total(stages: &[Stage]) -> Duration {
    stages.iter().map(|s| s.duration).sum()
}

/// The most subscribers any stage asks for.
pub fn peak(stages: &[Stage]) -> usize {
    stages.iter().map(|s| s.target).max().unwrap_or(0)
}

/// How many subscribers the stages ask for `elapsed` into the run (starting from 0).
pub fn target_at(stages: &[Stage], elapsed: Duration) -> usize {
    let mut from = 0usize;
    let mut start = Duration::ZERO;
    for s in stages {
        let end = start + s.duration;
        if elapsed < end {
            let f = (elapsed - start).as_secs_f64() / s.duration.as_secs_f64().max(1e-9);
            let v = from as f64 + (s.target as f64 - from as f64) * f;
            return v.round().max(0.0) as usize;
        }
        from = s.target;
        start = end;
    }
    from
}

/// What one second of the run looked like.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Second {
    /// Seconds since the run began (the end of this second).
    pub t: u64,
    /// Streams open at the end of the second.
    pub connected: usize,
    /// Events received in the second (all subscribers).
    pub events: u64,
    /// Publishes acknowledged in the second.
    pub published: u64,
    /// Delivery latency of this second's events, p50 and p99, in ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Failed connection attempts (and publishes) in the second, by cause (`http 503`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_interpolate() {
        let st = parse_stages("10s:1000, 20s:5000,10s:0").unwrap();
        assert_eq!(st.len(), 3);
        assert_eq!(total(&st), Duration::from_secs(40));
        assert_eq!(peak(&st), 5000);
        let at = |s: u64| target_at(&st, Duration::from_millis(s));
        assert_eq!(at(0), 0);
        assert_eq!(at(5_000), 500);
        assert_eq!(at(10_000), 1000);
        assert_eq!(at(20_000), 3000);
        assert_eq!(at(35_000), 2500);
        assert_eq!(at(40_000), 0);
        assert_eq!(at(99_000), 0);
        // A hold: the same target twice.
        let hold = parse_stages("1s:10,1m:10").unwrap();
        assert_eq!(target_at(&hold, Duration::from_secs(30)), 10);
    }

    #[test]
    fn bad_stages_are_refused_with_the_reason() {
        for (bad, why) in [
            ("10s", "DURATION:SUBSCRIBERS"),
            ("10s:x", "not a number"),
            ("ten:5", "stage `ten:5`"),
            ("10s:0", "0 subscribers"),
        ] {
            let e = parse_stages(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
