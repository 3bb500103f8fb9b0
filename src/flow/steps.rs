//! The named steps of the flow, one function each, the same for every target.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::Utc;

use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::hooks::{self, HookEnv, HookKind};
use crate::lock::{Acquire, Lock};
use crate::notify::{self, Notice, NotifyKind};
use crate::release::{self, Outcome, Release};
use crate::targets::{Changes, DeployOptions, Region, Target};

/// How often a waiting `--lock-wait` looks again.
const LOCK_POLL: Duration = Duration::from_secs(1);

/// The version a deploy tags: `--version`, else the git commit (with `-dirty-<hash>` for an
/// uncommitted tree) when services are built, else the config's `version:`. A Kubernetes
/// region of a mixed run gets the same, so `--region all` deploys one version everywhere.
pub fn version_of(opts: &DeployOptions, cfg: &crate::config::RegionConfig) -> Option<String> {
    if let Some(v) = &opts.version {
        return Some(v.clone());
    }
    if cfg.services.values().any(|s| s.build.is_some()) && !opts.no_build {
        if let Some(commit) = release::git_commit() {
            return Some(match commit.strip_suffix("-dirty") {
                Some(sha) => format!("{sha}-dirty-{}", dirty_hash()),
                None => commit,
            });
        }
    }
    cfg.version.clone()
}

/// Step: the version, or exit 2 saying how to name one.
pub(super) fn version(opts: &DeployOptions, r: &Region) -> Result<String> {
    version_of(opts, &r.cfg).ok_or_else(|| {
        Error::usage_hint(
            "no version to deploy",
            "pass --version V, or set `version:` in the region files",
        )
    })
}

/// A short hash of the uncommitted changes, so two dirty builds of one commit differ. Read
/// once per process, like `release::git_commit`: a fleet run asks once per region.
fn dirty_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let diff = std::process::Command::new("git")
            .args(["diff", "HEAD"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        hex::encode(&Sha256::digest(&diff)[..4])
    })
    .clone()
}

/// The region's lock while a deploy or rollback holds it.
pub(super) struct LockGuard(Lock);

