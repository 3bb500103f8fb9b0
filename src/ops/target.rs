//! Commands that talk to a region's target: deploy, rollback, plan, build, status, history,
//! lock, unlock and `diff --live`. Each runs on a tokio runtime made here; the work is in
//! `crate::deploy`.

use std::time::Duration;

use anyhow::anyhow;
use chrono::Utc;

use crate::cli::DeployArgs;
use crate::deploy::{self, DeployOptions, Session};
use crate::docker::state::Acquire;
use crate::error::{Error, ExitCode, Result};
use crate::k8s;
use crate::release;

use super::Ctx;

fn block_on<F: std::future::Future<Output = Result<ExitCode>>>(f: F) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            Error::failed(
                ExitCode::NeedsPerson,
                anyhow!("cannot start the async runtime: {e}"),
            )
        })?;
    rt.block_on(f)
}

/// Deploys and rollbacks stream their steps: NDJSON with -o json, timestamps off a terminal.
fn streaming(ctx: &Ctx) -> Ctx {
    let mut ui = ctx.ui.clone();
    ui.stream = true;
    ui.timestamps = !crate::ui::interactive();
    ctx.with(ui, ctx.env)
}

fn several(region: &str) -> bool {
    region == "all" || region.contains(',')
}

pub fn deploy(ctx: &Ctx, args: &DeployArgs) -> Result<ExitCode> {
    let ctx = &streaming(ctx);
    let opts = DeployOptions {
        version: args.version.clone(),
        no_build: args.no_build,
        push: args.push,
        lock_wait: args.lock_wait,
        reason: args.reason.clone(),
        force_conflicts: args.force_conflicts,
    };
    if several(&args.region) {
        let selected = deploy::fleet::select(ctx, &args.region)?;
        return block_on(deploy::fleet::deploy(ctx, selected, &opts));
    }
    block_on(deploy::deploy(ctx, &args.region, &opts))
}

pub fn rollback(
    ctx: &Ctx,
    region: &str,
    to: Option<&str>,
    lock_wait: Option<Duration>,
) -> Result<ExitCode> {
    let ctx = &streaming(ctx);
    if several(region) {
        if to.is_some() {
            return Err(Error::usage(
                "--to names a release of one region; roll back several regions without it",
            ));
        }
        let selected = deploy::fleet::select(ctx, region)?;
        return block_on(deploy::fleet::rollback(ctx, selected));
    }
    block_on(deploy::rollback(ctx, region, to, lock_wait))
}

pub fn build(ctx: &Ctx, region: &str, push: bool, version: Option<String>) -> Result<ExitCode> {
    if k8s::targets_kubernetes(ctx, region)? {
        return Err(Error::usage_hint(
            format!("region '{region}' targets Kubernetes: its images are built and pushed elsewhere"),
            "build on a Docker region (`packfy-deploy build --region local --push`), or by CI; deploy then names the tag with --version",
        ));
    }
    block_on(async {
        let s = Session::open(ctx, region).await?;
        let opts = DeployOptions {
            version,
            push,
            ..Default::default()
        };
        let version = deploy::version_of(&opts, &s.cfg)
            .ok_or_else(|| Error::usage_hint("no version to tag", "pass --version V"))?;
        if !s.cfg.services.values().any(|svc| svc.build.is_some()) {
            return Err(Error::usage_hint(
                format!("no service of region '{region}' has a `build:` section"),
                "add `build: {context: ., dockerfile: Dockerfile}` to a service",
            ));
        }
        let images = deploy::resolve_images_for_build(ctx, &s, &version, &opts).await?;
        for (svc, image, id) in &images {
            ctx.ui.out(format!("{svc}: {image} ({id})"));
        }
        Ok(ExitCode::Success)
    })
}

pub fn plan(ctx: &Ctx, region: &str, version: Option<String>) -> Result<ExitCode> {
    if k8s::targets_kubernetes(ctx, region)? {
        return block_on(k8s::plan(ctx, region, version));
    }
    block_on(async {
        let s = Session::open(ctx, region).await?;
        let opts = DeployOptions {
            version,
            ..Default::default()
        };
        let (plans, removed, notes) = deploy::plan(&s, &opts).await?;
        let changes = plans
            .iter()
            .any(|p| p.action != crate::plan::Action::Unchanged)
            || !removed.is_empty();
        if ctx.ui.json() {
            ctx.ui.out_json(&serde_json::json!({
                "region": s.region, "environment": s.env, "changes": changes,
                "services": plans, "removed": removed, "notes": notes,
            }));
        } else {
            for p in &plans {
                ctx.ui.out(p.describe());
            }
            for r in &removed {
                ctx.ui
                    .out(format!("{r}: remove (no longer in the configuration)"));
            }
            for n in &notes {
                ctx.ui.out(format!("note: {n}"));
            }
        }
        Ok(if changes {
            ExitCode::Changes
        } else {
            ExitCode::Success
        })
    })
}

pub fn diff_live(ctx: &Ctx, region: &str, version: Option<String>) -> Result<ExitCode> {
    block_on(async {
        let (env, left, right) = if k8s::targets_kubernetes(ctx, region)? {
            k8s::live_and_desired_lines(ctx, region, version).await?
        } else {
            let s = Session::open(ctx, region).await?;
            let opts = DeployOptions {
                version,
                ..Default::default()
            };
            let (left, right) = deploy::live_and_desired_lines(&s, &opts).await?;
            (s.env.clone(), left, right)
        };
        let same = left == right;
        if ctx.ui.json() {
            ctx.ui.out_json(&serde_json::json!({"region": region, "environment": env, "same": same, "live": left, "desired": right}));
        } else if same {
            ctx.ui.status(
                "Same",
                format!("{region}/{env} runs what its configuration says"),
            );
        } else {
            super::diff::print_unified(
                &format!("{region} ({env}) live"),
                &format!("{region} ({env}) desired"),
                &left,
                &right,
            );
        }
        Ok(if same {
            ExitCode::Success
        } else {
            ExitCode::Changes
        })
    })
}

