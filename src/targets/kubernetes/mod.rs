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
//!    nothing changing means nothing done (no record, no new ReplicaSet); fields other
//!    field managers set inside our objects are drift (`fields`), which `--reset-drift` takes
//!    back after applying (forced apply, then a JSON patch removing each foreign field);
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
//! bottom; `inspect` has the read-only commands; `lease`, `records`, `objects`, `fields` and
//! `wait` are the lock, the release records, object handling (pure), drift read from
//! `managedFields` (pure) and the rollout judgement.

pub mod canary;
pub mod fields;
mod inspect;
pub mod job;
pub mod lease;
pub mod objects;
pub mod records;
pub mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};

use super::{Built, Changes, DeployOptions, Purpose, Region, Status, StepRun, Target};
use crate::backup::stream::Tail;
use crate::backup::ExecIn;
use crate::config::model::{EnvValue, KubernetesTarget, ReleaseStep};
use crate::drift::Drift;
use crate::error::{Error, ExitCode, Result};
use crate::lock::{Acquire, Lock};
use crate::release::Release;
use crate::secrets::SecretError;
use objects::Object;
use records::Prior;

/// The field manager of every apply.
pub const MANAGER: &str = "packfy-deploy";
/// How long the API server gets to answer the first request before it counts as unreachable.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the next apply does: the rendered objects of a version, or a recorded release's.
#[derive(Default)]
struct Wanted {
    objects: Vec<Object>,
    /// Objects to delete besides what `prepare` finds (a rollback: what only the current
    /// release had).
    remove: Vec<Object>,
    /// A rollback: apply every object as recorded, taking fields back from anyone.
    rollback: bool,
    /// What the release record says it applied (a rollback's Secrets included, redacted).
    recorded: Vec<Object>,
}

/// A region's cluster, reached.
pub struct Cluster {
    pub region: Region,
    pub client: kube::Client,
    pub namespace: String,
    /// The kubeconfig context and the API server's address, for messages.
    pub context: String,
    pub server: String,
    pub health_url: Option<String>,
    templates: PathBuf,
    wanted: Wanted,
    changes: Vec<Change>,
    force: bool,
    /// Why the desired state was resolved (a plan dry-runs with force to show conflicts).
    purpose: Purpose,
    /// `--reset-drift`: fields other managers set are taken back after applying.
    reset: bool,
    /// Renews our Lease while a deploy holds it.
    renewal: Mutex<Option<lease::Renewal>>,
    /// The Deployments whose update goes out as a canary (their new manifests), from `prepare`.
    held: Vec<Object>,
    /// The canary this process drives or steers, as it stands.
    canary: Mutex<Option<canary::Canary>>,
    /// A rollback inside a blue-green's window: the promoted release and its state.
    instant: Mutex<Option<(Release, canary::Canary)>>,
}