impl LockGuard {
    /// Step: takes the lock, waiting up to `wait`; a stale holder is taken over (and said so),
    /// a live one that stays is exit 5 naming it.
    pub async fn take(t: &dyn Target, reason: &str, wait: Option<Duration>) -> Result<LockGuard> {
        let r = t.region();
        let holder = release::actor();
        let until = Instant::now() + wait.unwrap_or_default();
        loop {
            match t.try_lock(&holder, reason, r.cfg.lock_ttl.0, true).await? {
                Acquire::Acquired(lock) => {
                    r.ui.status(
                        "Locked",
                        format!("{} ({}, {})", r.place(), t.lock_place(), lock.holder),
                    );
                    return Ok(LockGuard(lock));
                }
                Acquire::Held(other) if other.is_stale(Utc::now()) && !other.token.is_empty() => {
                    r.ui.warn(format!(
                        "taking over a stale lock on {} held by {}",
                        r.place(),
                        other.describe()
                    ));
                    t.take_over(&other).await?;
                }
                Acquire::Held(other) if Instant::now() < until => {
                    r.ui.verbose(format!("waiting for the lock held by {}", other.describe()));
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Acquire::Held(other) => return Err(locked(r, &other)),
            }
        }
    }

    /// Step: frees the lock, or, when the target's rollout waits for `promote`, holds it for
    /// that rollout: no longer tied to this process, its reason naming the release and the
    /// way on, until [`PAUSED_LOCK_TTL`].
    pub async fn release_or_hold(self, t: &dyn Target) {
        let Some(why) = t.paused() else {
            return self.release(t).await;
        };
        let r = t.region();
        let reason = match t.history().await.ok().and_then(|h| h.last().cloned()) {
            Some(last) => hold_reason(&last.id, &why),
            None => why,
        };
        if let Err(e) = t.unlock(&self.0).await {
            r.ui.warn(format!("could not release the lock: {e:#}"));
        }
        match t
            .try_lock(&self.0.holder, &reason, PAUSED_LOCK_TTL, false)
            .await
        {
            Ok(Acquire::Acquired(_)) => {
                r.ui.status("Locked", format!("{} for the paused canary", r.place()))
            }
            Ok(Acquire::Held(other)) => r.ui.warn(format!(
                "could not hold the lock for the paused canary: {}",
                other.describe()
            )),
            Err(e) => r.ui.warn(format!(
                "could not hold the lock for the paused canary: {e:#}"
            )),
        }
    }

    /// Step: frees the lock; a failure only warns (it expires, or `unlock --force` frees it).
    pub async fn release(self, t: &dyn Target) {
        if let Err(e) = t.unlock(&self.0).await {
            t.region()
                .ui
                .warn(format!("could not release the lock: {e:#}"));
        }
    }
}

/// Step: a blue-green this process promoted keeps its old set (running, weight 0) until its
/// window ends, holding no lock meanwhile, so a `rollback` from any runner switches back in
/// one Runtime API line. Then, under the lock again, the old set goes — unless a rollback or
/// a deploy came first (that deploy removed it; after a rollback it serves). No controller
/// runs between commands: a process killed while it waits leaves the old set to the next
/// deploy or rollback, which end the window first.
pub async fn end_window(t: &dyn Target, result: &Result<ExitCode>) {
    if !matches!(result, Ok(ExitCode::Success)) {
        return;
    }
    let Some((id, until)) = t.window() else {
        return;
    };
    let r = t.region();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let wait = until.saturating_sub(now);
    r.ui.status(
        "Keeping",
        format!(
            "the old set beside {id} for {wait}s; `packfy-deploy rollback --region {}` switches back at once",
            r.name
        ),
    );
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let lock = match LockGuard::take(t, &format!("scale down after {id}"), Some(WINDOW_LOCK_WAIT))
        .await
    {
        Ok(l) => l,
        Err(e) => {
            r.ui.warn(format!(
                "could not take the lock to scale down the old set ({e}); the next deploy or rollback removes it"
            ));
            return;
        }
    };
    let done = async { t.end_window(&t.history().await?, &id).await }.await;
    match done {
        Ok(true) => {
            r.ui.status("Scaled down", format!("the old set beside {id}"))
        }
        Ok(false) => r.ui.status(
            "Kept",
            format!(
                "the old set: {id} no longer serves as promoted (a rollback or deploy came first)"
            ),
        ),
        Err(e) => r.ui.warn(format!(
            "could not scale down the old set: {e:#}; the next deploy or rollback removes it"
        )),
    }
    lock.release(t).await;
}

/// How long the end of a blue-green's window waits for the lock (a deploy or rollback that
/// holds it ends the window itself).
const WINDOW_LOCK_WAIT: Duration = Duration::from_secs(600);

/// How long a paused canary holds its region's lock: until `promote` or `abort`, in
/// practice; the expiry only frees a region whose canary everyone forgot.
pub const PAUSED_LOCK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The reason of the lock a paused canary of release `id` holds.
pub fn hold_reason(id: &str, why: &str) -> String {
    format!("canary {id} {why}; `promote` goes on, `abort` takes it back")
}

/// Whether `lock` is the one a paused canary of release `id` holds.
pub fn holds_for(lock: &Lock, id: &str) -> bool {
    lock.reason.starts_with(&format!("canary {id} "))
}

/// Step (a canary waits for `promote`): recorded `paused`, said so, exit 0.
pub(super) async fn paused(
    t: &dyn Target,
    mut rec: Release,
    why: &str,
    started: Instant,
) -> Result<ExitCode> {
    let r = t.region();
    rec.outcome = Outcome::Paused;
    t.save(&rec).await?;
    r.ui.status(
        "Paused",
        format!(
            "{} {} ({}): {why}; `packfy-deploy promote --region {}` goes on, `abort` takes it back",
            r.place(),
            rec.id,
            rec.version,
            r.name
        ),
    );
    finish(
        t,
        Summary::of(t, "paused", &rec, started),
        ExitCode::Success,
    )
}

/// Exit 5: the region is locked by `other`.
pub fn locked(r: &Region, other: &Lock) -> Error {
    Error::failed(
        ExitCode::Locked,
        anyhow!("{} is locked by {}", r.place(), other.describe()),
    )
    .with_hint("wait with --lock-wait 10m, or if that run is dead: packfy-deploy unlock --force")
}

/// Step: a release a killed run left `in_progress` is restored before anything else (we
/// hold the lock, so its run is gone). Returns the history as it is then.
pub(super) async fn recover_interrupted(t: &dyn Target) -> Result<Vec<Release>> {
    let history = t.history().await?;
    match history.last().filter(|r| r.outcome == Outcome::InProgress) {
        Some(last) => {
            recover(t, last, &history).await?;
            t.history().await
        }
        None => Ok(history),
    }
}

/// Puts back what the interrupted release `last` replaced and records it rolled back.
pub(super) async fn recover(t: &dyn Target, last: &Release, history: &[Release]) -> Result<()> {
    let r = t.region();
    r.ui.warn(format!(
        "release {} ({}) was interrupted: started {} by {} on {}, never finished; restoring {}",
        last.id,
        last.version,
        last.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        last.actor,
        last.runner,
        last.previous.as_deref().unwrap_or("the state before it")
    ));
    let started = Instant::now();
    match t.restore(last, history).await {
        Ok(()) => {
            let mut rec = last.clone();
            rec.end(
                Outcome::RolledBack,
                Some("interrupted; recovered by the next run".into()),
            );
            t.save(&rec).await?;
            r.ui.status(
                "Restored",
                format!(
                    "{} to {} in {:.1}s",
                    r.place(),
                    last.previous.as_deref().unwrap_or("the state before it"),
                    started.elapsed().as_secs_f64()
                ),
            );
            Ok(())
        }
        Err(problems) => Err(Error::failed(
            ExitCode::NeedsPerson,
            anyhow!(
                "could not recover the interrupted release {}:\n  {}",
                last.id,
                problems.join("\n  ")
            ),
        )),
    }
}

/// For `plan` and `status`: the release a killed run left behind, and how to restore it.
pub fn interrupted_note(history: &[Release], lock: Option<&Lock>) -> Option<String> {
    let last = release::interrupted(history, lock)?;
    Some(format!(
        "release {} ({}) was interrupted (started {} by {} on {}); `packfy-deploy rollback --region {}` restores {}",
        last.id,
        last.version,
        last.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        last.actor,
        last.runner,
        last.region,
        last.previous.as_deref().unwrap_or("the state before it")
    ))
}

/// Step (nothing changes): the deploy is done.
pub(super) fn unchanged(
    t: &dyn Target,
    serving: Option<&Release>,
    version: &str,
    drift_left: Option<usize>,
    started: Instant,
) -> Result<ExitCode> {
    let id = serving.map_or("what runs".to_string(), |r| r.id.clone());
    t.region().ui.status(
        "Unchanged",
        format!(
            "{}: {id} already runs {version}; nothing to do",
            t.region().place()
        ),
    );
    finish(
        t,
        Summary {
            release: serving.map(|r| r.id.clone()),
            version: Some(version.into()),
            drift_left,
            ..Summary::new(t, "unchanged", started)
        },
        ExitCode::Success,
    )
}

/// Step: what a deploy leaves of `n` differences from what the releases set (it resets
/// none without `--reset-drift`): said, and `Some(n)` for the summary.
pub(super) fn drift_left(t: &dyn Target, n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let r = t.region();
    r.ui.warn(format!(
        "{}: {} from what its releases set left in place (`packfy-deploy diff {} --live` lists them; `deploy --reset-drift` takes them back)",
        r.place(),
        crate::drift::count(n),
        r.name
    ));
    Some(n)
}

pub(super) fn announce_plan(t: &dyn Target, changes: &Changes) {
    for line in &changes.changed {
        t.region().ui.status("Plan", line);
    }
    for d in &changes.drift {
        if changes.resetting {
            t.region()
                .ui
                .status("Plan", format!("reset {}", d.describe()));
        } else {
            t.region().ui.status("Drift", d.describe());
        }
    }
    // What the target cannot promise here (no load balancer: no zero downtime) is said.
    for note in &changes.notes {
        t.region().ui.warn(note);
    }
}

/// What hooks are told about the release about to be made.
pub(super) fn hook_env(
    t: &dyn Target,
    version: &str,
    history: &[Release],
    serving: Option<&Release>,
) -> HookEnv {
    HookEnv {
        region: t.region().name.clone(),
        environment: t.region().env().to_string(),
        version: version.to_string(),
        release: format!("r{}", release::next_number(history)),
        previous: serving.map(|r| r.id.clone()),
        outcome: None,
    }
}

/// Step: hooks of a `pre_` kind; a failure stops the command before anything on the target
/// changes (exit 2). The old deploy script ran the test suites before every deploy.
pub(super) async fn pre_hooks(t: &dyn Target, kind: HookKind, env: &HookEnv) -> Result<()> {
    let r = t.region();
    let list = kind.of(&r.cfg.hooks);
    if list.is_empty() {
        return Ok(());
    }
    r.ui.status("Hooks", kind.as_str());
    hooks::run(kind, list, env, &r.root, &r.ui)
        .await
        .map_err(|e| Error::usage_hint(format!("{e:#}"), "nothing on the target was changed"))
}

/// Step: the data backups (`backups:` jobs); a required job failing stops here (exit 2).
pub(super) async fn data_backups(
    ctx: &Ctx,
    t: &dyn Target,
    env: &HookEnv,
    first_release: bool,
) -> Result<Vec<crate::backup::BackupRecord>> {
    let r = t.region();
    let ctx = ctx.with(r.ui.clone(), Some(r.env));
    crate::backup::before_deploy(
        &ctx,
        &r.cfg.backups,
        (&r.name, r.env()),
        t.exec(),
        &env.release,
        first_release,
    )
    .await
}

/// Step: the new release recorded `in_progress`, with the target's backup of what runs now.
pub(super) async fn record_in_progress(t: &dyn Target, rec: &mut Release) -> Result<()> {
    let what = t.record(rec);
    t.save(rec).await?;
    t.region()
        .ui
        .status("Backed up", format!("{what} in release record {}", rec.id));
    Ok(())
}

/// Runs the rollout until it ends or SIGINT/SIGTERM arrives (which counts as a failure, so the
/// flow restores the previous release before exiting).
pub(super) async fn interruptible<F: std::future::Future<Output = anyhow::Result<()>>>(
    work: F,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| anyhow!("cannot watch for SIGTERM: {e}"))?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (SIGINT)")),
        _ = term.recv() => Err(anyhow!("interrupted (SIGTERM)")),
    }
}

