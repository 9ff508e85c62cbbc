//! Counters and the guards that hold a place in a limit: stream slots (`max_streams`),
//! connections (`max_connections`) and buffered request input (`max_input_bytes`). Each guard
//! gives its place back when dropped, so no path can leak one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Counters shown by the status route.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) active_streams: AtomicUsize,
    pub(crate) total_streams: AtomicU64,
    pub(crate) rejected_streams: AtomicU64,
    pub(crate) active_connections: AtomicUsize,
    pub(crate) total_connections: AtomicU64,
    pub(crate) refused_connections: AtomicU64,
    pub(crate) evicted_connections: AtomicU64,
    pub(crate) input_bytes: AtomicUsize,
    pub(crate) parked_streams: AtomicUsize,
}

/// Counts one stream parked without a task (kept by its connection) while alive.
#[derive(Debug)]
pub struct ParkedGuard(Arc<Stats>);

impl ParkedGuard {
    /// Counts one more parked stream.
    pub fn new(stats: &Arc<Stats>) -> ParkedGuard {
        stats.parked_streams.fetch_add(1, Ordering::AcqRel);
        ParkedGuard(stats.clone())
    }
}

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        self.0.parked_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one of the `max_streams` slots; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamPermit(pub(crate) Arc<Stats>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one open transport connection while alive.
#[derive(Debug)]
pub struct ConnectionGuard(pub(crate) Arc<Stats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Request input (PARAMS and body bytes) buffered for one request, counted against
/// `max_input_bytes` until dropped.
#[derive(Debug)]
pub struct InputCharge {
    pub(crate) stats: Arc<Stats>,
    pub(crate) bytes: usize,
    pub(crate) max: usize,
}

impl InputCharge {
    /// Counts `n` more bytes; false (nothing counted) when that would pass the bound.
    pub fn add(&mut self, n: usize) -> bool {
        let mut cur = self.stats.input_bytes.load(Ordering::Acquire);
        loop {
            if cur + n > self.max {
                return false;
            }
            match self.stats.input_bytes.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.bytes += n;
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }
}

impl InputCharge {
    /// Sets the count to `n` bytes (up or down); false (unchanged) when raising it would pass
    /// the bound.
    pub fn set(&mut self, n: usize) -> bool {
        if n >= self.bytes {
            return self.add(n - self.bytes);
        }
        self.stats
            .input_bytes
            .fetch_sub(self.bytes - n, Ordering::AcqRel);
        self.bytes = n;
        true
    }
}

impl Drop for InputCharge {
    fn drop(&mut self) {
        self.stats
            .input_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Stats {
    /// Streams open now.
    pub fn active_streams(&self) -> usize {
        self.active_streams.load(Ordering::Acquire)
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.active_connections.load(Ordering::Acquire)
    }
}
