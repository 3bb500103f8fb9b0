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

    /// The HAProxy server name of a container: short, unique within the backend. `host` is
    /// the container's host tag in a region of several hosts ([`host_tags`]; empty with one
    /// host), so the same index on two hosts never collides.
    pub fn server(&self, host: &str, service: &str, release: &str, index: u32) -> String {
        if host.is_empty() {
            format!("{}-{}-{service}-{release}-{index}", self.region, self.env)
        } else {
            format!(
                "{}-{}-{host}-{service}-{release}-{index}",
                self.region, self.env
            )
        }
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

/// The short tag of each host of a region, for HAProxy server names and output: nothing for a
/// region of one host (its names stay as they were), else the host name's first label
/// (`ssh://deploy@mexico-docker-1.packfy.example` → `mexico-docker-1`; an IP address with
/// `-` for its dots), or `hN` (its place in the list) when two hosts would share a tag.
pub fn host_tags(endpoints: &[String]) -> Vec<String> {
    if endpoints.len() < 2 {
        return vec![String::new(); endpoints.len()];
    }
    let tag = |e: &str| -> String {
        let rest = e.split_once("://").map_or(e, |x| x.1);
        let authority = rest.split('/').next().unwrap_or_default();
        let hostport = authority.rsplit_once('@').map_or(authority, |x| x.1);
        let host = match hostport.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
            None => hostport.split(':').next().unwrap_or_default().to_string(),
        };
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let t = if is_ip {
            host.replace(['.', ':'], "-")
        } else {
            host.split('.').next().unwrap_or_default().to_string()
        };
        t.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    };
    let tags: Vec<String> = endpoints.iter().map(|e| tag(e)).collect();
    tags.iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() || tags.iter().filter(|x| *x == t).count() > 1 {
                format!("h{}", i + 1)
            } else {
                t.clone()
            }
        })
        .collect()
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
        assert_eq!(
            s.server("", "backend", "r3", 2),
            "cuba-staging-backend-r3-2"
        );
        assert_eq!(
            s.server("cuba-docker-2", "backend", "r3", 2),
            "cuba-staging-cuba-docker-2-backend-r3-2"
        );
        assert_eq!(s.lock_volume(), "packfy-lock-packfy-cuba-staging");
        let f = s.filter("app");
        assert!(f.contains(&(ENVIRONMENT, "staging".to_string())));
        assert!(f.contains(&(REGION, "cuba".to_string())));
    }

    #[test]
    fn host_tags_name_each_host_once() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            host_tags(&v(&["ssh://deploy@mx1.packfy.example"])),
            v(&[""])
        );
        assert_eq!(
            host_tags(&v(&[
                "ssh://deploy@mexico-docker-1.packfy.example:22",
                "ssh://mexico-docker-2",
                "tcp://10.0.0.5:2376",
            ])),
            v(&["mexico-docker-1", "mexico-docker-2", "10-0-0-5"])
        );
        assert_eq!(
            host_tags(&v(&["ssh://a@mx1.one.example", "ssh://b@mx1.two.example"])),
            v(&["h1", "h2"])
        );
    }
}