/// Step: the `post_deploy` hooks, smoke tests: a failing one rolls back like a failed health
/// check (the old script's post-deploy check exited 1 and left the bad release serving).
pub(super) async fn post_deploy_hooks(t: &dyn Target, env: &HookEnv) -> anyhow::Result<()> {
    let r = t.region();
    if r.cfg.hooks.post_deploy.is_empty() {
        return Ok(());
    }
    r.ui.status("Hooks", "post_deploy");
    let env = HookEnv {
        outcome: Some("succeeded".into()),
        ..env.clone()
    };
    hooks::run(
        HookKind::PostDeploy,
        &r.cfg.hooks.post_deploy,
        &env,
        &r.root,
        &r.ui,
    )
    .await
}

/// Step (success): record it, prune, say so, notify.
pub(super) async fn deployed(
    t: &dyn Target,
    mut rec: Release,
    history: Vec<Release>,
    notify: &Notify<'_>,
    opts: &DeployOptions,
    started: Instant,
) -> Result<ExitCode> {
    rec.end(Outcome::Succeeded, None);
    t.save(&rec).await?;
    let all: Vec<Release> = history.into_iter().chain([rec.clone()]).collect();
    // What the new release leaves of the hand edits (none when it reset them), looked for
    // while what `keep_releases` no longer keeps goes (the records of those releases still
    // account for their containers here).
    let drift = async {
        if opts.reset_drift {
            return None;
        }
        match t.drift(None, &all).await {
            Ok(d) => drift_left(t, d.len()),
            Err(e) => {
                t.region()
                    .ui
                    .verbose(format!("could not look for drift after the deploy: {e}"));
                None
            }
        }
    };
    let (left, ()) = tokio::join!(drift, prune_history(t, &all));
    let url = t.url();
    t.region().ui.status(
        "Deployed",
        format!(
            "{} {} ({}) in {:.1}s{}",
            t.region().place(),
            rec.id,
            rec.version,
            started.elapsed().as_secs_f64(),
            url.as_ref()
                .map(|u| format!(", serving at {u}"))
                .unwrap_or_default()
        ),
    );
    notify
        .send(
            NotifyKind::Success,
            &rec.version,
            Some(rec.id.clone()),
            rec.previous.clone(),
            None,
        )
        .await;
    finish(
        t,
        Summary {
            url,
            drift_left: left,
            ..Summary::of(t, "succeeded", &rec, started)
        },
        ExitCode::Success,
    )
}

