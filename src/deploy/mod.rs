//! `deploy` and `rollback` on a Docker target, read top to bottom:
//!
//! 1. read and check the region's configuration (nothing touched on error: exit 2);
//! 2. resolve images (build and push when asked) and secrets, still touching nothing;
//! 3. reach the engine and HAProxy (exit 6 naming the endpoint when one does not answer);
//! 4. take the lock on the target (exit 5 naming the holder; a stale lock is taken over);
//! 5. recover an interrupted release left by a killed run, if any;
//! 6. back up: after the pre_deploy hooks, run the region's data backup jobs
//!    (`crate::backup`; a failing hook or required job stops the deploy here, nothing
//!    changed: exit 2), then record the new release as `in_progress` with a snapshot of
//!    what runs now;
//! 7. roll each service in batches: start → healthy → into rotation → drain old → stop old;
//! 8. verify for the bake period (health, HAProxy 5xx ratio);
//! 9. on any failure or signal, restore the snapshot and record `rolled_back` (exit 3), or
//!    `failed` when restoring fails too (exit 4);
//! 10. record the outcome, prune releases beyond `keep_releases` (this scope only), unlock.

pub mod desired;
pub mod fleet;
pub mod rollout;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::Utc;

use crate::config::model::{RegionConfig, Service, Traffic};
use crate::docker::naming::{self, Scope};
use crate::docker::state::{Acquire, Lock};
use crate::docker::{expand_env, Engine};
use crate::error::{Error, ExitCode, Result};
use crate::hooks::{self, HookEnv, HookKind};
use crate::notify::{self, Notice, NotifyKind};
use crate::ops::Ctx;
use crate::plan::{plan_service, rolling_steps, Action, ServicePlan};
use crate::release::{self, Kind, Outcome, Release, ServiceRecord};
use crate::traffic::haproxy::{CheckTiming, Haproxy};
use desired::Desired;
use rollout::{Ledger, Member, Rollout};

/// How often a waiting `--lock-wait` looks again.
const LOCK_POLL: Duration = Duration::from_secs(1);
/// Release records kept per region and environment (containers are kept for `keep_releases`).
const RECORDS_KEPT: usize = 50;

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub version: Option<String>,
    pub no_build: bool,
    pub push: bool,
    pub lock_wait: Option<Duration>,
    pub reason: Option<String>,
    /// Kubernetes: take over fields another field manager owns (server-side apply `force`).
    pub force_conflicts: bool,
}

/// A container of the scope as the engine lists it.
#[derive(Debug, Clone)]
pub struct LiveContainer {
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

/// A region's Docker target, reached and checked.
pub struct Session {
    pub region: String,
    pub env: String,
    pub cfg: RegionConfig,
    pub engine: Engine,
    pub lb: Option<Haproxy>,
    pub scope: Scope,
    /// The repository root (the regions directory's parent): build contexts are relative to it.
    pub root: std::path::PathBuf,
    /// For notifications sent from inside the flow.
    pub ui: crate::ui::Ui,
}

impl Session {
    /// Reads the region and reaches its engine and HAProxy.
    pub async fn open(ctx: &Ctx, region: &str) -> Result<Session> {
        let regions = ctx.load()?;
        let (_, cfg) = ctx.config(&regions, region)?;
        let env = ctx.env_or_default().to_string();
        let Some(target) = cfg.target.docker.clone() else {
            return Err(Error::usage_hint(
                format!("region '{region}' targets Kubernetes, which this build of packfy-deploy cannot deploy to yet"),
                "Docker regions deploy today; `render` writes the Kubernetes manifests for review",
            ));
        };
        let engine = Engine::connect(&target).await?;
        let lb = match &cfg.traffic {
            Traffic::Haproxy(h) => {
                // Our own health check has passed before a server is added, so HAProxy needs one
                // pass of its own (not two) before the server takes traffic.
                let lb = Haproxy::new(&expand_env(&h.runtime_api)).with_check_timing(CheckTiming {
                    inter: Duration::from_millis(250),
                    rise: 1,
                    fall: 3,
                });
                lb.ping().await.map_err(|e| {
                    Error::failed(ExitCode::Unreachable, anyhow!("cannot reach HAProxy's Runtime API at {}: {e}", lb.address()))
                        .with_hint("is HAProxy running with `stats socket … level admin`? (traffic.haproxy.runtime_api)")
                })?;
                Some(lb)
            }
            Traffic::None => None,
        };
        let scope = Scope::new(&cfg.app, region, &env);
        let root = ctx.sibling(".");
        Ok(Session {
            root,
            ui: ctx.ui.clone(),
            region: region.to_string(),
            env,
            cfg,
            engine,
            lb,
            scope,
        })
    }

    fn backends(&self) -> HashMap<String, String> {
        match &self.cfg.traffic {
            Traffic::Haproxy(h) => h
                .backends
                .iter()
                .map(|(k, v)| (k.clone(), expand_env(v)))
                .collect(),
            Traffic::None => HashMap::new(),
        }
    }

    /// Takes the lock, waiting up to `wait`; exit 5 naming the holder when it stays held.
    pub async fn lock(&self, ctx: &Ctx, reason: &str, wait: Option<Duration>) -> Result<Lock> {
        let holder = release::actor();
        let where_ = format!("{}/{}", self.region, self.env);
        take_lock(
            ctx,
            &where_,
            wait,
            || async {
                Ok(self
                    .engine
                    .try_lock(&self.scope, &holder, reason, self.cfg.lock_ttl.0, true)
                    .await?)
            },
            |_| async { Ok(self.engine.break_lock(&self.scope).await?) },
        )
        .await
    }

