//! A canary on a Kubernetes region without a traffic router: a `<name>-canary` Deployment of
//! the new release beside the stable one, both selected by the service's Service, so the
//! weight of a step is approximated by the canary's share of the replicas — as Argo Rollouts
//! does without traffic routing. [`split`] says how a weight becomes replicas.
//!
//! A step `{weight: W}` scales the canary up first (and waits for its pods to be ready), then
//! the stable Deployment down, so the service never has fewer ready pods than it asks for.
//! At 100 % the stable Deployment takes the new template at its full replicas (a rolling
//! update, waited for) and the canary Deployment is deleted. An abort (a failed analysis, a
//! canary that never gets ready, `abort`) deletes the canary and puts the stable Deployment
//! back as it was (the release record's backup, full replicas).
//!
//! Analysis here is Prometheus only (see `config::progressive`); every weight step also
//! waits for the canary's pods to be ready within the progress deadline.
//!
//! The whole state is a [`Canary`] in the release record (a Secret in the namespace), written
//! at every step, so another process can `promote` or `abort` a paused canary; a running one
//! is asked through a ConfigMap it reads at every tick.
//!
//! A blue-green runs on the same machinery (`Canary::blue_green`): the new set is a
//! `<name>-preview` Deployment at full replicas, answering on a `<name>-preview` Service;
//! the production Service's selector is pinned to the old ReplicaSet's `pod-template-hash`
//! (a label the old pods already carry, so they are not rolled) until promotion sets it to
//! the preview pods (`packfy.io/track: preview`). A rollback inside `scale_down_delay` pins it
//! back; after the window the stable Deployment takes the new template and the preview goes.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::objects::Object;
use super::{Cluster, MANAGER};
use crate::config::model::Rollout;
use crate::config::progressive::{describe, Conditions, Pause, Step, Strategy};
use crate::release::Release;
use crate::release::{now_s, BlueGreenPhase as Phase};

/// The key of the canary's state in a release record.
pub const STATE: &str = "canary";
/// The label that tells the canary's pods from the stable ones.
pub const TRACK: &str = "packfy.io/track";
/// How often a pause or an analysis asks Prometheus and looks for a `pause`/`abort` asked
/// by another process.
const TICK: Duration = Duration::from_secs(1);

/// The (canary, stable) replicas that give the new release `weight` percent of `total`
/// replicas: the canary's share rounded to the nearest pod (halves up), at least one pod for
/// any weight above 0 and, below 100 %, at least one stable pod (so with one replica every
/// step below 100 % runs one pod of each: 50 %). At 100 % the stable Deployment takes all.
pub fn split(weight: u32, total: u32) -> (u32, u32) {
    let weight = weight.min(100);
    if weight == 0 {
        return (0, total);
    }
    if weight == 100 {
        return (total, 0);
    }
    let canary = ((u64::from(weight) * u64::from(total) + 50) / 100) as u32;
    let canary = canary.max(1);
    let stable = total.saturating_sub(canary).max(1);
    (canary.min(total.max(1)), stable)
}

/// What a canary measured at its last analysis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measured {
    pub prometheus: Option<crate::prometheus::Evaluated>,
    pub failed: Option<String>,
}

impl Measured {
    pub fn describe(&self) -> String {
        match &self.prometheus {
            Some(p) => p.describe(),
            None => "canary pods ready".into(),
        }
    }
}

/// One service of a canary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub service: String,
    /// The stable Deployment's name.
    pub stable: String,
    /// The service's replicas.
    pub total: u32,
    /// The new release's Deployment as rendered (the stable one takes it at 100 %).
    pub new: Object,
    /// Replicas now: (canary, stable).
    pub replicas: (u32, u32),
    pub rollout: Rollout,
    /// A blue-green: the new set is `<name>-preview`, at full replicas.
    #[serde(default)]
    pub preview: bool,
    /// A blue-green: the `pod-template-hash` of the stable Deployment's ReplicaSet (the old
    /// set), which pins the production Service's selector to the old pods.
    #[serde(default)]
    pub old_hash: Option<String>,
    /// A blue-green: the production Service as the release renders it.
    #[serde(default)]
    pub service_obj: Option<Object>,
}

impl Service {
    pub fn canary_name(&self) -> String {
        if self.preview {
            format!("{}-preview", self.stable)
        } else {
            format!("{}-canary", self.stable)
        }
    }