/// Step (failure, signal): restore what ran before, record the outcome, then notify —
/// `failure`, and `rollback` when the previous release serves again. Exit 3, or 4 when
/// restoring failed too.
pub(super) async fn failed(
    t: &dyn Target,
    mut rec: Release,
    history: &[Release],
    e: anyhow::Error,
    notify: &Notify<'_>,
    started: Instant,
) -> Result<ExitCode> {
    let r = t.region();
    let error = format!("{e:#}");
    say_failed(r, &rec, &error);
    r.ui.status("Rolling back", format!("to what ran before {}", rec.id));
    let restored = t.restore(&rec, history).await;
    if let Some(note) = release::rollback_note(&rec) {
        r.ui.warn(note);
    }
    let back = rec
        .previous
        .clone()
        .unwrap_or_else(|| "nothing (first release)".into());
    let (id, previous) = (Some(rec.id.clone()), rec.previous.clone());
    match restored {
        Ok(()) => {
            rec.end(Outcome::RolledBack, Some(error.clone()));
            t.save(&rec).await?;
            r.ui.status(
                "Rolled back",
                format!(
                    "{} to {back}; {} recorded as rolled back",
                    r.place(),
                    rec.id
                ),
            );
            notify
                .send(
                    NotifyKind::Failure,
                    &rec.version,
                    id.clone(),
                    previous.clone(),
                    Some(format!("{error}; {back} serves again")),
                )
                .await;
            let detail = format!("{} failed and {back} serves again", rec.id);
            notify
                .send(
                    NotifyKind::Rollback,
                    &rec.version,
                    id,
                    previous,
                    Some(detail),
                )
                .await;
            finish(
                t,
                Summary {
                    url: t.url(),
                    ..Summary::of(t, "rolled_back", &rec, started)
                },
                ExitCode::RolledBack,
            )?;
            Err(Error::failed(
                ExitCode::RolledBack,
                anyhow!("{} failed and was rolled back: {error}", rec.id),
            ))
        }
        Err(problems) => {
            rec.end(Outcome::Failed, Some(error.clone()));
            let _ = t.save(&rec).await;
            notify
                .send(
                    NotifyKind::Failure,
                    &rec.version,
                    id,
                    previous,
                    Some(format!("{error}; restoring {back} failed too")),
                )
                .await;
            let (live, hint) = t.describe_live().await;
            Err(Error::failed(
                ExitCode::NeedsPerson,
                anyhow!(
                    "{} failed ({error}) and restoring the previous release failed too:\n  {}{}",
                    rec.id,
                    problems.join("\n  "),
                    what_runs(&live)
                ),
            )
            .with_hint(hint))
        }
    }
}

