//! FastCGI 1.0 wire protocol: spec constants, the record codec, name-value pairs and the
//! per-connection driver.
//!
//! Layering: [`codec`] and [`params`] are pure (bytes in, values out, no I/O); [`conn`] reads
//! one connection's records and keeps its request table; `writer` is the connection's write
//! side (and each stream's direct writer); `task` runs one request through the
//! transport-neutral [`crate::app::App`] and [`crate::response::respond`].

pub mod client;
pub mod codec;
pub mod conn;
pub mod idle;
pub mod params;
mod slots;
mod task;
#[cfg(test)]
mod tests;
mod writer;

/// The only protocol version (spec 3.3).
pub const FCGI_VERSION_1: u8 = 1;
/// Length of every record header (spec 3.3).
pub const FCGI_HEADER_LEN: usize = 8;
/// Largest content of one record (the contentLength field is a u16).
pub const FCGI_MAX_CONTENT_LEN: usize = 65535;
/// Request id of management records.
pub const FCGI_NULL_REQUEST_ID: u16 = 0;

/// Record types (spec 8).
pub const FCGI_BEGIN_REQUEST: u8 = 1;
pub const FCGI_ABORT_REQUEST: u8 = 2;
pub const FCGI_END_REQUEST: u8 = 3;
pub const FCGI_PARAMS: u8 = 4;
pub const FCGI_STDIN: u8 = 5;
pub const FCGI_STDOUT: u8 = 6;
pub const FCGI_STDERR: u8 = 7;
pub const FCGI_DATA: u8 = 8;
pub const FCGI_GET_VALUES: u8 = 9;
pub const FCGI_GET_VALUES_RESULT: u8 = 10;
pub const FCGI_UNKNOWN_TYPE: u8 = 11;

/// BEGIN_REQUEST flag: keep the connection open after END_REQUEST.
pub const FCGI_KEEP_CONN: u8 = 1;

/// Roles (spec 5.1).
pub const FCGI_RESPONDER: u16 = 1;
pub const FCGI_AUTHORIZER: u16 = 2;
pub const FCGI_FILTER: u16 = 3;

/// END_REQUEST protocolStatus values (spec 5.5).
pub const FCGI_REQUEST_COMPLETE: u8 = 0;
pub const FCGI_CANT_MPX_CONN: u8 = 1;
pub const FCGI_OVERLOADED: u8 = 2;
pub const FCGI_UNKNOWN_ROLE: u8 = 3;

/// GET_VALUES variable names (spec 4.1).
pub const FCGI_MAX_CONNS: &str = "FCGI_MAX_CONNS";
pub const FCGI_MAX_REQS: &str = "FCGI_MAX_REQS";
pub const FCGI_MPXS_CONNS: &str = "FCGI_MPXS_CONNS";

/// Whether a record type carries a stream (a sequence of records ended by an empty one).
pub fn is_stream_type(record_type: u8) -> bool {
    matches!(
        record_type,
        FCGI_PARAMS | FCGI_STDIN | FCGI_STDOUT | FCGI_STDERR | FCGI_DATA
    )
}

/// Whether a record type is one of the known management types (valid only on request id 0).
pub fn is_known_management_type(record_type: u8) -> bool {
    matches!(record_type, FCGI_GET_VALUES | FCGI_GET_VALUES_RESULT)
}
