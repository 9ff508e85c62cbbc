//! Randomness for spreading things out (retry hints, reconnects, demo jitter) and for ids
//! (subscriber UUIDs, staged socket names): the kernel's, through `getrandom`, the one source
//! every use takes. Nothing here is a secret; a kernel that cannot give randomness (never on
//! Linux 3.17+) degrades to std's per-process hash keys rather than failing a request.

use std::time::Duration;

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_err() {
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in buf.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_ne_bytes()[..chunk.len()]);
        }
    }
}

/// A random `u64`.
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_ne_bytes(b)
}

/// A random number below `n` (0 when `n` is 0).
pub fn below(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        u64() % n
    }
}

/// A random duration below `max`, to the millisecond (zero when `max` is under 1 ms).
pub fn duration_below(max: Duration) -> Duration {
    Duration::from_millis(below(max.as_millis() as u64))
}

/// A random (version 4) UUID as a URN: `urn:uuid:…`.
pub fn uuid_urn() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .urn()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_below_and_spreads() {
        let seen: std::collections::BTreeSet<u64> = (0..200).map(|_| below(10)).collect();
        assert!(seen.iter().all(|&v| v < 10));
        assert!(seen.len() > 5, "{seen:?}");
        assert_eq!(below(0), 0);
        assert_eq!(duration_below(Duration::from_micros(500)), Duration::ZERO);
    }

    #[test]
    fn uuids_are_version_4_urns() {
        let a = uuid_urn();
        let b = uuid_urn();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(a.strip_prefix("urn:uuid:").unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }
}