    fn track(&self) -> &'static str {
        if self.preview {
            "preview"
        } else {
            "canary"
        }
    }

    /// The production Service with its selector narrowed by `extra` (`None`: as rendered).
    fn production(&self, extra: Option<(&str, &str)>) -> Option<Object> {
        let mut o = self.service_obj.clone()?;
        if let Some((k, v)) = extra {
            o.manifest["spec"]["selector"][k] = json!(v);
        }
        Some(o)
    }

    /// The preview Service `<service>-preview`: the production one's ports, selecting the
    /// preview pods only.
    fn preview_service(&self) -> Option<Object> {
        let mut o = self.service_obj.clone()?;
        let name = format!("{}-preview", o.name);
        o.manifest["metadata"]["name"] = json!(name);
        o.manifest["metadata"]["labels"][TRACK] = json!("preview");
        o.manifest["spec"]["selector"][TRACK] = json!("preview");
        o.name = name;
        Some(o)
    }

    /// The canary Deployment with `replicas` pods: the new release's template, its name,
    /// selector and pod labels marked with [`TRACK`] (the Service's selector still matches).
    pub fn canary(&self, replicas: u32) -> Object {
        let mut m = self.new.manifest.clone();
        let name = self.canary_name();
        m["metadata"]["name"] = json!(name);
        let track = self.track();
        m["metadata"]["labels"][TRACK] = json!(track);
        m["spec"]["replicas"] = json!(replicas);
        m["spec"]["selector"]["matchLabels"][TRACK] = json!(track);
        m["spec"]["template"]["metadata"]["labels"][TRACK] = json!(track);
        Object {
            api_version: self.new.api_version.clone(),
            kind: self.new.kind.clone(),
            name,
            manifest: m,
        }
    }
}

/// The state of a canary, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Canary {
    pub steps: Vec<Step>,
    /// The index of the next step (`steps.len()`: all ran).
    pub next: usize,
    /// The weight asked now, in percent (approximated by replicas).
    pub weight: u32,
    pub services: Vec<Service>,
    pub analysis: Option<Measured>,
    pub paused: Option<String>,
    #[serde(default)]
    pub resume_from: Option<usize>,
    /// Every step ran and the stable Deployment is taking the new template.
    #[serde(default)]
    pub completing: bool,
    pub release: String,
    pub version: String,
    /// A blue-green's phase (a canary: none).
    #[serde(default)]
    pub blue_green: Option<BlueGreen>,
}

/// A blue-green's state, in the canary's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlueGreen {
    pub phase: Phase,
    /// Seconds since the epoch when the old set's window ends (after promotion).
    pub keep_until: Option<u64>,
    /// `scale_down_delay` in seconds.
    pub delay: u64,
}

/// The promoted blue-green of `history` whose old set still waits: its record and state.
pub fn promoted_of(history: &[Release]) -> Option<(Release, Canary)> {
    let serving = crate::release::serving(history)?;
    let c = of_record(serving)?;
    (c.blue_green.as_ref()?.phase == Phase::Promoted).then(|| (serving.clone(), c))
}

impl Canary {
    /// `step 3/5 (pause (until promote)), 50% to the new release (replicas: canary 5, stable 5)`
    pub fn describe(&self) -> String {
        let at = match self.next.checked_sub(1).and_then(|i| self.steps.get(i)) {
            Some(s) => format!("step {}/{} ({s})", self.next, self.steps.len()),
            None => format!("before step 1/{}", self.steps.len()),
        };
        let replicas: Vec<String> = self
            .services
            .iter()
            .map(|s| {
                format!(
                    "{}: canary {}, stable {}",
                    s.service, s.replicas.0, s.replicas.1
                )
            })
            .collect();
        format!(
            "{at}, {}% to the new release by replicas ({})",
            self.weight,
            replicas.join("; ")
        )
    }

    fn conditions(&self, step: Option<&crate::config::progressive::Analysis>) -> Conditions {
        let rollout = self
            .services
            .first()
            .map(|s| s.rollout.clone())
            .unwrap_or_default();
        Conditions::of(&rollout, step)
    }
}

/// Parses a recorded canary.
pub fn of_record(rec: &Release) -> Option<Canary> {
    rec.state_of(STATE)
}

/// What another process asks of a running canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Pause,
    Abort,
}

/// How a run of steps ended.
pub enum Ended {
    Done,
    Paused(String),
}

/// `plan`'s line for a service that goes out as a canary.
pub fn plan_note(service: &str, deployment: &str, steps: &[Step], total: u32) -> String {
    let shares: Vec<String> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Weight(w) => {
                let (c, st) = split(*w, total);
                Some(format!("{w}% → {c} canary/{st} stable"))
            }
            _ => None,
        })
        .collect();
    format!(
        "{service}: strategy canary, weight approximated by the share of replicas (no traffic router): Deployment/{deployment}-canary beside Deployment/{deployment}, {} ({}); steps: {}",
        shares.join(", "),
        if total == 1 { "one replica: below 100% one pod of each" } else { "rounded to the nearest pod, at least one each" },
        describe(steps)
    )
}

