//! The deploy and the rollback, written once for every target.
//!
//! [`deploy`] reads top to bottom as the steps it takes; each target-specific half is a
//! method of [`Target`]. Locks, hooks, data backups, release records, notices, the summary
//! and the exit codes live here and nowhere else, so they mean the same on Docker hosts and on
//! Kubernetes:
//!
//! - notices: `start` once the release is recorded; on failure `failure` and then `rollback`
//!   go out after restoring, so they say what serves;
//! - `keep_releases: N` keeps the newest N release records of any outcome (and always the
//!   serving one); on Docker the stopped containers of releases no longer kept go with them;
//! - `plan` and `status` warn about the lock and about a release a killed run left behind;
//! - the lock: taken on the target, waited for with `--lock-wait`, taken over when stale,
//!   exit 5 naming the holder;
//! - drift: `prepare` finds hand edits beside the changes; `--reset-drift` makes taking them
//!   back part of the release, else a deploy that leaves them says so (a warning and
//!   `drift_left` in the summary).

pub mod fleet;
mod release_phase;
mod steer;
mod steps;

use std::time::{Duration, Instant};

use crate::context::Ctx;
use crate::error::{ExitCode, Result};
use crate::hooks::{HookEnv, HookKind};
use crate::release::{self, Kind, Outcome, Release};
use crate::targets::{self, DeployOptions, Purpose, Target};
pub use steer::steer;
pub use steps::{interrupted_note, version_of, Summary};
use steps::{LockGuard, Notify};

/// `deploy --region R`
pub async fn deploy(ctx: &Ctx, region: &str, opts: &DeployOptions) -> Result<ExitCode> {
    let started = Instant::now();
    let mut t = targets::open(ctx, region).await?; // 1. reach the target
    let version = steps::version(opts, t.region())?; // 2. the version
    t.resolve(&version, opts, Purpose::Deploy).await?; // 3. its desired state
    let reason = opts.reason.clone().unwrap_or(format!("deploy {version}"));
    let lock = LockGuard::take(t.as_ref(), &reason, opts.lock_wait).await?; // 4. the lock
    let result = locked_deploy(ctx, t.as_mut(), &version, opts, started).await;
    lock.release_or_hold(t.as_ref()).await; // 15. unlock (a paused canary keeps it)
    steps::end_window(t.as_ref(), &result).await; // 16. a blue-green's old set, after its window
    result
}

async fn locked_deploy(
    ctx: &Ctx,
    t: &mut dyn Target,
    version: &str,
    opts: &DeployOptions,
    started: Instant,
) -> Result<ExitCode> {
    let history = steps::recover_interrupted(t).await?; // 5. a killed run's release
    let serving = release::serving(&history).cloned();
    let changes = t.prepare(&history, opts).await?; // 6. what changes (and drift)
    if !changes.any {
        let left = steps::drift_left(t, changes.drift.len());
        return steps::unchanged(t, serving.as_ref(), version, left, started);
    }
    steps::announce_plan(t, &changes);
    let hook_env = steps::hook_env(t, version, &history, serving.as_ref());
    steps::pre_hooks(t, HookKind::PreDeploy, &hook_env).await?; // 7. tests before deploying
    let backups = steps::data_backups(ctx, t, &hook_env, serving.is_none()).await?; // 8.
    let notify = Notify::new(t);
    notify.start(&hook_env).await;
    let mut rec = Release::start(
        &t.region().name,
        t.region().env(),
        &history,
        Kind::Deploy,
        version,
        serving.as_ref().map(|r| r.id.clone()),
        None,
    );
    rec.backups = backups;
    steps::record_in_progress(t, &mut rec).await?; // 9. the record, with the backup
    if let Err(failure) = release_phase::run(t, &mut rec).await? {
        // 10. the release steps (migrations); a failure changed nothing else
        return release_phase::failed(t, rec, failure, &notify, started).await;
    }
    let outcome = steps::interruptible(async {
        t.apply(&rec).await?; // 11. roll out
        if t.paused().is_some() {
            return Ok(()); // a canary waits for `promote`
        }
        t.verify().await?; // 12. bake
        steps::post_deploy_hooks(t, &hook_env).await?; // 13. smoke tests
        t.complete().await // 14. retire what the release dropped
    })
    .await;
    t.applied(&mut rec);
    match outcome {
        Ok(()) if t.paused().is_some() => {
            let why = t.paused().unwrap_or_default();
            steps::paused(t, rec, &why, started).await
        }
        Ok(()) => steps::deployed(t, rec, history, &notify, opts, started).await,
        // A one-way release step ran: the old version may not read the data any more.
        Err(e) if rec.release_steps.iter().any(|s| s.moved_on()) => {
            release_phase::halted(t, rec, e, &notify, started).await
        }
        Err(e) => steps::failed(t, rec, &history, e, &notify, started).await,
    }
}