pub fn status(ctx: &Ctx, region: Option<&str>) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let names: Vec<String> = match region {
        Some(r) => vec![r.to_string()],
        None => regions
            .names()
            .into_iter()
            .filter(|n| {
                regions
                    .effective(n, ctx.env_or_default())
                    .and_then(|e| e.config.ok())
                    .is_some_and(|c| c.target.docker.is_some() || c.target.kubernetes.is_some())
            })
            .map(str::to_string)
            .collect(),
    };
    block_on(async {
        let mut worst = ExitCode::Success;
        let mut all = Vec::new();
        for name in &names {
            match deploy::status(ctx, name).await {
                Ok(v) => all.push(v),
                Err(e) => {
                    if names.len() == 1 {
                        return Err(e);
                    }
                    ctx.ui.error(format!("{name}: {e}"));
                    all.push(serde_json::json!({"region": name, "error": e.to_string()}));
                    worst = deploy::fleet::worst([worst, e.code()]);
                }
            }
        }
        if ctx.ui.json() {
            ctx.ui.out_json(&serde_json::Value::Array(all));
        }
        Ok(worst)
    })
}

pub fn history(ctx: &Ctx, region: &str, limit: usize) -> Result<ExitCode> {
    block_on(async {
        let (region, env, history) = if k8s::targets_kubernetes(ctx, region)? {
            k8s::history(ctx, region).await?
        } else {
            let s = Session::open(ctx, region).await?;
            let history = s.engine.releases(&s.scope).await?;
            (s.region, s.env, history)
        };
        let shown: Vec<_> = history.iter().rev().take(limit).collect();
        if ctx.ui.json() {
            ctx.ui
                .out_json(&serde_json::to_value(&shown).map_err(anyhow::Error::from)?);
            return Ok(ExitCode::Success);
        }
        if shown.is_empty() {
            ctx.ui.out(format!("{region}/{env}: no releases yet"));
            return Ok(ExitCode::Success);
        }
        ctx.ui.out(format!(
            "{:<6} {:<9} {:<12} {:<20} {:<8} {:<24} {}",
            "ID", "KIND", "OUTCOME", "VERSION", "TOOK", "STARTED", "ACTOR"
        ));
        for r in shown {
            ctx.ui.out(format!(
                "{:<6} {:<9} {:<12} {:<20} {:<8} {:<24} {}{}",
                r.id,
                match r.kind {
                    release::Kind::Deploy => "deploy",
                    release::Kind::Rollback => "rollback",
                },
                r.outcome.as_str(),
                r.version,
                r.duration_secs().map_or("-".into(), |d| format!("{d:.1}s")),
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                r.actor,
                match (&r.target, &r.error) {
                    (Some(t), _) => format!("  (to {t})"),
                    (None, Some(e)) => format!("  ({})", e.lines().next().unwrap_or("")),
                    _ => String::new(),
                }
            ));
        }
        Ok(ExitCode::Success)
    })
}

pub fn lock(ctx: &Ctx, region: &str, reason: &str, ttl: Option<Duration>) -> Result<ExitCode> {
    if k8s::targets_kubernetes(ctx, region)? {
        return block_on(k8s::lock(ctx, region, reason, ttl));
    }
    block_on(async {
        let s = Session::open(ctx, region).await?;
        // A lock held by hand outlives this process: only its expiry makes it stale.
        let ttl = ttl.unwrap_or(s.cfg.lock_ttl.0);
        match s
            .engine
            .try_lock(&s.scope, &release::actor(), reason, ttl, false)
            .await?
        {
            Acquire::Acquired(l) => {
                ctx.ui.status(
                    "Locked",
                    format!(
                        "{}/{} until {} ({})",
                        s.region,
                        s.env,
                        l.expires.format("%H:%M:%S UTC"),
                        l.reason
                    ),
                );
                Ok(ExitCode::Success)
            }
            Acquire::Held(other) => Err(Error::failed(
                ExitCode::Locked,
                anyhow!(
                    "{}/{} is already locked by {}",
                    s.region,
                    s.env,
                    other.describe()
                ),
            )),
        }
    })
}

pub fn unlock(ctx: &Ctx, region: &str, force: bool) -> Result<ExitCode> {
    if k8s::targets_kubernetes(ctx, region)? {
        return block_on(k8s::unlock(ctx, region, force));
    }
    block_on(async {
        let s = Session::open(ctx, region).await?;
        let Some(current) = s.engine.current_lock(&s.scope).await? else {
            ctx.ui
                .status("Unlocked", format!("{}/{} was not locked", s.region, s.env));
            return Ok(ExitCode::Success);
        };
        let mine = current.holder == release::actor();
        if !mine && !force && !current.is_stale(Utc::now()) {
            return Err(Error::failed(
                ExitCode::Locked,
                anyhow!("{}/{} is locked by {}", s.region, s.env, current.describe()),
            )
            .with_hint("pass --force to free someone else's lock"));
        }
        s.engine.break_lock(&s.scope).await?;
        ctx.ui.status(
            "Unlocked",
            format!(
                "{}/{} (was held by {})",
                s.region,
                s.env,
                current.describe()
            ),
        );
        Ok(ExitCode::Success)
    })
}
