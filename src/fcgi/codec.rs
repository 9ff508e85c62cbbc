//! `RecordCodec`: FastCGI record framing as a tokio-util `Decoder`/`Encoder` on `BytesMut`.
//!
//! Pure: it never does I/O. A partial record yields `Ok(None)`; the decoder's buffer never needs
//! more than one header, 65535 content bytes and 255 padding bytes. Stream records longer than
//! 65535 bytes are split on output, padded to a multiple of 8.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{is_stream_type, FCGI_HEADER_LEN, FCGI_MAX_CONTENT_LEN, FCGI_VERSION_1};

/// One FastCGI record: type, request id and content (padding already removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Record type (`FCGI_BEGIN_REQUEST` …), kept raw so unknown types can be answered.
    pub record_type: u8,
    /// Request id; 0 for management records.
    pub request_id: u16,
    /// Content bytes.
    pub content: Bytes,
}

impl Record {
    /// A record with the given type, id and content.
    pub fn new(record_type: u8, request_id: u16, content: impl Into<Bytes>) -> Self {
        Record {
            record_type,
            request_id,
            content: content.into(),
        }
    }
}

/// A framing error: the connection cannot continue.
#[derive(Debug)]
pub enum CodecError {
    /// The header's version byte was not 1.
    BadVersion(u8),
    /// A non-stream record longer than one record can carry was given to the encoder.
    ContentTooLong { record_type: u8, len: usize },
    /// The connection ended in the middle of a record.
    TruncatedRecord { have: usize, need: usize },
    /// Reading or writing the socket failed.
    Io(std::io::Error),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::BadVersion(v) => write!(f, "unsupported FastCGI version {v} (expected 1)"),
            CodecError::ContentTooLong { record_type, len } => write!(
                f,
                "record type {record_type} cannot carry {len} bytes (max {FCGI_MAX_CONTENT_LEN})"
            ),
            CodecError::TruncatedRecord { have, need } => write!(
                f,
                "connection ended inside a record ({have} of {need} bytes received)"
            ),
            CodecError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<std::io::Error> for CodecError {
    fn from(e: std::io::Error) -> Self {
        CodecError::Io(e)
    }
}

/// FastCGI record codec. Decodes [`Record`]s and encodes them, splitting long stream records.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecordCodec;

/// Padding that brings `len` up to a multiple of 8.
pub fn padding_for(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// The header of one record with `content_len` bytes of content (at most 65535), followed by
/// [`padding_for`] that many bytes of padding. The only place a record header is written.
pub fn record_header(
    record_type: u8,
    request_id: u16,
    content_len: usize,
) -> [u8; FCGI_HEADER_LEN] {
    debug_assert!(content_len <= FCGI_MAX_CONTENT_LEN);
    let id = request_id.to_be_bytes();
    let len = (content_len as u16).to_be_bytes();
    let pad = padding_for(content_len) as u8;
    [
        FCGI_VERSION_1,
        record_type,
        id[0],
        id[1],
        len[0],
        len[1],
        pad,
        0,
    ]
}

/// Appends one record (content at most 65535 bytes) to `dst`, padded to a multiple of 8.
fn put_one(dst: &mut BytesMut, record_type: u8, request_id: u16, content: &[u8]) {
    let pad = padding_for(content.len());
    dst.reserve(FCGI_HEADER_LEN + content.len() + pad);
    dst.put_slice(&record_header(record_type, request_id, content.len()));
    dst.put_slice(content);
    dst.put_bytes(0, pad);
}

/// Largest chunk used when splitting a stream: a multiple of 8 so split records need no padding.
const SPLIT_CHUNK: usize = FCGI_MAX_CONTENT_LEN - FCGI_MAX_CONTENT_LEN % 8;

impl Encoder<Record> for RecordCodec {
    type Error = CodecError;

    fn encode(&mut self, record: Record, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_record(&record, dst)
    }
}

impl Encoder<&Record> for RecordCodec {
    type Error = CodecError;

    fn encode(&mut self, record: &Record, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_record(record, dst)
    }
}

/// Encodes a record into `dst`; a stream record longer than 65535 bytes becomes several records
/// of the same type. An empty stream record is written as given (it is the stream terminator).
pub fn encode_record(record: &Record, dst: &mut BytesMut) -> Result<(), CodecError> {
    let content = &record.content[..];
    if content.len() <= FCGI_MAX_CONTENT_LEN {
        put_one(dst, record.record_type, record.request_id, content);
        return Ok(());
    }
    if !is_stream_type(record.record_type) {
        return Err(CodecError::ContentTooLong {
            record_type: record.record_type,
            len: content.len(),
        });
    }
    for chunk in content.chunks(SPLIT_CHUNK) {
        put_one(dst, record.record_type, record.request_id, chunk);
    }
    Ok(())
}

impl Decoder for RecordCodec {
    type Item = Record;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Record>, CodecError> {
        if src.len() < FCGI_HEADER_LEN {
            src.reserve(FCGI_HEADER_LEN - src.len());
            return Ok(None);
        }
        let version = src[0];
        if version != FCGI_VERSION_1 {
            return Err(CodecError::BadVersion(version));
        }
        let record_type = src[1];
        let request_id = u16::from_be_bytes([src[2], src[3]]);
        let content_len = u16::from_be_bytes([src[4], src[5]]) as usize;
        let padding_len = src[6] as usize;
        let total = FCGI_HEADER_LEN + content_len + padding_len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(FCGI_HEADER_LEN);
        let content = src.split_to(content_len).freeze();
        src.advance(padding_len);
        Ok(Some(Record {
            record_type,
            request_id,
            content,
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Record>, CodecError> {
        match self.decode(src)? {
            Some(record) => Ok(Some(record)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = if src.len() >= FCGI_HEADER_LEN {
                    FCGI_HEADER_LEN
                        + u16::from_be_bytes([src[4], src[5]]) as usize
                        + src[6] as usize
                } else {
                    FCGI_HEADER_LEN
                };
                Err(CodecError::TruncatedRecord {
                    have: src.len(),
                    need,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fcgi::{FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDOUT};

    /// A record written by hand, independent of the encoder.
    fn raw(t: u8, id: u16, content: &[u8], pad: u8) -> Vec<u8> {
        let mut v = vec![1, t, (id >> 8) as u8, id as u8];
        v.extend_from_slice(&(content.len() as u16).to_be_bytes());
        v.push(pad);
        v.push(0);
        v.extend_from_slice(content);
        v.extend(std::iter::repeat_n(0xAA, pad as usize));
        v
    }

    /// Decodes `input` delivered as two pieces split at `at`, collecting every record.
    fn decode_split(input: &[u8], at: usize) -> Result<Vec<Record>, CodecError> {
        let mut codec = RecordCodec;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in [&input[..at], &input[at..]] {
            buf.extend_from_slice(piece);
            while let Some(r) = codec.decode(&mut buf)? {
                out.push(r);
            }
        }
        if let Some(r) = codec.decode_eof(&mut buf)? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn decodes_records_split_at_every_position() {
        let mut input = raw(FCGI_BEGIN_REQUEST, 1, &[0, 1, 1, 0, 0, 0, 0, 0], 0);
        input.extend(raw(FCGI_PARAMS, 1, b"\x03\x01abcd", 5));
        input.extend(raw(FCGI_PARAMS, 1, b"", 255));
        input.extend(raw(FCGI_STDOUT, 65535, &[7; 300], 3));
        for at in 0..=input.len() {
            let recs = decode_split(&input, at).unwrap();
            assert_eq!(recs.len(), 4, "split at {at}");
            assert_eq!(recs[0].record_type, FCGI_BEGIN_REQUEST);
            assert_eq!(&recs[1].content[..], b"\x03\x01abcd");
            assert!(recs[2].content.is_empty());
            assert_eq!(recs[3].request_id, 65535);
            assert_eq!(recs[3].content.len(), 300);
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = raw(FCGI_PARAMS, 9, b"", 255);
        let mut codec = RecordCodec;
        let mut buf = BytesMut::new();
        let mut got = None;
        for (i, b) in input.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = codec.decode(&mut buf).unwrap();
            if i + 1 < input.len() {
                assert!(r.is_none());
            } else {
                got = r;
            }
        }
        assert_eq!(got.unwrap(), Record::new(FCGI_PARAMS, 9, Bytes::new()));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_other_versions() {
        let mut input = raw(FCGI_PARAMS, 1, b"", 0);
        input[0] = 2;
        let mut buf = BytesMut::from(&input[..]);
        assert!(matches!(
            RecordCodec.decode(&mut buf),
            Err(CodecError::BadVersion(2))
        ));
    }

    #[test]
    fn truncated_record_at_eof_is_an_error() {
        let input = raw(FCGI_STDOUT, 1, b"hello", 0);
        for cut in 1..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert!(RecordCodec.decode(&mut buf).unwrap().is_none());
            assert!(matches!(
                RecordCodec.decode_eof(&mut buf),
                Err(CodecError::TruncatedRecord { .. })
            ));
        }
        let mut empty = BytesMut::new();
        assert!(RecordCodec.decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn encodes_padded_records() {
        let mut dst = BytesMut::new();
        RecordCodec
            .encode(Record::new(FCGI_STDOUT, 3, &b"abc"[..]), &mut dst)
            .unwrap();
        assert_eq!(
            &dst[..],
            &[1, 6, 0, 3, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );
        assert_eq!(dst.len() % 8, 0);
    }

    #[test]
    fn splits_long_stream_records_and_round_trips() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut dst = BytesMut::new();
        RecordCodec
            .encode(Record::new(FCGI_STDOUT, 1, body.clone()), &mut dst)
            .unwrap();
        let mut joined = Vec::new();
        let mut n = 0;
        while let Some(r) = RecordCodec.decode(&mut dst).unwrap() {
            assert!(r.content.len() <= FCGI_MAX_CONTENT_LEN);
            assert!(!r.content.is_empty());
            joined.extend_from_slice(&r.content);
            n += 1;
        }
        assert_eq!(n, 4);
        assert_eq!(joined, body);
    }

    #[test]
    fn refuses_long_non_stream_records() {
        let mut dst = BytesMut::new();
        let r = Record::new(FCGI_END_REQUEST, 1, vec![0; 70_000]);
        assert!(matches!(
            RecordCodec.encode(r, &mut dst),
            Err(CodecError::ContentTooLong { .. })
        ));
    }
}
