//! A service's release step on a Kubernetes region: a Job from the new image, with the
//! service's environment as the release renders it (its ConfigMap's values inline, its
//! secret values in a Secret of the Job's own, since neither the release's ConfigMap nor its
//! Secret is applied yet), waited for by watching, its pod's logs shown when it fails, and
//! deleted after with everything it made.
//!
//! `backoffLimit: 0` (a migration is not retried behind anyone's back) and
//! `activeDeadlineSeconds` = the step's timeout, so the cluster itself stops a hanging step;
//! our own wait ends a margin later in any case. A kwok cluster serves no pod logs: the step
//! is judged from the Job and its pod's status alone, and says so.

use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};

use super::objects::Object;
use super::{Cluster, MANAGER};
use crate::config::model::ReleaseStep;
use crate::targets::{LastLines, StepRun};

/// The label every object of a release step carries (value: `release-step`).
const ROLE: &str = "packfy.io/role";
/// How long past the step's timeout (the Job's `activeDeadlineSeconds`) our wait goes on.
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// What a Job's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    /// The Job failed: its condition's reason (`DeadlineExceeded`, `BackoffLimitExceeded`)
    /// and message.
    Failed(String, String),
}

/// The Job's `Complete` or `Failed` condition, when it has one that is true.
pub fn job_state(j: &Job) -> JobState {
    let conditions = j.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                return JobState::Failed(
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            }
            _ => {}
        }
    }
    JobState::Running
}

/// The Job of `service`'s release step for `release`, and the Secret of its secret values
/// (None when the service has none), from the release's rendered objects.
pub fn release_job(
    objects: &[Object],
    namespace: &str,
    deployment: &str,
    step: &ReleaseStep,
    release: &str,
) -> Result<(Object, Option<Object>), String> {
    let d = objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == deployment)
        .ok_or_else(|| format!("the release renders no Deployment/{deployment}"))?;
    let container = d
        .manifest
        .pointer("/spec/template/spec/containers/0")
        .ok_or_else(|| format!("Deployment/{deployment} has no container"))?;
    let labels = d
        .manifest
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let name = job_name(deployment, release);
    let mut labels = labels.as_object().cloned().unwrap_or_default();
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    labels.insert(ROLE.into(), "release-step".into());
    labels.insert("packfy.io/release".into(), release.into());
    let secret_name = format!("{name}-env");
    let mut env: Vec<Value> = Vec::new();
    // The ConfigMaps the container reads, as the release renders them.
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let Some(cm) = from.pointer("/configMapRef/name").and_then(Value::as_str) else {
            continue;
        };
        let data = objects
            .iter()
            .find(|o| o.kind == "ConfigMap" && o.name == cm)
            .and_then(|o| o.manifest["data"].as_object().cloned())
            .unwrap_or_default();
        env.extend(
            data.into_iter()
                .map(|(k, v)| json!({"name": k, "value": v})),
        );
    }
    // Secret variables come from the Job's own Secret, holding the release's values.
    let mut secret_data = serde_json::Map::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let var = e["name"].as_str().unwrap_or_default().to_string();
        let mut e = e.clone();
        if let Some(r) = e.pointer_mut("/valueFrom/secretKeyRef") {
            let (from, key) = (r["name"].as_str(), r["key"].as_str());
            let value = objects
                .iter()
                .find(|o| o.is_secret() && Some(o.name.as_str()) == from)
                .and_then(|o| key.and_then(|k| o.manifest["stringData"].get(k)).cloned())
                .ok_or_else(|| format!("the release renders no secret value for {var}"))?;
            secret_data.insert(key.unwrap_or_default().to_string(), value);
            r["name"] = secret_name.clone().into();
        }
        env.push(e);
    }
    let mut spec = json!({
        "name": "release",
        "image": container["image"],
        "args": step.argv(),
        "env": env,
    });
    if let Some(resources) = container.get("resources") {
        spec["resources"] = resources.clone();
    }
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": step.timeout.0.as_secs().max(1),
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [spec]},
            },
        },
    });
    let secret = (!secret_data.is_empty()).then(|| Object {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: secret_name.clone(),
        manifest: json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name, "namespace": namespace, "labels": labels},
            "type": "Opaque",
            "stringData": secret_data,
        }),
    });
    let job = Object {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name,
        manifest: job,
    };
    Ok((job, secret))
}