/// The `Failed` line: the release, the region and the first line of why.
pub(super) fn say_failed(r: &Region, rec: &Release, error: &str) {
    r.ui.status(
        "Failed",
        format!(
            "{} of {}: {}",
            rec.id,
            r.place(),
            error.lines().next().unwrap_or("")
        ),
    );
}

/// `\nwhat runs now:\n…` when the target said.
fn what_runs(live: &str) -> String {
    if live.is_empty() {
        String::new()
    } else {
        format!("\nwhat runs now:\n{live}")
    }
}

/// Step: what `keep_releases` no longer keeps goes (`all`: every record, oldest first).
pub(super) async fn prune_history(t: &dyn Target, all: &[Release]) {
    let (kept, gone) = release::retention(all, t.region().cfg.keep_releases as usize);
    t.forget(&kept, &gone).await;
}

/// After a rollback: prune with the replaced release marked and the rollback recorded.
async fn prune(t: &dyn Target, history: &[Release], replaced: &Release, rec: &Release) {
    let all: Vec<Release> = history
        .iter()
        .map(|r| {
            if r.id == replaced.id {
                replaced.clone()
            } else {
                r.clone()
            }
        })
        .chain([rec.clone()])
        .collect();
    prune_history(t, &all).await;
}

/// The release serving now and the one a rollback goes back to (exit 2 when there is none).
pub(super) fn rollback_pair(
    t: &dyn Target,
    history: &[Release],
    to: Option<&str>,
) -> Result<(Release, Release)> {
    let r = t.region();
    let current = release::serving(history);
    let target = release::rollback_target(history, current, to).map_err(|e| {
        Error::usage_hint(
            format!("cannot roll back {}: {e}", r.place()),
            "`packfy-deploy history --region R` lists the releases",
        )
    })?;
    let Some(current) = current else {
        return Err(Error::usage(format!(
            "{} has no serving release to roll back from",
            r.place()
        )));
    };
    r.ui.status(
        "Rolling back",
        format!(
            "{} from {} ({}) to {} ({})",
            r.place(),
            current.id,
            current.version,
            target.id,
            target.version
        ),
    );
    Ok((current.clone(), target.clone()))
}

