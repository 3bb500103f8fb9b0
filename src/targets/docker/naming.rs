//! Names and labels of everything packfy-deploy creates on a Docker engine. Pure.
//!
//! Every object carries the app, region and environment as labels, and every query filters
//! on all three: deploys and pruning of one region or environment never see another's
//! containers on a shared engine (kamal#1922 is the bug this avoids).

use std::collections::HashMap;

pub const APP: &str = "packfy.app";
pub const REGION: &str = "packfy.region";
pub const ENVIRONMENT: &str = "packfy.environment";
pub const SERVICE: &str = "packfy.service";
pub const RELEASE: &str = "packfy.release";
pub const VERSION: &str = "packfy.version";
pub const KIND: &str = "packfy.kind";
pub const RECORD: &str = "packfy.record";
pub const RECORD_SEQ: &str = "packfy.record-seq";
pub const HOLDER: &str = "packfy.lock.holder";
pub const REASON: &str = "packfy.lock.reason";
pub const SINCE: &str = "packfy.lock.since";
pub const EXPIRES: &str = "packfy.lock.expires";
pub const TOKEN: &str = "packfy.lock.token";
pub const RUNNER: &str = "packfy.lock.runner";

/// The scope of one deploy: an app's region in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub app: String,
    pub region: String,
    pub env: String,
}

impl Scope {
    pub fn new(app: &str, region: &str, env: &str) -> Self {
        Scope {
            app: app.into(),
            region: region.into(),
            env: env.into(),
        }
    }

    /// Label filters that select exactly this scope's objects of one kind.
    pub fn filter(&self, kind: &str) -> Vec<(&'static str, String)> {
        vec![
            (APP, self.app.clone()),
            (REGION, self.region.clone()),
            (ENVIRONMENT, self.env.clone()),
            (KIND, kind.to_string()),
        ]
    }

    pub fn labels(&self, kind: &str) -> HashMap<String, String> {
        self.filter(kind)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// `packfy-local-production-backend-r3-1`
    pub fn container(&self, service: &str, release: &str, index: u32) -> String {
        format!(
            "{}-{}-{}-{service}-{release}-{index}",
            self.app, self.region, self.env
        )
    }

    /// The HAProxy server name of a container: short, unique within the backend.
    pub fn server(&self, service: &str, release: &str, index: u32) -> String {
        format!("{}-{}-{service}-{release}-{index}", self.region, self.env)
    }

    /// The one-off container of a service's release step for a release:
    /// `packfy-local-production-backend-r3-release`.
    pub fn release_step(&self, service: &str, release: &str) -> String {
        format!(
            "{}-{}-{}-{service}-{release}-release",
            self.app, self.region, self.env
        )
    }

    pub fn lock_volume(&self) -> String {
        format!("packfy-lock-{}-{}-{}", self.app, self.region, self.env)
    }

    pub fn record_volume(&self, release: &str, seq: u32) -> String {
        format!(
            "packfy-release-{}-{}-{}-{release}-{seq}",
            self.app, self.region, self.env
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_include_every_part_of_the_scope() {
        let s = Scope::new("packfy", "cuba", "staging");
        assert_eq!(
            s.container("backend", "r3", 2),
            "packfy-cuba-staging-backend-r3-2"
        );
        assert_eq!(s.server("backend", "r3", 2), "cuba-staging-backend-r3-2");
        assert_eq!(s.lock_volume(), "packfy-lock-packfy-cuba-staging");
        let f = s.filter("app");
        assert!(f.contains(&(ENVIRONMENT, "staging".to_string())));
        assert!(f.contains(&(REGION, "cuba".to_string())));
    }
}
