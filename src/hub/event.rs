//! An event as subscribers get it: its id, topics and wire bytes, encoded once from its
//! journal record and shared by every subscriber.

use bytes::Bytes;

use super::journal::JournalRecord;
use crate::sse::{EncodedEvent, Event};

/// An event as delivered: id, topics and its wire bytes, encoded once.
#[derive(Debug)]
pub struct StoredEvent {
    /// Id.
    pub id: u64,
    /// Publish time (ms since the epoch).
    pub unix_ms: u64,
    /// Topics: the first is the canonical one, the others alternates.
    pub topics: Vec<String>,
    /// Only for subscribers authorized for one of its topics.
    pub private: bool,
    /// The publisher's id, sent as `id:` in place of the sequence number.
    pub public_id: Option<String>,
    /// `id:`/`event:`/`retry:`/`data:` lines and the blank line, shared by all subscribers.
    pub wire: Bytes,
}

impl StoredEvent {
    pub(crate) fn from_record(r: JournalRecord) -> StoredEvent {
        let wire_id = r.public_id.clone().unwrap_or_else(|| r.id.to_string());
        let mut ev = Event::new().id(wire_id).data(r.data);
        if let Some(e) = r.event {
            ev = ev.event(e);
        }
        if let Some(ms) = r.retry_ms {
            ev = ev.retry(ms);
        }
        // Publications are validated before they reach the journal; a record that still
        // cannot be encoded (written by another tool) is sent as a comment, never broken SSE.
        let wire = ev
            .encode()
            .map(EncodedEvent::into_bytes)
            .unwrap_or_else(|_| Bytes::from(format!(": event {} could not be encoded\n\n", r.id)));
        StoredEvent {
            id: r.id,
            unix_ms: r.unix_ms,
            topics: r.topics,
            private: r.private,
            public_id: r.public_id,
            wire,
        }
    }
}
