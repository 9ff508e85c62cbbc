//! The journal's record format, pure (no I/O): encoding, decoding, and [`scan`], which reads a
//! segment's bytes and tells three things apart — whole records, damage (bad bytes followed by
//! valid records: skipped, reported, never served) and a tail (bad or incomplete bytes with
//! nothing valid after them: a record still being written, or one torn by a writer that died).
//!
//! Frame: `len: u32 LE | crc32: u32 LE | payload[len]`; payload: `id u64 | unix_ms u64 |
//! topics u16 (len u16, bytes)* | event len u16, bytes | retry_ms u64 (u64::MAX = none) |
//! [extension] | data`. The extension is there only when bit 63 of `unix_ms` is set (no
//! timestamp reaches it, so records written before it existed read unchanged): `len u16 |
//! flags u8 (bit 0: private) | public id len u16, bytes | anything later versions add`.

use super::{JournalError, JournalRecord};

/// CRC-32 (IEEE), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Bytes of the frame header (length and checksum).
pub const FRAME_HEADER: usize = 8;
/// Smallest payload: id, time, topic count, event length, retry (no topic, no data).
pub const MIN_PAYLOAD: usize = 8 + 8 + 2 + 2 + 8;
/// Smallest whole record: no id can take fewer bytes than this.
pub const MIN_FRAME: usize = FRAME_HEADER + MIN_PAYLOAD;
/// Largest payload accepted when reading (anything larger is corruption).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// When resynchronising after damage, a candidate record's id must lie within this distance of
/// the last good id (a cheap filter that rejects almost every misaligned position before its
/// checksum is computed).
const MAX_ID_JUMP: u64 = 1 << 32;

/// Bit 63 of `unix_ms`: an extension block follows `retry_ms`.
const HAS_EXTENSION: u64 = 1 << 63;
/// Extension flag: the event is private.
const FLAG_PRIVATE: u8 = 1;

fn put_str16(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), JournalError> {
    let len = u16::try_from(s.len()).map_err(|_| JournalError::TooLarge(what))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Encodes one record with its frame.
pub fn encode_record(r: &JournalRecord) -> Result<Vec<u8>, JournalError> {
    let mut p = Vec::with_capacity(64 + r.data.len());
    let extended = r.private || r.public_id.is_some();
    let flagged = if extended {
        r.unix_ms | HAS_EXTENSION
    } else {
        r.unix_ms
    };
    p.extend_from_slice(&r.id.to_le_bytes());
    p.extend_from_slice(&flagged.to_le_bytes());
    let n = u16::try_from(r.topics.len()).map_err(|_| JournalError::TooLarge("topic list"))?;
    p.extend_from_slice(&n.to_le_bytes());
    for t in &r.topics {
        put_str16(&mut p, t, "topic")?;
    }
    put_str16(&mut p, r.event.as_deref().unwrap_or(""), "event name")?;
    p.extend_from_slice(&r.retry_ms.unwrap_or(u64::MAX).to_le_bytes());
    if extended {
        let mut ext = vec![if r.private { FLAG_PRIVATE } else { 0 }];
        put_str16(&mut ext, r.public_id.as_deref().unwrap_or(""), "event id")?;
        let len = u16::try_from(ext.len()).map_err(|_| JournalError::TooLarge("event id"))?;
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(&ext);
    }
    p.extend_from_slice(r.data.as_bytes());
    if p.len() > MAX_PAYLOAD {
        return Err(JournalError::TooLarge("event"));
    }
    let mut out = Vec::with_capacity(FRAME_HEADER + p.len());
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&p).to_le_bytes());
    out.extend_from_slice(&p);
    Ok(out)
}

/// The result of decoding at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A record and the bytes it took.
    Record(JournalRecord, usize),
    /// Not enough bytes yet (or a record still being written).
    Incomplete,
    /// The bytes cannot be a record (bad length or checksum, malformed payload).
    Corrupt,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode_payload(p: &[u8]) -> Option<JournalRecord> {
    let mut c = Cursor(p);
    let id = c.u64()?;
    let unix_ms = c.u64()?;
    let n = c.u16()?;
    let topics = (0..n).map(|_| c.str16()).collect::<Option<Vec<_>>>()?;
    let event = c.str16()?;
    let retry = c.u64()?;
    let (mut private, mut public_id) = (false, None);
    if unix_ms & HAS_EXTENSION != 0 {
        let len = c.u16()? as usize;
        let mut ext = Cursor(c.take(len)?);
        private = ext.take(1)?[0] & FLAG_PRIVATE != 0;
        public_id = Some(ext.str16()?).filter(|s| !s.is_empty());
    }
    let data = String::from_utf8(c.0.to_vec()).ok()?;
    Some(JournalRecord {
        id,
        unix_ms: unix_ms & !HAS_EXTENSION,
        topics,
        event: (!event.is_empty()).then_some(event),
        retry_ms: (retry != u64::MAX).then_some(retry),
        data,
        private,
        public_id,
    })
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

/// Decodes the record at the start of `buf`.
pub fn decode_record(buf: &[u8]) -> Decoded {
    if buf.len() < FRAME_HEADER {
        return Decoded::Incomplete;
    }
    let len = u32_at(buf, 0) as usize;
    let crc = u32_at(buf, 4);
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    if buf.len() < FRAME_HEADER + len {
        return Decoded::Incomplete;
    }
    let payload = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32(payload) != crc {
        return Decoded::Corrupt;
    }
    match decode_payload(payload) {
        Some(r) => Decoded::Record(r, FRAME_HEADER + len),
        None => Decoded::Corrupt,
    }
}

/// Bytes skipped because they are not records while valid records follow them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Where the bad bytes start, relative to the scanned buffer.
    pub offset: usize,
    /// How many bytes were skipped.
    pub len: usize,
    /// The last good id before them.
    pub after_id: u64,
    /// The first good id after them: every id strictly between the two may have been lost.
    pub next_id: u64,
}

