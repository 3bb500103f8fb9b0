//! The Kubernetes target: a region's kubeconfig context and namespace.
//!
//! `deploy`, read top to bottom:
//! 1. read the region, render its templates and resolve its secrets (nothing touched on error:
//!    exit 2); reach the API server (exit 6 naming it when it does not answer);
//! 2. take the lock, a `coordination.k8s.io` Lease (exit 5 naming the holder; a stale one is
//!    taken over), renewed while the deploy runs;
//! 3. recover a release left `in_progress` by a killed run;
//! 4. ask the API server what applying would change (server-side dry-run apply against live):
//!    conflicts with another field manager stop here (exit 2, `--force-conflicts` takes over);
//!    nothing changing means nothing done (no record, no new ReplicaSet);
//! 5. back up: every object the release touches, as live now, into a new release record
//!    (`in_progress`) in the namespace;
//! 6. server-side apply (field manager `packfy-deploy`), delete what the previous release had
//!    and this one does not, wait for every Deployment by watching (`wait`), bake against the
//!    region's `health_url` when it has one;
//! 7. on failure or signal: re-apply the backup, delete what the release added, wait, record
//!    `rolled_back` (exit 3), or `failed` when that fails too (exit 4).

pub mod lease;
pub mod objects;
pub mod records;
pub mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};

use crate::config::model::{EnvValue, RegionConfig};
use crate::config::Environment;
use crate::deploy::{self, DeployOptions, Notify, Summary};
use crate::docker::state::{Acquire, Lock};
use crate::error::{Error, ExitCode, Result};
use crate::hooks::{self, HookEnv, HookKind};
use crate::notify::NotifyKind;
use crate::ops::Ctx;
use crate::release::{self, Kind, Outcome, Release, ServiceRecord};
use objects::Object;
use records::{Prior, Record};

/// The field manager of every apply.
pub const MANAGER: &str = "packfy-deploy";
/// How often a waiting `--lock-wait` looks again.
const LOCK_POLL: Duration = Duration::from_secs(1);
/// How long the API server gets to answer the first request before it counts as unreachable.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a region targets Kubernetes (decided once per command, from its configuration).
pub fn targets_kubernetes(ctx: &Ctx, region: &str) -> Result<bool> {
    let regions = ctx.load()?;
    let (_, cfg) = ctx.config(&regions, region)?;
    Ok(cfg.target.kubernetes.is_some())
}

/// A region's cluster, reached.
pub struct Cluster {
    pub region: String,
    pub env: Environment,
    pub cfg: RegionConfig,
    pub client: kube::Client,
    pub namespace: String,
    /// The kubeconfig context and the API server's address, for messages.
    pub context: String,
    pub server: String,
    pub root: std::path::PathBuf,
}

impl Cluster {
    /// Reads the region and reaches its API server.
    pub async fn open(ctx: &Ctx, region: &str) -> Result<Cluster> {
        let regions = ctx.load()?;
        let (_, cfg) = ctx.config(&regions, region)?;
        let Some(target) = cfg.target.kubernetes.clone() else {
            return Err(Error::usage(format!(
                "region '{region}' targets Docker, not Kubernetes"
            )));
        };
        let kubeconfig = Kubeconfig::read().map_err(|e| {
            Error::usage_hint(
                format!("cannot read the kubeconfig for region '{region}': {e}"),
                "set KUBECONFIG, or write ~/.kube/config",
            )
        })?;
        let context = target
            .context
            .clone()
            .or(kubeconfig.current_context.clone())
            .unwrap_or_default();
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .map_err(|e| {
                let known: Vec<String> =
                    kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
                Error::usage_hint(
                    format!("region '{region}': kubeconfig context '{context}' is not usable: {e}"),
                    format!(
                        "target.kubernetes.context must name a context of the kubeconfig ({})",
                        if known.is_empty() {
                            "it has none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("packfy-deploy/", env!("CARGO_PKG_VERSION"))),
        ));
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| {
            Error::failed(
                ExitCode::Unreachable,
                anyhow!("cannot make a client for {server}: {e}"),
            )
        })?;
        let unreachable = |why: String| {
            Error::failed(
                ExitCode::Unreachable,
                anyhow!("cannot reach the Kubernetes API server of region '{region}' at {server} (context {context}): {why}"),
            )
            .with_hint(format!("is the cluster up? `kubectl --context {context} cluster-info`; nothing was changed"))
        };
        match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer in {}s",
                    REACH_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(_)) => {}
        }
        Ok(Cluster {
            region: region.to_string(),
            env: ctx.env_or_default(),
            root: ctx.sibling("."),
            namespace: target.namespace.clone(),
            cfg,
            client,
            context,
            server,
        })
    }

    fn env(&self) -> &str {
        self.env.as_str()
    }

