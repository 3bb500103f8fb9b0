//! Drift on a Docker region: what runs on the engine and in HAProxy against what the release
//! records (and the configuration at the serving version) say. Pure: the target gathers the
//! containers, their inspection and HAProxy's servers; these functions compare.
//!
//! - a container with the region's labels that no release record accounts for (a hand
//!   `docker run`) is drift; a reset removes it;
//! - a serving container missing or stopped is drift; the deploy replaces the service (its
//!   running count is short), which a reset relies on;
//! - a container of a release that does not serve, running again (a hand `docker start`), is
//!   drift; a reset stops it. Stopped ones are kept for rollback: not drift;
//! - a serving container whose image, environment (compared by value, secrets by hash) or
//!   labels differ from the configuration at the serving version is drift;
//! - HAProxy: a server of this region with no running container behind it, one of a running
//!   container missing, in `maint` or `drain`, or with a weight other than the 1 our
//!   `add server` gives. A reset deletes, readies and re-weights them once the rollout is done.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::desired::Desired;
use super::naming::{self, Scope};
use super::{ContainerState, LiveContainer};
use crate::drift::{hash_of, Drift};
use crate::release::{Kind, Outcome, Release};
use crate::traffic::haproxy::ServerStat;

/// The weight `add server` gives a server; what a release sets.
pub const WEIGHT: u64 = 1;

/// What a reset does about one difference (before the rollout; HAProxy after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Remove a container no record accounts for (and its HAProxy server).
    Remove {
        id: String,
        server: Option<(String, String)>,
    },
    /// Stop a container of a release that does not serve (and remove its HAProxy server).
    Stop {
        id: String,
        server: Option<(String, String)>,
    },
    DelServer {
        backend: String,
        server: String,
    },
    Ready {
        backend: String,
        server: String,
    },
    Weight {
        backend: String,
        server: String,
    },
}

/// What the region should run.
pub struct Expected<'a> {
    pub scope: &'a Scope,
    /// Every release record, oldest first.
    pub history: &'a [Release],
    pub serving: Option<&'a Release>,
    /// The configuration at the serving version; empty: hand edits only (no image, env or
    /// label comparison).
    pub desired: &'a [Desired],
    /// Service → HAProxy backend (none without `traffic: haproxy`).
    pub backends: &'a HashMap<String, String>,
}

/// What runs.
pub struct Observed<'a> {
    pub containers: &'a [LiveContainer],
    /// Running containers inspected (by id), for image, env and labels.
    pub inspected: &'a HashMap<String, ContainerState>,
    /// The servers of each backend of `Expected::backends`.
    pub servers: &'a [ServerStat],
}

/// Whether a record accounts for a container: it lists it, or the container carries the id
/// of a record whose list may be incomplete — a rollback (it lists the release it restarted),
/// a release in progress, or one a killed run left and the next run restored.
pub fn accounted(c: &LiveContainer, history: &[Release]) -> bool {
    history.iter().any(|r| {
        r.services
            .iter()
            .any(|s| s.containers.iter().any(|x| x.id == c.id))
            || (r.id == c.release
                && (r.kind == Kind::Rollback
                    || matches!(
                        r.outcome,
                        Outcome::InProgress | Outcome::RolledBack | Outcome::Failed
                    )))
    })
}