/// `packfy-web-release-r3`, within the 63 characters a label value allows (the Job controller
/// labels its pods with the Job's name).
fn job_name(deployment: &str, release: &str) -> String {
    let suffix = format!("-release-{release}");
    let keep = 63usize.saturating_sub(suffix.len()).min(deployment.len());
    format!("{}{suffix}", deployment[..keep].trim_end_matches('-'))
}

impl Cluster {
    pub(super) async fn run_release_step(
        &self,
        service: &str,
        step: &ReleaseStep,
        release: &str,
    ) -> anyhow::Result<StepRun> {
        let deployment = crate::render::object_name(&self.region.cfg, service);
        let (job, secret) = release_job(
            &self.wanted.objects,
            &self.namespace,
            &deployment,
            step,
            release,
        )
        .map_err(|e| anyhow!(e))?;
        self.remove_leftover_steps().await?;
        let pp = PostParams::default();
        if let Some(s) = &secret {
            let s: Secret = serde_json::from_value(s.manifest.clone())?;
            self.secrets()
                .create(&pp, &s)
                .await
                .context("cannot create the release step's Secret")?;
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let j: Job = serde_json::from_value(job.manifest.clone())?;
        let run = match jobs.create(&pp, &j).await {
            Ok(_) => {
                self.region
                    .ui
                    .status("Started", format!("Job/{} ({})", job.name, step.command));
                self.wait_job(&jobs, &job.name, step).await
            }
            Err(e) => Err(anyhow!("cannot create Job/{}: {e}", job.name)),
        };
        self.remove_leftover_steps().await?;
        run
    }

    /// Watches the Job until it completes or fails (or our own deadline passes); then its
    /// pod's exit code and last lines of output.
    async fn wait_job(
        &self,
        jobs: &Api<Job>,
        name: &str,
        step: &ReleaseStep,
    ) -> anyhow::Result<StepRun> {
        let mut stream = watcher(
            jobs.clone(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        let limit = step.timeout.0 + DEADLINE_MARGIN;
        let state = tokio::time::timeout(limit, async {
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(j) => match job_state(&j) {
                        JobState::Running => {}
                        done => return Ok(done),
                    },
                    Err(e) => self.region.ui.verbose(format!("Job/{name}: watch: {e}")),
                }
            }
            Err(anyhow!("the watch of Job/{name} ended"))
        })
        .await;
        let state = match state {
            Ok(s) => s?,
            Err(_) => JobState::Failed("DeadlineExceeded".into(), "no end seen".into()),
        };
        let mut run = StepRun {
            timed_out: matches!(&state, JobState::Failed(r, _) if r == "DeadlineExceeded"),
            ..Default::default()
        };
        if let JobState::Failed(reason, message) = &state {
            run.notes
                .push(format!("Job/{name} failed: {reason}: {message}"));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .with_context(|| format!("cannot list the pods of Job/{name}"))?;
        let Some(pod) = list.items.into_iter().next() else {
            run.notes.push(format!("Job/{name} started no pod"));
            return Ok(run);
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let terminated = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        run.exit_code = terminated.map(|t| i64::from(t.exit_code));
        if run.exit_code.is_none() && state == JobState::Succeeded {
            run.exit_code = Some(0);
        }
        let logs = pods
            .logs(
                &pod_name,
                &LogParams {
                    tail_lines: Some(LastLines::KEEP as i64),
                    ..Default::default()
                },
            )
            .await;
        match logs {
            Ok(text) => run.tail = text.lines().map(str::to_string).collect(),
            Err(e) => run.notes.push(format!(
                "the logs of pod {pod_name} could not be read ({}): the node serves none",
                short(&e.to_string())
            )),
        }
        if state != JobState::Succeeded {
            for line in &run.tail {
                self.region
                    .ui
                    .status("", format!("{}/{} | {line}", self.region.name, pod_name));
            }
        }
        Ok(run)
    }

    /// Deletes every release-step Job (and its pods and Secret) of the app in the namespace:
    /// ours once it ended, or what a killed run left.
    async fn remove_leftover_steps(&self) -> anyhow::Result<()> {
        let selector = format!(
            "{ROLE}=release-step,app.kubernetes.io/name={}",
            self.region.cfg.app
        );
        let lp = ListParams::default().labels(&selector);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        jobs.delete_collection(&dp, &lp)
            .await
            .context("cannot delete the release step's Job")?;
        self.secrets()
            .delete_collection(&DeleteParams::default(), &lp)
            .await
            .context("cannot delete the release step's Secret")?;
        Ok(())
    }
}

/// The first line of an error, at most 120 characters.
fn short(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Duration as Dur, HookCommand};

    fn job(status: Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "status": status})).unwrap()
    }

    #[test]
    fn a_job_is_judged_by_its_true_condition() {
        assert_eq!(job_state(&job(json!({"active": 1}))), JobState::Running);
        assert_eq!(
            job_state(&job(json!({"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"}]}))),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&job(json!({"conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "message": "Job was active longer than specified deadline"}]}))),
            JobState::Failed(
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into()
            )
        );
        assert_eq!(
            job_state(&job(
                json!({"conditions": [{"type": "Failed", "status": "False"}]})
            )),
            JobState::Running
        );
    }

    #[test]
    fn the_job_runs_the_new_image_with_the_release_environment() {
        let objs = vec![
            Object {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "packfy-web".into(),
                manifest: json!({"metadata": {"labels": {"app.kubernetes.io/component": "web"}},
                    "spec": {"template": {"spec": {"containers": [{"name": "web",
                    "image": "reg/web:v2", "envFrom": [{"configMapRef": {"name": "packfy-web-env"}}],
                    "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "packfy-web-secrets", "key": "DB_PASSWORD"}}}]}]}}}}),
            },
            Object {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "packfy-web-env".into(),
                manifest: json!({"data": {"APP_VERSION": "v2"}}),
            },
            Object {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: "packfy-web-secrets".into(),
                manifest: json!({"stringData": {"DB_PASSWORD": "s3cret"}}),
            },
        ];
        let step = ReleaseStep {
            command: HookCommand::Argv(vec!["migrate".into()]),
            timeout: Dur::from_secs(90),
            reversible: false,
        };
        let (job, secret) = release_job(&objs, "mx", "packfy-web", &step, "r3").unwrap();
        assert_eq!(job.name, "packfy-web-release-r3");
        let m = &job.manifest;
        assert_eq!(m["spec"]["backoffLimit"], 0);
        assert_eq!(m["spec"]["activeDeadlineSeconds"], 90);
        let c = &m["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "reg/web:v2");
        assert_eq!(c["args"], json!(["migrate"]));
        assert_eq!(
            c["env"],
            json!([{"name": "APP_VERSION", "value": "v2"},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "packfy-web-release-r3-env", "key": "DB_PASSWORD"}}}])
        );
        assert!(
            !m.to_string().contains("s3cret"),
            "no secret value in the Job"
        );
        let secret = secret.unwrap();
        assert_eq!(secret.name, "packfy-web-release-r3-env");
        assert_eq!(secret.manifest["stringData"]["DB_PASSWORD"], "s3cret");
        assert_eq!(m["metadata"]["labels"]["packfy.io/role"], "release-step");
        assert!(release_job(&objs, "mx", "packfy-api", &step, "r3").is_err());
        assert_eq!(job_name(&"x".repeat(70), "r12").len(), 63);
    }
}
