//! The Docker target: a region's engine, with HAProxy in front when `traffic: haproxy`.
//!
//! A deploy rolls each service in batches of `max_surge`: new containers start, pass their
//! health check and enter HAProxy's rotation, the old ones are drained and stopped (kept for
//! rollback, so going back is a restart). Every side effect is written to the rollout's
//! [`Ledger`], so a failure anywhere restores exactly. The lock and the release records are
//! labelled volumes on the engine ([`state`]), so any machine that reaches it reads them.

mod auth;
pub mod build;
pub mod canary;
pub mod desired;
pub mod drift;
mod engine;
pub mod naming;
mod release_step;
pub mod rollout;
pub mod state;

pub use engine::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use serde_json::json;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{image_ref, Built, Changes, DeployOptions, Purpose, Region, Status, StepRun, Target};
use crate::backup::stream::Tail;
use crate::backup::ExecIn;
use crate::config::model::{DockerTarget, ReleaseStep, Service, Traffic};
use crate::error::{Error, ExitCode, Result};
use crate::lock::{Acquire, Lock};
use crate::plan::{host_groups, plan_service, rolling_steps, spread, Action, ServicePlan};
use crate::release::{ContainerRecord, Release, ServiceRecord};
use crate::traffic::haproxy::{CheckTiming, Haproxy, RuntimeApi};
use desired::Desired;
use futures_util::future::join_all;
use naming::Scope;
use rollout::{Ledger, Member, Rollout};
use tokio::sync::oneshot;

/// A container of the scope as the engine lists it.
#[derive(Debug, Clone)]
pub struct LiveContainer {
    /// The host it runs on: its place in the region's host list.
    pub host: usize,
    /// That host's tag in server names ([`naming::host_tags`]; empty with one host).
    pub host_tag: String,
    pub service: String,
    pub release: String,
    pub index: u32,
    pub id: String,
    pub name: String,
    pub running: bool,
    /// The image reference the container was created from (the engine shows the ID when the
    /// container was created by ID, as deploys do).
    pub image: String,
    pub image_id: String,
    pub spec_hash: String,
    pub version: String,
}

/// What the region should run, once resolved.
enum Wanted {
    Nothing,
    /// A deploy of the configuration at a version.
    Deploy {
        desired: Vec<Desired>,
    },
    /// A rollback: `to`'s services again, its retained containers restarted.
    Release {
        to: Box<Release>,
        desired: Vec<Desired>,
    },
}

/// What `prepare` found: the desired state against what runs.
#[derive(Default)]
struct Prepared {
    /// What runs (once a reset's container fixes are done, when the deploy resets drift).
    live: Vec<LiveContainer>,
    plans: Vec<ServicePlan>,
    removed: Vec<String>,
    /// `--reset-drift`: the container fixes to make before the rollout (HAProxy is put right
    /// after it, against what runs then).
    fixes: Option<Vec<drift::Fix>>,
}

/// One of a region's Docker hosts, as `open` found it.
pub struct Host {
    /// The endpoint, variables expanded.
    pub endpoint: String,
    /// Its tag in HAProxy server names and output ([`naming::host_tags`]).
    pub tag: String,
    /// The engine, or why it could not be reached (a deploy refuses before it changes
    /// anything; history, status and rollback go on with the hosts that answer).
    pub reach: std::result::Result<Engine, String>,
    /// The error to return when this host is needed and was not reached (exit 6, quoting ssh).
    down: Mutex<Option<Error>>,
}

impl Host {
    /// How the host is named in output: its tag, or its endpoint with one host.
    pub fn label(&self) -> &str {
        if self.tag.is_empty() {
            &self.endpoint
        } else {
            &self.tag
        }
    }
}

/// A region's Docker target, reached and checked.
pub struct DockerRegion {
    pub region: Region,
    /// The first host that answered: release steps run on it, and builds (with one host, the
    /// engine). A canary spreads over every host.
    pub engine: Engine,
    /// Every host of the region, in the order listed.
    pub hosts: Vec<Host>,
    pub lb: Option<Haproxy>,
    pub scope: Scope,
    wanted: Wanted,
    prepared: Prepared,
    /// What the current rollout changed on each host, for restoring it.
    ledgers: Vec<Arc<Mutex<Ledger>>>,
    /// The canary this process drives or steers, as it stands.
    canary: Mutex<Option<canary::Canary>>,
    /// Why the desired state was resolved (a deploy ends a blue-green's window first).
    purpose: Option<Purpose>,
    /// A rollback inside a blue-green's window: the promoted release and its state.
    instant: Mutex<Option<(Release, canary::Canary)>>,
}

impl DockerRegion {
    /// Reaches the region's engines (all at once) and HAProxy (exit 6 naming the one that does
    /// not answer). With several hosts, one that does not answer is noted and left out (a
    /// deploy refuses at once; see [`DockerRegion::all_up`]); none answering is exit 6.
    pub async fn open(region: Region, target: &DockerTarget) -> Result<DockerRegion> {
        let endpoints: Vec<String> = target.endpoints().iter().map(|e| expand_env(e)).collect();
        let tags = naming::host_tags(&endpoints);
        // Every engine and every load balancer logged in to at once: each login is an ssh key
        // exchange, seconds on a loaded machine, and none needs another.
        let lb = async {
            match &region.cfg.traffic {
                Traffic::Haproxy(h) => {
                    Some(load_balancers(h.runtime_api.addresses(), target).await)
                }
                Traffic::None => None,
            }
        };
        let started = std::time::Instant::now();
        let (reached, lb) = tokio::join!(
            join_all(endpoints.iter().map(|e| Engine::connect(target, e))),
            lb
        );
        let mut hosts = Vec::new();
        for ((endpoint, tag), r) in endpoints.into_iter().zip(tags).zip(reached) {
            let (reach, down) = match r {
                Ok(e) => (Ok(e), None),
                Err(e) => {
                    let msg = e.to_string();
                    if target.endpoints().len() == 1 {
                        return Err(e);
                    }
                    region
                        .ui
                        .warn(format!("host {endpoint} is not reachable: {msg}"));
                    (Err(msg), Some(e))
                }
            };
            hosts.push(Host {
                endpoint,
                tag,
                reach,
                down: Mutex::new(down),
            });
        }
        let Some(engine) = hosts.iter().find_map(|h| h.reach.as_ref().ok()).cloned() else {
            let e = hosts[0].down.lock().expect("host").take();
            return Err(e.unwrap_or_else(|| {
                Error::failed(
                    ExitCode::Unreachable,
                    anyhow!("no host of the region answered"),
                )
            }));
        };
        tracing::debug!(
            region = %region.name,
            ms = started.elapsed().as_millis() as u64,
            "hosts and load balancers reached"
        );
        let lb = lb.transpose()?;
        if !engine.local && lb.is_none() {
            let probed: Vec<&str> = region
                .cfg
                .services
                .iter()
                .filter(|(_, s)| s.health.http.is_some() || s.health.tcp.is_some())
                .map(|(n, _)| n.as_str())
                .collect();
            if !probed.is_empty() {
                return Err(Error::usage_hint(
                    format!(
                        "{}: services {} have an HTTP or TCP health check, and nothing on {} can make it with `traffic: none`",
                        region.name,
                        probed.join(", "),
                        engine.endpoint
                    ),
                    "on a remote host, HAProxy's own checks judge HTTP/TCP health (traffic: haproxy); otherwise use health.command or the image's HEALTHCHECK (health.image); nothing was changed",
                ));
            }
        }
        // Any remote host (a canary's new containers go to every host).
        let remote = hosts
            .iter()
            .find_map(|h| h.reach.as_ref().ok().filter(|e| !e.local));
        if let Some(remote) = remote {
            let checked = canaries_checked_from_here(&region.cfg);
            if !checked.is_empty() {
                return Err(Error::usage_hint(
                    format!(
                        "{}: the canary analysis of services {} GETs each new container from this machine, which reaches nothing on {}",
                        region.name,
                        checked.join(", "),
                        remote.endpoint
                    ),
                    "on a remote host judge the canary by HAProxy's counters (max_5xx_ratio, max_response_time) and leave out `analysis.http`; nothing was changed",
                ));
            }
        }
        let scope = Scope::new(&region.cfg.app, &region.name, region.env());
        let ledgers = hosts.iter().map(|_| Arc::default()).collect();
        Ok(DockerRegion {
            region,
            engine,
            hosts,
            lb,
            scope,
            wanted: Wanted::Nothing,
            prepared: Prepared::default(),
            ledgers,
            canary: Mutex::default(),
            purpose: None,
            instant: Mutex::default(),
        })
    }

