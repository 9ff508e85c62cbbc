//! FastCGI name-value pairs (spec 3.4): decoding with overflow-safe bounds and encoding.
//!
//! Lengths are 1 byte when below 128, else 4 bytes big-endian with the top bit set. Every length
//! is checked against what remains before it is used, so no input can read past the buffer or
//! overflow an addition.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Bounds applied while decoding a PARAMS stream.
#[derive(Clone, Copy, Debug)]
pub struct ParamsLimits {
    /// Most name-value pairs accepted.
    pub max_pairs: usize,
}

impl Default for ParamsLimits {
    fn default() -> Self {
        ParamsLimits { max_pairs: 4096 }
    }
}

/// Why a PARAMS stream could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum ParamsError {
    /// A length prefix was cut off by the end of the stream.
    TruncatedLength { offset: usize },
    /// A name or value length points past the end of the stream.
    LengthPastEnd {
        offset: usize,
        name_len: u32,
        value_len: u32,
        remaining: usize,
    },
    /// More pairs than [`ParamsLimits::max_pairs`].
    TooManyPairs { max: usize },
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsError::TruncatedLength { offset } => {
                write!(f, "name-value length cut off at byte {offset}")
            }
            ParamsError::LengthPastEnd {
                offset,
                name_len,
                value_len,
                remaining,
            } => write!(
                f,
                "name-value pair at byte {offset} claims {name_len}+{value_len} bytes but only {remaining} remain"
            ),
            ParamsError::TooManyPairs { max } => write!(f, "more than {max} name-value pairs"),
        }
    }
}

impl std::error::Error for ParamsError {}

/// Reads one length at `pos`, returning it and the position after it.
fn read_len(buf: &[u8], pos: usize) -> Result<(u32, usize), ParamsError> {
    let first = *buf
        .get(pos)
        .ok_or(ParamsError::TruncatedLength { offset: pos })?;
    if first & 0x80 == 0 {
        return Ok((first as u32, pos + 1));
    }
    let b = buf
        .get(pos..pos + 4)
        .ok_or(ParamsError::TruncatedLength { offset: pos })?;
    Ok((u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]), pos + 4))
}

/// Decodes a complete (concatenated) PARAMS stream into pairs, in order, duplicates kept.
pub fn decode_params(
    buf: &Bytes,
    limits: ParamsLimits,
) -> Result<Vec<(Bytes, Bytes)>, ParamsError> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let (name_len, p) = read_len(buf, pos)?;
        let (value_len, p) = read_len(buf, p)?;
        let remaining = buf.len() - p;
        // u64 so that the sum of two 31-bit lengths cannot overflow.
        if name_len as u64 + value_len as u64 > remaining as u64 {
            return Err(ParamsError::LengthPastEnd {
                offset: start,
                name_len,
                value_len,
                remaining,
            });
        }
        if pairs.len() == limits.max_pairs {
            return Err(ParamsError::TooManyPairs {
                max: limits.max_pairs,
            });
        }
        let name_end = p + name_len as usize;
        let value_end = name_end + value_len as usize;
        pairs.push((buf.slice(p..name_end), buf.slice(name_end..value_end)));
        pos = value_end;
    }
    Ok(pairs)
}

fn put_len(dst: &mut BytesMut, len: usize) {
    if len < 128 {
        dst.put_u8(len as u8);
    } else {
        dst.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Appends one name-value pair in the spec's encoding. Lengths must be below 2^31.
pub fn encode_pair(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    put_len(dst, name.len());
    put_len(dst, value.len());
    dst.put_slice(name);
    dst.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Vec<(Bytes, Bytes)>, ParamsError> {
        decode_params(&Bytes::copy_from_slice(input), ParamsLimits::default())
    }

    #[test]
    fn both_length_forms() {
        let long_value = vec![b'v'; 300];
        let mut input = vec![4, 3];
        input.extend_from_slice(b"NAMEabc");
        input.extend_from_slice(&[1, 0x80, 0, 1, 44]);
        input.push(b'X');
        input.extend_from_slice(&long_value);
        // A short length written in the 4-byte form is legal.
        input.extend_from_slice(&[0x80, 0, 0, 1, 0]);
        input.push(b'E');
        let pairs = dec(&input).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(&pairs[0].0[..], b"NAME");
        assert_eq!(&pairs[0].1[..], b"abc");
        assert_eq!(&pairs[1].1[..], &long_value[..]);
        assert_eq!(&pairs[2].0[..], b"E");
        assert!(pairs[2].1.is_empty());
    }

    #[test]
    fn every_prefix_is_an_error_or_a_prefix_of_the_pairs() {
        let mut enc = BytesMut::new();
        encode_pair(&mut enc, b"REQUEST_METHOD", b"GET");
        encode_pair(&mut enc, b"HTTP_COOKIE", &[b'c'; 200]);
        encode_pair(&mut enc, b"", b"");
        let full = dec(&enc).unwrap();
        assert_eq!(full.len(), 3);
        for cut in 0..enc.len() {
            match dec(&enc[..cut]) {
                Ok(p) => assert!(p.len() < 3 && full.starts_with(&p), "cut {cut}"),
                Err(ParamsError::TruncatedLength { .. } | ParamsError::LengthPastEnd { .. }) => {}
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
    }

    #[test]
    fn hostile_lengths_do_not_overflow() {
        // 0x7FFFFFFF + 0x7FFFFFFF would overflow a u32 sum.
        let input = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(matches!(
            dec(&input),
            Err(ParamsError::LengthPastEnd { .. })
        ));
        let input = [0x80, 0, 0, 0x10, 2, b'a'];
        assert!(matches!(
            dec(&input),
            Err(ParamsError::LengthPastEnd { .. })
        ));
        assert!(matches!(
            dec(&[0x80, 0]),
            Err(ParamsError::TruncatedLength { .. })
        ));
        assert!(matches!(
            dec(&[5]),
            Err(ParamsError::TruncatedLength { .. })
        ));
    }

    #[test]
    fn pair_count_is_bounded() {
        let mut enc = BytesMut::new();
        for _ in 0..10_000 {
            encode_pair(&mut enc, b"a", b"");
        }
        let limits = ParamsLimits { max_pairs: 100 };
        assert_eq!(
            decode_params(&enc.clone().freeze(), limits),
            Err(ParamsError::TooManyPairs { max: 100 })
        );
        let limits = ParamsLimits { max_pairs: 10_000 };
        assert_eq!(decode_params(&enc.freeze(), limits).unwrap().len(), 10_000);
    }

    #[test]
    fn names_with_nul_and_equals_and_non_utf8_values_survive() {
        let mut enc = BytesMut::new();
        encode_pair(&mut enc, b"A\0=B", &[0xff, 0xfe]);
        let p = dec(&enc).unwrap();
        assert_eq!(&p[0].0[..], b"A\0=B");
        assert_eq!(&p[0].1[..], &[0xff, 0xfe]);
    }
}
