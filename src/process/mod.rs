//! The process model: which role this process has (the only process, a supervisor, or one of
//! its workers), the hand-over of listening sockets to another process of the same binary
//! ([`handover`]), the zero-downtime upgrade on SIGUSR2 ([`upgrade`]), and the supervisor of
//! `[server] processes` ([`workers`]). Dependencies run one way: `workers` and `upgrade` use
//! `handover`; none of them uses another.

pub mod handover;
pub mod upgrade;
pub mod workers;

/// Set in a worker's environment: its number (0 …).
const WORKER: &str = "FASTSSE_WORKER";

/// Whether this process is a worker of a supervisor.
pub fn is_worker() -> bool {
    std::env::var_os(WORKER).is_some()
}

/// This worker's number, for logs and `/status`.
pub fn worker_number() -> Option<usize> {
    std::env::var(WORKER).ok()?.parse().ok()
}
