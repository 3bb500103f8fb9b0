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
//!
//! Here: [`Cluster`], a region's cluster reached, and what it does with objects (dry-run,
//! apply, delete, snapshot, restore, wait, lock). `flow` reads the deploy and rollback top to
//! bottom; `inspect` has the read-only commands; `lease`, `records`, `objects` and `wait` are
//! the lock, the release records, object handling (pure) and the rollout judgement.

mod flow;
mod inspect;
pub mod lease;
pub mod objects;
pub mod records;
pub mod wait;

pub use flow::{deploy, rollback};
pub use inspect::{history, live_and_desired_lines, lock, plan, status, unlock};

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};

use crate::config::model::{EnvValue, RegionConfig};
use crate::config::Environment;
use crate::deploy::{self, desired, Notify};
use crate::docker::state::Lock;
use crate::error::{Error, ExitCode, Result};

use crate::ops::Ctx;
use crate::release::{self, Kind, Release};
use objects::Object;
use records::{Prior, Record};

/// The field manager of every apply.
pub const MANAGER: &str = "packfy-deploy";
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
                    let value = desired::resolve_secret(&secret.0).map_err(|why| {
                        let e = desired::SecretError {
                            service: sname.clone(),
                            var: var.clone(),
                            reference: secret.0.clone(),
                            why,
                        };
                        Error::usage_hint(
                            e.to_string(),
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
        found
            .map(|d| o.with_server_view(d))
            .transpose()
            .map_err(|e| Error::failed(ExitCode::NeedsPerson, anyhow!("{}: {e}", o.key())))
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
        o.with_server_view(d).map_err(kube::Error::SerdeError)
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

    /// What applying `objs` would do to each, asked of the API server (dry run, every object
    /// at once), and the objects `serving` applied that `objs` no longer has (deleted if still
    /// live). Conflicts with another field manager and objects the server refuses are
    /// reported here, before anything changes (exit 2).
    async fn changes(
        &self,
        objs: &[Object],
        force: bool,
        serving: Option<&Record>,
    ) -> Result<Vec<Change>> {
        let mut out =
            futures_util::future::try_join_all(objs.iter().map(|o| self.change(o, force))).await?;
        let rendered: BTreeSet<String> = objs.iter().map(Object::key).collect();
        let gone = serving
            .map(|r| r.applied.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|old| !rendered.contains(&old.key()));
        for old in gone {
            if let Some(live) = self.live(old).await? {
                out.push(Change {
                    object: old.clone(),
                    live: Some(live),
                    after: None,
                    action: Action::Delete,
                });
            }
        }
        Ok(out)
    }

    /// What applying one object would do: its live state against the server's dry run.
    async fn change(&self, o: &Object, force: bool) -> Result<Change> {
        let (live, after) =
            futures_util::future::join(self.live(o), self.apply(o, force, true)).await;
        let live = live?;
        let after = match after {
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
        Ok(Change {
            object: o.clone(),
            live,
            after: Some(after),
            action,
        })
    }

    fn lease_name(&self) -> String {
        lease::name(&self.cfg.app, self.env())
    }

    /// Takes the lock (a Lease, renewed while held), waiting up to `wait`; exit 5 naming the
    /// holder when it stays held.
    async fn lock(
        &self,
        ctx: &Ctx,
        reason: &str,
        wait: Option<Duration>,
    ) -> Result<(Lock, lease::Renewal)> {
        let name = self.lease_name();
        let holder = release::actor();
        let ttl = self.cfg.lock_ttl.0;
        let lock = deploy::take_lock(
            ctx,
            &self.where_(),
            wait,
            || async {
                lease::try_lock(&self.leases(), &name, &holder, reason, ttl, true)
                    .await
                    .map_err(|e| self.api_error("cannot take the lock", e))
            },
            |stale| {
                let name = &name;
                async move {
                    lease::release(&self.leases(), name, &stale.token)
                        .await
                        .map_err(|e| self.api_error("cannot take over the stale lock", e))
                }
            },
        )
        .await?;
        let renewal = lease::Renewal::start(self.leases(), name.clone(), lock.token.clone(), ttl);
        ctx.ui.status(
            "Locked",
            format!(
                "{} (Lease {}/{name}, {})",
                self.where_(),
                self.namespace,
                lock.holder
            ),
        );
        Ok((lock, renewal))
    }

    async fn unlock(&self, ctx: &Ctx, lock: (Lock, lease::Renewal)) {
        let (lock, renewal) = lock;
        drop(renewal);
        if let Err(e) = lease::release(&self.leases(), &self.lease_name(), &lock.token).await {
            ctx.ui.warn(format!("could not release the lock: {e}"));
        }
    }

    /// The longest progress deadline of the region's services.
    fn progress_deadline(&self) -> Duration {
        self.cfg
            .services
            .values()
            .map(|s| s.rollout.progress_deadline.0)
            .max()
            .unwrap_or(Duration::from_secs(600))
    }

    /// Waits for every Deployment among `objs`, together; the first failure ends the wait.
    async fn wait_all(&self, ctx: &Ctx, objs: &[&Object]) -> anyhow::Result<()> {
        let deadline = self.progress_deadline();
        let waits = objs.iter().filter(|o| o.kind == "Deployment").map(|o| {
            let name = o.name.clone();
            async move {
                let line = wait::rollout(&self.client, &self.namespace, &name, deadline, &ctx.ui)
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
                    if let Err(e) = self.delete(&p.address()).await {
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

    /// What the objects look like now (a rollback's backup).
    async fn snapshot(&self, objs: &[&Object]) -> Result<Vec<Prior>> {
        let mut out = Vec::new();
        for o in objs {
            out.push(Prior::of(o, self.live(o).await?.as_ref()));
        }
        Ok(out)
    }

    /// Records `rec` as succeeded, then prunes the records (`history` is every record before it).
    async fn succeeded(&self, ctx: &Ctx, rec: &mut Record, history: &[Record]) -> Result<()> {
        rec.release.outcome = release::Outcome::Succeeded;
        rec.release.finished_at = Some(chrono::Utc::now());
        self.save(rec).await?;
        let all: Vec<Record> = history.iter().cloned().chain([rec.clone()]).collect();
        self.prune(ctx, &all, &rec.release.id).await;
        Ok(())
    }

    /// Deletes release records beyond `keep_releases` (at least 2) of `history` (every
    /// record, oldest first), never `serving`'s.
    async fn prune(&self, ctx: &Ctx, history: &[Record], serving: &str) {
        let keep = (self.cfg.keep_releases as usize).max(2);
        for gone in
            records::prune(&self.secrets(), &self.cfg.app, history, keep, Some(serving)).await
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
    /// The object as it was before the change: the backup a record keeps.
    pub fn prior(&self) -> Prior {
        Prior::of(&self.object, self.live.as_ref())
    }

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