    /// The engine of host `h` (a host that did not answer at `open` is an error naming it).
    fn engine_of(&self, h: usize) -> anyhow::Result<&Engine> {
        let host = &self.hosts[h];
        host.reach
            .as_ref()
            .map_err(|e| anyhow!("host {} is not reachable: {e}", host.endpoint))
    }

    /// The hosts that answered, with their place in the list.
    fn up(&self) -> impl Iterator<Item = (usize, &Engine)> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.reach.as_ref().ok().map(|e| (i, e)))
    }

    /// Every host answered: what a deploy needs before it changes anything (exit 6 naming the
    /// first that did not, quoting ssh).
    fn all_up(&self) -> Result<()> {
        for h in &self.hosts {
            if let Err(msg) = &h.reach {
                let e = h.down.lock().expect("host").take();
                return Err(e.unwrap_or_else(|| {
                    Error::failed(
                        ExitCode::Unreachable,
                        anyhow!("cannot reach the Docker engine at {}: {msg}", h.endpoint),
                    )
                })
                .with_hint("every host of the region must answer before a deploy changes anything; nothing was changed"));
            }
        }
        Ok(())
    }

    /// Hosts left out because they did not answer, for warnings: `mexico-docker-2 (…)`.
    fn down_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter_map(|h| {
                h.reach
                    .as_ref()
                    .err()
                    .map(|e| format!("{} ({e})", h.endpoint))
            })
            .collect()
    }

    fn backends(&self) -> HashMap<String, String> {
        match &self.region.cfg.traffic {
            Traffic::Haproxy(h) => h
                .backends
                .iter()
                .map(|(k, v)| (k.clone(), expand_env(v)))
                .collect(),
            Traffic::None => HashMap::new(),
        }
    }

    /// The scope's app containers, running or retained, on every host that answered.
    pub async fn live(&self) -> Result<Vec<LiveContainer>> {
        let filter = self.scope.filter("app");
        let refs: Vec<(&str, &str)> = filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let lists = futures_util::future::join_all(self.up().map(|(h, e)| {
            let refs = &refs;
            async move { e.list(refs).await.map(|l| (h, l)) }
        }))
        .await;
        let mut out = Vec::new();
        for r in lists {
            let (h, list) = r?;
            out.extend(self.live_of(h, list));
        }
        Ok(out)
    }

    fn live_of(
        &self,
        h: usize,
        list: Vec<bollard::models::ContainerSummary>,
    ) -> impl Iterator<Item = LiveContainer> + '_ {
        list.into_iter().map(move |c| {
            let labels = c.labels.unwrap_or_default();
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            LiveContainer {
                host: h,
                host_tag: self.hosts[h].tag.clone(),
                service: get(naming::SERVICE),
                release: get(naming::RELEASE),
                index: get("packfy.index").parse().unwrap_or(0),
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                running: c.state.map(|s| s.to_string()) == Some("running".to_string()),
                image: c.image.unwrap_or_default(),
                image_id: c.image_id.unwrap_or_default(),
                spec_hash: get("packfy.spec"),
                version: get(naming::VERSION),
            }
        })
    }

    fn member(&self, c: &LiveContainer) -> Member {
        let backend = match (&self.region.cfg.traffic, &self.lb) {
            (Traffic::Haproxy(h), Some(_)) => h.backends.get(&c.service).map(|b| expand_env(b)),
            _ => None,
        };
        Member {
            service: c.service.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            server: backend.map(|b| {
                (
                    b,
                    self.scope
                        .server(&c.host_tag, &c.service, &c.release, c.index),
                )
            }),
            addr: None,
        }
    }

    fn service_cfg(&self, name: &str) -> Service {
        self.region
            .cfg
            .services
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The rollout on host `h`, writing to that host's ledger.
    fn rollout_on(&self, h: usize, release: &str, version: &str) -> anyhow::Result<Rollout<'_>> {
        Ok(Rollout {
            engine: self.engine_of(h)?,
            host: self.hosts[h].tag.clone(),
            lb: self.lb.as_ref(),
            backends: self.backends(),
            scope: &self.scope,
            release: release.to_string(),
            version: version.to_string(),
            ui: &self.region.ui,
            ledger: self.ledgers[h].clone(),
        })
    }

    /// Every ledger's entries, host by host.
    fn ledger_entries(&self) -> (Vec<Member>, Vec<Member>) {
        let (mut started, mut stopped) = (Vec::new(), Vec::new());
        for l in &self.ledgers {
            let l = l.lock().expect("ledger");
            started.extend(l.started.iter().cloned());
            stopped.extend(l.stopped.iter().cloned());
        }
        (started, stopped)
    }

    fn desired(&self) -> &[Desired] {
        match &self.wanted {
            Wanted::Nothing => &[],
            Wanted::Deploy { desired } | Wanted::Release { desired, .. } => desired,
        }
    }

    /// The desired state of every service at `version`: images built (and pushed) when
    /// configured and asked, else found on the engine or pulled; secrets resolved. For a plan
    /// nothing is built or pulled: a missing image is a note.
    async fn desired_at(
        &self,
        version: &str,
        opts: &DeployOptions,
        purpose: Purpose,
    ) -> Result<Vec<Desired>> {
        let mut built = match purpose {
            Purpose::Deploy => self.build(version, opts).await?,
            Purpose::Plan => Vec::new(),
        };
        built.extend(opts.built.iter().cloned());
        let r = &self.region;
        let mut out = Vec::new();
        for (name, svc) in &r.cfg.services {
            let (_, image) = image_ref(svc, version);
            let made = built.iter().find(|b| b.image == image);
            let image_id = match made {
                Some(b) if b.engine == self.engine.endpoint => b.id.clone(),
                // Built once for the run on another engine: the registry's copy, by digest.
                Some(b) if purpose == Purpose::Deploy => {
                    let pinned = b.by_digest().unwrap_or_else(|| b.image.clone());
                    r.ui.status("Pulling", pinned.clone());
                    self.engine.pull_as(&pinned, &image).await.map_err(|e| {
                        Error::usage_hint(
                            format!("{image} was built for this run but {} could not pull it: {e:#}", self.engine.endpoint),
                            "is the registry reachable from this engine, and logged in (docker login)? nothing was changed",
                        )
                    })?
                }
                _ => match (self.engine.image_id(&image).await?, purpose) {
                    (Some(id), _) => id,
                    // Noted by `prepare`: a plan builds and pulls nothing.
                    (None, Purpose::Plan) => format!("missing:{image}"),
                    // Without a registry host it would be pulled from Docker Hub, which deploys
                    // here never rely on.
                    (None, Purpose::Deploy) if registry_host(&image).is_none() => {
                        return Err(Error::usage_hint(
                            format!("image {image} is not on the engine at {}", self.engine.endpoint),
                            "build it (packfy-deploy build), or name it REGISTRY/NAME and push it there so the engine can pull it; nothing was changed",
                        ));
                    }
                    (None, Purpose::Deploy) => {
                        r.ui.status("Pulling", image.clone());
                        self.engine.pull(&image).await.map_err(|e| {
                            Error::usage_hint(
                                format!("image {image} is not on the engine at {} and could not be pulled: {e:#}", self.engine.endpoint),
                                "build it (packfy-deploy build), push it to the registry, or pass the right --version; nothing was changed",
                            )
                        })?
                    }
                },
            };
            if purpose == Purpose::Deploy {
                let digest = made.and_then(|b| b.by_digest());
                self.image_on_every_host(&image, &image_id, digest.as_deref())
                    .await?;
            }
            let d = desired::desired(
                &r.name,
                r.env(),
                version,
                &r.cfg,
                name,
                svc,
                &image,
                &image_id,
            )
            .map_err(|e| {
                Error::usage_hint(
                    e.to_string(),
                    "set it where the deploy runs; nothing was changed",
                )
            })?;
            let d = Desired {
                digest: made.and_then(|b| b.digest.clone()),
                ..d
            };
            out.push(d);
        }
        Ok(out)
    }

    /// The other hosts of a region get the image the first one has: found there, or pulled
    /// (all at once). Nothing has changed yet when one cannot get it (exit 2).
    /// `by_digest`: `repo@sha256:…` when the run pushed it (what the others pull, tagged
    /// `image` there).
    async fn image_on_every_host(
        &self,
        image: &str,
        image_id: &str,
        by_digest: Option<&str>,
    ) -> Result<()> {
        let others: Vec<&Engine> = self
            .up()
            .map(|(_, e)| e)
            .filter(|e| e.endpoint != self.engine.endpoint)
            .collect();
        let got = futures_util::future::join_all(others.iter().map(|e| async move {
            match e.image_id(image).await? {
                Some(id) => Ok::<_, Error>(id),
                None => {
                    let from = by_digest.unwrap_or(image);
                    self.region
                        .ui
                        .status("Pulling", format!("{from} on {}", e.endpoint));
                    e.pull_as(from, image).await.map_err(|err| {
                        Error::usage_hint(
                            format!("image {image} is not on the engine at {} and could not be pulled: {err:#}", e.endpoint),
                            "every host of the region pulls the release from the registry: push it there (build --push, or deploy --push); nothing was changed",
                        )
                    })
                }
            }
        }))
        .await;
        for (e, id) in others.iter().zip(got) {
            let id = id?;
            if id != image_id {
                return Err(Error::usage_hint(
                    format!("image {image} is {id} on {} but {image_id} on {}", e.endpoint, self.engine.endpoint),
                    "the hosts must run the same image: push the release to the registry (deploy --push) so every host pulls the same one; nothing was changed",
                ));
            }
        }
        Ok(())
    }

    /// Rolls one service out on every host: each host's share of the replicas
    /// ([`spread`]) in batches of `max_surge`, `rollout.hosts_at_once` hosts at a time (their
    /// rollouts overlap), the region's `max_unavailable` split over the hosts changing side by
    /// side ([`host_groups`]), so the region never has fewer in rotation than it allows. The first host to fail stops the service's rollout (the
    /// hosts changing beside it finish their batch); the error names the host.
    async fn roll_service(
        &self,
        rec: &Release,
        d: &Desired,
        live: &[LiveContainer],
    ) -> anyhow::Result<()> {
        let share = spread(d.replicas, self.hosts.len());
        let r = &d.service.rollout;
        let groups = host_groups(
            self.hosts.len(),
            r.hosts_at_once,
            r.max_surge,
            r.max_unavailable,
        );
        // Group after group; the next starts once this one's steps are done, while this one's
        // old containers (out of rotation) still drain and stop, as batches on one host do.
        let mut runs = Vec::new();
        let mut before = None;
        for group in groups {
            let (done, next) = oneshot::channel();
            let after = before.replace(next);
            runs.push(self.roll_group(rec, d, live, &share, group, after, done));
        }
        for r in join_all(runs).await {
            r?;
        }
        Ok(())
    }

    /// One group of hosts rolling side by side, once the group before (`after`) has done its
    /// steps; `done` is told when every host of this one has. A group before that failed
    /// stops it before it starts (that group's error is the one reported).
    #[allow(clippy::too_many_arguments)]
    async fn roll_group(
        &self,
        rec: &Release,
        d: &Desired,
        live: &[LiveContainer],
        share: &[u32],
        group: Vec<(usize, u32)>,
        after: Option<oneshot::Receiver<()>>,
        done: oneshot::Sender<()>,
    ) -> anyhow::Result<()> {
        if let Some(after) = after {
            if after.await.is_err() {
                return Ok(());
            }
        }
        let (steps_done, hosts_done): (Vec<_>, Vec<_>) =
            group.iter().map(|_| oneshot::channel()).unzip();
        let hosts = join_all(group.into_iter().zip(steps_done).map(
            |((h, unavailable), steps_done)| async move {
                let on_host: Vec<LiveContainer> =
                    live.iter().filter(|c| c.host == h).cloned().collect();
                let old: Vec<Member> = on_host
                    .iter()
                    .filter(|c| c.running && c.service == d.name)
                    .map(|c| self.member(c))
                    .collect();
                let steps = rolling_steps(
                    share[h],
                    d.service.rollout.max_surge,
                    unavailable,
                    old.len() as u32,
                );
                let ro = self.rollout_on(h, &rec.id, &rec.version)?;
                let first_index = next_index(&on_host, &d.name);
                ro.service(d, old, Vec::new(), &steps, first_index, Some(steps_done))
                    .await
                    .map_err(|e| self.on_host(h, e))
            },
        ));
        let signal = async {
            if join_all(hosts_done).await.iter().all(Result::is_ok) {
                let _ = done.send(());
            }
        };
        let (results, ()) = tokio::join!(hosts, signal);
        results.into_iter().collect()
    }

    /// `plan`'s placement of each service over a region of several hosts:
    /// `backend: 6 replicas over 2 hosts: mexico-docker-1 3, mexico-docker-2 3`.
    fn placement_lines(&self) -> Vec<String> {
        if self.hosts.len() < 2 {
            return Vec::new();
        }
        self.desired()
            .iter()
            .map(|d| {
                let share = spread(d.replicas, self.hosts.len());
                let each: Vec<String> = self
                    .hosts
                    .iter()
                    .zip(&share)
                    .map(|(h, n)| format!("{} {n}", h.label()))
                    .collect();
                let r = &d.service.rollout;
                let at_once = host_groups(
                    self.hosts.len(),
                    r.hosts_at_once,
                    r.max_surge,
                    r.max_unavailable,
                )
                .first()
                .map_or(1, Vec::len);
                format!(
                    "{}: {} replicas over {} hosts ({at_once} at a time): {}",
                    d.name,
                    d.replicas,
                    self.hosts.len(),
                    each.join(", ")
                )
            })
            .collect()
    }

    /// `plan -o json`'s placement: service → host endpoint → replicas.
    fn placement_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for d in self.desired() {
            let share = spread(d.replicas, self.hosts.len());
            let per: serde_json::Map<String, serde_json::Value> = self
                .hosts
                .iter()
                .zip(share)
                .map(|(h, n)| (h.endpoint.clone(), json!(n)))
                .collect();
            out.insert(d.name.clone(), per.into());
        }
        out.into()
    }

    /// A server whose container is not running serves nothing (the container died with its
    /// engine, or someone stopped it): out of HAProxy before the rollout counts what is in
    /// rotation, or it would stay there DOWN for good.
    async fn drop_dead_servers(&self, live: &[LiveContainer]) -> anyhow::Result<()> {
        let Some(lb) = &self.lb else {
            return Ok(());
        };
        let dead: Vec<(String, String)> = live
            .iter()
            .filter(|c| !c.running)
            .filter_map(|c| self.member(c).server)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        let servers = self.lb_servers(&self.backends()).await?;
        for (b, s) in dead {
            if servers.iter().any(|x| x.backend == b && x.name == s) {
                lb.del_server(&b, &s).await?;
                self.region.ui.status(
                    "Removed",
                    format!("haproxy {b}/{s}: its container is not running"),
                );
            }
        }
        Ok(())
    }

    /// An error of host `h`, naming it (a region of several hosts).
    fn on_host(&self, h: usize, e: anyhow::Error) -> anyhow::Error {
        if self.hosts.len() == 1 {
            e
        } else {
            e.context(format!("on host {}", self.hosts[h].label()))
        }
    }

    /// Undoes what each host's ledger says, all hosts at once; the problems name the host.
    async fn restore_hosts(
        &self,
        rec: &Release,
        by_service: &HashMap<String, Desired>,
    ) -> Vec<String> {
        let runs = (0..self.hosts.len()).map(|h| async move {
            let touched = {
                let l = self.ledgers[h].lock().expect("ledger");
                !l.started.is_empty() || !l.stopped.is_empty()
            };
            if !touched {
                return Vec::new();
            }
            let label = self.hosts[h].label().to_string();
            match self.rollout_on(h, &rec.id, &rec.version) {
                Ok(ro) => {
                    let problems = ro.restore(by_service).await;
                    if self.hosts.len() == 1 {
                        problems
                    } else {
                        problems
                            .into_iter()
                            .map(|p| format!("host {label}: {p}"))
                            .collect()
                    }
                }
                Err(e) => vec![format!("host {label}: {e:#}")],
            }
        });
        join_all(runs).await.into_iter().flatten().collect()
    }

    /// Makes `to` (or nothing) serve instead of what runs now, host after host: its retained
    /// containers restart, others are created from its record, everything else is drained
    /// and stopped, never below each host's share in rotation. `release` names new containers.
    /// A host that did not answer is left as it is (warned about when the rollback started).
    async fn roll_to(
        &self,
        to: Option<&Release>,
        desired: &[Desired],
        release: &str,
    ) -> anyhow::Result<()> {
        let live = self.live().await?;
        let hosts: Vec<usize> = self.up().map(|(h, _)| h).collect();
        for h in hosts {
            let on_host: Vec<LiveContainer> =
                live.iter().filter(|c| c.host == h).cloned().collect();
            self.roll_host_to(h, to, desired, release, &on_host)
                .await
                .map_err(|e| self.on_host(h, e))?;
        }
        Ok(())
    }

    async fn roll_host_to(
        &self,
        h: usize,
        to: Option<&Release>,
        desired: &[Desired],
        release: &str,
        live: &[LiveContainer],
    ) -> anyhow::Result<()> {
        let ro = self.rollout_on(h, release, to.map_or("", |t| t.version.as_str()))?;
        let engine = self.engine_of(h)?;
        for d in desired {
            let of_target = |c: &&LiveContainer| {
                c.service == d.name
                    && to.is_some_and(|t| {
                        c.release == t.id
                            || t.services
                                .iter()
                                .any(|sr| sr.containers.iter().any(|x| x.id == c.id))
                    })
            };
            let keep: Vec<&LiveContainer> = live
                .iter()
                .filter(|c| c.running)
                .filter(of_target)
                .collect();
            let reuse: Vec<Member> = live
                .iter()
                .filter(|c| !c.running)
                .filter(of_target)
                .map(|c| self.member(c))
                .collect();
            let old: Vec<Member> = live
                .iter()
                .filter(|c| c.running && c.service == d.name && !keep.iter().any(|k| k.id == c.id))
                .map(|c| self.member(c))
                .collect();
            let share = spread(d.replicas, self.hosts.len())[h];
            let wanted = share.saturating_sub(keep.len() as u32);
            // A rollback goes back in one batch: the retained containers start together and the
            // replaced ones leave together, still never below the wanted count in rotation.
            let steps = rolling_steps(wanted, wanted.max(1), 0, old.len() as u32);
            let on = if self.hosts.len() == 1 {
                String::new()
            } else {
                format!(" on {}", self.hosts[h].label())
            };
            self.region.ui.status(
                "Restoring",
                format!(
                    "{}{on}: {} running, {} retained to start, {} to replace",
                    d.name,
                    keep.len(),
                    reuse.len().min(wanted as usize),
                    old.len()
                ),
            );
            ro.service(d, old, reuse, &steps, next_index(live, &d.name), None)
                .await?;
        }
        // Services the target did not have (or no target at all): stop what runs.
        for c in live
            .iter()
            .filter(|c| c.running && !desired.iter().any(|d| d.name == c.service))
        {
            let m = self.member(c);
            if let (Some(lb), Some((b, srv))) = (self.lb.as_ref(), &m.server) {
                let _ = lb.del_server(b, srv).await;
            }
            engine.stop(&c.id, Duration::from_secs(10)).await?;
        }
        Ok(())
    }

    /// Every difference between what runs and what the records (and `desired`, the
    /// configuration at the serving version; empty: hand edits only) say.
    async fn find_drift(
        &self,
        live: &[LiveContainer],
        history: &[Release],
        serving: Option<&Release>,
        desired: &[Desired],
    ) -> Result<Vec<(crate::drift::Drift, Option<drift::Fix>)>> {
        let mut inspected = HashMap::new();
        if !desired.is_empty() {
            for c in live.iter().filter(|c| c.running) {
                if let Some(st) = self.engine_of(c.host)?.inspect(&c.id).await? {
                    inspected.insert(c.id.clone(), st);
                }
            }
        }
        let backends = self.backends();
        let servers = self.lb_servers(&backends).await?;
        let e = drift::Expected {
            scope: &self.scope,
            history,
            serving,
            desired,
            backends: &backends,
        };
        let o = drift::Observed {
            containers: live,
            inspected: &inspected,
            servers: &servers,
        };
        Ok(canary::not_drift(history, drift::drift(&e, &o)))
    }

    /// The servers of the region's HAProxy backends.
    async fn lb_servers(
        &self,
        backends: &HashMap<String, String>,
    ) -> Result<Vec<crate::traffic::haproxy::ServerStat>> {
        let Some(lb) = &self.lb else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut names: Vec<&String> = backends.values().collect();
        names.sort();
        names.dedup();
        for b in names {
            match lb.servers(b).await {
                Ok(servers) => out.extend(servers),
                // HAProxy makes no backend at run time: one haproxy.cfg lacks is a mistake in
                // the configuration, said before anything changes.
                Err(e) if crate::traffic::haproxy::no_such_backend(&e) => {
                    let lacking = lb.lacking_backend(b).await.unwrap_or_default();
                    let service = backends
                        .iter()
                        .filter(|(_, v)| *v == b)
                        .map(|(k, _)| k.as_str())
                        .min()
                        .unwrap_or_default();
                    return Err(self.backend_missing(
                        &lacking,
                        &format!("backend `{b}` of {service}"),
                        "add `backend NAME` to haproxy.cfg on every load balancer, or fix `traffic.haproxy.backends`; nothing was changed",
                    ));
                }
                Err(e) => {
                    return Err(Error::failed(
                        ExitCode::Unreachable,
                        anyhow!("cannot read HAProxy's servers of {b}: {e}"),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A rollback inside a blue-green's window switches back only to an old set that still
    /// serves: every old container running and its server in the backend. A window whose end
    /// was interrupted (the old set half drained out, stopped) is ended first and the rollback
    /// rolls, instead of one Runtime API line pointing the traffic at servers that are gone.
    /// Returns what runs, when it looked.
    async fn check_instant(&self) -> Result<Option<Vec<LiveContainer>>> {
        let Some((from, c)) = self.instant.lock().expect("instant").clone() else {
            return Ok(None);
        };
        let live = self.live().await?;
        let servers = self.lb_servers(&self.backends()).await?;
        let gone: Vec<String> = c
            .services
            .iter()
            .flat_map(|s| s.old.iter().map(move |x| (s, x)))
            // On a host that does not answer nothing can be seen: as before, not "gone".
            .filter(|(_, x)| {
                !self
                    .hosts
                    .iter()
                    .any(|h| h.tag == x.host && h.reach.is_err())
            })
            .filter(|(s, x)| {
                !live.iter().any(|l| l.id == x.id && l.running)
                    || !servers
                        .iter()
                        .any(|v| v.backend == s.backend && v.name == x.server)
            })
            .map(|(_, x)| x.container.clone())
            .collect();
        if !gone.is_empty() {
            self.region.ui.warn(format!(
                "not switching back to the old set of {}: {} no longer serves (the end of its window was interrupted); ending the window and rolling back",
                from.id,
                gone.join(", ")
            ));
            *self.instant.lock().expect("instant") = None;
        }
        Ok(Some(live))
    }

    /// `--reset-drift`, before the rollout: containers no record accounts for go, retained
    /// ones running again stop (each out of HAProxy first).
    async fn reset_containers(&self, fixes: &[drift::Fix]) -> anyhow::Result<()> {
        let live = self.live().await?;
        for f in fixes {
            let (id, server, remove) = match f {
                drift::Fix::Remove { id, server } => (id, server, true),
                drift::Fix::Stop { id, server } => (id, server, false),
                _ => continue,
            };
            if let (Some(lb), Some((b, s))) = (&self.lb, server) {
                lb.del_server(b, s).await?;
            }
            let engine = match live.iter().find(|c| &c.id == id) {
                Some(c) => self.engine_of(c.host)?,
                None => &self.engine,
            };
            if remove {
                engine.remove(id).await?;
            } else {
                engine.stop(id, Duration::from_secs(10)).await?;
            }
            self.region.ui.status(
                "Reset",
                format!(
                    "{} container {}",
                    if remove { "removed" } else { "stopped" },
                    id.chars().take(12).collect::<String>()
                ),
            );
        }
        Ok(())
    }

    /// `--reset-drift`, after the rollout: HAProxy's servers of this region are exactly those
    /// of the running containers, ready, at the weight a release gives (a deleted one is
    /// added back at its container's address).
    async fn reset_lb(&self) -> anyhow::Result<()> {
        let Some(lb) = &self.lb else {
            return Ok(());
        };
        let backends = self.backends();
        let live = self.live().await?;
        let wanted: Vec<(String, String)> = live
            .iter()
            .filter(|c| c.running)
            .filter_map(|c| {
                backends.get(&c.service).map(|b| {
                    (
                        b.clone(),
                        self.scope
                            .server(&c.host_tag, &c.service, &c.release, c.index),
                    )
                })
            })
            .collect();
        let servers = self.lb_servers(&backends).await?;
        for (d, fix) in drift::lb_drift(&self.scope, &backends, &wanted, &servers) {
            match &fix {
                drift::Fix::DelServer { backend, server } => lb.del_server(backend, server).await?,
                drift::Fix::Ready { backend, server } => {
                    lb.set_state(backend, server, crate::traffic::haproxy::ServerState::Ready)
                        .await?
                }
                drift::Fix::Weight { backend, server } => {
                    lb.set_weight(backend, server, drift::WEIGHT as u32).await?
                }
                _ => continue,
            }
            self.region.ui.status("Reset", d.describe());
        }
        // A running container whose server someone deleted goes back into rotation.
        for c in live.iter().filter(|c| c.running) {
            let Some(b) = backends.get(&c.service) else {
                continue;
            };
            let name = self
                .scope
                .server(&c.host_tag, &c.service, &c.release, c.index);
            if servers.iter().any(|s| &s.backend == b && s.name == name) {
                continue;
            }
            let svc = self.service_cfg(&c.service);
            let Some(port) = svc.ports.first().map(|p| p.container) else {
                continue;
            };
            let Some(addr) = self
                .engine_of(c.host)?
                .inspect(&c.id)
                .await?
                .and_then(|st| st.ports.get(&port).copied())
            else {
                continue;
            };
            let path = svc.health.http.as_ref().map(|h| h.path.as_str());
            lb.add_server(b, &name, addr, path).await?;
            self.region.ui.status(
                "Reset",
                format!("haproxy {b}/{name}: back in rotation at {addr}"),
            );
        }
        Ok(())
    }

    /// A release record written to every host that answers (at once); a host that fails to
    /// take it is warned about, and only all failing fails the save.
    async fn save_on_hosts(&self, rec: &Release) -> anyhow::Result<()> {
        let saved = futures_util::future::join_all(
            self.up()
                .map(|(h, e)| async move { (h, e.save_release(&self.scope, rec).await) }),
        )
        .await;
        let mut errors = Vec::new();
        let n = saved.len();
        for (h, r) in saved {
            if let Err(e) = r {
                errors.push((h, e));
            }
        }
        if errors.len() == n {
            if let Some((_, e)) = errors.into_iter().next() {
                return Err(e);
            }
            return Ok(());
        }
        for (h, e) in errors {
            self.region.ui.warn(format!(
                "release {} is not recorded on {}: {e:#}",
                rec.id, self.hosts[h].endpoint
            ));
        }
        Ok(())
    }

    /// The desired state of a recorded release: its services, secrets resolved again.
    fn desired_of(&self, to: &Release) -> Result<Vec<Desired>> {
        to.services
            .iter()
            .map(|sr| {
                Desired::from_record(sr, &self.service_cfg(&sr.name)).map_err(|e| {
                    Error::usage_hint(
                        e.to_string(),
                        "it is needed to recreate a container of the release",
                    )
                })
            })
            .collect()
    }
}

#[async_trait]
impl Target for DockerRegion {
    fn region(&self) -> &Region {
        &self.region
    }

    fn lock_place(&self) -> String {
        if self.hosts.len() == 1 {
            format!("engine {}", self.engine.endpoint)
        } else {
            format!(
                "hosts {}",
                self.hosts
                    .iter()
                    .map(|h| h.endpoint.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// The lock is taken on every host that answers, in the order listed, with one token:
    /// two runners meet on the first host they share, and one that finds a host held lets go
    /// of those it took. (With one host, that host's lock as before.)
    async fn try_lock(
        &self,
        holder: &str,
        reason: &str,
        ttl: Duration,
        tied_to_process: bool,
    ) -> Result<Acquire> {
        let token = state::lock_token();
        let mut taken: Vec<(&Engine, Lock)> = Vec::new();
        for (_, e) in self.up() {
            match e
                .try_lock_as(&self.scope, holder, reason, ttl, tied_to_process, &token)
                .await
            {
                Ok(Acquire::Acquired(l)) => taken.push((e, l)),
                Ok(Acquire::Held(other)) => {
                    for (e, l) in &taken {
                        let _ = e.unlock(&self.scope, l).await;
                    }
                    return Ok(Acquire::Held(other));
                }
                Err(err) => {
                    for (e, l) in &taken {
                        let _ = e.unlock(&self.scope, l).await;
                    }
                    return Err(err.into());
                }
            }
        }
        match taken.into_iter().next() {
            Some((_, l)) => Ok(Acquire::Acquired(l)),
            None => Err(Error::failed(
                ExitCode::Unreachable,
                anyhow!("no host of {} answered to take the lock", self.region.name),
            )),
        }
    }

    /// A stale lock goes from every host that has it (a killed run may have taken it on some
    /// hosts only). So does any lock held for the same paused canary under another token: a
    /// canary steered while one host did not answer was held again on the others only.
    async fn take_over(&self, stale: &Lock) -> Result<()> {
        let paused_for = |l: &Lock| {
            let mut words = l.reason.split(' ');
            (words.next() == Some("canary"))
                .then(|| words.next().map(|id| format!("canary {id} ")))
                .flatten()
        };
        for (_, e) in self.up() {
            if e.current_lock(&self.scope).await?.is_some_and(|l| {
                l.token == stale.token
                    || (paused_for(&l).is_some() && paused_for(&l) == paused_for(stale))
            }) {
                e.break_lock(&self.scope).await?;
            }
        }
        Ok(())
    }

    async fn current_lock(&self) -> Result<Option<Lock>> {
        for (_, e) in self.up() {
            if let Some(l) = e.current_lock(&self.scope).await? {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }

    async fn unlock(&self, ours: &Lock) -> Result<()> {
        let mut first_err = None;
        for (_, e) in self.up() {
            if let Err(err) = e.unlock(&self.scope, ours).await {
                first_err.get_or_insert(err);
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn break_lock(&self) -> Result<()> {
        for (_, e) in self.up() {
            e.break_lock(&self.scope).await?;
        }
        Ok(())
    }

    /// Every host keeps every record: the history is read from all that answer and merged
    /// ([`state::merge_histories`]), so it survives a host that is down.
    async fn history(&self) -> Result<Vec<Release>> {
        let lists =
            futures_util::future::join_all(self.up().map(|(_, e)| e.releases(&self.scope))).await;
        let mut per_host = Vec::new();
        for l in lists {
            per_host.push(l?);
        }
        let down = self.down_hosts();
        if !down.is_empty() {
            self.region
                .ui
                .verbose(format!("history read without {}", down.join(", ")));
        }
        Ok(state::merge_histories(per_host))
    }

    /// Written to every host that answers (at once); a host that fails to take it is warned
    /// about, and only all failing fails the save.
    async fn save(&self, rec: &Release) -> Result<()> {
        Ok(self.save_on_hosts(rec).await?)
    }

    /// Records beyond `keep_releases` go, and so do the retained containers of releases no
    /// longer kept (this scope only: another environment on the engine is never touched).
    async fn forget(&self, kept: &[String], gone: &[&Release]) {
        // All at once: each is a request of its own to an engine (a channel over ssh).
        if let Ok(live) = self.live().await {
            join_all(
                live.iter()
                    .filter(|c| !c.running && !kept.contains(&c.release))
                    .map(|c| async move {
                        self.region.ui.verbose(format!(
                            "pruning {} (release {} is no longer kept)",
                            c.name, c.release
                        ));
                        if let Ok(e) = self.engine_of(c.host) {
                            let _ = e.remove(&c.id).await;
                        }
                    }),
            )
            .await;
        }
        let ids: Vec<&str> = gone.iter().map(|r| r.id.as_str()).collect();
        if !ids.is_empty() {
            let ids = &ids;
            join_all(
                self.up()
                    .map(|(_, e)| async move { e.forget_releases(&self.scope, ids).await }),
            )
            .await;
        }
    }

    async fn build(&self, version: &str, opts: &DeployOptions) -> Result<Vec<Built>> {
        let r = &self.region;
        let mut out = Vec::new();
        for (name, svc) in &r.cfg.services {
            let (repo, image) = image_ref(svc, version);
            let Some(build) = svc.build.as_ref().filter(|_| !opts.no_build) else {
                continue;
            };
            if opts.built.iter().any(|b| b.image == image) {
                continue;
            }
            // The other hosts pull what the first one builds, by its digest.
            let push = opts.push || self.hosts.len() > 1;
            if push && !opts.push && registry_host(&image).is_none() {
                return Err(Error::usage_hint(
                    format!(
                        "{image} is built on {} and runs on {} hosts: it has to go through a registry, and its name has none",
                        self.engine.endpoint,
                        self.hosts.len()
                    ),
                    "name the image REGISTRY/NAME (as `image: registry.example:5000/app`); nothing was changed",
                ));
            }
            r.ui.status("Building", format!("{name} → {image}"));
            let ui = r.ui.clone();
            let id = self
                .engine
                .build(&r.root, build, &image, &mut |line| ui.verbose(line))
                .await
                .map_err(|e| {
                    Error::usage_hint(
                        format!("{e:#}"),
                        "the build failed; nothing on the target was changed",
                    )
                })?;
            let mut digest = None;
            if push {
                r.ui.status("Pushing", image.clone());
                digest = self.engine.push(&repo, version).await.map_err(|e| {
                    if e.downcast_ref::<auth::NoLogin>().is_some() {
                        return Error::usage_hint(
                            format!("{e:#}"),
                            "log in where this command runs (docker login, or DOCKER_CONFIG); nothing on the target was changed",
                        );
                    }
                    Error::failed(ExitCode::Unreachable, anyhow!("{e:#}"))
                        .with_hint("is the registry running and reachable from the engine? nothing on the target was changed")
                })?;
            }
            out.push(Built {
                service: name.clone(),
                image,
                id,
                digest,
                engine: self.engine.endpoint.clone(),
            });
        }
        Ok(out)
    }

    fn engines(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.endpoint.clone()).collect()
    }

    async fn resolve(
        &mut self,
        version: &str,
        opts: &DeployOptions,
        purpose: Purpose,
    ) -> Result<()> {
        if purpose == Purpose::Deploy {
            self.all_up()?;
        }
        let desired = self.desired_at(version, opts, purpose).await?;
        self.wanted = Wanted::Deploy { desired };
        self.purpose = Some(purpose);
        self.prepared = Prepared::default();
        Ok(())
    }

    async fn resolve_release(&mut self, to: &Release, from: &Release) -> Result<()> {
        // Back to the set a promoted blue-green keeps: one Runtime API line.
        *self.instant.lock().expect("instant") = canary::of_record(from)
            .filter(|c| {
                c.blue_green
                    .as_ref()
                    .is_some_and(|b| b.phase == canary::Phase::Promoted)
                    && from.previous.as_deref() == Some(to.id.as_str())
            })
            .map(|c| (from.clone(), c));
        let down = self.down_hosts();
        if !down.is_empty() {
            self.region.ui.warn(format!(
                "going back on the hosts that answer; not on {} (the next deploy or rollback once it answers puts it right)",
                down.join(", ")
            ));
        }
        let desired = self.desired_of(to)?;
        self.wanted = Wanted::Release {
            to: Box::new(to.clone()),
            desired,
        };
        Ok(())
    }

    async fn prepare(&mut self, history: &[Release], opts: &DeployOptions) -> Result<Changes> {
        // Under the lock, a deploy (or a rollback past it) ends a promoted blue-green's window
        // first: its old set goes before the next release plans against what runs.
        let locked =
            self.purpose == Some(Purpose::Deploy) || matches!(self.wanted, Wanted::Release { .. });
        let seen = self.check_instant().await?;
        let ended = locked
            && self.instant.lock().expect("instant").is_none()
            && self.end_bg_window(history, None).await?;
        let serving = crate::release::serving(history);
        // What the check read is still what runs unless a window was ended since.
        let mut live = match seen {
            Some(live) if !ended => live,
            _ => self.live().await?,
        };
        // Hand edits, against what the releases set (the rollout sets image and env anyway).
        let found = if matches!(self.wanted, Wanted::Release { .. }) {
            Vec::new()
        } else {
            let found = self.find_drift(&live, history, serving, &[]).await?;
            // The rollout plans on what releases made: a container none accounts for is left
            // alone (and reported), or removed by a reset — never replaced as if it served.
            live.retain(|c| drift::accounted(c, history));
            found
        };
        let drift_found: Vec<crate::drift::Drift> = found.iter().map(|(d, _)| d.clone()).collect();
        let fixes = (opts.reset_drift && !found.is_empty()).then(|| {
            let fixes: Vec<drift::Fix> = found.iter().filter_map(|(_, f)| f.clone()).collect();
            live = drift::after_fixes(&live, &fixes);
            fixes
        });
        let mut notes = Vec::new();
        // Images not on the engine yet were noted while resolving a plan.
        for d in self.desired() {
            if d.image_id.starts_with("missing:") {
                notes.push(format!(
                    "{} is not on the engine yet: deploy will {} it",
                    d.image,
                    if d.service.build.is_some() {
                        "build"
                    } else {
                        "pull"
                    }
                ));
            }
        }
        if self.lb.is_none() {
            notes.push("traffic: none — containers are replaced without a load balancer; zero downtime is not promised".into());
        }
        let (plans, removed, lines, changed) = match &self.wanted {
            Wanted::Release { to, desired } => {
                let lines: Vec<String> = desired
                    .iter()
                    .map(|d| format!("{}: back to {} ({})", d.name, to.id, d.image))
                    .collect();
                (Vec::new(), Vec::new(), lines.clone(), lines)
            }
            _ => {
                let plans: Vec<ServicePlan> =
                    self.desired().iter().map(|d| plan_for(d, &live)).collect();
                notes.extend(canary::plan_notes(
                    self.desired(),
                    &plans,
                    &live,
                    self.lb.is_some(),
                    &self.backends(),
                ));
                self.check_previews(&plans, &live).await?;
                let removed: Vec<String> = running_services(&live)
                    .into_iter()
                    .filter(|n| !self.desired().iter().any(|d| &d.name == n))
                    .collect();
                let gone = removed
                    .iter()
                    .map(|r| format!("{r}: remove (no longer in the configuration)"));
                let lines: Vec<String> = plans
                    .iter()
                    .map(ServicePlan::describe)
                    .chain(gone.clone())
                    .chain(self.placement_lines())
                    .collect();
                let changed: Vec<String> = plans
                    .iter()
                    .filter(|p| p.action != Action::Unchanged)
                    .map(ServicePlan::describe)
                    .chain(gone)
                    .collect();
                (plans, removed, lines, changed)
            }
        };
        let resetting = fixes.is_some();
        let any = matches!(self.wanted, Wanted::Release { .. })
            || plans.iter().any(|p| p.action != Action::Unchanged)
            || !removed.is_empty()
            || fixes.is_some();
        let mut j = serde_json::Map::new();
        j.insert("services".into(), json!(plans));
        j.insert("removed".into(), json!(removed));
        if self.hosts.len() > 1 {
            j.insert("placement".into(), self.placement_json());
        }
        self.prepared = Prepared {
            live,
            plans,
            removed,
            fixes,
        };
        Ok(Changes {
            lines,
            changed,
            any,
            notes,
            json: j,
            drift: drift_found,
            resetting,
        })
    }

    fn record(&self, rec: &mut Release) -> String {
        rec.services = match &self.wanted {
            Wanted::Release { to, .. } => to.services.clone(),
            _ => self.desired().iter().map(Desired::record).collect(),
        };
        let before = snapshot(&self.prepared.live);
        let n: usize = before.iter().map(|x| x.containers.len()).sum();
        rec.set_state("before", &before);
        format!("what runs now ({n} container(s))")
    }

    async fn release_step(
        &self,
        service: &str,
        step: &ReleaseStep,
        release: &str,
    ) -> anyhow::Result<StepRun> {
        self.run_release_step(service, step, release).await
    }

    async fn apply(&self, rec: &Release) -> anyhow::Result<()> {
        for l in &self.ledgers {
            *l.lock().expect("ledger") = Ledger::default();
        }
        if let Wanted::Release { to, desired } = &self.wanted {
            let instant = self.instant.lock().expect("instant").clone();
            if let Some((from, c)) = instant {
                return self.switch_back(from, c).await;
            }
            return self.roll_to(Some(to), desired, &rec.id).await;
        }
        if let Some(fixes) = &self.prepared.fixes {
            self.reset_containers(fixes).await?;
        }
        let live = &self.prepared.live;
        self.drop_dead_servers(live).await?;
        let mut canaries = Vec::new();
        for (d, p) in self.desired().iter().zip(&self.prepared.plans) {
            if p.action == Action::Unchanged {
                continue;
            }
            if canary::is_canary(d, p, live, self.lb.is_some()) {
                canaries.push(d);
                continue;
            }
            self.roll_service(rec, d, live).await?;
        }
        if self.prepared.fixes.is_some() {
            self.reset_lb().await?;
        }
        if !canaries.is_empty() {
            self.start_canary(rec, &canaries).await?;
        }
        Ok(())
    }

    async fn verify(&self) -> anyhow::Result<()> {
        if matches!(self.wanted, Wanted::Release { .. }) {
            return Ok(());
        }
        // Each host watches what it started, all at once (the 5xx ratio is judged per host).
        let runs = (0..self.hosts.len()).map(|h| async move {
            if self.ledgers[h].lock().expect("ledger").started.is_empty() {
                return Ok(rollout::BakeReport::default());
            }
            let ro = self.rollout_on(h, "", "")?;
            ro.bake(self.desired())
                .await
                .map_err(|e| self.on_host(h, e))
        });
        let mut report = rollout::BakeReport::default();
        for r in join_all(runs).await {
            let r = r?;
            report.responses += r.responses;
            report.errors += r.errors;
        }
        if report.responses > 0 {
            self.region.ui.status(
                "Verified",
                format!(
                    "{} responses through HAProxy, {} 5xx",
                    report.responses, report.errors
                ),
            );
        }
        Ok(())
    }

    async fn complete(&self) -> anyhow::Result<()> {
        for name in &self.prepared.removed {
            for c in self
                .prepared
                .live
                .iter()
                .filter(|c| c.running && &c.service == name)
            {
                self.engine_of(c.host)?
                    .stop(&c.id, Duration::from_secs(30))
                    .await?;
            }
        }
        Ok(())
    }

    fn applied(&self, rec: &mut Release) {
        if matches!(self.wanted, Wanted::Release { .. }) {
            return; // a rollback's record names the release it restarted
        }
        if matches!(self.wanted, Wanted::Nothing) {
            // A canary steered from its record: only the canary changed.
            return self.canary_applied(rec);
        }
        let (started, _) = self.ledger_entries();
        for sr in rec.services.iter_mut() {
            sr.containers = started
                .iter()
                .filter(|m| m.service == sr.name)
                .map(|m| ContainerRecord {
                    name: m.name.clone(),
                    id: m.id.clone(),
                    addr: m.addr.map(|a| a.to_string()),
                })
                .collect();
            // A service the release left unchanged keeps serving with the containers it had:
            // the record lists them too, so it accounts for everything that serves even once
            // older records are pruned.
            let unchanged = self
                .prepared
                .plans
                .iter()
                .any(|p| p.service == sr.name && p.action == Action::Unchanged);
            if sr.containers.is_empty() && unchanged {
                sr.containers = self
                    .prepared
                    .live
                    .iter()
                    .filter(|c| c.running && c.service == sr.name)
                    .map(|c| ContainerRecord {
                        name: c.name.clone(),
                        id: c.id.clone(),
                        addr: None,
                    })
                    .collect();
            }
        }
        self.canary_applied(rec);
    }

    async fn restore(
        &self,
        rec: &Release,
        history: &[Release],
    ) -> std::result::Result<(), Vec<String>> {
        // A canary: its old servers take all the traffic back, its new ones go.
        let canary = self.abort_canary(rec).await;
        if let Some(problems) = canary.as_ref().filter(|p| !p.is_empty()) {
            return Err(problems.clone());
        }
        let rolled = {
            let (started, stopped) = self.ledger_entries();
            !started.is_empty() || !stopped.is_empty()
        };
        if canary.is_some() && !rolled {
            return Ok(()); // only the canary changed, and it is taken back
        }
        if rolled {
            // This process rolled `rec` out: undo exactly what the ledger says. Old containers
            // are checked with their own release's health settings.
            let by_service: HashMap<String, Desired> = self
                .desired()
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    d.service = self.service_cfg(&d.name);
                    (d.name.clone(), d)
                })
                .collect();
            let problems = self.restore_hosts(rec, &by_service).await;
            return if problems.is_empty() {
                Ok(())
            } else {
                Err(problems)
            };
        }
        // A killed run's release (or nothing changed yet): make what served before it serve.
        let before = rec
            .previous
            .as_ref()
            .and_then(|p| history.iter().find(|r| &r.id == p));
        let desired = match before.map(|b| self.desired_of(b)).transpose() {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => return Err(vec![e.to_string()]),
        };
        self.roll_to(before, &desired, &rec.id)
            .await
            .map_err(|e| vec![format!("{e:#}")])
    }

    async fn describe_live(&self) -> (String, String) {
        let what = match self.live().await {
            Ok(live) => live
                .iter()
                .map(|c| {
                    let on = if self.hosts.len() > 1 {
                        format!(" on {}", self.hosts[c.host].label())
                    } else {
                        String::new()
                    };
                    format!(
                        "  {}{on} {} ({})",
                        c.name,
                        if c.running { "running" } else { "stopped" },
                        c.version
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("  (cannot list containers: {e})"),
        };
        (
            what,
            "check the containers above; `packfy-deploy rollback` retries the restore".into(),
        )
    }

    fn url(&self) -> Option<String> {
        match &self.region.cfg.traffic {
            Traffic::Haproxy(h) => h.frontend.as_ref().map(|f| expand_env(f)),
            Traffic::None => None,
        }
    }

    async fn status(&self) -> Result<Status> {
        let live = self.live().await?;
        let cfg = &self.region.cfg;
        let mut services = Vec::new();
        let mut lines = Vec::new();
        for name in cfg
            .services
            .keys()
            .cloned()
            .chain(running_services(&live))
            .collect::<std::collections::BTreeSet<_>>()
        {
            let mut containers = Vec::new();
            for c in live.iter().filter(|c| c.service == name) {
                let st = self.engine_of(c.host)?.inspect(&c.id).await?;
                containers.push(json!({
                    "name": c.name, "release": c.release, "version": c.version,
                    "host": self.hosts[c.host].endpoint,
                    "state": if c.running { "running" } else { "stopped" },
                    "health": st.as_ref().and_then(|x| x.health.clone()),
                    "address": st.as_ref().and_then(|x| x.ports.values().next().map(|a| a.to_string())),
                }));
            }
            let wanted = cfg.services.get(&name).map(|x| x.replicas);
            let running = containers
                .iter()
                .filter(|c| c["state"] == "running")
                .count();
            lines.push(format!(
                "  {name}: {running} running of {} wanted",
                json!(wanted)
            ));
            for c in &containers {
                lines.push(format!(
                    "    {} {} {} {}{}",
                    c["name"].as_str().unwrap_or(""),
                    c["state"].as_str().unwrap_or(""),
                    c["version"].as_str().unwrap_or(""),
                    c["health"].as_str().unwrap_or("-"),
                    c["address"]
                        .as_str()
                        .map(|a| format!(" {a}"))
                        .unwrap_or_default()
                ));
            }
            services.push(json!({"service": name, "replicas": wanted, "containers": containers}));
        }
        let mut j = serde_json::Map::new();
        j.insert("target".into(), "docker".into());
        j.insert("services".into(), services.into());
        if self.hosts.len() > 1 {
            let hosts: Vec<serde_json::Value> = self
                .hosts
                .iter()
                .map(|h| json!({"host": h.endpoint, "tag": h.tag, "reachable": h.reach.is_ok(), "error": h.reach.as_ref().err()}))
                .collect();
            for h in &self.hosts {
                if let Err(e) = &h.reach {
                    lines.push(format!("  host {} is not reachable: {e}", h.endpoint));
                }
            }
            j.insert("hosts".into(), hosts.into());
        }
        self.canary_status(&mut lines, &mut j).await?;
        Ok(Status {
            endpoint: self
                .hosts
                .iter()
                .map(|h| h.endpoint.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            lines,
            json: j,
        })
    }

    async fn drift(
        &self,
        version: Option<&str>,
        history: &[Release],
    ) -> Result<Vec<crate::drift::Drift>> {
        let serving = crate::release::serving(history);
        let live = self.live().await?;
        let desired = match version {
            Some(v) => {
                self.desired_at(v, &DeployOptions::default(), Purpose::Plan)
                    .await?
            }
            None => Vec::new(),
        };
        let found = self.find_drift(&live, history, serving, &desired).await?;
        Ok(found.into_iter().map(|(d, _)| d).collect())
    }

    fn exec(&self) -> &dyn ExecIn {
        self
    }

    fn paused(&self) -> Option<String> {
        self.canary_paused()
    }

    fn window(&self) -> Option<(String, u64)> {
        self.bg_window()
    }

    async fn end_window(&self, history: &[Release], id: &str) -> anyhow::Result<bool> {
        self.end_bg_window(history, Some(id)).await
    }

    fn steerable(&self, rec: &Release, how: super::Steer) -> Result<()> {
        self.canary_steerable(rec, how)
    }

    async fn steer(&self, rec: &Release, how: super::Steer) -> anyhow::Result<()> {
        match how {
            super::Steer::Promote { .. } | super::Steer::Resume => {
                self.steer_canary(rec, how).await
            }
            other => anyhow::bail!("{} is not a step to run", other.verb()),
        }
    }

    async fn ask(&self, how: super::Steer) -> anyhow::Result<()> {
        match how {
            super::Steer::Pause => self.ask_running(canary::Ask::Pause).await,
            super::Steer::Abort => self.ask_running(canary::Ask::Abort).await,
            other => anyhow::bail!("a running canary cannot be asked to {}", other.verb()),
        }
    }
}

#[async_trait]
impl ExecIn for DockerRegion {
    async fn exec(
        &self,
        service: &str,
        cmd: &[String],
        env: &[String],
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut Tail,
    ) -> anyhow::Result<Option<i64>> {
        use bollard::container::LogOutput;
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures_util::StreamExt;
        let live = self.live().await?;
        let Some(c) = live.iter().find(|c| c.running && c.service == service) else {
            return Ok(None);
        };
        let docker = &self.engine_of(c.host)?.docker;
        let exec = docker
            .create_exec(
                &c.id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    env: Some(env.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow!("cannot exec in {}: {e}", c.name))?;
        match docker.start_exec(&exec.id, None).await {
            Ok(StartExecResults::Attached { mut output, .. }) => {
                while let Some(item) = output.next().await {
                    match item.map_err(|e| anyhow!("reading the output of {}: {e}", c.name))? {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            out.write_all(&message).await?
                        }
                        LogOutput::StdErr { message } => err.push(&message),
                        LogOutput::StdIn { .. } => {}
                    }
                }
            }
            Ok(StartExecResults::Detached) => return Err(anyhow!("the exec was detached")),
            Err(e) => return Err(anyhow!("cannot start the exec in {}: {e}", c.name)),
        }
        let inspect = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| anyhow!("cannot inspect the exec in {}: {e}", c.name))?;
        Ok(Some(inspect.exit_code.unwrap_or(-1)))
    }
}

/// A service's image repository (`image:`, variables expanded) and its reference at `version`.
fn running_services(live: &[LiveContainer]) -> Vec<String> {
    let mut v: Vec<String> = live
        .iter()
        .filter(|c| c.running)
        .map(|c| c.service.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The index a new container of `service` gets: one past any it has, running or retained,
/// so a name is never reused.
fn next_index(live: &[LiveContainer], service: &str) -> u32 {
    live.iter()
        .filter(|c| c.service == service)
        .map(|c| c.index)
        .max()
        .unwrap_or(0)
        + 1
}

fn plan_for(d: &Desired, live: &[LiveContainer]) -> ServicePlan {
    let running: Vec<&LiveContainer> = live
        .iter()
        .filter(|c| c.running && c.service == d.name)
        .collect();
    let live_state = running.first().map(|c| {
        let uniform = running.iter().all(|x| x.spec_hash == c.spec_hash);
        (
            c.version.as_str(),
            if uniform {
                c.spec_hash.as_str()
            } else {
                "mixed"
            },
            running.len() as u32,
        )
    });
    let from = live_state.map(|(v, h, n)| {
        (
            format!(
                "{}:{v}",
                d.image.rsplit_once(':').map_or(d.image.as_str(), |x| x.0)
            ),
            h,
            n,
        )
    });
    plan_service(
        &d.name,
        from.as_ref().map(|(i, h, n)| (i.as_str(), *h, *n)),
        &d.image,
        &d.spec_hash,
        d.replicas,
        d.service.rollout.max_surge,
        d.service.rollout.max_unavailable,
    )
}

/// What runs now, as records (the backup of the live state).
fn snapshot(live: &[LiveContainer]) -> Vec<ServiceRecord> {
    let mut out: Vec<ServiceRecord> = Vec::new();
    for c in live.iter().filter(|c| c.running) {
        let rec = match out.iter_mut().find(|r| r.name == c.service) {
            Some(r) => r,
            None => {
                out.push(ServiceRecord {
                    name: c.service.clone(),
                    image: c.image.clone(),
                    image_id: c.image_id.clone(),
                    digest: None,
                    replicas: 0,
                    env: Default::default(),
                    secret_refs: Default::default(),
                    container_port: None,
                    containers: Vec::new(),
                    spec_hash: c.spec_hash.clone(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        rec.replicas += 1;
        rec.containers.push(ContainerRecord {
            name: c.name.clone(),
            id: c.id.clone(),
            addr: None,
        });
    }
    out
}

/// How long the first Runtime API command at `open` may take, the session's opening included.
const FIRST_COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The region's load balancers, each reached and answering (all at once); exit 6 naming the
/// first in the list that does not.
async fn load_balancers(addresses: &[String], target: &DockerTarget) -> Result<Haproxy> {
    if addresses.iter().all(|a| a.trim().is_empty()) {
        // Validation refuses it first; nothing here may assume it did.
        return Err(Error::usage("traffic.haproxy.runtime_api is not set"));
    }
    let reached = join_all(addresses.iter().map(|a| async move {
        let started = std::time::Instant::now();
        let lb = runtime_api(&expand_env(a), target)
            .await
            .map_err(|e| match e {
                Error::Failed { code, error, hint } => Error::Failed {
                    code,
                    error,
                    hint: Some(format!(
                        "{}(a load balancer of the region, traffic.haproxy.runtime_api); nothing was changed",
                        hint.map(|h| format!("{h} ")).unwrap_or_default()
                    )),
                },
                e => e,
            })?;
        // The first command opens the ssh session (an ssh through the login's master, socat
        // on the host): process starts, seconds on a loaded machine, so it gets a login's
        // time; later commands have the usual timeout.
        lb.clone().with_timeout(FIRST_COMMAND_TIMEOUT).ping().await.map_err(|e| {
            Error::failed(
                ExitCode::Unreachable,
                anyhow!("cannot reach HAProxy's Runtime API at {}: {e}", lb.address()),
            )
            .with_hint("is HAProxy running with `stats socket … level admin`? (traffic.haproxy.runtime_api); nothing was changed")
        })?;
        tracing::debug!(lb = %lb.address(), ms = started.elapsed().as_millis() as u64, "load balancer answered");
        Ok::<_, Error>(lb)
    }))
    .await;
    let lbs = reached.into_iter().collect::<Result<Vec<_>>>()?;
    // Our own health check has passed before a server is added, so HAProxy needs one pass of
    // its own (not two) before the server takes traffic. (On a remote host HAProxy's checks
    // are the health check: see `Rollout::enter_rotation`.)
    Ok(Haproxy::of(lbs).with_check_timing(CheckTiming {
        inter: Duration::from_millis(250),
        rise: 1,
        fall: 3,
    }))
}

/// One load balancer's HAProxy Runtime API: a local socket or TCP address, or
/// `ssh://[user@]host[:port]/path/to/socket` on a load-balancer host, logged in to like the
/// region's Docker hosts (identity_file, known_hosts); exit 6 quoting ssh when it fails.
async fn runtime_api(address: &str, target: &DockerTarget) -> Result<RuntimeApi> {
    let Some(rest) = address.strip_prefix("ssh://") else {
        return Ok(RuntimeApi::new(address));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.len() < 2 {
        return Err(Error::usage_hint(
            format!("traffic.haproxy.runtime_api: '{address}' names no socket path"),
            "write ssh://USER@HOST/path/to/haproxy.sock",
        ));
    }
    let host = crate::ssh::SshHost::parse(
        &format!("ssh://{authority}"),
        target.identity_file.as_deref(),
        target.known_hosts,
    )
    .expect("an ssh:// address")
    .map_err(|e| Error::usage(format!("traffic.haproxy.runtime_api: {e}")))?;
    Ok(RuntimeApi::over_ssh(host.login().await?, path))
}

/// Services whose canary or blue-green analysis has an `http` check (in `rollout.analysis`
/// or a step's): it is made from the machine running the CLI.
fn canaries_checked_from_here(cfg: &crate::config::RegionConfig) -> Vec<String> {
    use crate::config::progressive::{Step, Strategy};
    cfg.services
        .iter()
        .filter(|(_, s)| matches!(s.rollout.strategy, Strategy::Canary | Strategy::BlueGreen))
        .filter(|(_, s)| {
            s.rollout.analysis.http.is_some()
                || s.rollout
                    .steps
                    .iter()
                    .any(|st| matches!(st, Step::Analysis(a) if a.http.is_some()))
        })
        .map(|(n, _)| n.clone())
        .collect()
}