/// What [`scan`] found in a buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Whole, valid records in order (ids strictly increasing).
    pub records: Vec<JournalRecord>,
    /// Damaged regions that were skipped.
    pub damage: Vec<Damage>,
    /// Where the last whole record ends; the bytes after it (if any) are the tail.
    pub end: usize,
}

/// The first position at or after `from` where a valid record with an id above `prev_id`
/// starts, if any.
fn resync(buf: &[u8], from: usize, prev_id: u64) -> Option<usize> {
    let last = buf.len().checked_sub(MIN_FRAME)?;
    (from..=last).find(|&q| {
        let len = u32_at(buf, q) as usize;
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) || q + FRAME_HEADER + len > buf.len() {
            return false;
        }
        let id = u64::from_le_bytes(buf[q + 8..q + 16].try_into().unwrap());
        if id <= prev_id || id - prev_id > MAX_ID_JUMP {
            return false;
        }
        matches!(decode_record(&buf[q..]), Decoded::Record(..))
    })
}

/// Reads every record in `buf`, whose previous record (in an earlier buffer or segment) had id
/// `prev_id`. Bad bytes followed by a valid record are damage: skipped and reported. Bad or
/// incomplete bytes with no valid record after them are the tail, left after `end`.
pub fn scan(buf: &[u8], mut prev_id: u64) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0;
    while pos < buf.len() {
        match decode_record(&buf[pos..]) {
            Decoded::Record(r, n) if r.id > prev_id => {
                prev_id = r.id;
                out.records.push(r);
                pos += n;
                continue;
            }
            // An id that does not increase is as bad as a bad checksum.
            Decoded::Record(..) | Decoded::Corrupt | Decoded::Incomplete => {}
        }
        let Some(next) = resync(buf, pos + 1, prev_id) else {
            break;
        };
        let next_id = u64::from_le_bytes(buf[next + 8..next + 16].try_into().unwrap());
        out.damage.push(Damage {
            offset: pos,
            len: next - pos,
            after_id: prev_id,
            next_id,
        });
        pos = next;
    }
    out.end = pos;
    out
}

