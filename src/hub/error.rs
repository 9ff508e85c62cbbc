//! What a publisher is told when its publication was not stored (or may not have been).

use std::fmt;

use super::journal::JournalError;

/// A hub failure seen by a publisher. Every variant but [`HubError::Unknown`] means the event
/// was not stored.
#[derive(Debug)]
pub enum HubError {
    /// The journal could not be written (500).
    Journal(JournalError),
    /// The store answered with an error (Redis: a key of the wrong type, a counter that is not
    /// a number): not stored (500).
    Refused(String),
    /// The journal is busy: its lock is held elsewhere or its queue is full (503, retry).
    Busy(String),
    /// The store took the publication but gave no answer within the deadline: it may or may
    /// not be stored (503; the one case a publisher cannot be told).
    Unknown(String),
    /// The appender thread is gone (process shutting down; 503).
    Closed,
}

impl HubError {
    /// A short reason for the HTTP client: no paths, no OS error text.
    pub fn public_reason(&self) -> String {
        match self {
            HubError::Journal(e) => e.public_reason().to_string(),
            HubError::Refused(why) | HubError::Busy(why) | HubError::Unknown(why) => why.clone(),
            HubError::Closed => "the server is shutting down".into(),
        }
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Journal(e) => write!(f, "journal: {e}"),
            HubError::Busy(why) => write!(f, "busy: {why}"),
            HubError::Refused(why) => write!(f, "refused: {why}"),
            HubError::Unknown(why) => write!(f, "no answer: {why}"),
            HubError::Closed => f.write_str("the hub is shutting down"),
        }
    }
}

impl std::error::Error for HubError {}

impl From<JournalError> for HubError {
    fn from(e: JournalError) -> Self {
        HubError::Journal(e)
    }
}