/// Step (a rollback landed): record it and the release it replaced, prune, say so, notify
/// and run the `post_rollback` hooks.
pub(super) async fn rolled_back(
    t: &dyn Target,
    mut rec: Release,
    history: &[Release],
    (current, target): (&Release, &Release),
    hook_env: HookEnv,
    started: Instant,
) -> Result<ExitCode> {
    let mut replaced = current.clone();
    replaced.outcome = Outcome::Reverted;
    t.save(&replaced).await?;
    rec.end(Outcome::Succeeded, None);
    t.save(&rec).await?;
    prune(t, history, &replaced, &rec).await;
    t.region().ui.status(
        "Restored",
        format!(
            "{} to {} ({}) in {:.1}s",
            t.region().place(),
            target.id,
            target.version,
            started.elapsed().as_secs_f64()
        ),
    );
    after_rollback(t, &Notify::new(t), target, current, hook_env).await;
    finish(
        t,
        Summary {
            release: Some(target.id.clone()),
            previous: Some(current.id.clone()),
            version: Some(target.version.clone()),
            ..Summary::new(t, "succeeded", started)
        },
        ExitCode::Success,
    )
}

/// Step (a rollback failed): put back what ran before it; exit 3, or 4 when that fails too.
pub(super) async fn rollback_failed(
    t: &dyn Target,
    mut rec: Release,
    history: &[Release],
    e: anyhow::Error,
) -> Result<ExitCode> {
    t.region().ui.error(format!("rolling back failed: {e:#}"));
    let restored = t.restore(&rec, history).await;
    let error = format!("{e:#}");
    match restored {
        Ok(()) => {
            rec.end(Outcome::RolledBack, Some(error.clone()));
            let _ = t.save(&rec).await;
            Err(Error::failed(
                ExitCode::RolledBack,
                anyhow!("the rollback failed ({error}); what ran before it runs again"),
            ))
        }
        Err(problems) => {
            rec.end(Outcome::Failed, Some(error.clone()));
            let _ = t.save(&rec).await;
            let (live, hint) = t.describe_live().await;
            Err(Error::failed(
                ExitCode::NeedsPerson,
                anyhow!(
                    "the rollback failed ({error}) and so did undoing it:\n  {}{}",
                    problems.join("\n  "),
                    what_runs(&live)
                ),
            )
            .with_hint(hint))
        }
    }
}