/// Ids a tail of `len` bytes may have held: each record takes at least [`MIN_FRAME`] bytes.
pub fn ids_in(len: usize) -> u64 {
    len.div_ceil(MIN_FRAME) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, data: &str) -> JournalRecord {
        JournalRecord {
            id,
            unix_ms: 7,
            topics: vec!["a".into(), "b/c".into()],
            event: Some("e".into()),
            retry_ms: Some(1500),
            data: data.into(),
            ..Default::default()
        }
    }

    fn ids(s: &Scan) -> Vec<u64> {
        s.records.iter().map(|r| r.id).collect()
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_and_every_prefix_is_incomplete() {
        let r = rec(42, "line1\nline2");
        let enc = encode_record(&r).unwrap();
        assert_eq!(decode_record(&enc), Decoded::Record(r.clone(), enc.len()));
        for cut in 0..enc.len() {
            assert_eq!(decode_record(&enc[..cut]), Decoded::Incomplete, "cut {cut}");
        }
        let mut bad = enc.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode_record(&bad), Decoded::Corrupt);
    }

    #[test]
    fn the_smallest_record_is_min_frame_bytes() {
        let r = JournalRecord {
            id: 1,
            unix_ms: 0,
            topics: vec![],
            event: None,
            retry_ms: None,
            data: String::new(),
            ..Default::default()
        };
        assert_eq!(encode_record(&r).unwrap().len(), MIN_FRAME);
    }

    #[test]
    fn private_records_and_publisher_ids_round_trip_and_old_records_read_unchanged() {
        let mut r = rec(43, "secret");
        r.unix_ms = 1_795_000_000_000;
        r.private = true;
        r.public_id = Some("urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into());
        let enc = encode_record(&r).unwrap();
        assert_eq!(decode_record(&enc), Decoded::Record(r.clone(), enc.len()));
        for cut in 0..enc.len() {
            assert_eq!(decode_record(&enc[..cut]), Decoded::Incomplete, "cut {cut}");
        }
        let only_id = JournalRecord {
            private: false,
            ..r.clone()
        };
        let enc = encode_record(&only_id).unwrap();
        assert_eq!(decode_record(&enc), Decoded::Record(only_id, enc.len()));
        // A record as the format was before the extension, encoded by hand: it decodes to a
        // public record with no publisher id.
        let mut payload = Vec::new();
        payload.extend_from_slice(&44u64.to_le_bytes());
        payload.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        payload.extend_from_slice(&1u16.to_le_bytes());
        payload.extend_from_slice(&1u16.to_le_bytes());
        payload.extend_from_slice(b"t");
        payload.extend_from_slice(&0u16.to_le_bytes());
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        payload.extend_from_slice(b"old");
        let mut old = (payload.len() as u32).to_le_bytes().to_vec();
        old.extend_from_slice(&crc32(&payload).to_le_bytes());
        old.extend_from_slice(&payload);
        let Decoded::Record(d, _) = decode_record(&old) else {
            panic!("old record not read")
        };
        assert_eq!(
            (d.id, d.unix_ms, d.private, d.public_id),
            (44, 1_700_000_000_000, false, None)
        );
        assert_eq!(d.data, "old");
    }

    fn three() -> (Vec<u8>, [usize; 3]) {
        let parts = [
            encode_record(&rec(5, "one")).unwrap(),
            encode_record(&rec(6, "two, a little longer")).unwrap(),
            encode_record(&rec(9, "three")).unwrap(),
        ];
        let lens = [parts[0].len(), parts[1].len(), parts[2].len()];
        (parts.concat(), lens)
    }

    #[test]
    fn every_prefix_scans_to_its_whole_records_and_a_tail() {
        let (buf, [a, b, _]) = three();
        for cut in 0..=buf.len() {
            let s = scan(&buf[..cut], 4);
            let want: Vec<u64> = match cut {
                c if c == buf.len() => vec![5, 6, 9],
                c if c >= a + b => vec![5, 6],
                c if c >= a => vec![5],
                _ => vec![],
            };
            assert_eq!(ids(&s), want, "cut {cut}");
            assert!(s.damage.is_empty(), "cut {cut}: {:?}", s.damage);
            let whole = [0, a, a + b, buf.len()];
            assert_eq!(
                s.end,
                *whole.iter().rev().find(|&&w| w <= cut).unwrap(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_a_middle_record_is_damage_not_a_tail() {
        let (buf, [a, b, _]) = three();
        for at in a..a + b {
            let mut bad = buf.clone();
            bad[at] ^= 0x40;
            let s = scan(&bad, 4);
            assert_eq!(ids(&s), vec![5, 9], "flip at {at}");
            assert_eq!(s.end, buf.len(), "flip at {at}");
            assert_eq!(
                s.damage,
                vec![Damage {
                    offset: a,
                    len: b,
                    after_id: 5,
                    next_id: 9
                }],
                "flip at {at}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_the_first_record_is_damage_after_the_previous_id() {
        let (buf, [a, _, _]) = three();
        for at in 0..a {
            let mut bad = buf.clone();
            bad[at] ^= 0x01;
            let s = scan(&bad, 4);
            assert_eq!(ids(&s), vec![6, 9], "flip at {at}");
            assert_eq!((s.damage[0].after_id, s.damage[0].next_id), (4, 6));
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_a_tail() {
        let (buf, [a, b, _]) = three();
        for at in a + b..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            let s = scan(&bad, 4);
            assert_eq!(ids(&s), vec![5, 6], "flip at {at}");
            assert_eq!(s.end, a + b);
            assert!(s.damage.is_empty());
        }
    }

    #[test]
    fn ids_that_do_not_increase_are_damage() {
        let buf = [
            encode_record(&rec(5, "x")).unwrap(),
            encode_record(&rec(3, "stale copy")).unwrap(),
            encode_record(&rec(8, "y")).unwrap(),
        ]
        .concat();
        let s = scan(&buf, 0);
        assert_eq!(ids(&s), vec![5, 8]);
        assert_eq!(s.damage.len(), 1);
    }

    #[test]
    fn zeros_and_garbage_are_a_tail_and_a_tail_bound_covers_its_ids() {
        let (mut buf, _) = three();
        let end = buf.len();
        buf.extend(std::iter::repeat_n(0u8, 300));
        let s = scan(&buf, 4);
        assert_eq!((ids(&s).len(), s.end), (3, end));
        // 300 bytes could have held at most ids_in(300) records.
        assert!(ids_in(300) * MIN_FRAME as u64 >= 300);
        assert_eq!(ids_in(0), 0);
        assert_eq!(ids_in(1), 1);
    }
}
