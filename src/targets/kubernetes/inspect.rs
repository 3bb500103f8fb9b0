//! `status` of a Kubernetes region: per service the Deployment's replicas, image, revision and
//! rollout state, and every pod that cannot get ready with the reason (also after a change
//! made by hand with kubectl).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::{wait, Cluster};
use crate::error::Result;
use crate::targets::Status;

pub(super) async fn status(c: &Cluster) -> Result<Status> {
    let cfg = &c.region.cfg;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &c.namespace);
    let mut services = Vec::new();
    for (name, svc) in &cfg.services {
        let dname = crate::render::object_name(cfg, name);
        let d = deployments
            .get_opt(&dname)
            .await
            .map_err(|e| c.api_error("cannot read the Deployments", e))?;
        let st = d
            .as_ref()
            .and_then(|d| d.status.clone())
            .unwrap_or_default();
        // pods that cannot get ready, whatever their release, with the reason
        let mut problems = Vec::new();
        if let Some(labels) = d
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.selector.match_labels.clone())
        {
            let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
            let list = pods
                .list(&ListParams::default().labels(&selector.join(",")))
                .await
                .map_err(|e| c.api_error("cannot list the pods", e))?;
            problems = list
                .items
                .iter()
                .filter_map(|p| wait::pod_problem(p).or_else(|| wait::unschedulable(p)))
                .collect();
        }
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
            "problems": problems,
            "rollout": d.as_ref().map(|d| match wait::judge(d) { wait::Judgement::Complete(l) => format!("complete: {l}"), wait::Judgement::Waiting(l) => format!("in progress: {l}"), wait::Judgement::Failed(l) => format!("failed: {l}") }),
        }));
    }
    let mut lines = Vec::new();
    for s in &services {
        lines.push(format!(
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
        for p in s["problems"].as_array().into_iter().flatten() {
            lines.push(format!("    {}", p.as_str().unwrap_or("")));
        }
    }
    let mut j = serde_json::Map::new();
    let history = crate::targets::Target::history(c).await?;
    c.canary_status(&mut lines, &mut j, &history)
        .await
        .map_err(crate::error::Error::from)?;
    j.insert("target".into(), "kubernetes".into());
    j.insert("endpoint".into(), c.server.clone().into());
    j.insert("context".into(), c.context.clone().into());
    j.insert("namespace".into(), c.namespace.clone().into());
    j.insert("services".into(), Value::Array(services));
    Ok(Status {
        endpoint: format!(
            "{} (context {}, namespace {})",
            c.server, c.context, c.namespace
        ),
        lines,
        json: j,
    })
}