/// After a rollback landed: the notice, then the `post_rollback` hooks. The previous release
/// already serves; a failing check after it is reported, and rolling back again would not help.
async fn after_rollback(
    t: &dyn Target,
    notify: &Notify<'_>,
    target: &Release,
    current: &Release,
    hook_env: HookEnv,
) {
    let detail = format!(
        "{} ({}) serves again instead of {} ({})",
        target.id, target.version, current.id, current.version
    );
    notify
        .send(
            NotifyKind::Rollback,
            &target.version,
            Some(target.id.clone()),
            Some(current.id.clone()),
            Some(detail),
        )
        .await;
    let r = t.region();
    let hooks = &r.cfg.hooks.post_rollback;
    if hooks.is_empty() {
        return;
    }
    r.ui.status("Hooks", "post_rollback");
    let env = HookEnv {
        outcome: Some("succeeded".into()),
        ..hook_env
    };
    if let Err(e) = hooks::run(HookKind::PostRollback, hooks, &env, &r.root, &r.ui).await {
        r.ui.warn(format!("{e:#}"));
    }
}

/// Where a region's notices go.
pub(super) struct Notify<'a> {
    region: &'a Region,
}

impl<'a> Notify<'a> {
    pub fn new(t: &'a dyn Target) -> Notify<'a> {
        Notify { region: t.region() }
    }

    /// The notice that a deploy of `env.version` as `env.release` starts.
    pub async fn start(&self, env: &HookEnv) {
        self.send(
            NotifyKind::Start,
            &env.version,
            Some(env.release.clone()),
            env.previous.clone(),
            None,
        )
        .await;
    }

    /// Sends a notification to the region's webhooks; never fails, warns when undelivered.
    pub async fn send(
        &self,
        kind: NotifyKind,
        version: &str,
        release: Option<String>,
        previous: Option<String>,
        detail: Option<String>,
    ) {
        let r = self.region;
        if r.cfg.notifications.is_empty() {
            return;
        }
        let notice = Notice {
            kind,
            region: r.name.clone(),
            environment: r.env().to_string(),
            version: version.to_string(),
            release,
            previous,
            actor: release::actor(),
            detail,
            time: Utc::now(),
        };
        notify::send(&r.cfg.notifications, &notice, &r.ui).await;
    }
}

/// The outcome printed (and returned as JSON) at the end of a deploy or rollback.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub region: String,
    pub environment: String,
    pub outcome: String,
    pub release: Option<String>,
    pub previous: Option<String>,
    pub version: Option<String>,
    pub duration_secs: f64,
    pub error: Option<String>,
    pub url: Option<String>,
    /// Differences from what the releases set that the deploy left in place (no
    /// `--reset-drift`); absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_left: Option<usize>,
}

impl Summary {
    /// The summary of one region's run, with nothing named yet.
    pub(super) fn new(t: &dyn Target, outcome: &str, started: Instant) -> Summary {
        Summary {
            region: t.region().name.clone(),
            environment: t.region().env().to_string(),
            outcome: outcome.into(),
            release: None,
            previous: None,
            version: None,
            duration_secs: started.elapsed().as_secs_f64(),
            error: None,
            url: None,
            drift_left: None,
        }
    }

    /// The summary of a recorded release.
    pub(super) fn of(t: &dyn Target, outcome: &str, rec: &Release, started: Instant) -> Summary {
        Summary {
            release: Some(rec.id.clone()),
            previous: rec.previous.clone(),
            version: Some(rec.version.clone()),
            ..Summary::new(t, outcome, started)
        }
    }
}

/// Prints the final summary (an NDJSON line with -o json) and returns the exit code.
pub(super) fn finish(t: &dyn Target, summary: Summary, code: ExitCode) -> Result<ExitCode> {
    let ui = &t.region().ui;
    if ui.json() {
        let mut v = serde_json::to_value(summary).map_err(anyhow::Error::from)?;
        v["event"] = "summary".into();
        v["time"] = Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
        ui.out_line(&v);
    }
    Ok(code)
}