    /// The scope's app containers, running or retained.
    pub async fn live(&self) -> Result<Vec<LiveContainer>> {
        let filter = self.scope.filter("app");
        let refs: Vec<(&str, &str)> = filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let list = self.engine.list(&refs).await?;
        Ok(list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
                LiveContainer {
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
            .collect())
    }

    fn member(&self, c: &LiveContainer) -> Member {
        // Only this service's backend: the whole map is built once per rollout, not per container.
        let backend = match (&self.cfg.traffic, &self.lb) {
            (Traffic::Haproxy(h), Some(_)) => h.backends.get(&c.service).map(|b| expand_env(b)),
            _ => None,
        };
        Member {
            service: c.service.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            server: backend.map(|b| (b, self.scope.server(&c.service, &c.release, c.index))),
            addr: None,
        }
    }

    /// Runs the region's hooks of a `pre_` kind: a failure stops the command before anything
    /// on the target changes (exit 2).
    async fn pre_hooks(&self, ctx: &Ctx, kind: HookKind, env: &HookEnv) -> Result<()> {
        pre_hooks(ctx, &self.cfg, &self.root, kind, env).await
    }

    /// Where this region's notices go.
    fn notifier(&self) -> Notify<'_> {
        Notify {
            cfg: &self.cfg,
            region: &self.region,
            env: &self.env,
            ui: &self.ui,
        }
    }

    fn service_cfg(&self, name: &str) -> Service {
        self.cfg.services.get(name).cloned().unwrap_or_default()
    }
}

/// Takes a region's lock (any target): `try_once` until it is ours, taking over a stale holder
/// with `take_over` (and saying so), waiting up to `wait` for a live one; exit 5 naming the
/// holder when it stays held.
pub(crate) async fn take_lock<T, TF, B, BF>(
    ctx: &Ctx,
    where_: &str,
    wait: Option<Duration>,
    mut try_once: T,
    mut take_over: B,
) -> Result<Lock>
where
    T: FnMut() -> TF,
    TF: std::future::Future<Output = Result<Acquire>>,
    B: FnMut(Lock) -> BF,
    BF: std::future::Future<Output = Result<()>>,
{
    let until = Instant::now() + wait.unwrap_or_default();
    loop {
        match try_once().await? {
            Acquire::Acquired(lock) => return Ok(lock),
            Acquire::Held(other) if other.is_stale(Utc::now()) && !other.token.is_empty() => {
                ctx.ui.warn(format!(
                    "taking over a stale lock on {where_} held by {}",
                    other.describe()
                ));
                take_over(other).await?;
            }
            Acquire::Held(other) if Instant::now() < until => {
                ctx.ui
                    .verbose(format!("waiting for the lock held by {}", other.describe()));
                tokio::time::sleep(LOCK_POLL).await;
            }
            Acquire::Held(other) => {
                return Err(Error::failed(
                    ExitCode::Locked,
                    anyhow!("{where_} is locked by {}", other.describe()),
                )
                .with_hint(
                    "wait with --lock-wait 10m, or if that run is dead: packfy-deploy unlock --force",
                ));
            }
        }
    }
}

/// Runs a region's hooks of a `pre_` kind (any target): a failure stops the command before
/// anything on the target changes (exit 2).
pub(crate) async fn pre_hooks(
    ctx: &Ctx,
    cfg: &RegionConfig,
    root: &std::path::Path,
    kind: HookKind,
    env: &HookEnv,
) -> Result<()> {
    let list = kind.of(&cfg.hooks);
    if list.is_empty() {
        return Ok(());
    }
    ctx.ui.status("Hooks", kind.as_str());
    hooks::run(kind, list, env, root, &ctx.ui)
        .await
        .map_err(|e| Error::usage_hint(format!("{e:#}"), "nothing on the target was changed"))
}

/// The `post_deploy` hooks (any target), smoke tests: a failing one rolls back like a failed
/// health check (the old script's post-deploy check exited 1 and left the bad release serving).
pub(crate) async fn post_deploy_hooks(
    ctx: &Ctx,
    cfg: &RegionConfig,
    root: &std::path::Path,
    hook_env: &HookEnv,
) -> anyhow::Result<()> {
    if cfg.hooks.post_deploy.is_empty() {
        return Ok(());
    }
    ctx.ui.status("Hooks", "post_deploy");
    let env = HookEnv {
        outcome: Some("succeeded".into()),
        ..hook_env.clone()
    };
    hooks::run(
        HookKind::PostDeploy,
        &cfg.hooks.post_deploy,
        &env,
        root,
        &ctx.ui,
    )
    .await
}

/// After a rollback landed (any target): the notice, then the `post_rollback` hooks. The
/// previous release already serves; a failing check after it is reported, and rolling back
/// again would not help.
pub(crate) async fn after_rollback(
    ctx: &Ctx,
    notify: &Notify<'_>,
    root: &std::path::Path,
    target: &Release,
    current: &Release,
    hook_env: HookEnv,
) {
    let detail = format!(
        "{} ({}) serves again instead of {} ({})",
        target.id, target.version, current.id, current.version
    );
    notify
        .send(
            NotifyKind::Rollback,
            &target.version,
            Some(target.id.clone()),
            Some(current.id.clone()),
            Some(detail),
        )
        .await;
    let hooks = &notify.cfg.hooks.post_rollback;
    if hooks.is_empty() {
        return;
    }
    ctx.ui.status("Hooks", "post_rollback");
    let env = HookEnv {
        outcome: Some("succeeded".into()),
        ..hook_env
    };
    if let Err(e) = hooks::run(HookKind::PostRollback, hooks, &env, root, &ctx.ui).await {
        ctx.ui.warn(format!("{e:#}"));
    }
}

/// The warning before a run restores what an interrupted release `last` replaced.
pub(crate) fn recovering(last: &Release) -> String {
    format!(
        "release {} ({}) was interrupted: started {} by {} on {}, never finished; restoring {}",
        last.id,
        last.version,
        last.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        last.actor,
        last.runner,
        last.previous.as_deref().unwrap_or("the state before it")
    )
}

/// Where a region's notices go (any target).
pub(crate) struct Notify<'a> {
    pub cfg: &'a RegionConfig,
    pub region: &'a str,
    pub env: &'a str,
    pub ui: &'a crate::ui::Ui,
}