/// `rollback --region R [--to ID]`
/// `force`: also back past a one-way release step (see `release_phase`).
pub async fn rollback(
    ctx: &Ctx,
    region: &str,
    to: Option<&str>,
    lock_wait: Option<Duration>,
    force: bool,
) -> Result<ExitCode> {
    let started = Instant::now();
    let mut t = targets::open(ctx, region).await?; // 1. reach the target
    let reason = format!(
        "rollback{}",
        to.map(|t| format!(" to {t}")).unwrap_or_default()
    );
    let lock = LockGuard::take(t.as_ref(), &reason, lock_wait).await?; // 2. the lock
    let result = locked_rollback(t.as_mut(), to, force, started).await;
    lock.release(t.as_ref()).await; // 10. unlock
    result
}

async fn locked_rollback(
    t: &mut dyn Target,
    to: Option<&str>,
    force: bool,
    started: Instant,
) -> Result<ExitCode> {
    let history = t.history().await?;
    // 3. A release a killed run left behind, or a deploy that stopped after its one-way
    // release step (with --force), is what a rollback undoes.
    let undo = history.last().filter(|r| match r.outcome {
        Outcome::InProgress => to.is_none(),
        _ => release::halted(r) && (to.is_none() || to == r.previous.as_deref()),
    });
    if let Some(last) = undo {
        if last.outcome == Outcome::InProgress {
            steps::recover(t, last, &history).await?;
        } else {
            release_phase::undo_halted(t, last, &history, force).await?;
        }
        return steps::finish(
            t,
            Summary {
                release: Some(last.id.clone()),
                previous: last.previous.clone(),
                ..Summary::new(t, "rolled_back", started)
            },
            ExitCode::Success,
        );
    }
    let (current, target) = steps::rollback_pair(t, &history, to)?; // 4. from what to what
    release_phase::guard_one_way(t, &history, &target, force)?; // not blindly past a migration
    let hook_env = HookEnv {
        region: t.region().name.clone(),
        environment: t.region().env().to_string(),
        version: target.version.clone(),
        release: target.id.clone(),
        previous: Some(current.id.clone()),
        outcome: None,
    };
    steps::pre_hooks(t, HookKind::PreRollback, &hook_env).await?; // 5.
    t.resolve_release(&target, &current).await?; // 6. the target release's state
    t.prepare(&history, &DeployOptions::default()).await?;
    let mut rec = Release::start(
        &t.region().name,
        t.region().env(),
        &history,
        Kind::Rollback,
        &target.version,
        Some(current.id.clone()),
        Some(target.id.clone()),
    );
    steps::record_in_progress(t, &mut rec).await?; // 7. the record, with the backup
    let outcome = steps::interruptible(t.apply(&rec)).await; // 8. roll back
    match outcome {
        // 9. record, prune, notify, post_rollback hooks
        Ok(()) => {
            steps::rolled_back(t, rec, &history, (&current, &target), hook_env, started).await
        }
        Err(e) => steps::rollback_failed(t, rec, &history, e).await,
    }
}
