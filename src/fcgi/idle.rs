//! Connections with no request running, oldest first: when `max_connections` are open, the
//! acceptor closes the oldest of them to admit a new connection, so connections that never send
//! a request (or sit idle between requests) cannot lock out the web server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Closes a connection from outside its task (and wakes the task to notice).
pub trait Close: Send + Sync {
    /// Closes the connection.
    fn close(&self);
}

/// The registry of idle connections, by connection id (ids increase, so the first is oldest).
#[derive(Default)]
pub struct IdleConnections {
    idle: Mutex<BTreeMap<u64, Arc<dyn Close>>>,
}

impl IdleConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<dyn Close>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks connection `id` idle (`close` closes it) or, with `None`, busy.
    pub fn set(&self, id: u64, close: Option<Arc<dyn Close>>) {
        let mut map = self.lock();
        match close {
            Some(close) => map.insert(id, close),
            None => map.remove(&id),
        };
    }

    /// Closes the oldest idle connection; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_first();
        match oldest {
            Some((id, close)) => {
                log::info!("conn={id}: closed to make room (max_connections reached, it had no request running)");
                close.close();
                true
            }
            None => false,
        }
    }

    /// Idle connections now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    struct Token(CancellationToken);

    impl Close for Token {
        fn close(&self) {
            self.0.cancel();
        }
    }

    #[test]
    fn the_oldest_idle_connection_goes_first_and_busy_ones_never() {
        let reg = IdleConnections::default();
        let tokens: Vec<CancellationToken> = (0..4).map(|_| CancellationToken::new()).collect();
        for (i, t) in tokens.iter().enumerate() {
            reg.set(i as u64 + 1, Some(Arc::new(Token(t.clone()))));
        }
        reg.set(1, None);
        assert!(reg.evict_oldest());
        assert!(!tokens[0].is_cancelled() && tokens[1].is_cancelled());
        assert!(reg.evict_oldest() && reg.evict_oldest());
        assert!(!reg.evict_oldest());
        assert!(!tokens[0].is_cancelled());
        assert!(reg.is_empty());
    }
}