impl Notify<'_> {
    /// The notice that a deploy of `env.version` as `env.release` starts.
    pub async fn start(&self, env: &HookEnv) {
        self.send(
            NotifyKind::Start,
            &env.version,
            Some(env.release.clone()),
            env.previous.clone(),
            None,
        )
        .await;
    }

    /// Sends a notification to the region's webhooks; never fails, warns when undelivered.
    pub async fn send(
        &self,
        kind: NotifyKind,
        version: &str,
        release: Option<String>,
        previous: Option<String>,
        detail: Option<String>,
    ) {
        if self.cfg.notifications.is_empty() {
            return;
        }
        let notice = Notice {
            kind,
            region: self.region.to_string(),
            environment: self.env.to_string(),
            version: version.to_string(),
            release,
            previous,
            actor: release::actor(),
            detail,
            time: Utc::now(),
        };
        notify::send(&self.cfg.notifications, &notice, self.ui).await;
    }
}

/// The version a deploy tags: `--version`, else the git commit (with `-dirty-<hash>` for an
/// uncommitted tree), else the config's `version:`.
pub fn version_of(opts: &DeployOptions, cfg: &RegionConfig) -> Option<String> {
    if let Some(v) = &opts.version {
        return Some(v.clone());
    }
    if cfg.services.values().any(|s| s.build.is_some()) && !opts.no_build {
        if let Some(commit) = release::git_commit() {
            return Some(match commit.strip_suffix("-dirty") {
                Some(sha) => format!("{sha}-dirty-{}", dirty_hash()),
                None => commit,
            });
        }
    }
    cfg.version.clone()
}

/// A short hash of the uncommitted changes, so two dirty builds of one commit differ. Read
/// once per process, like `release::git_commit`: a fleet run asks once per region.
fn dirty_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(find_dirty_hash).clone()
}

