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
        now >= self.expires || runner_is_dead(&self.runner)
    }

    pub fn describe(&self) -> String {
        // A lock held past today (a paused canary's) says the day it expires too.
        let expires = if self.expires.date_naive() == self.since.date_naive() {
            self.expires.format("%H:%M:%S UTC")
        } else {
            self.expires.format("%Y-%m-%d %H:%M:%S UTC")
        };
        format!(
            "{} since {} ({}), expires {expires}",
            self.holder,
            self.since.format("%Y-%m-%d %H:%M:%S UTC"),
            self.reason,
        )
    }
}

/// The answer to one try at taking a lock.
pub enum Acquire {
    Acquired(Lock),
    Held(Lock),
}

/// `host:pid`, to tell whether the run that holds a lock or left a release is still alive.
pub fn runner() -> String {
    format!(
        "{}:{}",
        hostname().unwrap_or("unknown-host"),
        std::process::id()
    )
}

/// This machine's name, read once per process (a waiting lock asks every second).
fn hostname() -> Option<&'static str> {
    static HOST: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .as_deref()
}

/// Whether `runner` is a process of this machine that no longer exists.
pub fn runner_is_dead(runner: &str) -> bool {
    let Some((host, pid)) = runner.rsplit_once(':') else {
        return false;
    };
    host == hostname().unwrap_or_default()
        && pid
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
}