impl Cluster {
    /// Reaches the region's API server (exit 6 naming it when it does not answer; exit 2 for
    /// a context the kubeconfig does not have).
    pub async fn open(
        region: Region,
        target: &KubernetesTarget,
        templates: &Path,
    ) -> Result<Cluster> {
        let name = region.name.clone();
        let region_name = &name;
        let kubeconfig = Kubeconfig::read().map_err(|e| {
            Error::usage_hint(
                format!("cannot read the kubeconfig for region '{region_name}': {e}"),
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
                    format!(
                        "region '{region_name}': kubeconfig context '{context}' is not usable: {e}"
                    ),
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
                anyhow!("cannot reach the Kubernetes API server of region '{region_name}' at {server} (context {context}): {why}"),
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
            region,
            namespace: target.namespace.clone(),
            health_url: target.health_url.clone(),
            client,
            context,
            server,
            templates: templates.to_path_buf(),
            wanted: Wanted::default(),
            changes: Vec::new(),
            force: false,
            purpose: Purpose::Plan,
            reset: false,
            renewal: Mutex::new(None),
            held: Vec::new(),
            canary: Mutex::new(None),
            instant: Mutex::new(None),
        })
    }

    fn env(&self) -> &str {
        self.region.env()
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

    /// The objects of a release of `version`: the rendered templates, and one Secret per
    /// service with secret variables (values resolved here; never printed or recorded).
    fn desired(&self, version: &str) -> Result<Vec<Object>> {
        let templates = crate::render::templates_or_embedded(&self.templates)
            .map_err(|e| Error::usage_hint(e.to_string(), "fix the templates directory"))?;
        let files = crate::render::render(
            &templates,
            &self.region.name,
            self.region.env,
            &self.region.cfg,
            version,
        )
        .map_err(|e| Error::usage_hint(e.to_string(), "fix the template"))?;
        let rendered = objects::parse_manifests(&files, &self.namespace).map_err(|e| {
            Error::usage_hint(
                format!("a rendered manifest is not an object: {e}"),
                "fix the template",
            )
        })?;
        let mut out = Vec::new();
        for (sname, svc) in &self.region.cfg.services {
            let mut values = BTreeMap::new();
            for (var, v) in &svc.env {
                if let EnvValue::Secret { secret } = v {
                    let value = crate::secrets::resolve(&secret.0).map_err(|why| {
                        let e = SecretError {
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
            let name = format!(
                "{}-secrets",
                crate::render::object_name(&self.region.cfg, sname)
            );
            out.push(Object {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: name.clone(),
                manifest: json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": self.namespace, "labels": {
                        "app.kubernetes.io/name": self.region.cfg.app,
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
    async fn ensure_namespace(&self) -> Result<()> {
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
                self.region
                    .ui
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
        serving: Option<&Release>,
    ) -> Result<Vec<Change>> {
        let mut out =
            futures_util::future::try_join_all(objs.iter().map(|o| self.change(o, force))).await?;
        let rendered: BTreeSet<String> = objs.iter().map(Object::key).collect();
        let applied: Vec<Object> = serving.map(applied_by).unwrap_or_default();
        let gone = applied.iter().filter(|old| !rendered.contains(&old.key()));
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
                    "another field manager owns these fields (`packfy-deploy diff REGION --live` names it); `deploy --force-conflicts` takes them over for packfy-deploy, `deploy --reset-drift` also removes what the configuration does not set. Nothing was changed",
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
        lease::name(&self.region.cfg.app, self.env())
    }

    /// An object as the API server has it, `managedFields` included; `None` when missing.
    async fn raw(&self, o: &Object) -> Result<Option<Value>> {
        let found = self
            .api(o)
            .get_opt(&o.name)
            .await
            .map_err(|e| self.api_error(&format!("cannot read {}", o.key()), e))?;
        found
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::failed(ExitCode::NeedsPerson, anyhow!("{}: {e}", o.key())))
    }

    /// The region's environment variables whose values are secrets (shown only as hashes).
    fn secret_env(&self) -> Vec<String> {
        self.region
            .cfg
            .services
            .values()
            .flat_map(|s| s.env.iter())
            .filter(|(_, v)| matches!(v, EnvValue::Secret { .. }))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The fields of `o` (live as `raw`) that another field manager set and we do not.
    /// `objs`: the release's objects (an HPA among them owns its Deployment's replicas).
    fn foreign_fields(&self, o: &Object, raw: &Value, objs: &[Object]) -> Vec<fields::FieldDrift> {
        let has_hpa = objs.iter().any(|h| {
            h.kind == "HorizontalPodAutoscaler"
                && h.manifest
                    .pointer("/spec/scaleTargetRef/name")
                    .and_then(Value::as_str)
                    == Some(o.name.as_str())
        });
        fields::drift(
            &o.key(),
            raw,
            Some(&wanted_view(o)),
            has_hpa,
            &self.secret_env(),
        )
    }

    /// Hand edits in the objects `objs`: fields other managers set, and objects missing.
    async fn hand_drift(&self, objs: &[Object]) -> Result<Vec<Drift>> {
        let mut out = self.hand_drift_unmasked(objs).await?;
        crate::drift::mask(&mut out, &secret_values(objs));
        Ok(out)
    }

    async fn hand_drift_unmasked(&self, objs: &[Object]) -> Result<Vec<Drift>> {
        let mut out = Vec::new();
        for o in objs {
            match self.raw(o).await? {
                None => out.push(Drift::new(o.key(), Some(json!("present")), None)),
                Some(raw) => out.extend(
                    self.foreign_fields(o, &raw, objs)
                        .into_iter()
                        .map(|f| f.drift),
                ),
            }
        }
        Ok(out)
    }

    /// `--reset-drift`: removes from `o` what other managers set and the configuration does
    /// not (a JSON patch per field, tested against the value read, so a concurrent edit
    /// fails it rather than being removed unseen). Our own fields were taken back by the
    /// forced apply before.
    async fn remove_foreign(&self, o: &Object) -> anyhow::Result<()> {
        // Each removal can shift list indexes: read again after each; a bound for safety.
        for _ in 0..64 {
            let Some(raw) = self.raw(o).await.map_err(|e| anyhow!("{e}"))? else {
                return Ok(());
            };
            let found = self.foreign_fields(o, &raw, &self.wanted.objects);
            let Some((f, ptr)) = found.iter().find_map(|f| f.remove.clone().map(|p| (f, p))) else {
                return Ok(());
            };
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": ptr, "value": raw.pointer(&ptr)},
                {"op": "remove", "path": ptr},
            ]))?;
            let pp = PatchParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            self.api(o)
                .patch(&o.name, &pp, &Patch::Json::<()>(patch))
                .await
                .map_err(|e| anyhow!("cannot remove {}: {e}", f.drift.path))?;
            self.region.ui.status(
                "Reset",
                format!(
                    "removed {} (set by {})",
                    f.drift.path,
                    f.drift
                        .changed_by
                        .as_deref()
                        .unwrap_or("another field manager")
                ),
            );
        }
        Ok(())
    }

    /// The longest progress deadline of the region's services.
    fn progress_deadline(&self) -> Duration {
        self.region
            .cfg
            .services
            .values()
            .map(|s| s.rollout.progress_deadline.0)
            .max()
            .unwrap_or(Duration::from_secs(600))
    }

    /// Waits for every Deployment among `objs`, together; the first failure ends the wait.
    async fn wait_all(&self, objs: &[&Object]) -> anyhow::Result<()> {
        let deadline = self.progress_deadline();
        let waits = objs.iter().filter(|o| o.kind == "Deployment").map(|o| {
            let name = o.name.clone();
            async move {
                let line = wait::rollout(
                    &self.client,
                    &self.namespace,
                    &name,
                    deadline,
                    &self.region.ui,
                )
                .await
                .map_err(|e| anyhow!(e))?;
                self.region
                    .ui
                    .status("Rolled out", format!("Deployment/{name}: {line}"));
                anyhow::Ok(())
            }
        });
        futures_util::future::try_join_all(waits).await?;
        Ok(())
    }

    /// The optional HTTP bake: `health_url` must answer 2xx through the services' bake period.
    async fn bake(&self) -> anyhow::Result<()> {
        let Some(url) = self.health_url.as_deref().map(crate::config::expand_env) else {
            return Ok(());
        };
        let period = self
            .region
            .cfg
            .services
            .values()
            .map(|s| s.rollout.bake.0)
            .max()
            .unwrap_or_default();
        let max_ratio = self
            .region
            .cfg
            .services
            .values()
            .map(|s| s.rollout.max_5xx_ratio)
            .fold(0.0, f64::max);
        let (client, _) =
            crate::notify::client().map_err(|e| anyhow!("cannot make an HTTP client: {e}"))?;
        self.region
            .ui
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
                    self.region.ui.verbose(format!("bake: {url}: {why}"));
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
        self.region.ui.status(
            "Verified",
            format!("{total} checks of {url}, {failed} failed"),
        );
        Ok(())
    }

    /// Puts back what `before` recorded: live objects re-applied (taking their fields back
    /// from anyone), objects that did not exist deleted, Deployments waited for. Secrets that
    /// existed keep their current values (records never hold them).
    async fn put_back(&self, before: &[Prior]) -> std::result::Result<(), Vec<String>> {
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
                        self.region
                            .ui
                            .verbose(format!("deleted {} (the release added it)", p.key()));
                    }
                }
            }
        }
        let back: Vec<&Object> = before.iter().filter_map(|p| p.live.as_ref()).collect();
        if let Err(e) = self.wait_all(&back).await {
            problems.push(format!("{e:#}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
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

/// The resolved values of the Secrets among `objs` (`stringData`), to mask wherever a hand
/// edit copied one.
fn secret_values(objs: &[Object]) -> Vec<String> {
    objs.iter()
        .filter(|o| o.is_secret())
        .filter_map(|o| o.manifest.get("stringData").and_then(Value::as_object))
        .flat_map(|m| m.values())
        .filter_map(Value::as_str)
        .filter(|v| !v.is_empty() && *v != "<redacted>")
        .map(str::to_string)
        .collect()
}

/// An object as `diff --live` shows a whole one: stripped, redacted, without what its
/// key already says.
fn shown(o: &Object) -> Value {
    let mut v = objects::strip(&o.redacted().manifest);
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("name");
        meta.remove("namespace");
    }
    v
}

/// What we apply, as `fields::locate` searches it for the wanted value: a Secret's
/// `stringData` keys count as its `data` (the API server stores them there).
fn wanted_view(o: &Object) -> Value {
    let mut v = o.manifest.clone();
    if o.is_secret() {
        if let Some(Value::Object(sd)) = o.manifest.get("stringData") {
            let data = v
                .as_object_mut()
                .map(|m| m.entry("data").or_insert_with(|| json!({})));
            if let Some(Value::Object(d)) = data {
                for k in sd.keys() {
                    d.entry(k.clone()).or_insert(json!("<redacted>"));
                }
            }
        }
    }
    v
}

/// The objects a recorded release applied (Secrets redacted).
fn applied_by(r: &Release) -> Vec<Object> {
    r.state_of("applied").unwrap_or_default()
}

/// The backup a record keeps: every object the release touched, as it was live before.
fn backup_of(r: &Release) -> Vec<Prior> {
    r.state_of("before").unwrap_or_default()
}

#[async_trait]
impl Target for Cluster {
    fn region(&self) -> &Region {
        &self.region
    }

    fn lock_place(&self) -> String {
        format!("Lease {}/{}", self.namespace, self.lease_name())
    }

    async fn try_lock(
        &self,
        holder: &str,
        reason: &str,
        ttl: Duration,
        tied_to_process: bool,
    ) -> Result<Acquire> {
        if !tied_to_process {
            // A lock by hand may come first; a deploy made the namespace while resolving.
            self.ensure_namespace().await?;
        }
        let name = self.lease_name();
        let got = lease::try_lock(&self.leases(), &name, holder, reason, ttl, tied_to_process)
            .await
            .map_err(|e| self.api_error("cannot take the lock", e))?;
        if let (Acquire::Acquired(l), true) = (&got, tied_to_process) {
            let renewal = lease::Renewal::start(self.leases(), name, l.token.clone(), ttl);
            *self.renewal.lock().expect("renewal") = Some(renewal);
        }
        Ok(got)
    }

    async fn take_over(&self, stale: &Lock) -> Result<()> {
        lease::release(&self.leases(), &self.lease_name(), &stale.token)
            .await
            .map_err(|e| self.api_error("cannot take over the stale lock", e))
    }

    async fn current_lock(&self) -> Result<Option<Lock>> {
        lease::current(&self.leases(), &self.lease_name())
            .await
            .map_err(|e| self.api_error("cannot read the lock", e))
    }

    async fn unlock(&self, ours: &Lock) -> Result<()> {
        self.renewal.lock().expect("renewal").take();
        lease::release(&self.leases(), &self.lease_name(), &ours.token)
            .await
            .map_err(|e| self.api_error("cannot release the lock", e))
    }

    async fn break_lock(&self) -> Result<()> {
        lease::force_release(&self.leases(), &self.lease_name())
            .await
            .map_err(|e| self.api_error("cannot free the lock", e))
    }

    async fn history(&self) -> Result<Vec<Release>> {
        let list = records::list(&self.secrets(), &self.region.cfg.app, self.env())
            .await
            .map_err(|e| Error::failed(ExitCode::Unreachable, e))?;
        Ok(list
            .into_iter()
            .map(records::Record::into_release)
            .collect())
    }

    async fn save(&self, rec: &Release) -> Result<()> {
        records::save(
            &self.secrets(),
            &self.region.cfg.app,
            &records::Record::of(rec),
        )
        .await
        .map_err(|e| Error::failed(ExitCode::NeedsPerson, e))
    }

    async fn forget(&self, _kept: &[String], gone: &[&Release]) {
        for r in gone {
            let name = records::name(&self.region.cfg.app, self.env(), &r.id);
            if self
                .secrets()
                .delete(&name, &DeleteParams::default())
                .await
                .is_ok()
            {
                self.region
                    .ui
                    .verbose(format!("pruned release record {}", r.id));
            }
        }
    }

    async fn build(&self, _version: &str, _opts: &DeployOptions) -> Result<Vec<Built>> {
        Err(Error::usage_hint(
            format!("region '{}' targets Kubernetes: its images are built and pushed elsewhere", self.region.name),
            "build on a Docker region (`packfy-deploy build --region local --push`), or by CI; deploy then names the tag with --version",
        ))
    }

    async fn resolve(
        &mut self,
        version: &str,
        opts: &DeployOptions,
        purpose: Purpose,
    ) -> Result<()> {
        if opts.push && purpose == Purpose::Deploy {
            self.region.ui.warn(format!(
                "--push: {} is a Kubernetes region, which builds and pushes nothing; it deploys the tag as it is in the registry",
                self.region.name
            ));
        }
        let mut objects = self.desired(version)?;
        pin_images(&mut objects, &opts.built);
        self.wanted = Wanted {
            objects,
            ..Default::default()
        };
        self.purpose = purpose;
        if purpose == Purpose::Deploy {
            self.ensure_namespace().await?;
        }
        Ok(())
    }

    async fn resolve_release(&mut self, to: &Release, from: &Release) -> Result<()> {
        // Back to the set a promoted blue-green keeps: a selector switch — while that set
        // still runs. The end of its window, killed after the stable Deployment took the new
        // template, left the record `promoted` with the old pods gone: a switch would select
        // none. Then the window's end is finished first (`prepare`) and the rollback rolls.
        let instant = canary::promoted_of(std::slice::from_ref(from))
            .filter(|(f, _)| f.previous.as_deref() == Some(to.id.as_str()));
        let instant = match instant {
            Some((f, c)) if self.old_set_runs(&c).await => Some((f, c)),
            Some((f, _)) => {
                self.region.ui.status(
                    "Not switching",
                    format!(
                        "back from {}: the old set kept beside it no longer runs (the end of its window was interrupted); that end is finished first, then the rollback rolls out",
                        f.id
                    ),
                );
                None
            }
            None => None,
        };
        *self.instant.lock().expect("instant") = instant;
        // Secrets keep their current values: records never hold them.
        let applied = applied_by(to);
        let wanted: BTreeSet<String> = applied.iter().map(Object::key).collect();
        self.wanted = Wanted {
            recorded: applied.clone(),
            objects: applied.into_iter().filter(|o| !o.is_secret()).collect(),
            remove: applied_by(from)
                .into_iter()
                .filter(|o| !wanted.contains(&o.key()))
                .collect(),
            rollback: true,
        };
        Ok(())
    }

    async fn prepare(&mut self, history: &[Release], opts: &DeployOptions) -> Result<Changes> {
        // Under the lock, a deploy (or a rollback past it) ends a promoted blue-green's window
        // first: the old set goes before the next release plans against what runs.
        let locked = self.purpose == Purpose::Deploy || self.wanted.rollback;
        if locked && self.instant.lock().expect("instant").is_none() {
            self.end_bg_window(history, None)
                .await
                .map_err(|e| Error::failed(ExitCode::NeedsPerson, e))?;
        }
        let serving = crate::release::serving(history);
        self.force = opts.force_conflicts || self.wanted.rollback || opts.reset_drift;
        let drift = if self.wanted.rollback {
            Vec::new()
        } else {
            self.hand_drift(&self.wanted.objects).await?
        };
        self.reset = opts.reset_drift && !drift.is_empty();
        // A plan shows what a forced apply would do; the conflicts are in `drift`.
        let dry_force = self.force || self.purpose == Purpose::Plan;
        self.changes = if self.wanted.rollback {
            // Everything the release had is applied again as recorded, no dry run needed.
            let mut out = Vec::new();
            for o in &self.wanted.objects {
                out.push(Change {
                    object: o.clone(),
                    live: self.live(o).await?,
                    after: None,
                    action: Action::Update,
                });
            }
            for o in &self.wanted.remove {
                out.push(Change {
                    object: o.clone(),
                    live: self.live(o).await?,
                    after: None,
                    action: Action::Delete,
                });
            }
            out
        } else {
            self.changes(&self.wanted.objects, dry_force, serving)
                .await?
        };
        // Deployments of canary services that already serve: their update goes out as a
        // canary Deployment beside them (a first release has nothing to compare with).
        let cfg = &self.region.cfg;
        let mut notes = Vec::new();
        self.held = Vec::new();
        if !self.wanted.rollback {
            for ch in &self.changes {
                if ch.object.kind != "Deployment" || ch.action != Action::Update {
                    continue;
                }
                let Some((name, svc)) = cfg
                    .services
                    .iter()
                    .find(|(n, _)| crate::render::object_name(cfg, n) == ch.object.name)
                else {
                    continue;
                };
                if canary::is_canary(&svc.rollout, ch.live.is_some())
                    && svc.rollout.strategy == crate::config::progressive::Strategy::BlueGreen
                {
                    notes.push(canary::blue_green_plan_note(
                        name,
                        &ch.object.name,
                        &svc.rollout,
                        svc.replicas,
                    ));
                    self.held.push(ch.object.clone());
                } else if canary::is_canary(&svc.rollout, ch.live.is_some()) {
                    notes.push(canary::plan_note(
                        name,
                        &ch.object.name,
                        &svc.rollout.steps,
                        svc.replicas,
                    ));
                    self.held.push(ch.object.clone());
                }
            }
        }
        let list: Vec<Value> = self
            .changes
            .iter()
            .map(|ch| json!({"object": ch.object.key(), "action": ch.action, "summary": ch.describe()}))
            .collect();
        let mut j = serde_json::Map::new();
        j.insert("objects".into(), list.into());
        let changed: Vec<String> = self
            .changes
            .iter()
            .filter(|ch| ch.action != Action::Unchanged)
            .map(Change::describe)
            .collect();
        Ok(Changes {
            lines: self.changes.iter().map(Change::describe).collect(),
            changed,
            any: self.reset || self.changes.iter().any(|ch| ch.action != Action::Unchanged),
            notes,
            json: j,
            drift,
            resetting: self.reset,
        })
    }

    fn record(&self, rec: &mut Release) -> String {
        if !self.wanted.rollback {
            rec.services = service_records(&self.region.cfg, &self.wanted.objects);
        }
        let applied: Vec<Object> = if self.wanted.rollback {
            self.wanted.recorded.clone()
        } else {
            self.wanted.objects.iter().map(Object::redacted).collect()
        };
        let before: Vec<Prior> = self.changes.iter().map(Change::prior).collect();
        let n = before.iter().filter(|p| p.live.is_some()).count();
        rec.set_state("applied", &applied);
        rec.set_state("before", &before);
        format!(
            "{n} object(s) as live now, in release record {}",
            records::name(&self.region.cfg.app, self.env(), &rec.id)
        )
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
        *self.canary.lock().expect("canary") = None;
        let instant = self.instant.lock().expect("instant").take();
        if let Some((from, c)) = instant {
            self.region.ui.status(
                "Switching back",
                format!(
                    "{} was promoted inside its window: the selector goes back to the old pods",
                    from.id
                ),
            );
            self.instant_rollback(from, c).await?;
        }
        let held = |o: &Object| self.held.iter().any(|h| h.key() == o.key());
        for ch in &self.changes {
            if held(&ch.object) {
                continue; // goes out as a canary, below
            }
            match ch.action {
                Action::Unchanged => {}
                Action::Delete => self.delete(&ch.object).await.map_err(|e| anyhow!("{e}"))?,
                Action::Create | Action::Update => {
                    self.apply(&ch.object, self.force, false)
                        .await
                        .map_err(|e| anyhow!("cannot apply {}: {e}", ch.object.key()))?;
                    self.region
                        .ui
                        .verbose(format!("applied {}", ch.object.key()));
                }
            }
        }
        if self.reset {
            for ch in &self.changes {
                if ch.action == Action::Delete {
                    continue;
                }
                if ch.action == Action::Unchanged {
                    // unchanged by the dry run: only other managers' fields differ
                    self.apply(&ch.object, true, false)
                        .await
                        .map_err(|e| anyhow!("cannot apply {}: {e}", ch.object.key()))?;
                }
                self.remove_foreign(&ch.object).await?;
            }
        }
        if !self.wanted.rollback {
            self.region.ui.status(
                "Applied",
                format!(
                    "{} object(s) with server-side apply (field manager {MANAGER})",
                    self.changes
                        .iter()
                        .filter(|ch| ch.action != Action::Unchanged)
                        .count()
                ),
            );
        }
        let objs: Vec<&Object> = self.wanted.objects.iter().filter(|o| !held(o)).collect();
        self.wait_all(&objs).await?;
        if !self.held.is_empty() {
            self.start_canary(rec, &self.held).await?;
        }
        Ok(())
    }

    async fn verify(&self) -> anyhow::Result<()> {
        if self.wanted.rollback {
            return Ok(());
        }
        self.bake().await
    }

    async fn complete(&self) -> anyhow::Result<()> {
        Ok(())
    }

    fn applied(&self, rec: &mut Release) {
        if let Some(c) = self.canary.lock().expect("canary").clone() {
            rec.set_state(canary::STATE, &c);
        }
    }

    async fn restore(
        &self,
        rec: &Release,
        _history: &[Release],
    ) -> std::result::Result<(), Vec<String>> {
        // A canary: its canary Deployments go; the backup puts the stable ones back whole.
        let mut problems = self.abort_canary(rec).await.unwrap_or_default();
        if let Err(p) = self.put_back(&backup_of(rec)).await {
            problems.extend(p);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    async fn describe_live(&self) -> (String, String) {
        (
            String::new(),
            format!(
                "`kubectl -n {} get deploy,rs,pods` shows what runs; `packfy-deploy rollback` retries the restore",
                self.namespace
            ),
        )
    }

    fn url(&self) -> Option<String> {
        None
    }

    async fn status(&self) -> Result<Status> {
        inspect::status(self).await
    }

    async fn drift(&self, version: Option<&str>, history: &[Release]) -> Result<Vec<Drift>> {
        let serving = crate::release::serving(history);
        let Some(version) = version else {
            // Hand edits only, in what the serving release applied (no secret needed).
            let applied: Vec<Object> = serving.map(applied_by).unwrap_or_default();
            return self.hand_drift(&applied).await;
        };
        let objs = self.desired(version)?;
        let mut out = Vec::new();
        for o in &objs {
            let Some(raw) = self.raw(o).await? else {
                let ch = self.change(o, true).await?;
                let wanted = ch.after.as_ref().map(shown).unwrap_or(json!("present"));
                out.push(Drift::new(o.key(), Some(wanted), None));
                continue;
            };
            let foreign = self.foreign_fields(o, &raw, &objs);
            let covered: Vec<String> = foreign.iter().map(|f| f.flat.clone()).collect();
            out.extend(foreign.into_iter().map(|f| f.drift));
            // What our (forced) apply would change: the configuration against what runs.
            let ch = self.change(o, true).await?;
            let (Some(live), Some(after)) = (&ch.live, &ch.after) else {
                continue;
            };
            let (l, a) = (live.redacted(), after.redacted());
            for (path, was, wanted) in fields::differences(&l.manifest, &a.manifest, &covered) {
                out.push(Drift::new(format!("{}: {path}", o.key()), wanted, was));
            }
            if o.is_secret() && l == a && live.manifest != after.manifest {
                out.push(Drift::new(
                    format!("{}: data", o.key()),
                    Some(json!("<redacted>")),
                    Some(json!("<redacted> (other values)")),
                ));
            }
        }
        crate::drift::mask(&mut out, &secret_values(&objs));
        // What the serving release applied that the configuration no longer renders.
        let rendered: BTreeSet<String> = objs.iter().map(Object::key).collect();
        for old in serving.map(applied_by).unwrap_or_default() {
            if rendered.contains(&old.key()) {
                continue;
            }
            if let Some(live) = self.live(&old).await? {
                out.push(Drift::new(old.key(), None, Some(shown(&live))));
            }
        }
        Ok(out)
    }

    fn exec(&self) -> &dyn ExecIn {
        self
    }

    fn paused(&self) -> Option<String> {
        self.canary.lock().expect("canary").as_ref()?.paused.clone()
    }

    fn window(&self) -> Option<(String, u64)> {
        self.bg_window()
    }

    async fn end_window(&self, history: &[Release], id: &str) -> anyhow::Result<bool> {
        self.end_bg_window(history, Some(id)).await
    }

    async fn steer(&self, rec: &Release, how: super::Steer) -> anyhow::Result<()> {
        match how {
            super::Steer::Promote { .. } | super::Steer::Resume => {
                self.steer_canary(rec, how).await
            }
            other => anyhow::bail!("a paused canary cannot be asked to {}", other.verb()),
        }
    }

    async fn ask(&self, how: super::Steer) -> anyhow::Result<()> {
        match how {
            super::Steer::Pause => self.ask_canary(canary::Ask::Pause).await,
            super::Steer::Abort => self.ask_canary(canary::Ask::Abort).await,
            other => anyhow::bail!("a running canary cannot be asked to {}", other.verb()),
        }
    }
}

#[async_trait]
impl ExecIn for Cluster {
    /// Validation refuses `exec` jobs on Kubernetes regions; nothing runs in a pod.
    async fn exec(
        &self,
        service: &str,
        _cmd: &[String],
        _env: &[String],
        _out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        _err: &mut Tail,
    ) -> anyhow::Result<Option<i64>> {
        Err(anyhow!(
            "cannot exec in a pod of {service}: exec jobs run on Docker regions only"
        ))
    }
}

/// The summary record of each service, for history (`image_id` stays empty: the cluster pulls).
/// Pods of `objects` that run an image the run built and pushed run it by digest
/// (`repo:tag@sha256:…`): the cluster runs exactly what the run's other regions run, whatever
/// the tag is moved to later.
fn pin_images(objects: &mut [Object], built: &[Built]) {
    for o in objects.iter_mut() {
        for list in ["containers", "initContainers"] {
            let pointer = match o.kind.as_str() {
                "CronJob" => format!("/spec/jobTemplate/spec/template/spec/{list}"),
                "Pod" => format!("/spec/{list}"),
                _ => format!("/spec/template/spec/{list}"),
            };
            let Some(Value::Array(containers)) = o.manifest.pointer_mut(&pointer) else {
                continue;
            };
            for c in containers {
                let Some(image) = c.get("image").and_then(Value::as_str) else {
                    continue;
                };
                if let Some(b) = built
                    .iter()
                    .find(|b| b.image == image && b.digest.is_some())
                {
                    c["image"] = Value::String(b.pinned());
                }
            }
        }
    }
}

fn service_records(
    cfg: &crate::config::model::RegionConfig,
    objs: &[Object],
) -> Vec<crate::release::ServiceRecord> {
    use sha2::{Digest, Sha256};
    cfg.services
        .iter()
        .map(|(name, svc)| {
            let mine: Vec<&Object> = objs
                .iter()
                .filter(|o| {
                    o.manifest
                        .pointer("/metadata/labels/app.kubernetes.io~1component")
                        .and_then(Value::as_str)
                        == Some(name)
                })
                .collect();
            let image = mine
                .iter()
                .find(|o| o.kind == "Deployment")
                .and_then(|d| d.manifest.pointer("/spec/template/spec/containers/0/image"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let redacted: Vec<Value> = mine.iter().map(|o| o.redacted().manifest).collect();
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
            crate::release::ServiceRecord {
                name: name.clone(),
                digest: image.split_once('@').map(|(_, d)| d.to_string()),
                image,
                image_id: String::new(),
                replicas: svc.replicas,
                env,
                secret_refs: refs,
                container_port: svc.ports.first().map(|p| p.container),
                containers: Vec::new(),
                spec_hash: hex::encode(
                    &Sha256::digest(serde_json::to_vec(&redacted).unwrap_or_default())[..8],
                ),
            }
        })
        .collect()
}