fn find_dirty_hash() -> String {
    use sha2::{Digest, Sha256};
    let diff = std::process::Command::new("git")
        .args(["diff", "HEAD"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    hex::encode(&Sha256::digest(&diff)[..4])
}

/// Builds (and pushes) the images of services that have a `build:` section.
pub async fn resolve_images_for_build(
    ctx: &Ctx,
    s: &Session,
    version: &str,
    opts: &DeployOptions,
) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for (name, svc) in &s.cfg.services {
        let (repo, image) = image_ref(svc, version);
        if let (Some(build), false) = (&svc.build, opts.no_build) {
            ctx.ui.status("Building", format!("{name} → {image}"));
            let ui = ctx.ui.clone();
            let id = s
                .engine
                .build(&s.root, build, &image, &mut |line| ui.verbose(line))
                .await
                .map_err(|e| {
                    Error::usage_hint(
                        format!("{e:#}"),
                        "the build failed; nothing on the target was changed",
                    )
                })?;
            if opts.push {
                ctx.ui.status("Pushing", image.clone());
                s.engine.push(&repo, version).await.map_err(|e| {
                    Error::failed(ExitCode::Unreachable, anyhow!("{e:#}"))
                        .with_hint("is the registry running and reachable from the engine? nothing on the target was changed")
                })?;
            }
            out.push((name.clone(), image, id));
        }
    }
    Ok(out)
}

/// Images for every service: built (and pushed) when configured, else expected on the engine
/// (or pulled from the registry its name points at); then the desired state with secrets.
async fn resolve_images(
    ctx: &Ctx,
    s: &Session,
    version: &str,
    opts: &DeployOptions,
) -> Result<Vec<Desired>> {
    let built = resolve_images_for_build(ctx, s, version, opts).await?;
    let mut out = Vec::new();
    for (name, svc) in &s.cfg.services {
        let (_, image) = image_ref(svc, version);
        let image_id = match built.iter().find(|(n, ..)| n == name) {
            Some((_, _, id)) => id.clone(),
            None => match s.engine.image_id(&image).await? {
                Some(id) => id,
                // Without a registry host it would be pulled from Docker Hub, which deploys
                // here never rely on.
                None if crate::docker::registry_host(&image).is_none() => {
                    return Err(Error::usage_hint(
                        format!("image {image} is not on the engine at {}", s.engine.endpoint),
                        "build it (packfy-deploy build), or name it REGISTRY/NAME and push it there so the engine can pull it; nothing was changed",
                    ));
                }
                None => {
                    ctx.ui.status("Pulling", image.clone());
                    s.engine.pull(&image).await.map_err(|e| {
                        Error::usage_hint(
                            format!("image {image} is not on the engine at {} and could not be pulled: {e:#}", s.engine.endpoint),
                            "build it (packfy-deploy build), push it to the registry, or pass the right --version; nothing was changed",
                        )
                    })?
                }
            },
        };
        let d = desired::desired(
            &s.region, &s.env, version, &s.cfg, name, svc, &image, &image_id,
        )
        .map_err(|e| {
            Error::usage_hint(
                e.to_string(),
                "set it where the deploy runs; nothing was changed",
            )
        })?;
        out.push(d);
    }
    Ok(out)
}

/// A service's image repository (`image:`, variables expanded) and its reference at `version`.
fn image_ref(svc: &Service, version: &str) -> (String, String) {
    let repo = expand_env(svc.image.as_deref().unwrap_or_default());
    let image = format!("{repo}:{version}");
    (repo, image)
}

/// What `deploy` would do, without building, pulling or changing anything.
pub async fn plan(
    s: &Session,
    opts: &DeployOptions,
) -> Result<(Vec<ServicePlan>, Vec<String>, Vec<String>)> {
    let version = version_of(opts, &s.cfg)
        .ok_or_else(|| Error::usage_hint("no version to plan", "pass --version V"))?;
    let live = s.live().await?;
    let history = s.engine.releases(&s.scope).await?;
    let mut notes = Vec::new();
    let mut plans = Vec::new();
    for (name, svc) in &s.cfg.services {
        let (_, image) = image_ref(svc, &version);
        let image_id = match s.engine.image_id(&image).await? {
            Some(id) => id,
            None => {
                notes.push(format!(
                    "{image} is not on the engine yet: deploy will {} it",
                    if svc.build.is_some() { "build" } else { "pull" }
                ));
                format!("missing:{image}")
            }
        };
        let d = desired::desired(
            &s.region, &s.env, &version, &s.cfg, name, svc, &image, &image_id,
        )
        .map_err(|e| Error::usage_hint(e.to_string(), "set it where the deploy runs"))?;
        plans.push(plan_for(&d, &live));
    }
    let removed: Vec<String> = running_services(&live)
        .into_iter()
        .filter(|n| !s.cfg.services.contains_key(n))
        .collect();
    if s.lb.is_none() {
        notes.push("traffic: none — containers are replaced without a load balancer; zero downtime is not promised".into());
    }
    let lock = s.engine.current_lock(&s.scope).await?;
    if let Some(l) = &lock {
        notes.push(format!("locked by {}", l.describe()));
    }
    if let Some(msg) = interrupted(&history, lock.as_ref()) {
        notes.push(msg);
    }
    Ok((plans, removed, notes))
}

/// `diff --live`: the serving release and its containers, and the configuration's desired
/// state, as comparable `service.key: value` lines (secrets masked on both sides).
pub async fn live_and_desired_lines(s: &Session, opts: &DeployOptions) -> Result<(String, String)> {
    let version = version_of(opts, &s.cfg)
        .ok_or_else(|| Error::usage_hint("no version to compare", "pass --version V"))?;
    let history = s.engine.releases(&s.scope).await?;
    let live = s.live().await?;
    let serving = serving(&history);
    let mut left = String::new();
    for svc in running_services(&live) {
        let running = live
            .iter()
            .filter(|c| c.running && c.service == svc)
            .count();
        left.push_str(&format!("{svc}.replicas: {running}\n"));
        if let Some(rec) = serving.and_then(|r| r.services.iter().find(|x| x.name == svc)) {
            left.push_str(&format!("{svc}.image: {}\n", rec.image));
            for (k, v) in &rec.env {
                left.push_str(&format!("{svc}.env.{k}: {v}\n"));
            }
        }
    }
    let mut right = String::new();
    let mut names: Vec<&String> = s.cfg.services.keys().collect();
    names.sort();
    for name in names {
        let svc = &s.cfg.services[name];
        let (_, image) = image_ref(svc, &version);
        right.push_str(&format!("{name}.replicas: {}\n", svc.replicas));
        right.push_str(&format!("{name}.image: {image}\n"));
        let d = desired::desired(&s.region, &s.env, &version, &s.cfg, name, svc, &image, "")
            .map_err(|e| Error::usage_hint(e.to_string(), "set it where the command runs"))?;
        for (k, v) in &d.env_shown {
            right.push_str(&format!("{name}.env.{k}: {v}\n"));
        }
    }
    Ok((left, right))
}

/// `status` of one region: serving release, containers, lock, interrupted release.
pub async fn status(ctx: &Ctx, region: &str) -> Result<serde_json::Value> {
    if crate::k8s::targets_kubernetes(ctx, region)? {
        return crate::k8s::status(ctx, region).await;
    }
    let s = Session::open(ctx, region).await?;
    let history = s.engine.releases(&s.scope).await?;
    let live = s.live().await?;
    let lock = s.engine.current_lock(&s.scope).await?;
    let serving = serving(&history);
    let interrupted = interrupted(&history, lock.as_ref());
    let mut services = Vec::new();
    for name in s
        .cfg
        .services
        .keys()
        .cloned()
        .chain(running_services(&live))
        .collect::<std::collections::BTreeSet<_>>()
    {
        let mut containers = Vec::new();
        for c in live.iter().filter(|c| c.service == name) {
            let st = s.engine.inspect(&c.id).await?;
            containers.push(serde_json::json!({
                "name": c.name, "release": c.release, "version": c.version,
                "state": if c.running { "running" } else { "stopped" },
                "health": st.as_ref().and_then(|x| x.health.clone()),
                "address": st.as_ref().and_then(|x| x.ports.values().next().map(|a| a.to_string())),
            }));
        }
        let wanted = s.cfg.services.get(&name).map(|x| x.replicas);
        services.push(
            serde_json::json!({"service": name, "replicas": wanted, "containers": containers}),
        );
    }
    let value = serde_json::json!({
        "region": s.region,
        "environment": s.env,
        "endpoint": s.engine.endpoint,
        "release": serving.map(|r| &r.id),
        "version": serving.map(|r| &r.version),
        "lock": lock.as_ref().map(|l| l.describe()),
        "interrupted": interrupted,
        "services": services,
    });
    if !ctx.ui.json() {
        status_header(
            ctx,
            &format!("{}/{} on {}", s.region, s.env, s.engine.endpoint),
            serving,
            lock.as_ref(),
            interrupted.as_deref(),
        );
        for svc in value["services"].as_array().into_iter().flatten() {
            let cs = svc["containers"].as_array().cloned().unwrap_or_default();
            let running = cs.iter().filter(|c| c["state"] == "running").count();
            ctx.ui.out(format!(
                "  {}: {running} running of {} wanted",
                svc["service"].as_str().unwrap_or(""),
                svc["replicas"]
            ));
            for c in cs {
                ctx.ui.out(format!(
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
        }
    }
    Ok(value)
}

/// The first lines of `status` for one region (any target): what serves since when, the lock,
/// an interrupted release.
pub(crate) fn status_header(
    ctx: &Ctx,
    place: &str,
    serving: Option<&Release>,
    lock: Option<&Lock>,
    interrupted: Option<&str>,
) {
    ctx.ui.out(format!(
        "{place}: {}",
        serving.map_or("no release yet".to_string(), |r| format!(
            "{} ({}) since {}",
            r.id,
            r.version,
            r.finished_at
                .unwrap_or(r.started_at)
                .format("%Y-%m-%d %H:%M:%S UTC")
        ))
    ));
    if let Some(l) = lock {
        ctx.ui.out(format!("  locked by {}", l.describe()));
    }
    if let Some(i) = interrupted {
        ctx.ui.out(format!("  WARNING: {i}"));
    }
}

/// The outcome printed (and returned as JSON) at the end of a deploy or rollback.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub region: String,
    pub environment: String,
    pub outcome: String,
    pub release: Option<String>,
    pub previous: Option<String>,
    pub version: Option<String>,
    pub duration_secs: f64,
    pub error: Option<String>,
    pub url: Option<String>,
}

/// `deploy --region R`
pub async fn deploy(ctx: &Ctx, region: &str, opts: &DeployOptions) -> Result<ExitCode> {
    if crate::k8s::targets_kubernetes(ctx, region)? {
        return crate::k8s::deploy(ctx, region, opts).await;
    }
    let started = Instant::now();
    let s = Session::open(ctx, region).await?;
    let version = version_of(opts, &s.cfg).ok_or_else(|| {
        Error::usage_hint(
            "no version to deploy",
            "pass --version V, or set `version:` in the region files",
        )
    })?;
    let desired = resolve_images(ctx, &s, &version, opts).await?;
    let reason = opts
        .reason
        .clone()
        .unwrap_or_else(|| format!("deploy {version}"));
    let lock = s.lock(ctx, &reason, opts.lock_wait).await?;
    ctx.ui.status(
        "Locked",
        format!("{}/{} ({})", s.region, s.env, lock.holder),
    );
    let result = locked_deploy(ctx, &s, &version, desired, started).await;
    if let Err(e) = s.engine.unlock(&s.scope, &lock).await {
        ctx.ui.warn(format!("could not release the lock: {e:#}"));
    }
    result
}

async fn locked_deploy(
    ctx: &Ctx,
    s: &Session,
    version: &str,
    desired: Vec<Desired>,
    started: Instant,
) -> Result<ExitCode> {
    let mut history = s.engine.releases(&s.scope).await?;
    if recover_interrupted(ctx, s, &history).await? {
        history = s.engine.releases(&s.scope).await?;
    }
    let current = serving(&history).cloned();
    let live = s.live().await?;
    let plans: Vec<ServicePlan> = desired.iter().map(|d| plan_for(d, &live)).collect();
    let removed: Vec<String> = running_services(&live)
        .into_iter()
        .filter(|name| !desired.iter().any(|d| &d.name == name))
        .collect();
    if plans.iter().all(|p| p.action == Action::Unchanged) && removed.is_empty() {
        let id = current
            .as_ref()
            .map_or("the running release".to_string(), |r| r.id.clone());
        ctx.ui.status(
            "Unchanged",
            format!(
                "{}/{}: {id} already runs {version}; nothing to do",
                s.region, s.env
            ),
        );
        return finish(
            ctx,
            Summary {
                release: current.as_ref().map(|r| r.id.clone()),
                version: Some(version.into()),
                ..Summary::new(s, "unchanged", started)
            },
            ExitCode::Success,
        );
    }
    for p in &plans {
        ctx.ui.status("Plan", p.describe());
    }
    let number = history.iter().map(|r| r.number).max().unwrap_or(0) + 1;
    let hook_env = HookEnv {
        region: s.region.clone(),
        environment: s.env.clone(),
        version: version.to_string(),
        release: format!("r{number}"),
        previous: current.as_ref().map(|r| r.id.clone()),
        outcome: None,
    };
    // The old deploy script ran the test suites before every deploy: a failing pre-hook
    // stops here, before anything on the target changes.
    s.pre_hooks(ctx, HookKind::PreDeploy, &hook_env).await?;
    let backups =
        crate::backup::before_deploy(ctx, s, &hook_env.release, current.is_none()).await?;
    s.notifier().start(&hook_env).await;
    let mut rec = new_record(
        s,
        number,
        Kind::Deploy,
        version,
        current.as_ref().map(|r| r.id.clone()),
        None,
    );
    rec.services = desired.iter().map(Desired::record).collect();
    rec.before = snapshot(&live);
    rec.backups = backups;
    s.engine.save_release(&s.scope, &rec).await?;
    ctx.ui.status(
        "Backed up",
        format!(
            "what runs now ({} container(s)) in release record {}",
            rec.before.iter().map(|x| x.containers.len()).sum::<usize>(),
            rec.id
        ),
    );

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let ro = Rollout {
        engine: &s.engine,
        lb: s.lb.as_ref(),
        backends: s.backends(),
        scope: &s.scope,
        release: rec.id.clone(),
        version: version.into(),
        ui: &ctx.ui,
        ledger: ledger.clone(),
    };
    let work = async {
        for (d, p) in desired.iter().zip(&plans) {
            if p.action == Action::Unchanged {
                continue;
            }
            let old: Vec<Member> = live
                .iter()
                .filter(|c| c.running && c.service == d.name)
                .map(|c| s.member(c))
                .collect();
            let steps = rolling_steps(
                d.replicas,
                d.service.rollout.max_surge,
                d.service.rollout.max_unavailable,
                old.len() as u32,
            );
            ro.service(d, old, Vec::new(), &steps, next_index(&live, &d.name))
                .await?;
        }
        let report = ro.bake(&desired).await?;
        if report.responses > 0 {
            ctx.ui.status(
                "Verified",
                format!(
                    "{} responses through HAProxy, {} 5xx",
                    report.responses, report.errors
                ),
            );
        }
        post_deploy_hooks(ctx, &s.cfg, &s.root, &hook_env).await?;
        for name in &removed {
            for c in live.iter().filter(|c| c.running && &c.service == name) {
                s.engine.stop(&c.id, Duration::from_secs(30)).await?;
            }
        }
        anyhow::Ok(())
    };
    let outcome = interruptible(work).await;
    let failed = outcome.as_ref().err().map(|e| format!("{e:#}"));
    let (release, previous) = (Some(rec.id.clone()), rec.previous.clone());
    let result = finish_release(ctx, s, rec, &history, &ro, &desired, outcome, started).await;
    match (&failed, &result) {
        (None, _) => {
            s.notifier()
                .send(NotifyKind::Success, version, release, previous, None)
                .await
        }
        (Some(why), r) => {
            s.notifier()
                .send(
                    NotifyKind::Failure,
                    version,
                    release.clone(),
                    previous.clone(),
                    Some(why.clone()),
                )
                .await;
            if r.as_ref()
                .err()
                .is_some_and(|e| e.code() == ExitCode::RolledBack)
            {
                let detail = format!(
                    "{} failed and {} serves again",
                    release.as_deref().unwrap_or("?"),
                    previous.as_deref().unwrap_or("the state before it")
                );
                s.notifier()
                    .send(
                        NotifyKind::Rollback,
                        version,
                        release,
                        previous,
                        Some(detail),
                    )
                    .await;
            }
        }
    }
    result
}

/// Runs the rollout until it ends or SIGINT/SIGTERM arrives (which counts as a failure, so the
/// caller restores the previous release before exiting).
pub(crate) async fn interruptible<F: std::future::Future<Output = anyhow::Result<()>>>(
    work: F,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| anyhow!("cannot watch for SIGTERM: {e}"))?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (SIGINT)")),
        _ = term.recv() => Err(anyhow!("interrupted (SIGTERM)")),
    }
}

/// Records the outcome; on failure restores first. `history` is every record before `rec`.
#[allow(clippy::too_many_arguments)]
async fn finish_release(
    ctx: &Ctx,
    s: &Session,
    mut rec: Release,
    history: &[Release],
    ro: &Rollout<'_>,
    desired: &[Desired],
    outcome: anyhow::Result<()>,
    started: Instant,
) -> Result<ExitCode> {
    let url = match &s.cfg.traffic {
        Traffic::Haproxy(h) => h.frontend.as_ref().map(|f| expand_env(f)),
        Traffic::None => None,
    };
    // What the new containers are, for the record (also on failure: they were removed then).
    let fill = |rec: &mut Release, ledger: &Ledger| {
        for sr in rec.services.iter_mut() {
            sr.containers = ledger
                .started
                .iter()
                .filter(|m| m.service == sr.name)
                .map(|m| release::ContainerRecord {
                    name: m.name.clone(),
                    id: m.id.clone(),
                    addr: m.addr.map(|a| a.to_string()),
                })
                .collect();
        }
    };
    match outcome {
        Ok(()) => {
            fill(&mut rec, &ro.ledger.lock().expect("ledger"));
            rec.outcome = Outcome::Succeeded;
            rec.finished_at = Some(Utc::now());
            s.engine.save_release(&s.scope, &rec).await?;
            let all: Vec<Release> = history.iter().cloned().chain([rec.clone()]).collect();
            prune(ctx, s, &all).await;
            ctx.ui.status(
                "Deployed",
                format!(
                    "{}/{} {} ({}) in {:.1}s{}",
                    s.region,
                    s.env,
                    rec.id,
                    rec.version,
                    started.elapsed().as_secs_f64(),
                    url.as_ref()
                        .map(|u| format!(", serving at {u}"))
                        .unwrap_or_default()
                ),
            );
            if s.lb.is_none() {
                ctx.ui.warn("traffic: none — containers were replaced without a load balancer; zero downtime was not promised");
            }
            finish(
                ctx,
                Summary::of(s, "succeeded", &rec, started, url),
                ExitCode::Success,
            )
        }
        Err(e) => {
            let error = format!("{e:#}");
            ctx.ui.status(
                "Failed",
                format!(
                    "{} of {}/{}: {}",
                    rec.id,
                    s.region,
                    s.env,
                    error.lines().next().unwrap_or("")
                ),
            );
            ctx.ui
                .status("Rolling back", format!("to what ran before {}", rec.id));
            fill(&mut rec, &ro.ledger.lock().expect("ledger"));
            let mut by_service: HashMap<String, Desired> = desired
                .iter()
                .map(|d| (d.name.clone(), d.clone()))
                .collect();
            // Old containers are checked with their own release's health settings.
            for (name, d) in by_service.iter_mut() {
                d.service = s.service_cfg(name);
            }
            let problems = ro.restore(&by_service).await;
            rec.finished_at = Some(Utc::now());
            rec.error = Some(error.clone());
            if let Some(note) = crate::backup::rollback_note(&rec) {
                ctx.ui.warn(note);
            }
            if problems.is_empty() {
                rec.outcome = Outcome::RolledBack;
                s.engine.save_release(&s.scope, &rec).await?;
                let back = rec
                    .previous
                    .clone()
                    .unwrap_or_else(|| "nothing (first release)".into());
                ctx.ui.status(
                    "Rolled back",
                    format!(
                        "{}/{} to {back}; {} recorded as rolled back",
                        s.region, s.env, rec.id
                    ),
                );
                finish(
                    ctx,
                    Summary::of(s, "rolled_back", &rec, started, url),
                    ExitCode::RolledBack,
                )?;
                Err(Error::failed(
                    ExitCode::RolledBack,
                    anyhow!("{} failed and was rolled back: {error}", rec.id),
                ))
            } else {
                rec.outcome = Outcome::Failed;
                let _ = s.engine.save_release(&s.scope, &rec).await;
                let where_ = describe_live(s).await;
                Err(Error::failed(
                    ExitCode::NeedsPerson,
                    anyhow!("{} failed ({error}) and restoring the previous release failed too:\n  {}\nwhat runs now:\n{where_}", rec.id, problems.join("\n  ")),
                )
                .with_hint("check the containers above; `packfy-deploy rollback` retries the restore"))
            }
        }
    }
}

impl Summary {
    /// The summary of one region's run, with nothing named yet.
    fn new(s: &Session, outcome: &str, started: Instant) -> Summary {
        Summary::for_region(&s.region, &s.env, outcome, started)
    }

    /// The summary of one region's run on any target, with nothing named yet.
    pub(crate) fn for_region(region: &str, env: &str, outcome: &str, started: Instant) -> Summary {
        Summary {
            region: region.to_string(),
            environment: env.to_string(),
            outcome: outcome.into(),
            release: None,
            previous: None,
            version: None,
            duration_secs: started.elapsed().as_secs_f64(),
            error: None,
            url: None,
        }
    }

    /// The summary of a recorded release.
    fn of(
        s: &Session,
        outcome: &str,
        rec: &Release,
        started: Instant,
        url: Option<String>,
    ) -> Summary {
        Summary {
            release: Some(rec.id.clone()),
            previous: rec.previous.clone(),
            version: Some(rec.version.clone()),
            url,
            ..Summary::new(s, outcome, started)
        }
    }
}

/// Prints the final summary (an NDJSON line with -o json) and returns the exit code.
pub(crate) fn finish(ctx: &Ctx, summary: Summary, code: ExitCode) -> Result<ExitCode> {
    if ctx.ui.json() {
        let mut v = serde_json::to_value(summary).map_err(anyhow::Error::from)?;
        v["event"] = "summary".into();
        v["time"] = Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
        ctx.ui.out_line(&v);
    }
    Ok(code)
}

fn new_record(
    s: &Session,
    number: u64,
    kind: Kind,
    version: &str,
    previous: Option<String>,
    target: Option<String>,
) -> Release {
    release_record(&s.region, &s.env, number, kind, version, previous, target)
}

/// A new `in_progress` release of a region on any target.
pub(crate) fn release_record(
    region: &str,
    env: &str,
    number: u64,
    kind: Kind,
    version: &str,
    previous: Option<String>,
    target: Option<String>,
) -> Release {
    Release {
        id: format!("r{number}"),
        number,
        region: region.to_string(),
        environment: env.to_string(),
        kind,
        version: version.into(),
        outcome: Outcome::InProgress,
        previous,
        target,
        actor: release::actor(),
        command: release::command_line(),
        git_commit: release::git_commit(),
        started_at: Utc::now(),
        finished_at: None,
        services: Vec::new(),
        error: None,
        runner: release::runner(),
        before: Vec::new(),
        backups: Vec::new(),
    }
}

/// For `status`: an interrupted release is one still `in_progress` with no live lock holder.
pub fn interrupted(
    history: &[Release],
    lock: Option<&crate::docker::state::Lock>,
) -> Option<String> {
    let last = history
        .last()
        .filter(|r| r.outcome == Outcome::InProgress)?;
    if lock.is_some_and(|l| !l.is_stale(Utc::now())) && !release::runner_is_dead(&last.runner) {
        return None;
    }
    Some(format!(
        "release {} ({}) was interrupted (started {} by {} on {}); `packfy-deploy rollback --region {}` restores {}",
        last.id,
        last.version,
        last.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        last.actor,
        last.runner,
        last.region,
        last.previous.as_deref().unwrap_or("the state before it")
    ))
}

/// The release serving now: the newest that succeeded.
pub fn serving(history: &[Release]) -> Option<&Release> {
    history
        .iter()
        .rev()
        .find(|r| r.outcome == Outcome::Succeeded)
}

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
        rec.containers.push(release::ContainerRecord {
            name: c.name.clone(),
            id: c.id.clone(),
            addr: None,
        });
    }
    out
}

