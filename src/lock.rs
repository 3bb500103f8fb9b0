//! A region's lock, as every target keeps it: who holds it, why, until when, and which
//! process (so a lock whose deploy died on this machine is stale at once). The targets store
//! it (a Docker volume's labels, a Kubernetes Lease); the flow takes, waits for and takes over.

use chrono::{DateTime, Utc};

/// A lock as found on the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Lock {
    pub holder: String,
    pub reason: String,
    pub since: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub token: String,
    pub runner: String,
}

impl Lock {
    /// Past its expiry, or held by a process of this machine that has died.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires || crate::release::runner_is_dead(&self.runner)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} since {} ({}), expires {}",
            self.holder,
            self.since.format("%Y-%m-%d %H:%M:%S UTC"),
            self.reason,
            self.expires.format("%H:%M:%S UTC")
        )
    }
}

/// The answer to one try at taking a lock.
pub enum Acquire {
    Acquired(Lock),
    Held(Lock),
}
