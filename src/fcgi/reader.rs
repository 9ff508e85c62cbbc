//! The read side of a FastCGI connection: whole records, with the codec doing the framing,
//! and no buffer kept while the connection waits (thousands of idle streams wait here).

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::fcgi::codec::{CodecError, Record, RecordCodec};
use crate::fcgi::writer::{ConnWriter, FcgiSocket};
use crate::stats::InputCharge;

/// Read buffer growth step while a request arrives.
const READ_BUFFER: usize = 2048;

/// Reads whole records from the connection, with the codec doing the framing. Holds no buffer
/// while waiting: thousands of idle streams wait here.
pub(super) struct RecordReader<S> {
    /// The connection's socket is `conn.io`.
    pub(super) conn: Arc<ConnWriter<S>>,
    pub(super) buf: BytesMut,
    /// The read buffer past its first [`READ_BUFFER`] bytes counts against `max_input_bytes`
    /// (a partial record of up to 64 KiB may wait here on every connection).
    pub(super) charge: InputCharge,
}

impl<S: FcgiSocket> RecordReader<S> {
    /// The next record; `Ok(None)` at a clean EOF. Cancel-safe.
    pub(super) async fn next(&mut self) -> Result<Option<Record>, CodecError> {
        loop {
            if let Some(record) = RecordCodec.decode(&mut self.buf)? {
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                    self.charge.set(0);
                }
                return Ok(Some(record));
            }
            self.conn.io.readable().await?;
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_BUFFER);
                if !self
                    .charge
                    .set(self.buf.capacity().saturating_sub(READ_BUFFER))
                {
                    return Err(io::Error::other(
                        "max_input_bytes of request input already buffered",
                    )
                    .into());
                }
            }
            match self.conn.io.try_read_buf(&mut self.buf) {
                Ok(0) => return RecordCodec.decode_eof(&mut self.buf),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
