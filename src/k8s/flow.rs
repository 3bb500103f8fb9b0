//! `deploy` and `rollback` on a Kubernetes region (the steps are listed in `super`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::Utc;
use serde_json::Value;

use super::objects::Object;
use super::records::{self, Record};
use super::{Action, Change, Cluster, MANAGER};
use crate::config::model::{EnvValue, RegionConfig};
use crate::deploy::{self, DeployOptions, Summary};
use crate::error::{Error, ExitCode, Result};
use crate::hooks::{HookEnv, HookKind};
use crate::notify::NotifyKind;
use crate::ops::Ctx;
use crate::release::{self, Kind, Outcome, Release, ServiceRecord};

/// The summary record of each service, for history (`image_id` stays empty: the cluster pulls).
fn service_records(cfg: &RegionConfig, objs: &[Object]) -> Vec<ServiceRecord> {
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
                    &Sha256::digest(serde_json::to_vec(&redacted).unwrap_or_default())[..8],
                ),
            }
        })
        .collect()
}

pub(super) fn releases(history: &[Record]) -> Vec<Release> {
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
    if opts.push {
        ctx.ui.warn(format!(
            "--push: {region} is a Kubernetes region, which builds and pushes nothing; it deploys the tag as it is in the registry"
        ));
    }
    // The same version a Docker region of the run tags (the git commit for built services),
    // so one `deploy --region all` deploys one version everywhere.
    let version = deploy::version_of(opts, &c.cfg).ok_or_else(|| {
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
    let current_rec = records::serving(&history);
    let current = current_rec.map(|r| r.release.clone());
    let changes = c.changes(&objs, force, current_rec).await?;
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
    let number = records::next_number(&history);
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
    notify.start(&hook_env).await;
    let mut rec = Record {
        release: c.new_release(
            number,
            Kind::Deploy,
            version,
            hook_env.previous.clone(),
            None,
        ),
        applied: objs.iter().map(Object::redacted).collect(),
        before: changes.iter().map(Change::prior).collect(),
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
        deploy::post_deploy_hooks(ctx, &c.cfg, &c.root, &hook_env).await?;
        anyhow::Ok(())
    };
    let outcome = deploy::interruptible(work).await;
    let (id, previous) = (Some(rec.release.id.clone()), rec.release.previous.clone());
    match outcome {
        Ok(()) => {
            c.succeeded(ctx, &mut rec, &history).await?;
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
    ctx.ui.warn(deploy::recovering(r));
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
    let lock = c.lock(ctx, &deploy::rollback_reason(to), lock_wait).await?;
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
    let number = records::next_number(&history);
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
            c.succeeded(ctx, &mut rec, &history).await?;
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
            deploy::after_rollback(ctx, &notify, &c.root, target, current, hook_env).await;
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