    fn where_(&self) -> String {
        format!("{}/{}", self.region, self.env())
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn api(&self, o: &Object) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &o.resource())
    }

    fn notifier<'a>(&'a self, ctx: &'a Ctx) -> Notify<'a> {
        Notify {
            cfg: &self.cfg,
            region: &self.region,
            env: self.env.as_str(),
            ui: &ctx.ui,
        }
    }

    /// A failed API call: exit 6 when the server could not be reached, else exit 4 (the
    /// state may be half-changed; callers that changed nothing map it themselves).
    fn api_error(&self, what: &str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) => Error::failed(
                ExitCode::NeedsPerson,
                anyhow!(
                    "{what} in namespace {}: {} ({})",
                    self.namespace,
                    s.message,
                    s.code
                ),
            ),
            other => Error::failed(
                ExitCode::Unreachable,
                anyhow!(
                    "{what}: the API server at {} did not answer: {other}",
                    self.server
                ),
            ),
        }
    }

    /// The release records, oldest first.
    pub async fn history(&self) -> Result<Vec<Record>> {
        records::list(&self.secrets(), &self.cfg.app, self.env())
            .await
            .map_err(|e| Error::failed(ExitCode::Unreachable, e))
    }

    /// The objects of a release of `version`: the rendered templates, and one Secret per
    /// service with secret variables (values resolved here; never printed or recorded).
    pub fn desired(&self, ctx: &Ctx, version: &str) -> Result<Vec<Object>> {
        let templates = crate::render::templates_or_embedded(&ctx.sibling("templates"))
            .map_err(|e| Error::usage_hint(e.to_string(), "fix the templates directory"))?;
        let files = crate::render::render(&templates, &self.region, self.env, &self.cfg, version)
            .map_err(|e| Error::usage_hint(e.to_string(), "fix the template"))?;
        let rendered = objects::parse_manifests(&files, &self.namespace).map_err(|e| {
            Error::usage_hint(
                format!("a rendered manifest is not an object: {e}"),
                "fix the template",
            )
        })?;
        let mut out = Vec::new();
        for (sname, svc) in &self.cfg.services {
            let mut values = BTreeMap::new();
            for (var, v) in &svc.env {
                if let EnvValue::Secret { secret } = v {
                    let value =
                        crate::deploy::desired::resolve_secret(&secret.0).map_err(|why| {
                            Error::usage_hint(
                                format!(
                                    "secret {} for {sname}.env.{var} is not available: {why}",
                                    secret.0
                                ),
                                "set it where the deploy runs; nothing was changed",
                            )
                        })?;
                    values.insert(var.clone(), Value::String(value));
                }
            }
            if values.is_empty() {
                continue;
            }
            let name = format!("{}-secrets", crate::render::object_name(&self.cfg, sname));
            out.push(Object {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: name.clone(),
                manifest: json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": self.namespace, "labels": {
                        "app.kubernetes.io/name": self.cfg.app,
                        "app.kubernetes.io/component": sname,
                        "app.kubernetes.io/managed-by": MANAGER,
                    }},
                    "type": "Opaque",
                    "stringData": values,
                }),
            });
        }
        out.extend(rendered);
        Ok(out)
    }

    /// The object as live now, stripped; None when it does not exist.
    async fn live(&self, o: &Object) -> Result<Option<Object>> {
        let found = self
            .api(o)
            .get_opt(&o.name)
            .await
            .map_err(|e| self.api_error(&format!("cannot read {}", o.key()), e))?;
        Ok(found.and_then(|d| serde_json::to_value(d).ok()).map(|v| {
            let mut x = Object::from_value(objects::strip(&v)).unwrap_or_else(|| o.clone());
            x.manifest = objects::strip(&x.manifest);
            x
        }))
    }

    /// Server-side apply of one object (`dry_run`: what the result would be, changing nothing).
    async fn apply(
        &self,
        o: &Object,
        force: bool,
        dry_run: bool,
    ) -> std::result::Result<Object, kube::Error> {
        let mut pp = PatchParams::apply(MANAGER);
        if force {
            pp = pp.force();
        }
        if dry_run {
            pp = pp.dry_run();
        }
        let d = self
            .api(o)
            .patch(&o.name, &pp, &Patch::Apply(&o.manifest))
            .await?;
        let v = serde_json::to_value(d).map_err(kube::Error::SerdeError)?;
        Ok(Object {
            manifest: objects::strip(&v),
            ..o.clone()
        })
    }

    async fn delete(&self, o: &Object) -> Result<()> {
        match self
            .api(o)
            .delete(&o.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.api_error(&format!("cannot delete {}", o.key()), e)),
        }
    }

    /// Creates the namespace when it is missing (as `helm --create-namespace`).
    async fn ensure_namespace(&self, ctx: &Ctx) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if api
            .get_opt(&self.namespace)
            .await
            .map_err(|e| self.api_error("cannot read the namespace", e))?
            .is_some()
        {
            return Ok(());
        }
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": self.namespace}}))
            .map_err(anyhow::Error::from)?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {
                ctx.ui
                    .status("Created", format!("namespace {}", self.namespace));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.api_error("cannot create the namespace", e)),
        }
    }

    /// What applying `objs` would do to each, asked of the API server (dry run). Conflicts with
    /// another field manager and objects the server refuses are reported here, before anything
    /// changes (exit 2).
    async fn changes(&self, objs: &[Object], force: bool) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        for o in objs {
            let live = self.live(o).await?;
            let after = match self.apply(o, force, true).await {
                Ok(a) => a,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Err(Error::usage_hint(
                        format!("{} in namespace {}: {}", o.key(), self.namespace, s.message),
                        "another field manager owns these fields; `deploy --force-conflicts` takes them over for packfy-deploy. Nothing was changed",
                    ))
                }
                Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                    return Err(Error::usage_hint(
                        format!("the API server refuses {}: {}", o.key(), s.message),
                        "fix the template or the region's values; nothing was changed",
                    ))
                }
                Err(e) => return Err(self.api_error(&format!("cannot dry-run {}", o.key()), e)),
            };
            let action = match &live {
                None => Action::Create,
                Some(l) if l.manifest == after.manifest => Action::Unchanged,
                Some(_) => Action::Update,
            };
            out.push(Change {
                object: o.clone(),
                live,
                after: Some(after),
                action,
            });
        }
        Ok(out)
    }

    /// Takes the lock, waiting up to `wait`; exit 5 naming the holder when it stays held.
    async fn lock(
        &self,
        ctx: &Ctx,
        reason: &str,
        wait: Option<Duration>,
    ) -> Result<(Lock, lease::Renewal)> {
        let name = lease::name(&self.cfg.app, self.env());
        let holder = release::actor();
        let until = Instant::now() + wait.unwrap_or_default();
        let ttl = self.cfg.lock_ttl.0;
        loop {
            let got = lease::try_lock(&self.leases(), &name, &holder, reason, ttl, true)
                .await
                .map_err(|e| self.api_error("cannot take the lock", e))?;
            match got {
                Acquire::Acquired(lock) => {
                    let renewal =
                        lease::Renewal::start(self.leases(), name, lock.token.clone(), ttl);
                    ctx.ui.status(
                        "Locked",
                        format!(
                            "{} (Lease {}/{}, {})",
                            self.where_(),
                            self.namespace,
                            lease::name(&self.cfg.app, self.env()),
                            lock.holder
                        ),
                    );
                    return Ok((lock, renewal));
                }
                Acquire::Held(other) if other.is_stale(Utc::now()) && !other.token.is_empty() => {
                    ctx.ui.warn(format!(
                        "taking over a stale lock on {} held by {}",
                        self.where_(),
                        other.describe()
                    ));
                    lease::take_over(&self.leases(), &name, &other)
                        .await
                        .map_err(|e| self.api_error("cannot take over the stale lock", e))?;
                }
                Acquire::Held(other) if Instant::now() < until => {
                    ctx.ui
                        .verbose(format!("waiting for the lock held by {}", other.describe()));
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Acquire::Held(other) => {
                    return Err(Error::failed(
                        ExitCode::Locked,
                        anyhow!("{} is locked by {}", self.where_(), other.describe()),
                    )
                    .with_hint("wait with --lock-wait 10m, or if that run is dead: packfy-deploy unlock --force"));
                }
            }
        }
    }

    async fn unlock(&self, ctx: &Ctx, lock: (Lock, lease::Renewal)) {
        let (lock, renewal) = lock;
        drop(renewal);
        if let Err(e) = lease::release(
            &self.leases(),
            &lease::name(&self.cfg.app, self.env()),
            &lock.token,
        )
        .await
        {
            ctx.ui.warn(format!("could not release the lock: {e}"));
        }
    }

    /// The longest any Deployment of the region may take: its progress deadline and a margin
    /// for the controller to say so.
    fn rollout_limit(&self) -> Duration {
        self.cfg
            .services
            .values()
            .map(|s| s.rollout.progress_deadline.0)
            .max()
            .unwrap_or(Duration::from_secs(600))
            + Duration::from_secs(30)
    }

    /// Waits for every Deployment among `objs`, together; the first failure ends the wait.
    async fn wait_all(&self, ctx: &Ctx, objs: &[&Object]) -> anyhow::Result<()> {
        let limit = self.rollout_limit();
        let waits = objs.iter().filter(|o| o.kind == "Deployment").map(|o| {
            let name = o.name.clone();
            async move {
                let line = wait::rollout(&self.client, &self.namespace, &name, limit, &ctx.ui)
                    .await
                    .map_err(|e| anyhow!(e))?;
                ctx.ui
                    .status("Rolled out", format!("Deployment/{name}: {line}"));
                anyhow::Ok(())
            }
        });
        futures_util::future::try_join_all(waits).await?;
        Ok(())
    }

    /// The optional HTTP bake: `health_url` must answer 2xx through the services' bake period.
    async fn bake(&self, ctx: &Ctx) -> anyhow::Result<()> {
        let Some(url) = self
            .cfg
            .target
            .kubernetes
            .as_ref()
            .and_then(|k| k.health_url.clone())
            .map(|u| crate::docker::expand_env(&u))
        else {
            return Ok(());
        };
        let period = self
            .cfg
            .services
            .values()
            .map(|s| s.rollout.bake.0)
            .max()
            .unwrap_or_default();
        let max_ratio = self
            .cfg
            .services
            .values()
            .map(|s| s.rollout.max_5xx_ratio)
            .fold(0.0, f64::max);
        let (client, _) =
            crate::notify::client().map_err(|e| anyhow!("cannot make an HTTP client: {e}"))?;
        ctx.ui
            .status("Baking", format!("{url} for {}s", period.as_secs()));
        let until = Instant::now() + period;
        let (mut total, mut failed, mut in_a_row) = (0u32, 0u32, 0u32);
        loop {
            total += 1;
            let result = client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let bad = match &result {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("status {}", r.status().as_u16())),
                Err(e) => Some(crate::notify::error_text(e)),
            };
            match bad {
                Some(why) => {
                    failed += 1;
                    in_a_row += 1;
                    ctx.ui.verbose(format!("bake: {url}: {why}"));
                    if in_a_row >= 3 {
                        return Err(anyhow!("bake: {url} failed 3 times in a row (last: {why})"));
                    }
                }
                None => in_a_row = 0,
            }
            if Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ratio = f64::from(failed) / f64::from(total);
        if failed == total || ratio > max_ratio {
            return Err(anyhow!(
                "bake: {failed} of {total} checks of {url} failed (allowed ratio {max_ratio})"
            ));
        }
        ctx.ui.status(
            "Verified",
            format!("{total} checks of {url}, {failed} failed"),
        );
        Ok(())
    }

    /// Puts back what `before` recorded: live objects re-applied (taking their fields back
    /// from anyone), objects that did not exist deleted, Deployments waited for. Secrets that
    /// existed keep their current values (records never hold them).
    async fn restore(&self, ctx: &Ctx, before: &[Prior]) -> std::result::Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for p in before {
            match &p.live {
                Some(o) if o.is_secret() => {}
                Some(o) => {
                    if let Err(e) = self.apply(o, true, false).await {
                        problems.push(format!("{}: cannot re-apply: {e}", p.key()));
                    }
                }
                None => {
                    let gone = Object {
                        api_version: p.api_version.clone(),
                        kind: p.kind.clone(),
                        name: p.name.clone(),
                        manifest: Value::Null,
                    };
                    if let Err(e) = self.delete(&gone).await {
                        problems.push(format!("{}: cannot delete: {e}", p.key()));
                    } else {
                        ctx.ui
                            .verbose(format!("deleted {} (the release added it)", p.key()));
                    }
                }
            }
        }
        let back: Vec<&Object> = before.iter().filter_map(|p| p.live.as_ref()).collect();
        if let Err(e) = self.wait_all(ctx, &back).await {
            problems.push(format!("{e:#}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// What the objects look like now (for the record's backup and `status`).
    async fn snapshot(&self, objs: &[&Object]) -> Result<Vec<Prior>> {
        let mut out = Vec::new();
        for o in objs {
            out.push(Prior {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                live: self.live(o).await?.map(|l| l.redacted()),
            });
        }
        Ok(out)
    }

    /// Deletes release records beyond `keep_releases` (at least 2), never `serving`'s.
    async fn prune(&self, ctx: &Ctx, serving: &str) {
        let Ok(history) = self.history().await else {
            return;
        };
        let keep = (self.cfg.keep_releases as usize).max(2);
        for gone in records::prune(
            &self.secrets(),
            &self.cfg.app,
            &history,
            keep,
            Some(serving),
        )
        .await
        {
            ctx.ui.verbose(format!(
                "pruned release record {gone} (keep_releases {keep})"
            ));
        }
    }

    async fn save(&self, rec: &Record) -> Result<()> {
        records::save(&self.secrets(), &self.cfg.app, rec)
            .await
            .map_err(|e| Error::failed(ExitCode::NeedsPerson, e))
    }

    fn new_release(
        &self,
        number: u64,
        kind: Kind,
        version: &str,
        previous: Option<String>,
        target: Option<String>,
    ) -> Release {
        deploy::release_record(
            &self.region,
            self.env(),
            number,
            kind,
            version,
            previous,
            target,
        )
    }
}

/// What a deploy does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Delete,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub object: Object,
    pub live: Option<Object>,
    pub after: Option<Object>,
    pub action: Action,
}

impl Change {
    /// `Deployment/packfy-web: update (2 fields)`; a Secret's values are never compared aloud.
    pub fn describe(&self) -> String {
        let verb = match self.action {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Delete => "delete (no longer rendered)",
        };
        let fields = match (&self.live, &self.after, self.action) {
            (Some(l), Some(a), Action::Update) => {
                let (mut x, mut y) = (BTreeMap::new(), BTreeMap::new());
                objects::flatten("", &l.redacted().manifest, &mut x);
                objects::flatten("", &a.redacted().manifest, &mut y);
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                let changed: Vec<&str> = keys
                    .into_iter()
                    .filter(|k| x.get(*k) != y.get(*k))
                    .map(String::as_str)
                    .collect();
                if changed.is_empty() {
                    // only secret values differ: say so without saying what
                    " (values)".to_string()
                } else {
                    format!(
                        " ({})",
                        changed
                            .iter()
                            .take(4)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                            + if changed.len() > 4 { ", …" } else { "" }
                    )
                }
            }
            _ => String::new(),
        };
        format!("{}: {verb}{fields}", self.object.key())
    }
}

/// The summary record of each service, for history (`image_id` stays empty: the cluster pulls).
fn service_records(cfg: &RegionConfig, objs: &[Object]) -> Vec<ServiceRecord> {
    use sha2::{Digest, Sha256};
    cfg.services
        .iter()
        .map(|(name, svc)| {
            let mine: Vec<Value> = objs
                .iter()
                .filter(|o| {
                    o.manifest
                        .pointer("/metadata/labels/app.kubernetes.io~1component")
                        .and_then(Value::as_str)
                        == Some(name)
                })
                .map(|o| o.redacted().manifest)
                .collect();
            let deployment = objs.iter().find(|o| {
                o.kind == "Deployment"
                    && o.manifest
                        .pointer("/metadata/labels/app.kubernetes.io~1component")
                        .and_then(Value::as_str)
                        == Some(name)
            });
            let image = deployment
                .and_then(|d| d.manifest.pointer("/spec/template/spec/containers/0/image"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let (mut env, mut refs) = (BTreeMap::new(), BTreeMap::new());
            for (k, v) in &svc.env {
                match v {
                    EnvValue::Plain(p) => {
                        env.insert(k.clone(), p.clone());
                    }
                    EnvValue::Secret { secret } => {
                        env.insert(k.clone(), format!("<secret:{}>", secret.0));
                        refs.insert(k.clone(), secret.0.clone());
                    }
                }
            }
            ServiceRecord {
                name: name.clone(),
                image,
                image_id: String::new(),
                replicas: svc.replicas,
                env,
                secret_refs: refs,
                container_port: svc.ports.first().map(|p| p.container),
                containers: Vec::new(),
                spec_hash: hex::encode(
                    &Sha256::digest(serde_json::to_vec(&mine).unwrap_or_default())[..8],
                ),
            }
        })
        .collect()
}

fn releases(history: &[Record]) -> Vec<Release> {
    history.iter().map(|r| r.release.clone()).collect()
}

/// `deploy --region R` on a Kubernetes region.
pub async fn deploy(ctx: &Ctx, region: &str, opts: &DeployOptions) -> Result<ExitCode> {
    let started = Instant::now();
    let c = Cluster::open(ctx, region).await?;
    if !c.cfg.backups.is_empty() {
        return Err(Error::usage_hint(
            format!("region '{region}' has `backups:` jobs, which run on Docker regions only"),
            "take the data backup in a pre_deploy hook for a Kubernetes region; nothing was changed",
        ));
    }
    let version = opts
        .version
        .clone()
        .or(c.cfg.version.clone())
        .ok_or_else(|| {
            Error::usage_hint(
                "no version to deploy",
                "pass --version V, or set `version:` in the region files",
            )
        })?;
    let objs = c.desired(ctx, &version)?;
    c.ensure_namespace(ctx).await?;
    let reason = opts
        .reason
        .clone()
        .unwrap_or_else(|| format!("deploy {version}"));
    let lock = c.lock(ctx, &reason, opts.lock_wait).await?;
    let result = locked_deploy(ctx, &c, &version, objs, opts.force_conflicts, started).await;
    c.unlock(ctx, lock).await;
    result
}

async fn locked_deploy(
    ctx: &Ctx,
    c: &Cluster,
    version: &str,
    objs: Vec<Object>,
    force: bool,
    started: Instant,
) -> Result<ExitCode> {
    let mut history = c.history().await?;
    if let Some(last) = history
        .last()
        .filter(|r| r.release.outcome == Outcome::InProgress)
    {
        recover(ctx, c, last).await?;
        history = c.history().await?;
    }
    let all = releases(&history);
    let current = deploy::serving(&all).cloned();
    let current_rec = current
        .as_ref()
        .and_then(|cur| history.iter().find(|r| r.release.id == cur.id));
    let mut changes = c.changes(&objs, force).await?;
    let rendered: BTreeSet<String> = objs.iter().map(Object::key).collect();
    for old in current_rec
        .map(|r| r.applied.as_slice())
        .unwrap_or_default()
    {
        if !rendered.contains(&old.key()) {
            let live = c.live(old).await?;
            if live.is_some() {
                changes.push(Change {
                    object: old.clone(),
                    live,
                    after: None,
                    action: Action::Delete,
                });
            }
        }
    }
    if changes.iter().all(|ch| ch.action == Action::Unchanged) {
        let id = current
            .as_ref()
            .map_or("the live objects".to_string(), |r| r.id.clone());
        ctx.ui.status(
            "Unchanged",
            format!("{}: {id} already is {version}; nothing to do", c.where_()),
        );
        return deploy::finish(
            ctx,
            Summary {
                release: current.as_ref().map(|r| r.id.clone()),
                version: Some(version.into()),
                ..Summary::for_region(&c.region, c.env(), "unchanged", started)
            },
            ExitCode::Success,
        );
    }
    for ch in changes.iter().filter(|ch| ch.action != Action::Unchanged) {
        ctx.ui.status("Plan", ch.describe());
    }
    let number = history.iter().map(|r| r.release.number).max().unwrap_or(0) + 1;
    let hook_env = HookEnv {
        region: c.region.clone(),
        environment: c.env().to_string(),
        version: version.to_string(),
        release: format!("r{number}"),
        previous: current.as_ref().map(|r| r.id.clone()),
        outcome: None,
    };
    deploy::pre_hooks(ctx, &c.cfg, &c.root, HookKind::PreDeploy, &hook_env).await?;
    let notify = c.notifier(ctx);
    notify
        .send(
            NotifyKind::Start,
            version,
            Some(hook_env.release.clone()),
            hook_env.previous.clone(),
            None,
        )
        .await;
    let touched: Vec<&Object> = changes.iter().map(|ch| &ch.object).collect();
    let mut rec = Record {
        release: c.new_release(
            number,
            Kind::Deploy,
            version,
            hook_env.previous.clone(),
            None,
        ),
        applied: objs.iter().map(Object::redacted).collect(),
        before: c.snapshot(&touched).await?,
    };
    rec.release.services = service_records(&c.cfg, &objs);
    c.save(&rec).await?;
    ctx.ui.status(
        "Backed up",
        format!(
            "{} object(s) as live now, in release record {}",
            rec.before.iter().filter(|p| p.live.is_some()).count(),
            records::name(&c.cfg.app, c.env(), &rec.release.id)
        ),
    );
    let work = async {
        for ch in &changes {
            match ch.action {
                Action::Unchanged => {}
                Action::Delete => c.delete(&ch.object).await.map_err(|e| anyhow!("{e}"))?,
                Action::Create | Action::Update => {
                    c.apply(&ch.object, force, false)
                        .await
                        .map_err(|e| anyhow!("cannot apply {}: {e}", ch.object.key()))?;
                    ctx.ui.verbose(format!("applied {}", ch.object.key()));
                }
            }
        }
        ctx.ui.status(
            "Applied",
            format!(
                "{} object(s) with server-side apply (field manager {MANAGER})",
                changes
                    .iter()
                    .filter(|ch| ch.action != Action::Unchanged)
                    .count()
            ),
        );
        let deployments: Vec<&Object> = objs.iter().collect();
        c.wait_all(ctx, &deployments).await?;
        c.bake(ctx).await?;
        if !c.cfg.hooks.post_deploy.is_empty() {
            ctx.ui.status("Hooks", "post_deploy");
            let env = HookEnv {
                outcome: Some("succeeded".into()),
                ..hook_env.clone()
            };
            hooks::run(
                HookKind::PostDeploy,
                &c.cfg.hooks.post_deploy,
                &env,
                &c.root,
                &ctx.ui,
            )
            .await?;
        }
        anyhow::Ok(())
    };
    let outcome = deploy::interruptible(work).await;
    let (id, previous) = (Some(rec.release.id.clone()), rec.release.previous.clone());
    match outcome {
        Ok(()) => {
            rec.release.outcome = Outcome::Succeeded;
            rec.release.finished_at = Some(Utc::now());
            c.save(&rec).await?;
            c.prune(ctx, &rec.release.id).await;
            ctx.ui.status(
                "Deployed",
                format!(
                    "{} {} ({}) in {:.1}s",
                    c.where_(),
                    rec.release.id,
                    version,
                    started.elapsed().as_secs_f64()
                ),
            );
            notify
                .send(NotifyKind::Success, version, id, previous, None)
                .await;
            deploy::finish(
                ctx,
                summary(c, "succeeded", &rec.release, started),
                ExitCode::Success,
            )
        }
        Err(e) => {
            let error = format!("{e:#}");
            ctx.ui.status(
                "Failed",
                format!(
                    "{} of {}: {}",
                    rec.release.id,
                    c.where_(),
                    error.lines().next().unwrap_or("")
                ),
            );
            ctx.ui.status(
                "Rolling back",
                format!("to what ran before {}", rec.release.id),
            );
            notify
                .send(
                    NotifyKind::Failure,
                    version,
                    id.clone(),
                    previous.clone(),
                    Some(error.clone()),
                )
                .await;
            let restored = c.restore(ctx, &rec.before).await;
            rec.release.finished_at = Some(Utc::now());
            rec.release.error = Some(error.clone());
            match restored {
                Ok(()) => {
                    rec.release.outcome = Outcome::RolledBack;
                    c.save(&rec).await?;
                    let back = previous
                        .clone()
                        .unwrap_or_else(|| "nothing (first release)".into());
                    ctx.ui.status(
                        "Rolled back",
                        format!(
                            "{} to {back}; {} recorded as rolled back",
                            c.where_(),
                            rec.release.id
                        ),
                    );
                    let detail = format!("{} failed and {back} serves again", rec.release.id);
                    notify
                        .send(NotifyKind::Rollback, version, id, previous, Some(detail))
                        .await;
                    deploy::finish(
                        ctx,
                        summary(c, "rolled_back", &rec.release, started),
                        ExitCode::RolledBack,
                    )?;
                    Err(Error::failed(
                        ExitCode::RolledBack,
                        anyhow!("{} failed and was rolled back: {error}", rec.release.id),
                    ))
                }
                Err(problems) => {
                    rec.release.outcome = Outcome::Failed;
                    let _ = c.save(&rec).await;
                    Err(Error::failed(
                        ExitCode::NeedsPerson,
                        anyhow!("{} failed ({error}) and restoring the previous release failed too:\n  {}", rec.release.id, problems.join("\n  ")),
                    )
                    .with_hint(format!("`kubectl -n {} get deploy,rs,pods` shows what runs; `packfy-deploy rollback` retries the restore", c.namespace)))
                }
            }
        }
    }
}

fn summary(c: &Cluster, outcome: &str, r: &Release, started: Instant) -> Summary {
    Summary {
        release: Some(r.id.clone()),
        previous: r.previous.clone(),
        version: Some(r.version.clone()),
        ..Summary::for_region(&c.region, c.env.as_str(), outcome, started)
    }
}

/// A release left `in_progress` by a run that is gone (we hold the lock, so it is gone): put
/// back its backup and record it rolled back.
async fn recover(ctx: &Ctx, c: &Cluster, last: &Record) -> Result<()> {
    let r = &last.release;
    ctx.ui.warn(format!(
        "release {} ({}) was interrupted: started {} by {} on {}, never finished; restoring {}",
        r.id,
        r.version,
        r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        r.actor,
        r.runner,
        r.previous.as_deref().unwrap_or("the state before it")
    ));
    let mut rec = last.clone();
    match c.restore(ctx, &last.before).await {
        Ok(()) => {
            rec.release.outcome = Outcome::RolledBack;
            rec.release.error = Some("interrupted; recovered by the next run".into());
            rec.release.finished_at = Some(Utc::now());
            c.save(&rec).await?;
            ctx.ui.status(
                "Restored",
                format!(
                    "{} to {}",
                    c.where_(),
                    r.previous.as_deref().unwrap_or("the state before it")
                ),
            );
            Ok(())
        }
        Err(problems) => Err(Error::failed(
            ExitCode::NeedsPerson,
            anyhow!(
                "could not recover the interrupted release {}:\n  {}",
                r.id,
                problems.join("\n  ")
            ),
        )),
    }
}

/// `rollback --region R [--to ID]` on a Kubernetes region.
pub async fn rollback(
    ctx: &Ctx,
    region: &str,
    to: Option<&str>,
    lock_wait: Option<Duration>,
) -> Result<ExitCode> {
    let started = Instant::now();
    let c = Cluster::open(ctx, region).await?;
    let lock = c
        .lock(
            ctx,
            &format!(
                "rollback{}",
                to.map(|t| format!(" to {t}")).unwrap_or_default()
            ),
            lock_wait,
        )
        .await?;
    let result = locked_rollback(ctx, &c, to, started).await;
    c.unlock(ctx, lock).await;
    result
}

async fn locked_rollback(
    ctx: &Ctx,
    c: &Cluster,
    to: Option<&str>,
    started: Instant,
) -> Result<ExitCode> {
    let history = c.history().await?;
    if let Some(last) = history
        .last()
        .filter(|r| r.release.outcome == Outcome::InProgress)
    {
        if to.is_none() {
            recover(ctx, c, last).await?;
            return deploy::finish(
                ctx,
                Summary {
                    release: Some(last.release.id.clone()),
                    previous: last.release.previous.clone(),
                    ..Summary::for_region(&c.region, c.env(), "rolled_back", started)
                },
                ExitCode::Success,
            );
        }
    }
    let all = releases(&history);
    let current = deploy::serving(&all);
    let target = release::rollback_target(&all, current, to).map_err(|e| {
        Error::usage_hint(
            format!("cannot roll back {}: {e}", c.where_()),
            "`packfy-deploy history --region R` lists the releases",
        )
    })?;
    let Some(current) = current else {
        return Err(Error::usage(format!(
            "{} has no serving release to roll back from",
            c.where_()
        )));
    };
    let find = |id: &str| history.iter().find(|r| r.release.id == id).expect("listed");
    let (target_rec, current_rec) = (find(&target.id), find(&current.id));
    ctx.ui.status(
        "Rolling back",
        format!(
            "{} from {} ({}) to {} ({})",
            c.where_(),
            current.id,
            current.version,
            target.id,
            target.version
        ),
    );
    let hook_env = HookEnv {
        region: c.region.clone(),
        environment: c.env().to_string(),
        version: target.version.clone(),
        release: target.id.clone(),
        previous: Some(current.id.clone()),
        outcome: None,
    };
    deploy::pre_hooks(ctx, &c.cfg, &c.root, HookKind::PreRollback, &hook_env).await?;
    // Secrets keep their current values: records never hold them.
    let apply: Vec<&Object> = target_rec
        .applied
        .iter()
        .filter(|o| !o.is_secret())
        .collect();
    let wanted: BTreeSet<String> = target_rec.applied.iter().map(Object::key).collect();
    let remove: Vec<&Object> = current_rec
        .applied
        .iter()
        .filter(|o| !wanted.contains(&o.key()))
        .collect();
    let touched: Vec<&Object> = apply.iter().chain(remove.iter()).copied().collect();
    let number = history.iter().map(|r| r.release.number).max().unwrap_or(0) + 1;
    let mut rec = Record {
        release: c.new_release(
            number,
            Kind::Rollback,
            &target.version,
            Some(current.id.clone()),
            Some(target.id.clone()),
        ),
        applied: target_rec.applied.clone(),
        before: c.snapshot(&touched).await?,
    };
    rec.release.services = target.services.clone();
    c.save(&rec).await?;
    let work = async {
        for o in &apply {
            c.apply(o, true, false)
                .await
                .map_err(|e| anyhow!("cannot apply {}: {e}", o.key()))?;
        }
        for o in &remove {
            c.delete(o).await.map_err(|e| anyhow!("{e}"))?;
        }
        c.wait_all(ctx, &apply).await
    };
    let notify = c.notifier(ctx);
    match deploy::interruptible(work).await {
        Ok(()) => {
            let mut replaced = current_rec.clone();
            replaced.release.outcome = Outcome::Reverted;
            c.save(&replaced).await?;
            rec.release.outcome = Outcome::Succeeded;
            rec.release.finished_at = Some(Utc::now());
            c.save(&rec).await?;
            c.prune(ctx, &rec.release.id).await;
            ctx.ui.status(
                "Restored",
                format!(
                    "{} to {} ({}) in {:.1}s",
                    c.where_(),
                    target.id,
                    target.version,
                    started.elapsed().as_secs_f64()
                ),
            );
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
            if !c.cfg.hooks.post_rollback.is_empty() {
                ctx.ui.status("Hooks", "post_rollback");
                let env = HookEnv {
                    outcome: Some("succeeded".into()),
                    ..hook_env
                };
                if let Err(e) = hooks::run(
                    HookKind::PostRollback,
                    &c.cfg.hooks.post_rollback,
                    &env,
                    &c.root,
                    &ctx.ui,
                )
                .await
                {
                    ctx.ui.warn(format!("{e:#}"));
                }
            }
            deploy::finish(
                ctx,
                Summary {
                    release: Some(target.id.clone()),
                    previous: Some(current.id.clone()),
                    version: Some(target.version.clone()),
                    ..Summary::for_region(&c.region, c.env(), "succeeded", started)
                },
                ExitCode::Success,
            )
        }
        Err(e) => {
            ctx.ui.error(format!("rolling back failed: {e:#}"));
            let restored = c.restore(ctx, &rec.before).await;
            rec.release.error = Some(format!("{e:#}"));
            rec.release.finished_at = Some(Utc::now());
            rec.release.outcome = if restored.is_ok() {
                Outcome::RolledBack
            } else {
                Outcome::Failed
            };
            let _ = c.save(&rec).await;
            match restored {
                Ok(()) => Err(Error::failed(
                    ExitCode::RolledBack,
                    anyhow!("the rollback failed ({e:#}); what ran before it runs again"),
                )),
                Err(problems) => Err(Error::failed(
                    ExitCode::NeedsPerson,
                    anyhow!(
                        "the rollback failed ({e:#}) and so did undoing it:\n  {}",
                        problems.join("\n  ")
                    ),
                )),
            }
        }
    }
}

/// The release records of a Kubernetes region, for `history`.
pub async fn history(ctx: &Ctx, region: &str) -> Result<(String, String, Vec<Release>)> {
    let c = Cluster::open(ctx, region).await?;
    let h = c.history().await?;
    Ok((c.region.clone(), c.env().to_string(), releases(&h)))
}

/// `status` of a Kubernetes region: serving release, Deployments, lock, interrupted release.
pub async fn status(ctx: &Ctx, region: &str) -> Result<Value> {
    use k8s_openapi::api::apps::v1::Deployment;
    let c = Cluster::open(ctx, region).await?;
    let history = releases(&c.history().await?);
    let lock = lease::current(&c.leases(), &lease::name(&c.cfg.app, c.env()))
        .await
        .map_err(|e| c.api_error("cannot read the lock", e))?;
    let serving = deploy::serving(&history);
    let interrupted = deploy::interrupted(&history, lock.as_ref());
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &c.namespace);
    let mut services = Vec::new();
    for (name, svc) in &c.cfg.services {
        let dname = crate::render::object_name(&c.cfg, name);
        let d = deployments
            .get_opt(&dname)
            .await
            .map_err(|e| c.api_error("cannot read the Deployments", e))?;
        let st = d
            .as_ref()
            .and_then(|d| d.status.clone())
            .unwrap_or_default();
        services.push(json!({
            "service": name,
            "deployment": dname,
            "replicas": svc.replicas,
            "exists": d.is_some(),
            "updated": st.updated_replicas.unwrap_or(0),
            "ready": st.ready_replicas.unwrap_or(0),
            "available": st.available_replicas.unwrap_or(0),
            "image": d.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.template.spec.as_ref()).and_then(|p| p.containers.first()).and_then(|x| x.image.clone()),
            "revision": d.as_ref().and_then(|d| d.metadata.annotations.as_ref()).and_then(|a| a.get("deployment.kubernetes.io/revision").cloned()),
            "rollout": d.as_ref().map(|d| match wait::judge(d) { wait::Judgement::Complete(l) => format!("complete: {l}"), wait::Judgement::Waiting(l) => format!("in progress: {l}"), wait::Judgement::Failed(l) => format!("failed: {l}") }),
        }));
    }
    let value = json!({
        "region": c.region,
        "environment": c.env(),
        "target": "kubernetes",
        "endpoint": c.server,
        "context": c.context,
        "namespace": c.namespace,
        "release": serving.map(|r| &r.id),
        "version": serving.map(|r| &r.version),
        "lock": lock.as_ref().map(|l| l.describe()),
        "interrupted": interrupted,
        "services": services,
    });
    if !ctx.ui.json() {
        ctx.ui.out(format!(
            "{} on {} (context {}, namespace {}): {}",
            c.where_(),
            c.server,
            c.context,
            c.namespace,
            serving.map_or("no release yet".to_string(), |r| format!(
                "{} ({}) since {}",
                r.id,
                r.version,
                r.finished_at
                    .unwrap_or(r.started_at)
                    .format("%Y-%m-%d %H:%M:%S UTC")
            ))
        ));
        if let Some(l) = &lock {
            ctx.ui.out(format!("  locked by {}", l.describe()));
        }
        if let Some(i) = &interrupted {
            ctx.ui.out(format!("  WARNING: {i}"));
        }
        for s in value["services"].as_array().into_iter().flatten() {
            ctx.ui.out(format!(
                "  {}: Deployment/{} {} of {} ready, {} updated, {} available, image {}, revision {} — {}",
                s["service"].as_str().unwrap_or(""),
                s["deployment"].as_str().unwrap_or(""),
                s["ready"],
                s["replicas"],
                s["updated"],
                s["available"],
                s["image"].as_str().unwrap_or("-"),
                s["revision"].as_str().unwrap_or("-"),
                s["rollout"].as_str().unwrap_or("not deployed"),
            ));
        }
    }
    Ok(value)
}

/// `plan` of a Kubernetes region: the API server's dry run of every object against live.
pub async fn plan(ctx: &Ctx, region: &str, version: Option<String>) -> Result<ExitCode> {
    let c = Cluster::open(ctx, region).await?;
    let version = version
        .or(c.cfg.version.clone())
        .ok_or_else(|| Error::usage_hint("no version to plan", "pass --version V"))?;
    let objs = c.desired(ctx, &version)?;
    let changes = c.changes(&objs, false).await?;
    let mut notes = Vec::new();
    if let Some(l) = lease::current(&c.leases(), &lease::name(&c.cfg.app, c.env()))
        .await
        .map_err(|e| c.api_error("cannot read the lock", e))?
    {
        notes.push(format!("locked by {}", l.describe()));
    }
    let any = changes.iter().any(|ch| ch.action != Action::Unchanged);
    if ctx.ui.json() {
        let list: Vec<Value> = changes.iter().map(|ch| json!({"object": ch.object.key(), "action": ch.action, "summary": ch.describe()})).collect();
        ctx.ui.out_json(&json!({"region": c.region, "environment": c.env(), "changes": any, "objects": list, "notes": notes}));
    } else {
        for ch in &changes {
            ctx.ui.out(ch.describe());
        }
        for n in &notes {
            ctx.ui.out(format!("note: {n}"));
        }
    }
    Ok(if any {
        ExitCode::Changes
    } else {
        ExitCode::Success
    })
}

/// `diff --live` of a Kubernetes region: live objects against the server's dry run of the
/// rendered ones, both stripped of server-written noise, as `Kind/name: path: value` lines.
pub async fn live_and_desired_lines(
    ctx: &Ctx,
    region: &str,
    version: Option<String>,
) -> Result<(String, String, String)> {
    let c = Cluster::open(ctx, region).await?;
    let version = version
        .or(c.cfg.version.clone())
        .ok_or_else(|| Error::usage_hint("no version to compare", "pass --version V"))?;
    let objs = c.desired(ctx, &version)?;
    let changes = c.changes(&objs, false).await?;
    let (mut left, mut right) = (String::new(), String::new());
    for ch in &changes {
        if let Some(l) = &ch.live {
            left.push_str(&objects::lines(l));
        }
        if let Some(a) = &ch.after {
            right.push_str(&objects::lines(a));
        }
    }
    Ok((c.env().to_string(), left, right))
}

/// `lock` by hand on a Kubernetes region (not tied to this process: only expiry frees it).
pub async fn lock(
    ctx: &Ctx,
    region: &str,
    reason: &str,
    ttl: Option<Duration>,
) -> Result<ExitCode> {
    let c = Cluster::open(ctx, region).await?;
    c.ensure_namespace(ctx).await?;
    let ttl = ttl.unwrap_or(c.cfg.lock_ttl.0);
    match lease::try_lock(
        &c.leases(),
        &lease::name(&c.cfg.app, c.env()),
        &release::actor(),
        reason,
        ttl,
        false,
    )
    .await
    .map_err(|e| c.api_error("cannot take the lock", e))?
    {
        Acquire::Acquired(l) => {
            ctx.ui.status(
                "Locked",
                format!(
                    "{} until {} ({})",
                    c.where_(),
                    l.expires.format("%H:%M:%S UTC"),
                    l.reason
                ),
            );
            Ok(ExitCode::Success)
        }
        Acquire::Held(other) => Err(Error::failed(
            ExitCode::Locked,
            anyhow!("{} is already locked by {}", c.where_(), other.describe()),
        )),
    }
}

/// `unlock [--force]` on a Kubernetes region.
pub async fn unlock(ctx: &Ctx, region: &str, force: bool) -> Result<ExitCode> {
    let c = Cluster::open(ctx, region).await?;
    let name = lease::name(&c.cfg.app, c.env());
    let Some(current) = lease::current(&c.leases(), &name)
        .await
        .map_err(|e| c.api_error("cannot read the lock", e))?
    else {
        ctx.ui
            .status("Unlocked", format!("{} was not locked", c.where_()));
        return Ok(ExitCode::Success);
    };
    let mine = current.holder == release::actor();
    if !mine && !force && !current.is_stale(Utc::now()) {
        return Err(Error::failed(
            ExitCode::Locked,
            anyhow!("{} is locked by {}", c.where_(), current.describe()),
        )
        .with_hint("pass --force to free someone else's lock"));
    }
    lease::force_release(&c.leases(), &name)
        .await
        .map_err(|e| c.api_error("cannot free the lock", e))?;
    ctx.ui.status(
        "Unlocked",
        format!("{} (was held by {})", c.where_(), current.describe()),
    );
    Ok(ExitCode::Success)
}