/// The containers (ids) that serve `service`: those the serving release lists for it, else
/// those of the release before it, and so on (a deploy that left a service unchanged lists
/// none for it).
pub fn serving_ids(service: &str, serving: &Release, history: &[Release]) -> Vec<String> {
    let mut at = Some(serving);
    let mut seen = 0;
    while let Some(r) = at {
        if let Some(s) = r.services.iter().find(|s| s.name == service) {
            if !s.containers.is_empty() {
                return s.containers.iter().map(|c| c.id.clone()).collect();
            }
        }
        seen += 1;
        at = r
            .previous
            .as_ref()
            .and_then(|p| history.iter().find(|h| &h.id == p))
            .filter(|_| seen < history.len());
    }
    Vec::new()
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Every difference, with what a reset does about it (`None`: the deploy's rollout does it,
/// or nothing can).
pub fn drift(e: &Expected, o: &Observed) -> Vec<(Drift, Option<Fix>)> {
    let mut out = Vec::new();
    let server_of = |c: &LiveContainer| {
        e.backends.get(&c.service).map(|b| {
            (
                b.clone(),
                e.scope.server(&c.host_tag, &c.service, &c.release, c.index),
            )
        })
    };
    let mut serving: Vec<String> = Vec::new();
    if let Some(s) = e.serving {
        for sr in &s.services {
            serving.extend(serving_ids(&sr.name, s, e.history));
        }
        // A rollback's record lists the containers of the release it restarted; any it had
        // to create carry its id.
        if s.kind == Kind::Rollback {
            serving.extend(
                o.containers
                    .iter()
                    .filter(|c| c.release == s.id)
                    .map(|c| c.id.clone()),
            );
        }
    }
    // 1. containers no record accounts for, and retained ones running again
    for c in o.containers {
        let state = if c.running { "running" } else { "stopped" };
        let path = format!("{}: container {}", c.service, c.name);
        if !accounted(c, e.history) {
            out.push((
                Drift::new(path, None, Some(json!(state))),
                Some(Fix::Remove {
                    id: c.id.clone(),
                    server: server_of(c),
                }),
            ));
        } else if c.running && !serving.contains(&c.id) {
            out.push((
                Drift::new(
                    format!("{path} (release {}, kept for rollback)", c.release),
                    Some(json!("stopped")),
                    Some(json!(state)),
                ),
                Some(Fix::Stop {
                    id: c.id.clone(),
                    server: server_of(c),
                }),
            ));
        }
    }
    // 2. serving containers missing or stopped
    if let Some(s) = e.serving {
        for sr in &s.services {
            for id in serving_ids(&sr.name, s, e.history) {
                let name = sr
                    .containers
                    .iter()
                    .chain(
                        e.history
                            .iter()
                            .flat_map(|r| r.services.iter().flat_map(|x| x.containers.iter())),
                    )
                    .find(|x| x.id == id)
                    .map_or_else(|| short(&id), |x| x.name.clone());
                let live = o.containers.iter().find(|c| c.id == id);
                match live {
                    Some(c) if c.running => {}
                    Some(_) => out.push((
                        Drift::new(
                            format!("{}: container {name}", sr.name),
                            Some(json!("running")),
                            Some(json!("stopped")),
                        ),
                        None,
                    )),
                    None => out.push((
                        Drift::new(
                            format!("{}: container {name}", sr.name),
                            Some(json!("running")),
                            None,
                        ),
                        None,
                    )),
                }
            }
        }
    }
    // 3. serving containers against the configuration at the serving version
    for c in o
        .containers
        .iter()
        .filter(|c| c.running && serving.contains(&c.id))
    {
        let (Some(d), Some(st)) = (
            e.desired.iter().find(|d| d.name == c.service),
            o.inspected.get(&c.id),
        ) else {
            continue;
        };
        for (what, wanted, live) in container_differences(e.scope, d, st) {
            out.push((
                Drift::new(
                    format!("{}: container {}: {what}", c.service, c.name),
                    wanted,
                    live,
                ),
                None,
            ));
        }
    }
    // 4. HAProxy
    let running: Vec<&LiveContainer> = o
        .containers
        .iter()
        .filter(|c| c.running && accounted(c, e.history))
        .collect();
    let wanted: Vec<(String, String)> = running
        .iter()
        .filter(|c| e.serving.is_none() || serving.contains(&c.id))
        .filter_map(|c| server_of(c))
        .collect();
    for (d, fix) in lb_drift(e.scope, e.backends, &wanted, o.servers) {
        out.push((d, Some(fix)));
    }
    for (b, s) in &wanted {
        if !o.servers.iter().any(|x| &x.backend == b && &x.name == s) {
            out.push((
                Drift::new(format!("haproxy {b}/{s}"), Some(json!("in rotation")), None),
                None,
            ));
        }
    }
    out
}

/// HAProxy against the servers that should be there (`wanted`: backend, server): this
/// region's servers (by name) that should not be, or are not ready at weight 1.
pub fn lb_drift(
    scope: &Scope,
    backends: &HashMap<String, String>,
    wanted: &[(String, String)],
    servers: &[ServerStat],
) -> Vec<(Drift, Fix)> {
    let mut out = Vec::new();
    for (service, backend) in backends {
        let prefix = format!("{}-{}-{service}-", scope.region, scope.env);
        for s in servers
            .iter()
            .filter(|s| &s.backend == backend && s.name.starts_with(&prefix))
        {
            let path = format!("haproxy {backend}/{}", s.name);
            let (b, n) = (backend.clone(), s.name.clone());
            if !wanted.iter().any(|(wb, ws)| wb == backend && ws == &s.name) {
                out.push((
                    Drift::new(path, None, Some(json!(s.status))),
                    Fix::DelServer {
                        backend: b,
                        server: n,
                    },
                ));
            } else if s.status.starts_with("MAINT") || s.status.starts_with("DRAIN") {
                out.push((
                    Drift::new(
                        format!("{path}: state"),
                        Some(json!("ready")),
                        Some(json!(s.status)),
                    ),
                    Fix::Ready {
                        backend: b,
                        server: n,
                    },
                ));
            } else if s.weight != WEIGHT {
                out.push((
                    Drift::new(
                        format!("{path}: weight"),
                        Some(json!(WEIGHT)),
                        Some(json!(s.weight)),
                    ),
                    Fix::Weight {
                        backend: b,
                        server: n,
                    },
                ));
            }
        }
    }
    out
}

/// Image, environment and labels of one running container against the desired service.
/// Environment values of secret variables are shown as hashes, never as values.
fn container_differences(
    scope: &Scope,
    d: &Desired,
    st: &ContainerState,
) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut out = Vec::new();
    if !d.image_id.starts_with("missing:") && !d.image_id.is_empty() && d.image_id != st.image_id {
        out.push((
            "image".to_string(),
            Some(json!(format!("{} ({})", d.image, short(&d.image_id)))),
            Some(json!(short(&st.image_id))),
        ));
    }
    let live: BTreeMap<&str, &str> = st.env.iter().filter_map(|kv| kv.split_once('=')).collect();
    for kv in &d.env {
        let Some((k, want)) = kv.split_once('=') else {
            continue;
        };
        let got = live.get(k).copied();
        if got == Some(want) {
            continue;
        }
        let secret = d.secret_refs.contains_key(k);
        let show = |v: &str| {
            if secret {
                json!(hash_of(v))
            } else {
                json!(v)
            }
        };
        let wanted = d
            .env_shown
            .get(k)
            .map(|s| if secret { json!(s) } else { show(want) });
        out.push((format!("env.{k}"), wanted, got.map(show)));
    }
    let mut labels = scope.labels("app");
    labels.insert(naming::SERVICE.into(), d.name.clone());
    if let Some(v) = d.env_shown.get("APP_VERSION") {
        labels.insert(naming::VERSION.into(), v.clone());
    }
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    for k in keys {
        let got = st.labels.get(k);
        if got != labels.get(k) {
            out.push((
                format!("label {k}"),
                Some(json!(labels[k])),
                got.map(|g| json!(g)),
            ));
        }
    }
    out
}

/// What runs once a reset's container fixes are done (for the rollout's plan).
pub fn after_fixes(live: &[LiveContainer], fixes: &[Fix]) -> Vec<LiveContainer> {
    live.iter()
        .filter(|c| {
            !fixes
                .iter()
                .any(|f| matches!(f, Fix::Remove { id, .. } if id == &c.id))
        })
        .map(|c| {
            let mut c = c.clone();
            if fixes
                .iter()
                .any(|f| matches!(f, Fix::Stop { id, .. } if id == &c.id))
            {
                c.running = false;
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{ContainerRecord, ServiceRecord};

    fn scope() -> Scope {
        Scope::new("packfy", "usa", "production")
    }

    fn container(id: &str, release: &str, index: u32, running: bool) -> LiveContainer {
        LiveContainer {
            host: 0,
            host_tag: String::new(),
            service: "web".into(),
            release: release.into(),
            index,
            id: id.into(),
            name: scope().container("web", release, index),
            running,
            image: "img:v1".into(),
            image_id: "sha256:aaa".into(),
            spec_hash: "h".into(),
            version: "v1".into(),
        }
    }

    fn record(id: &str, previous: Option<&str>, containers: &[&str]) -> Release {
        let mut r = Release::start("usa", "production", &[], Kind::Deploy, "v1", None, None);
        r.id = id.into();
        r.outcome = Outcome::Succeeded;
        r.previous = previous.map(str::to_string);
        r.services = vec![ServiceRecord {
            name: "web".into(),
            image: "img:v1".into(),
            image_id: "sha256:aaa".into(),
            digest: None,
            replicas: containers.len() as u32,
            env: Default::default(),
            secret_refs: Default::default(),
            container_port: Some(8080),
            containers: containers
                .iter()
                .map(|c| ContainerRecord {
                    name: c.to_string(),
                    id: c.to_string(),
                    addr: None,
                })
                .collect(),
            spec_hash: "h".into(),
        }];
        r
    }

    fn server(name: &str, status: &str, weight: u64) -> ServerStat {
        ServerStat {
            backend: "be".into(),
            name: name.into(),
            status: status.into(),
            weight,
            ..Default::default()
        }
    }

    fn run(history: &[Release], live: &[LiveContainer], servers: &[ServerStat]) -> Vec<String> {
        let backends = HashMap::from([("web".to_string(), "be".to_string())]);
        let e = Expected {
            scope: &scope(),
            history,
            serving: history.last(),
            desired: &[],
            backends: &backends,
        };
        let o = Observed {
            containers: live,
            inspected: &HashMap::new(),
            servers,
        };
        drift(&e, &o).iter().map(|(d, _)| d.describe()).collect()
    }

    #[test]
    fn what_the_release_runs_is_no_drift_and_kept_containers_are_not_either() {
        let history = [record("r1", None, &["a"]), record("r2", Some("r1"), &["b"])];
        let live = [
            container("a", "r1", 1, false),
            container("b", "r2", 1, true),
        ];
        let servers = [server("usa-production-web-r2-1", "UP", 1)];
        assert_eq!(run(&history, &live, &servers), Vec::<String>::new());
    }

    #[test]
    fn a_service_a_deploy_left_unchanged_is_served_by_the_release_before() {
        let history = [record("r1", None, &["a"]), record("r2", Some("r1"), &[])];
        let live = [container("a", "r1", 1, true)];
        let servers = [server("usa-production-web-r1-1", "UP", 1)];
        assert_eq!(run(&history, &live, &servers), Vec::<String>::new());
    }

    #[test]
    fn hand_made_containers_stopped_ones_and_started_ones_are_drift() {
        let history = [
            record("r1", None, &["a"]),
            record("r2", Some("r1"), &["b", "c"]),
        ];
        let live = [
            container("a", "r1", 1, true),  // retained, started by hand
            container("b", "r2", 1, false), // serving, stopped by hand
            container("x", "r2", 9, true),  // `docker run` with the labels
        ];
        let got = run(&history, &live, &[]);
        assert_eq!(
            got,
            [
                "web: container packfy-usa-production-web-r1-1 (release r1, kept for rollback): wanted stopped, live running",
                "web: container packfy-usa-production-web-r2-9: wanted (none), live running",
                "web: container b: wanted running, live stopped",
                "web: container c: wanted running, live (none)",
            ]
        );
    }

    #[test]
    fn haproxy_servers_states_and_weights_are_compared_with_the_release() {
        let history = [record("r1", None, &["a", "b", "c"])];
        let live = [
            container("a", "r1", 1, true),
            container("b", "r1", 2, true),
            container("c", "r1", 3, true),
        ];
        let servers = [
            server("usa-production-web-r1-1", "MAINT", 0),
            server("usa-production-web-r1-2", "UP", 50),
            server("usa-production-web-r0-7", "DOWN", 1),
            server("mexico-production-web-r1-1", "MAINT", 0), // another region's: not ours
        ];
        let got = run(&history, &live, &servers);
        assert_eq!(
            got,
            [
                "haproxy be/usa-production-web-r1-1: state: wanted ready, live MAINT",
                "haproxy be/usa-production-web-r1-2: weight: wanted 1, live 50",
                "haproxy be/usa-production-web-r0-7: wanted (none), live DOWN",
                "haproxy be/usa-production-web-r1-3: wanted in rotation, live (none)",
            ]
        );
    }

    #[test]
    fn env_is_compared_by_value_and_secrets_only_by_hash() {
        let d = Desired {
            name: "web".into(),
            image: "img:v1".into(),
            image_id: "sha256:aaa".into(),
            digest: None,
            replicas: 1,
            container_port: None,
            env: vec![
                "MODE=fast".into(),
                "TOKEN=hunter2".into(),
                "APP_VERSION=v1".into(),
            ],
            env_shown: BTreeMap::from([
                ("MODE".to_string(), "fast".to_string()),
                ("TOKEN".to_string(), "<secret:env:T>".to_string()),
                ("APP_VERSION".to_string(), "v1".to_string()),
            ]),
            secret_refs: BTreeMap::from([("TOKEN".to_string(), "env:T".to_string())]),
            command: None,
            spec_hash: "h".into(),
            service: Default::default(),
        };
        let mut labels = scope().labels("app");
        labels.insert(naming::SERVICE.into(), "web".into());
        labels.insert(naming::VERSION.into(), "v1".into());
        let st = ContainerState {
            running: true,
            status: "running".into(),
            exit_code: 0,
            restart_count: 0,
            oom_killed: false,
            health: None,
            health_log: None,
            ports: HashMap::new(),
            image_id: "sha256:aaa".into(),
            labels,
            env: vec![
                "PATH=/bin".into(),
                "MODE=slow".into(),
                "TOKEN=hunter3".into(),
                "APP_VERSION=v1".into(),
            ],
            name: "c".into(),
            id: "c".into(),
        };
        let got: Vec<String> = container_differences(&scope(), &d, &st)
            .into_iter()
            .map(|(w, a, b)| format!("{w}: {:?} {:?}", a, b))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            "env.MODE: Some(String(\"fast\")) Some(String(\"slow\"))"
        );
        assert!(
            got[1].starts_with("env.TOKEN: Some(String(\"<secret:env:T>\")) Some(String(\"sha256:"),
            "{}",
            got[1]
        );
        assert!(!got.join(" ").contains("hunter"), "{got:?}");
    }

    #[test]
    fn a_reset_plans_on_what_runs_after_its_fixes() {
        let live = [container("a", "r1", 1, true), container("x", "r1", 2, true)];
        let fixes = [
            Fix::Remove {
                id: "x".into(),
                server: None,
            },
            Fix::Stop {
                id: "a".into(),
                server: None,
            },
        ];
        let after = after_fixes(&live, &fixes);
        assert_eq!(after.len(), 1);
        assert!(!after[0].running);
    }
}