async fn describe_live(s: &Session) -> String {
    match s.live().await {
        Ok(live) => live
            .iter()
            .map(|c| {
                format!(
                    "  {} {} ({})",
                    c.name,
                    if c.running { "running" } else { "stopped" },
                    c.version
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("  (cannot list containers: {e})"),
    }
}

/// Removes retained containers of releases beyond `keep_releases`, in this scope only.
/// `history` is every record of the scope, oldest first (as just saved: not read again).
async fn prune(ctx: &Ctx, s: &Session, history: &[Release]) {
    let keep: Vec<String> = history
        .iter()
        .rev()
        .filter(|r| matches!(r.outcome, Outcome::Succeeded | Outcome::Reverted))
        .take(s.cfg.keep_releases as usize + 1)
        .flat_map(|r| std::iter::once(r.id.clone()).chain(r.target.clone()))
        .collect();
    if let Ok(live) = s.live().await {
        for c in live
            .iter()
            .filter(|c| !c.running && !keep.contains(&c.release))
        {
            ctx.ui.verbose(format!(
                "pruning {} (release {} is no longer kept)",
                c.name, c.release
            ));
            let _ = s.engine.remove(&c.id).await;
        }
    }
    if history.len() > RECORDS_KEPT {
        let gone: Vec<&str> = history[..history.len() - RECORDS_KEPT]
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        let _ = s.engine.forget_releases(&s.scope, &gone).await;
    }
}

/// A release left `in_progress` by a run that is gone: put back what it replaced.
/// Returns whether it recovered one.
async fn recover_interrupted(ctx: &Ctx, s: &Session, history: &[Release]) -> Result<bool> {
    let Some(last) = history.last().filter(|r| r.outcome == Outcome::InProgress) else {
        return Ok(false);
    };
    ctx.ui.warn(recovering(last));
    let target = last
        .previous
        .as_ref()
        .and_then(|p| history.iter().find(|r| &r.id == p))
        .cloned();
    let code = restore_release(ctx, s, target.as_ref(), last, history).await?;
    if code != ExitCode::Success {
        return Err(Error::failed(
            code,
            anyhow!("could not recover the interrupted release {}", last.id),
        ));
    }
    Ok(true)
}

/// Makes `target` (or nothing, for None) serve instead of what runs now: its retained
/// containers restart, others are created from its record, everything else is drained and
/// stopped. Used by `rollback` and by interrupted-release recovery (`replaced` is the release
/// being undone, marked rolled back there).
async fn restore_release(
    ctx: &Ctx,
    s: &Session,
    target: Option<&Release>,
    replaced: &Release,
    history: &[Release],
) -> Result<ExitCode> {
    let live = s.live().await?;
    let interrupted = replaced.outcome == Outcome::InProgress;
    let number = history.iter().map(|r| r.number).max().unwrap_or(0) + 1;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let release_name = if interrupted {
        replaced.id.clone()
    } else {
        format!("r{number}")
    };
    let ro = Rollout {
        engine: &s.engine,
        lb: s.lb.as_ref(),
        backends: s.backends(),
        scope: &s.scope,
        release: release_name,
        version: target.map_or(String::new(), |t| t.version.clone()),
        ui: &ctx.ui,
        ledger: ledger.clone(),
    };
    let mut desired = Vec::new();
    if let Some(t) = target {
        for sr in &t.services {
            let d = Desired::from_record(sr, &s.service_cfg(&sr.name)).map_err(|e| {
                Error::usage_hint(
                    e.to_string(),
                    "it is needed to recreate a container of the release",
                )
            })?;
            desired.push(d);
        }
    }
    let mut rec = new_record(
        s,
        number,
        Kind::Rollback,
        target.map_or("", |t| t.version.as_str()),
        Some(replaced.id.clone()),
        target.map(|t| t.id.clone()),
    );
    rec.services = target.map(|t| t.services.clone()).unwrap_or_default();
    rec.before = snapshot(&live);
    if !interrupted {
        s.engine.save_release(&s.scope, &rec).await?;
    }
    let started = Instant::now();
    let work = async {
        for d in &desired {
            let of_target = |c: &&LiveContainer| {
                c.service == d.name
                    && target.is_some_and(|t| {
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
                .map(|c| s.member(c))
                .collect();
            let old: Vec<Member> = live
                .iter()
                .filter(|c| c.running && c.service == d.name && !keep.iter().any(|k| k.id == c.id))
                .map(|c| s.member(c))
                .collect();
            let wanted = d.replicas.saturating_sub(keep.len() as u32);
            // A rollback goes back in one batch: the retained containers start together and the
            // replaced ones leave together, still never below the wanted count in rotation.
            let steps = rolling_steps(wanted, wanted.max(1), 0, old.len() as u32);
            ctx.ui.status(
                "Restoring",
                format!(
                    "{}: {} running, {} retained to start, {} to replace",
                    d.name,
                    keep.len(),
                    reuse.len().min(wanted as usize),
                    old.len()
                ),
            );
            ro.service(d, old, reuse, &steps, next_index(&live, &d.name))
                .await?;
        }
        // Services the target did not have (or no target at all): stop what runs.
        for c in live
            .iter()
            .filter(|c| c.running && !desired.iter().any(|d| d.name == c.service))
        {
            let m = s.member(c);
            if let (Some(lb), Some((b, srv))) = (s.lb.as_ref(), &m.server) {
                let _ = lb.del_server(b, srv).await;
            }
            s.engine.stop(&c.id, Duration::from_secs(10)).await?;
        }
        anyhow::Ok(())
    };
    let outcome = interruptible(work).await;
    match outcome {
        Ok(()) => {
            let mut replaced = replaced.clone();
            replaced.outcome = if interrupted {
                Outcome::RolledBack
            } else {
                Outcome::Reverted
            };
            if interrupted {
                replaced.error = Some("interrupted; recovered by the next run".into());
                replaced.finished_at = Some(Utc::now());
            }
            s.engine.save_release(&s.scope, &replaced).await?;
            if !interrupted {
                rec.outcome = Outcome::Succeeded;
                rec.finished_at = Some(Utc::now());
                s.engine.save_release(&s.scope, &rec).await?;
            }
            ctx.ui.status(
                "Restored",
                format!(
                    "{}/{} to {} in {:.1}s",
                    s.region,
                    s.env,
                    target.map_or("nothing (no earlier release)".to_string(), |t| format!(
                        "{} ({})",
                        t.id, t.version
                    )),
                    started.elapsed().as_secs_f64()
                ),
            );
            Ok(ExitCode::Success)
        }
        Err(e) => {
            ctx.ui.error(format!("restoring failed: {e:#}"));
            let by_service: HashMap<String, Desired> = desired
                .iter()
                .map(|d| (d.name.clone(), d.clone()))
                .collect();
            let problems = ro.restore(&by_service).await;
            rec.error = Some(format!("{e:#}"));
            rec.finished_at = Some(Utc::now());
            rec.outcome = if problems.is_empty() {
                Outcome::RolledBack
            } else {
                Outcome::Failed
            };
            if !interrupted {
                let _ = s.engine.save_release(&s.scope, &rec).await;
            }
            if problems.is_empty() {
                Err(Error::failed(
                    ExitCode::RolledBack,
                    anyhow!("the rollback failed ({e:#}); what ran before it runs again"),
                ))
            } else {
                Err(Error::failed(ExitCode::NeedsPerson, anyhow!("the rollback failed ({e:#}) and so did undoing it:\n  {}\nwhat runs now:\n{}", problems.join("\n  "), describe_live(s).await)))
            }
        }
    }
}

/// What a rollback's lock says it is for.
pub(crate) fn rollback_reason(to: Option<&str>) -> String {
    format!(
        "rollback{}",
        to.map(|t| format!(" to {t}")).unwrap_or_default()
    )
}

/// `rollback --region R [--to ID]`
pub async fn rollback(
    ctx: &Ctx,
    region: &str,
    to: Option<&str>,
    lock_wait: Option<Duration>,
) -> Result<ExitCode> {
    if crate::k8s::targets_kubernetes(ctx, region)? {
        return crate::k8s::rollback(ctx, region, to, lock_wait).await;
    }
    let started = Instant::now();
    let s = Session::open(ctx, region).await?;
    let lock = s.lock(ctx, &rollback_reason(to), lock_wait).await?;
    let result = async {
        let history = s.engine.releases(&s.scope).await?;
        if let Some(last) = history.last().filter(|r| r.outcome == Outcome::InProgress) {
            if to.is_none() {
                // The interrupted release is what a rollback undoes.
                recover_interrupted(ctx, &s, &history).await?;
                return finish(
                    ctx,
                    Summary {
                        release: Some(last.id.clone()),
                        previous: last.previous.clone(),
                        ..Summary::new(&s, "rolled_back", started)
                    },
                    ExitCode::Success,
                );
            }
        }
        let current = serving(&history);
        let target = release::rollback_target(&history, current, to).map_err(|e| {
            Error::usage_hint(
                format!("cannot roll back {}/{}: {e}", s.region, s.env),
                "`packfy-deploy history --region R` lists the releases",
            )
        })?;
        let Some(current) = current else {
            return Err(Error::usage(format!(
                "{}/{} has no serving release to roll back from",
                s.region, s.env
            )));
        };
        ctx.ui.status(
            "Rolling back",
            format!(
                "{}/{} from {} ({}) to {} ({})",
                s.region, s.env, current.id, current.version, target.id, target.version
            ),
        );
        let hook_env = HookEnv {
            region: s.region.clone(),
            environment: s.env.clone(),
            version: target.version.clone(),
            release: target.id.clone(),
            previous: Some(current.id.clone()),
            outcome: None,
        };
        s.pre_hooks(ctx, HookKind::PreRollback, &hook_env).await?;
        let code = restore_release(ctx, &s, Some(target), current, &history).await?;
        after_rollback(ctx, &s.notifier(), &s.root, target, current, hook_env).await;
        finish(
            ctx,
            Summary {
                release: Some(target.id.clone()),
                previous: Some(current.id.clone()),
                version: Some(target.version.clone()),
                ..Summary::new(&s, "succeeded", started)
            },
            code,
        )
    }
    .await;
    if let Err(e) = s.engine.unlock(&s.scope, &lock).await {
        ctx.ui.warn(format!("could not release the lock: {e:#}"));
    }
    result
}