/// `plan`'s line for a service that goes out as a blue-green.
pub fn blue_green_plan_note(service: &str, deployment: &str, r: &Rollout, total: u32) -> String {
    format!(
        "{service}: strategy blue_green: Deployment/{deployment}-preview with the new release at {total} replica(s) beside Deployment/{deployment}, answering on Service/{deployment}-preview; Service/{deployment} keeps selecting the old pods (its selector pinned to their pod-template-hash) until {}, then selects the new pods at once; the old set stays {} for a rollback by selector, then Deployment/{deployment} takes the new template and the preview set goes; steps: {}",
        if r.auto_promote { "the preview is ready (auto_promote)" } else { "`promote`" },
        r.scale_down_delay,
        describe(&crate::config::progressive::blue_green_steps(r))
    )
}

/// Whether a service's Deployment change goes out as a canary: its strategy says so and the
/// Deployment already serves (a first release has nothing to compare with: it rolls).
pub fn is_canary(rollout: &Rollout, deployment_exists: bool) -> bool {
    matches!(rollout.strategy, Strategy::Canary | Strategy::BlueGreen) && deployment_exists
}

impl Cluster {
    fn ask_name(&self) -> String {
        format!("{}-canary-ask", self.lease_name())
    }

    /// Asks the canary running in another process to pause or abort (a ConfigMap it reads).
    pub(super) async fn ask_canary(&self, ask: Ask) -> anyhow::Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": self.ask_name(), "labels": {"app.kubernetes.io/managed-by": MANAGER}},
            "data": {"ask": match ask { Ask::Pause => "pause", Ask::Abort => "abort" }},
        }))?;
        match api.create(&PostParams::default(), &cm).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                if ask == Ask::Abort {
                    api.replace(&self.ask_name(), &PostParams::default(), &cm)
                        .await
                        .map_err(|e| anyhow!("cannot ask the canary: {e}"))?;
                }
                Ok(())
            }
            Err(e) => Err(anyhow!("cannot ask the canary: {e}")),
        }
    }

    /// What was asked of this canary, if anything (taken: asked once).
    async fn take_ask(&self) -> anyhow::Result<Option<Ask>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(cm) = api
            .get_opt(&self.ask_name())
            .await
            .map_err(|e| anyhow!("cannot read the canary's asks: {e}"))?
        else {
            return Ok(None);
        };
        let _ = api.delete(&self.ask_name(), &DeleteParams::default()).await;
        let what = cm.data.unwrap_or_default().get("ask").cloned();
        Ok(Some(match what.as_deref() {
            Some("abort") => Ask::Abort,
            _ => Ask::Pause,
        }))
    }

    /// Saves the canary's state into the release record.
    async fn save_canary(&self, rec: &mut Release, c: &Canary) -> anyhow::Result<()> {
        *self.canary.lock().expect("canary") = Some(c.clone());
        rec.set_state(STATE, c);
        super::records::save(
            &self.secrets(),
            &self.region.cfg.app,
            &super::records::Record::of(rec),
        )
        .await
    }

    /// Starts a canary of the Deployments `held` (their new manifests) of release `rec`.
    pub(super) async fn start_canary(&self, rec: &Release, held: &[Object]) -> anyhow::Result<()> {
        let cfg = &self.region.cfg;
        let mut services = Vec::new();
        for o in held {
            let (name, svc) = cfg
                .services
                .iter()
                .find(|(n, _)| crate::render::object_name(cfg, n) == o.name)
                .ok_or_else(|| anyhow!("{} belongs to no service", o.key()))?;
            let total = o
                .manifest
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .map_or(svc.replicas, |r| r as u32);
            let bg = svc.rollout.strategy == Strategy::BlueGreen;
            let service_obj = if bg {
                let found = self
                    .wanted
                    .objects
                    .iter()
                    .find(|x| x.kind == "Service" && x.name == o.name)
                    .cloned();
                Some(found.ok_or_else(|| {
                    anyhow!(
                        "a blue-green switches Service/{}, which the release does not have",
                        o.name
                    )
                })?)
            } else {
                None
            };
            let old_hash = if bg {
                Some(self.template_hash(&o.name).await?)
            } else {
                None
            };
            services.push(Service {
                service: name.clone(),
                stable: o.name.clone(),
                total,
                new: o.clone(),
                replicas: (0, total),
                rollout: svc.rollout.clone(),
                preview: bg,
                old_hash,
                service_obj,
            });
        }
        let lead = &services[0].rollout;
        let bg = lead.strategy == Strategy::BlueGreen;
        let c = Canary {
            steps: if bg {
                crate::config::progressive::blue_green_steps(lead)
            } else {
                lead.steps.clone()
            },
            next: 0,
            weight: 0,
            analysis: None,
            paused: None,
            resume_from: None,
            completing: false,
            release: rec.id.clone(),
            version: rec.version.clone(),
            blue_green: bg.then_some(BlueGreen {
                phase: Phase::Preview,
                keep_until: None,
                delay: lead.scale_down_delay.0.as_secs(),
            }),
            services,
        };
        // An ask left over from an earlier canary is not for this one.
        self.take_ask().await?;
        self.region.ui.status(
            if bg { "Blue-green" } else { "Canary" },
            format!("{}: {}", rec.id, describe(&c.steps)),
        );
        if bg {
            let mut rec = rec.clone();
            self.save_canary(&mut rec, &c).await?;
            self.start_preview(&c).await?;
        }
        self.drive_canary(rec, c).await
    }

    /// Runs a canary's remaining steps; when all ran, the stable Deployment takes the new
    /// template and the canary goes. The state is in `self.canary` whatever happens.
    pub(super) async fn drive_canary(&self, rec: &Release, mut c: Canary) -> anyhow::Result<()> {
        let mut rec = rec.clone();
        *self.canary.lock().expect("canary") = Some(c.clone());
        let ended = self.run_steps(&mut rec, &mut c).await;
        *self.canary.lock().expect("canary") = Some(c.clone());
        match ended? {
            Ended::Paused(why) => self.region.ui.status("Paused", why),
            Ended::Done if c.blue_green.is_some() => {
                *self.canary.lock().expect("canary") = Some(c);
            }
            Ended::Done => {
                c.completing = true;
                self.save_canary(&mut rec, &c).await?;
                self.complete_canary(&mut c).await?;
                *self.canary.lock().expect("canary") = Some(c);
            }
        }
        Ok(())
    }

    async fn run_steps(&self, rec: &mut Release, c: &mut Canary) -> anyhow::Result<Ended> {
        c.paused = None;
        c.resume_from = None;
        while let Some(step) = c.steps.get(c.next).cloned() {
            c.next += 1;
            match step {
                Step::Weight(_) if c.blue_green.is_some() => {
                    self.promote_bg(rec, c).await?;
                }
                Step::Weight(w) => {
                    c.weight = w;
                    for s in &mut c.services {
                        s.replicas = split(w, s.total);
                    }
                    // Recorded first: a run killed while scaling is taken back whatever the
                    // replicas were.
                    self.save_canary(rec, c).await?;
                    self.scale(c).await?;
                }
                Step::Pause(Pause(None)) if c.blue_green.is_some() => {
                    let why = format!(
                        "the preview of {} answers on {} until promote",
                        c.version,
                        c.services
                            .iter()
                            .map(|s| format!("Service/{}-preview", s.stable))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    c.paused = Some(why.clone());
                    self.save_canary(rec, c).await?;
                    return Ok(Ended::Paused(why));
                }
                Step::Pause(Pause(None)) => {
                    let why = format!(
                        "paused at step {}/{} ({}% to the new release by replicas) until promote",
                        c.next,
                        c.steps.len(),
                        c.weight
                    );
                    c.paused = Some(why.clone());
                    self.save_canary(rec, c).await?;
                    return Ok(Ended::Paused(why));
                }
                Step::Pause(Pause(Some(p))) => {
                    self.region
                        .ui
                        .status("Pausing", format!("{p} at {}%", c.weight));
                    let cond = c.conditions(None);
                    if let Some(e) = self.watch(rec, c, &cond, p.0).await? {
                        return Ok(e);
                    }
                }
                Step::Analysis(a) => {
                    let cond = c.conditions(Some(&a));
                    self.region.ui.status(
                        "Analysing",
                        format!("the new release for {} at {}%", cond.duration, c.weight),
                    );
                    if let Some(e) = self.watch(rec, c, &cond, cond.duration.0).await? {
                        return Ok(e);
                    }
                    if let Some(m) = &c.analysis {
                        self.region.ui.status("Passed", m.describe());
                    }
                }
            }
            self.save_canary(rec, c).await?;
        }
        Ok(Ended::Done)
    }

    /// Scales every service to its recorded (canary, stable) replicas: the canary first
    /// (waited for: its pods must get ready), then the stable Deployment.
    async fn scale(&self, c: &Canary) -> anyhow::Result<()> {
        let deadline = self.progress_deadline();
        for s in &c.services {
            let (cn, st) = s.replicas;
            let canary = s.canary(cn);
            self.apply(&canary, true, false)
                .await
                .map_err(|e| anyhow!("cannot apply {}: {e}", canary.key()))?;
            super::wait::rollout(
                &self.client,
                &self.namespace,
                &canary.name,
                deadline,
                &self.region.ui,
            )
            .await
            .map_err(|e| anyhow!("the canary {}: {e}", canary.key()))?;
            self.set_replicas(&s.new, st).await?;
            super::wait::rollout(
                &self.client,
                &self.namespace,
                &s.stable,
                deadline,
                &self.region.ui,
            )
            .await
            .map_err(|e| anyhow!("Deployment/{}: {e}", s.stable))?;
            self.region.ui.status(
                "Weighted",
                format!(
                    "{}: {}% to the new release by replicas (Deployment/{} {cn}, Deployment/{} {st})",
                    s.service, c.weight, canary.name, s.stable
                ),
            );
        }
        Ok(())
    }

    /// Sets a Deployment's replicas alone (a merge patch under our field manager: its other
    /// fields stay as the last release applied them).
    async fn set_replicas(&self, o: &Object, replicas: u32) -> anyhow::Result<()> {
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        self.api(o)
            .patch(
                &o.name,
                &pp,
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map_err(|e| anyhow!("cannot scale {}: {e}", o.key()))?;
        Ok(())
    }

    /// Watches for `how_long`: the Prometheus condition every tick, another process's
    /// `pause` or `abort`. `Some`: the canary stops here.
    async fn watch(
        &self,
        rec: &mut Release,
        c: &mut Canary,
        cond: &Conditions,
        how_long: Duration,
    ) -> anyhow::Result<Option<Ended>> {
        let until = Instant::now() + how_long;
        loop {
            tokio::time::sleep(TICK.min(until.saturating_duration_since(Instant::now()))).await;
            if let Some(pc) = &cond.prometheus {
                let e = crate::prometheus::evaluate(pc, &c.release, &c.version).await;
                let failed = e.failed.clone();
                c.analysis = Some(Measured {
                    prometheus: Some(e),
                    failed: failed.clone(),
                });
                if let Some(why) = failed {
                    self.save_canary(rec, c).await?;
                    bail!("analysis failed: {why}");
                }
            }
            match self.take_ask().await? {
                Some(Ask::Abort) => bail!("aborted by hand"),
                Some(Ask::Pause) => {
                    let why = format!(
                        "paused by hand at step {}/{} ({}% to the new release by replicas)",
                        c.next,
                        c.steps.len(),
                        c.weight
                    );
                    c.resume_from = Some(c.next - 1);
                    c.paused = Some(why.clone());
                    self.save_canary(rec, c).await?;
                    return Ok(Some(Ended::Paused(why)));
                }
                None => {}
            }
            if Instant::now() >= until {
                return Ok(None);
            }
        }
    }

    /// The end of a canary that completed: the stable Deployment takes the new template at
    /// its full replicas (waited for), then the canary Deployment is deleted.
    async fn complete_canary(&self, c: &mut Canary) -> anyhow::Result<()> {
        for s in &mut c.services {
            self.apply(&s.new, true, false)
                .await
                .map_err(|e| anyhow!("cannot apply {}: {e}", s.new.key()))?;
            super::wait::rollout(
                &self.client,
                &self.namespace,
                &s.stable,
                self.progress_deadline(),
                &self.region.ui,
            )
            .await
            .map_err(|e| anyhow!("Deployment/{}: {e}", s.stable))?;
            self.delete(&s.canary(0))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            s.replicas = (0, s.total);
            self.region.ui.status(
                "Promoted",
                format!(
                    "{}: Deployment/{} runs the new release on {} replicas; Deployment/{} deleted",
                    s.service,
                    s.stable,
                    s.total,
                    s.canary_name()
                ),
            );
        }
        c.weight = 100;
        Ok(())
    }

    /// Takes a canary back: its canary Deployments deleted (the caller re-applies the
    /// stable ones from the record's backup). `None`: `rec` is no canary.
    pub(super) async fn abort_canary(&self, rec: &Release) -> Option<Vec<String>> {
        let held = self.canary.lock().expect("canary").clone();
        let mut c = held.or_else(|| of_record(rec))?;
        let mut problems = Vec::new();
        if c.blue_green.is_some() {
            if let Err(e) = self.switch_back_bg(&mut c).await {
                problems.push(format!("{e:#}"));
            }
            *self.canary.lock().expect("canary") = Some(c);
            return Some(problems);
        }
        for s in &c.services {
            if let Err(e) = self.delete(&s.canary(0)).await {
                problems.push(format!("{e}"));
            }
        }
        self.region.ui.status(
            "Aborted",
            "canary Deployments deleted; the stable Deployments go back to their full replicas",
        );
        c.weight = 0;
        c.paused = None;
        for s in &mut c.services {
            s.replicas = (0, s.total);
        }
        *self.canary.lock().expect("canary") = Some(c);
        Some(problems)
    }

    /// The `pod-template-hash` of the ReplicaSet Deployment `name` runs now (its revision).
    async fn template_hash(&self, name: &str) -> anyhow::Result<String> {
        use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
        const REVISION: &str = "deployment.kubernetes.io/revision";
        let deps: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let d = deps
            .get(name)
            .await
            .map_err(|e| anyhow!("cannot read Deployment/{name}: {e}"))?;
        let revision = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned();
        let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = sets
            .list(&Default::default())
            .await
            .map_err(|e| anyhow!("cannot list the ReplicaSets of Deployment/{name}: {e}"))?;
        list.items
            .into_iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Deployment" && o.name == name)
            })
            .find(|rs| rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) == revision.as_ref())
            .and_then(|rs| rs.metadata.labels?.get("pod-template-hash").cloned())
            .ok_or_else(|| anyhow!("Deployment/{name} has no ReplicaSet of its revision: a blue-green needs the old set running"))
    }

    /// A blue-green's start: the production Service pinned to the old pods (before any new
    /// pod exists), the preview Service, then the preview Deployment at full replicas, waited.
    async fn start_preview(&self, c: &Canary) -> anyhow::Result<()> {
        for s in &c.services {
            let hash = s.old_hash.as_deref().unwrap_or_default();
            self.apply_obj(s.production(Some(("pod-template-hash", hash))))
                .await?;
            self.apply_obj(s.preview_service()).await?;
            let preview = s.canary(s.total);
            self.apply_obj(Some(preview.clone())).await?;
            super::wait::rollout(
                &self.client,
                &self.namespace,
                &preview.name,
                self.progress_deadline(),
                &self.region.ui,
            )
            .await
            .map_err(|e| anyhow!("the preview {}: {e}", preview.key()))?;
            self.region.ui.status(
                "Preview",
                format!(
                    "{}: Deployment/{} ready on {} replica(s), answering on Service/{}-preview; Service/{} still selects the old pods only",
                    s.service, preview.name, s.total, s.stable, s.stable
                ),
            );
        }
        Ok(())
    }

    async fn apply_obj(&self, o: Option<Object>) -> anyhow::Result<()> {
        let o = o.ok_or_else(|| anyhow!("a blue-green has no Service recorded"))?;
        self.apply(&o, true, false)
            .await
            .map_err(|e| anyhow!("cannot apply {}: {e}", o.key()))?;
        Ok(())
    }

    /// Promotion: every production Service selects the preview pods at once; the old
    /// Deployment stays for `scale_down_delay`.
    async fn promote_bg(&self, rec: &mut Release, c: &mut Canary) -> anyhow::Result<()> {
        for s in &c.services {
            self.apply_obj(s.production(Some((TRACK, "preview"))))
                .await?;
            self.region.ui.status(
                "Switched",
                format!(
                    "{}: Service/{} selects the pods of Deployment/{} (the new release)",
                    s.service,
                    s.stable,
                    s.canary_name()
                ),
            );
        }
        c.weight = 100;
        if let Some(bg) = &mut c.blue_green {
            bg.phase = Phase::Promoted;
            bg.keep_until = Some(now_s() + bg.delay);
        }
        self.save_canary(rec, c).await
    }

    /// Back to the old set: every production Service selects the old pods again (at once),
    /// the preview Deployments and Services go; once their pods are gone the production
    /// Services take their rendered selectors again.
    async fn switch_back_bg(&self, c: &mut Canary) -> anyhow::Result<()> {
        for s in &c.services {
            let hash = s.old_hash.as_deref().unwrap_or_default();
            self.apply_obj(s.production(Some(("pod-template-hash", hash))))
                .await?;
        }
        self.region.ui.status(
            "Switched back",
            "the production Services select the old pods again",
        );
        self.remove_preview(c).await?;
        for s in &c.services {
            self.apply_obj(s.production(None)).await?;
        }
        if let Some(bg) = &mut c.blue_green {
            bg.phase = Phase::SwitchedBack;
        }
        c.weight = 0;
        c.paused = None;
        Ok(())
    }

    /// Deletes the preview Deployments and Services and waits (the progress deadline) until
    /// no preview pod is left.
    async fn remove_preview(&self, c: &Canary) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::Pod;
        for s in &c.services {
            self.delete(&s.canary(0))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if let Some(p) = s.preview_service() {
                self.delete(&p).await.map_err(|e| anyhow!("{e}"))?;
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = kube::api::ListParams::default().labels(&format!("{TRACK}=preview"));
        let until = Instant::now() + self.progress_deadline();
        loop {
            let left = pods
                .list(&lp)
                .await
                .map_err(|e| anyhow!("cannot list the preview pods: {e}"))?
                .items
                .len();
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("{left} preview pod(s) still there after the progress deadline");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The end of a promoted blue-green's window: the stable Deployment takes the new
    /// template (waited for; the production Service selects the preview pods meanwhile), the
    /// production Service its rendered selector, and the preview set and Service go.
    async fn scale_down_bg(&self, c: &mut Canary) -> anyhow::Result<()> {
        for s in &c.services {
            self.apply_obj(Some(s.new.clone())).await?;
            super::wait::rollout(
                &self.client,
                &self.namespace,
                &s.stable,
                self.progress_deadline(),
                &self.region.ui,
            )
            .await
            .map_err(|e| anyhow!("Deployment/{}: {e}", s.stable))?;
            self.apply_obj(s.production(None)).await?;
        }
        self.remove_preview(c).await?;
        if let Some(bg) = &mut c.blue_green {
            bg.phase = Phase::ScaledDown;
        }
        Ok(())
    }

    /// Ends the window of the promoted blue-green `id` (any, when `None`) of `history`.
    /// False: none waits.
    pub(super) async fn end_bg_window(
        &self,
        history: &[Release],
        id: Option<&str>,
    ) -> anyhow::Result<bool> {
        let Some((mut rec, mut c)) = promoted_of(history) else {
            return Ok(false);
        };
        if id.is_some_and(|i| i != rec.id) {
            return Ok(false);
        }
        self.region.ui.status(
            "Scaling down",
            format!(
                "the old set {} kept beside {}",
                rec.previous.as_deref().unwrap_or("?"),
                rec.id
            ),
        );
        self.scale_down_bg(&mut c).await?;
        rec.set_state(STATE, &c);
        super::records::save(
            &self.secrets(),
            &self.region.cfg.app,
            &super::records::Record::of(&rec),
        )
        .await?;
        Ok(true)
    }

    /// A rollback inside a promoted blue-green's window (`from`, its state `c`): a selector
    /// switch back, its record saying so.
    pub(super) async fn instant_rollback(
        &self,
        mut from: Release,
        mut c: Canary,
    ) -> anyhow::Result<()> {
        let r = self.switch_back_bg(&mut c).await;
        from.set_state(STATE, &c);
        super::records::save(
            &self.secrets(),
            &self.region.cfg.app,
            &super::records::Record::of(&from),
        )
        .await?;
        r
    }

    /// Whether every stable Deployment of the promoted blue-green `c` still runs the old set
    /// it kept (its revision's ReplicaSet is the recorded `pod-template-hash`).
    pub(super) async fn old_set_runs(&self, c: &Canary) -> bool {
        for s in &c.services {
            let Some(old) = &s.old_hash else {
                return false;
            };
            match self.template_hash(&s.stable).await {
                Ok(h) if &h == old => {}
                _ => return false,
            }
        }
        true
    }

    /// After a promotion this process made: the release and when its window ends.
    pub(super) fn bg_window(&self) -> Option<(String, u64)> {
        let c = self.canary.lock().expect("canary").clone()?;
        let bg = c.blue_green?;
        (bg.phase == Phase::Promoted).then_some((c.release, bg.keep_until?))
    }

    /// `status`: the canary of the last release, when it is paused or running.
    pub(super) async fn canary_status(
        &self,
        lines: &mut Vec<String>,
        json: &mut serde_json::Map<String, Value>,
        history: &[Release],
    ) -> anyhow::Result<()> {
        let Some(last) = history.last() else {
            return Ok(());
        };
        let live = matches!(
            last.outcome,
            crate::release::Outcome::Paused | crate::release::Outcome::InProgress
        );
        let promoted = |c: &Canary| {
            c.blue_green
                .as_ref()
                .is_some_and(|b| b.phase == Phase::Promoted)
        };
        let Some(c) = of_record(last).filter(|c| live || promoted(c)) else {
            return Ok(());
        };
        if let Some(bg) = &c.blue_green {
            let phase = match (bg.phase, bg.keep_until) {
                (Phase::Preview, _) if c.paused.is_some() => {
                    "preview: the new set answers on the preview Service only, waiting for promote".to_string()
                }
                (Phase::Preview, _) => "preview: the new set answers on the preview Service only".to_string(),
                (Phase::Promoted, Some(t)) if t > now_s() => format!(
                    "promoted: the old Deployment stays {}s more (`rollback` switches the selector back at once)",
                    t - now_s()
                ),
                (Phase::Promoted, _) => "promoted: its window is over; the old set goes with the next deploy or rollback".to_string(),
                (p, _) => p.as_str().to_string(),
            };
            lines.push(format!(
                "  blue-green {} ({}, {}): {phase}",
                last.id,
                last.version,
                last.outcome.as_str()
            ));
            let mut services = Vec::new();
            for s in &c.services {
                let serving = if bg.phase == Phase::Promoted {
                    "new"
                } else {
                    "old"
                };
                lines.push(format!(
                    "    {}: preview Service/{}-preview → Deployment/{}; Service/{} selects the {serving} pods",
                    s.service,
                    s.stable,
                    s.canary_name(),
                    s.stable
                ));
                services.push(json!({
                    "service": s.service, "preview_service": format!("{}-preview", s.stable),
                    "preview_deployment": s.canary_name(), "production_service": s.stable,
                    "stable": s.stable, "old_pod_template_hash": s.old_hash,
                }));
            }
            if let Some(m) = &c.analysis {
                lines.push(format!("    last analysis: {}", m.describe()));
            }
            if c.paused.is_some() {
                lines.push(format!(
                    "    `packfy-deploy promote --region {}` switches the Service to it, `abort` removes it",
                    self.region.name
                ));
            }
            json.insert(
                "blue_green".into(),
                json!({
                    "release": last.id, "version": last.version, "outcome": last.outcome.as_str(),
                    "phase": bg.phase.as_str(), "keep_until": bg.keep_until,
                    "paused": c.paused, "analysis": c.analysis, "services": services,
                }),
            );
            return Ok(());
        }
        lines.push(format!(
            "  canary {} ({}, {}): {}",
            last.id,
            last.version,
            last.outcome.as_str(),
            c.describe()
        ));
        lines.push(format!("    steps: {}", describe(&c.steps)));
        if let Some(m) = &c.analysis {
            lines.push(format!("    last analysis: {}", m.describe()));
        }
        if let Some(p) = &c.paused {
            lines.push(format!(
                "    {p}: `packfy-deploy promote --region {}` goes on, `abort` takes it back",
                self.region.name
            ));
        }
        let mut v = json!({
            "release": last.id, "version": last.version, "outcome": last.outcome.as_str(),
            "steps": describe(&c.steps), "next": c.next, "weight": c.weight,
            "paused": c.paused, "weight_by": "replicas",
            "analysis": c.analysis,
        });
        v["services"] = c
            .services
            .iter()
            .map(|s| json!({"service": s.service, "canary": s.canary_name(), "canary_replicas": s.replicas.0, "stable": s.stable, "stable_replicas": s.replicas.1}))
            .collect();
        json.insert("canary".into(), v);
        Ok(())
    }

    /// Steers the canary recorded in `rec` (`promote [--full]`, `resume`).
    pub(super) async fn steer_canary(
        &self,
        rec: &Release,
        how: crate::targets::Steer,
    ) -> anyhow::Result<()> {
        let mut c = of_record(rec)
            .ok_or_else(|| anyhow!("{} has no paused canary", self.region.place()))?;
        c.next = how.goes_on_at(c.next, c.resume_from, c.steps.len());
        self.region.ui.status(
            "Continuing",
            format!("{} from {}: {}", rec.id, c.describe(), describe(&c.steps)),
        );
        self.drive_canary(rec, c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_becomes_the_nearest_share_of_replicas() {
        assert_eq!(split(10, 10), (1, 9));
        assert_eq!(split(50, 10), (5, 5));
        assert_eq!(split(100, 10), (10, 0));
        assert_eq!(split(0, 10), (0, 10));
        assert_eq!(split(25, 10), (3, 7), "2.5 rounds up");
        assert_eq!(split(33, 3), (1, 2));
        assert_eq!(split(5, 4), (1, 3), "at least one canary pod");
        assert_eq!(split(95, 4), (4, 1), "at least one stable pod below 100%");
        assert_eq!(split(10, 1), (1, 1), "one replica: one of each below 100%");
        assert_eq!(split(100, 1), (1, 0));
    }

    #[test]
    fn plan_says_the_weight_is_approximated_by_replicas() {
        let steps = vec![
            Step::Weight(10),
            Step::Pause(Pause(None)),
            Step::Weight(100),
        ];
        let n = plan_note("web", "packfy-web", &steps, 10);
        assert!(n.contains("approximated by the share of replicas"), "{n}");
        assert!(n.contains("10% → 1 canary/9 stable"), "{n}");
        assert!(n.contains("Deployment/packfy-web-canary"), "{n}");
    }
}
