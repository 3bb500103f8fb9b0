//! Waiting for a Deployment's rollout by watching, never by polling: the Deployment's own
//! status decides (observedGeneration, updated/ready/available replicas, the Progressing
//! condition and its progress deadline, as `kubectl rollout status` judges), and the pods of
//! the new ReplicaSet are watched so a release whose pods crash-loop, cannot pull their image
//! or stay unschedulable fails at once with the reason instead of at the deadline.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};

use crate::ui::Ui;

/// How long a new pod may stay unschedulable before the rollout is called failed: this, or
/// half the progress deadline when that is shorter.
pub const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(30);
/// How long past the progress deadline the controller gets to say it was exceeded.
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);
/// Container waiting reasons that waiting longer cannot fix.
const HOPELESS: [&str; 7] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
const REVISION: &str = "deployment.kubernetes.io/revision";

/// What a Deployment's status says about its rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Still rolling, with a line of progress.
    Waiting(String),
    Complete(String),
    /// The controller gave up (progress deadline exceeded).
    Failed(String),
}

/// `kubectl rollout status`'s rules, on one observation of the Deployment.
pub fn judge(d: &Deployment) -> Judgement {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(st) = d.status.as_ref() else {
        return Judgement::Waiting("waiting for the controller to see it".into());
    };
    if st.observed_generation.unwrap_or(0) < generation {
        return Judgement::Waiting("waiting for the controller to see the new spec".into());
    }
    if let Some(c) = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
    {
        if c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Judgement::Failed(format!(
                "progress deadline exceeded: {}",
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let line = format!(
        "{updated}/{wanted} updated, {ready} ready, {available} available{}{}",
        if total > updated {
            format!(", {} old", total - updated)
        } else {
            String::new()
        },
        if total > wanted && total <= updated {
            format!(", {} to go", total - wanted)
        } else {
            String::new()
        }
    );
    // `total <= wanted` too: scaled down (a canary step), the controller first reports the
    // new spec with every pod still counted; the scale-down is done once they are not
    // (`kubectl rollout status` would call it complete then).
    if updated >= wanted && total <= updated && total <= wanted && available >= updated {
        Judgement::Complete(line)
    } else {
        Judgement::Waiting(line)
    }
}

/// Why a pod of the new release can never become ready, if that is so.
pub fn pod_problem(p: &Pod) -> Option<String> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let st = p.status.as_ref()?;
    for cs in st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
    {
        let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.clone().unwrap_or_default();
        if HOPELESS.contains(&reason.as_str()) {
            let last = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        "; last exit code {}{}",
                        t.exit_code,
                        t.reason
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            return Some(format!(
                "pod {name} container {}: {reason}{}{last}, {} restart(s)",
                cs.name,
                w.message
                    .as_ref()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default(),
                cs.restart_count
            ));
        }
    }
    None
}

/// Why a pod is not scheduled, if the scheduler said it cannot be.
pub fn unschedulable(p: &Pod) -> Option<String> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (c.reason.as_deref() == Some("Unschedulable")).then(|| {
        format!(
            "pod {} is unschedulable: {}",
            p.metadata.name.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        )
    })
}

type PodStream = Pin<Box<dyn Stream<Item = Result<Pod, watcher::Error>> + Send>>;

/// Waits until the Deployment `name` has rolled out, or says why it will not. The controller
/// judges the `progress_deadline`; past it (and a margin) the wait ends anyway.
pub async fn rollout(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    progress_deadline: Duration,
    ui: &Ui,
) -> Result<String, String> {
    let limit = progress_deadline + DEADLINE_MARGIN;
    let grace = UNSCHEDULABLE_GRACE.min(progress_deadline / 2);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let mut dstream = watcher(
        deployments,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let mut pods: PodStream = futures_util::stream::pending().boxed();
    let mut revision: Option<String> = None;
    let mut unscheduled: HashMap<String, (Instant, String)> = HashMap::new();
    let mut shown = (String::new(), Instant::now() - Duration::from_secs(60));
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_line = String::new();
    loop {
        tokio::select! {
            ev = dstream.next() => {
                let d = match ev {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => { ui.verbose(format!("{name}: watch: {e}")); continue }
                    None => return Err(format!("Deployment {name}: the watch ended")),
                };
                if let (Some(st), Some(spec)) = (d.status.as_ref(), d.spec.as_ref()) {
                    let ready_new = st.updated_replicas.unwrap_or(0).min(st.available_replicas.unwrap_or(0));
                    ui.progress(name, ready_new.max(0) as u64, spec.replicas.unwrap_or(1).max(0) as u64);
                }
                match judge(&d) {
                    Judgement::Complete(line) => return Ok(line),
                    Judgement::Failed(why) => return Err(format!("Deployment {name}: {why}")),
                    Judgement::Waiting(line) => {
                        if line != shown.0 && shown.1.elapsed() >= Duration::from_secs(2) {
                            ui.status("Waiting", format!("{name}: {line}"));
                            shown = (line.clone(), Instant::now());
                        }
                        last_line = line;
                    }
                }
                let observed = d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
                let rev = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
                if observed >= d.metadata.generation.unwrap_or(0) && rev.is_some() && rev != revision {
                    if let Some(stream) = new_pods(client, namespace, &d, rev.as_deref().unwrap_or_default()).await {
                        pods = stream;
                        unscheduled.clear();
                        revision = rev;
                    }
                }
            }
            ev = pods.next() => {
                let Some(Ok(p)) = ev else { continue };
                if let Some(why) = pod_problem(&p) {
                    return Err(format!("Deployment {name}: {why}"));
                }
                let pod = p.metadata.name.clone().unwrap_or_default();
                match unschedulable(&p) {
                    Some(why) => { unscheduled.entry(pod).or_insert((Instant::now(), why)); }
                    None => { unscheduled.remove(&pod); }
                }
            }
            _ = tick.tick() => {
                if let Some((_, why)) = unscheduled.values().find(|(since, _)| since.elapsed() >= grace) {
                    return Err(format!("Deployment {name}: {why} (for {}s)", grace.as_secs()));
                }
            }
            _ = &mut deadline => {
                return Err(format!("Deployment {name}: not rolled out after {}s ({last_line})", limit.as_secs()));
            }
        }
    }
}

/// A watch on the pods of the Deployment's ReplicaSet of `revision`.
async fn new_pods(
    client: &kube::Client,
    namespace: &str,
    d: &Deployment,
    revision: &str,
) -> Option<PodStream> {
    let labels = d.spec.as_ref()?.selector.match_labels.clone()?;
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let list = sets
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .ok()?;
    let uid = d.metadata.uid.as_deref()?;
    let rs = list.items.into_iter().find(|rs| {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid)
            && rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .map(String::as_str)
                == Some(revision)
    })?;
    let hash = rs
        .metadata
        .labels
        .as_ref()?
        .get("pod-template-hash")?
        .clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Some(
        watcher(
            pods,
            watcher::Config::default()
                .labels(&format!("{},pod-template-hash={hash}", selector.join(","))),
        )
        .default_backoff()
        .applied_objects()
        .boxed(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 5, "selector": {}, "template": {}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_completes_when_every_replica_is_new_and_available() {
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 5, "updatedReplicas": 5,
            "readyReplicas": 5, "availableReplicas": 5}),
        );
        assert!(matches!(judge(&d), Judgement::Complete(_)));
    }

    #[test]
    fn old_replicas_or_unavailable_ones_keep_it_waiting() {
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 6, "updatedReplicas": 5,
            "readyReplicas": 6, "availableReplicas": 6}),
        );
        assert_eq!(
            judge(&d),
            Judgement::Waiting("5/5 updated, 6 ready, 6 available, 1 old".into())
        );
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 5, "updatedReplicas": 5,
            "readyReplicas": 4, "availableReplicas": 4}),
        );
        assert!(matches!(judge(&d), Judgement::Waiting(_)));
    }

    #[test]
    fn a_scale_down_completes_once_the_pods_beyond_the_spec_are_gone() {
        // spec 5: the controller has seen it, the ReplicaSet has not deleted the extra pods.
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 7, "updatedReplicas": 7,
            "readyReplicas": 7, "availableReplicas": 7}),
        );
        assert_eq!(
            judge(&d),
            Judgement::Waiting("7/5 updated, 7 ready, 7 available, 2 to go".into())
        );
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 5, "updatedReplicas": 5,
            "readyReplicas": 5, "availableReplicas": 5}),
        );
        assert!(matches!(judge(&d), Judgement::Complete(_)));
    }

    #[test]
    fn a_status_from_an_older_generation_decides_nothing() {
        let d = deployment(
            json!({"observedGeneration": 1, "replicas": 5, "updatedReplicas": 5,
            "readyReplicas": 5, "availableReplicas": 5}),
        );
        assert!(matches!(judge(&d), Judgement::Waiting(_)));
    }

    #[test]
    fn the_progress_deadline_fails_it() {
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 6, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-5d\" has timed out progressing."}]}),
        );
        assert_eq!(
            judge(&d),
            Judgement::Failed(
                "progress deadline exceeded: ReplicaSet \"web-5d\" has timed out progressing."
                    .into()
            )
        );
    }

    #[test]
    fn crash_loops_and_pull_failures_are_hopeless() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1"},
            "status": {"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        }))
        .unwrap();
        assert_eq!(
            pod_problem(&p).unwrap(),
            "pod web-1 container web: CrashLoopBackOff (back-off 40s); last exit code 1 (Error), 3 restart(s)"
        );
        let mut q = p.clone();
        q.status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .state =
            serde_json::from_value(json!({"waiting": {"reason": "ContainerCreating"}})).unwrap();
        assert_eq!(pod_problem(&q), None);
    }

    #[test]
    fn unschedulable_pods_say_why() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-2"},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."}]}
        }))
        .unwrap();
        assert_eq!(
            unschedulable(&p).unwrap(),
            "pod web-2 is unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
        );
    }
}
