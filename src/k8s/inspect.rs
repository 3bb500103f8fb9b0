//! The read-only commands on a Kubernetes region (`history`, `status`, `plan`, `diff --live`)
//! and the lock by hand (`lock`, `unlock`).

use std::time::Duration;

use anyhow::anyhow;
use chrono::Utc;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::flow::releases;
use super::{lease, objects, records, wait, Action, Change, Cluster};
use crate::deploy;
use crate::docker::state::Acquire;
use crate::error::{Error, ExitCode, Result};
use crate::ops::Ctx;
use crate::release::{self, Release};

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
    let lock = lease::current(&c.leases(), &c.lease_name())
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
        deploy::status_header(
            ctx,
            &format!(
                "{} on {} (context {}, namespace {})",
                c.where_(),
                c.server,
                c.context,
                c.namespace
            ),
            serving,
            lock.as_ref(),
            interrupted.as_deref(),
        );
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
            for p in s["problems"].as_array().into_iter().flatten() {
                ctx.ui.out(format!("    {}", p.as_str().unwrap_or("")));
            }
        }
    }
    Ok(value)
}

/// What `deploy` would change (`plan` and `diff --live`): the region reached and every
/// object's change, as the API server's dry run says and against the serving release.
async fn planned(
    ctx: &Ctx,
    region: &str,
    version: Option<String>,
) -> Result<(Cluster, Vec<Change>)> {
    let c = Cluster::open(ctx, region).await?;
    let opts = deploy::DeployOptions {
        version,
        ..Default::default()
    };
    let version = deploy::version_of(&opts, &c.cfg)
        .ok_or_else(|| Error::usage_hint("no version to compare with", "pass --version V"))?;
    let objs = c.desired(ctx, &version)?;
    let history = c.history().await?;
    let changes = c.changes(&objs, false, records::serving(&history)).await?;
    Ok((c, changes))
}

/// `plan` of a Kubernetes region: the API server's dry run of every object against live.
pub async fn plan(ctx: &Ctx, region: &str, version: Option<String>) -> Result<ExitCode> {
    let (c, changes) = planned(ctx, region, version).await?;
    let mut notes = Vec::new();
    if let Some(l) = lease::current(&c.leases(), &c.lease_name())
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
    let (c, changes) = planned(ctx, region, version).await?;
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
        &c.lease_name(),
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
    let name = c.lease_name();
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
