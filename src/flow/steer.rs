//! `promote`, `resume`, `abort` and `pause`: steering a canary from any process, any runner.
//!
//! A canary at an indefinite pause (`{pause: {}}`, or `pause` by hand) ended its deploy with
//! its release recorded `paused` and the region's lock held for it (not tied to a process,
//! its reason naming the release). Steering it:
//!
//! 1. reach the target; the last release must be a paused canary (exit 2 otherwise); a
//!    canary still running in another process is asked instead (`pause`, `abort`);
//! 2. the lock: the paused canary's is taken over, anyone else's is exit 5;
//! 3. the record goes back to `in_progress` (a killed steer is recovered like a deploy);
//! 4. `abort`: all traffic back to the old release, the new one removed, recorded
//!    `rolled_back`; `promote`/`resume`: the remaining steps run (`--full`: none of them),
//!    then the deploy ends as it would have (verify, record, prune, notify) — or pauses again;
//! 5. unlock, or hold the lock again for the next pause;
//! 6. a promoted blue-green: its old set stays for `scale_down_delay` (no lock held, so a
//!    `rollback` from anywhere switches back at once), then goes (see `steps::end_window`).

use std::time::Instant;

use anyhow::anyhow;

use super::steps::{self, LockGuard, Notify, Summary};
use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::release::{self, Outcome, Release};
use crate::targets::{self, DeployOptions, Steer, Target};

/// `promote|resume|abort|pause --region R`
pub async fn steer(ctx: &Ctx, region: &str, how: Steer) -> Result<ExitCode> {
    let started = Instant::now();
    let t = targets::open(ctx, region).await?; // 1. reach the target
    let history = t.history().await?;
    let last = history.last().cloned();
    let r = t.region();
    let lock = t.current_lock().await?;
    if let Some(l) = release::interrupted(&history, lock.as_ref()) {
        return Err(Error::usage_hint(
            format!(
                "{} of {} was interrupted and no run holds it: there is nothing to {}",
                l.id,
                r.place(),
                how.verb()
            ),
            "`packfy-deploy rollback --region R` (or the next deploy) takes it back",
        ));
    }
    match (&last, how) {
        (Some(l), Steer::Pause | Steer::Abort) if l.outcome == Outcome::InProgress => {
            // A canary running in another process: it reads this at its next tick.
            t.ask(how)
                .await
                .map_err(|e| Error::usage(format!("{e:#}")))?;
            r.ui.status(
                "Asked",
                format!("the canary {} of {} to {}", l.id, r.place(), how.verb()),
            );
            return steps::finish(
                t.as_ref(),
                Summary::new(t.as_ref(), "asked", started),
                ExitCode::Success,
            );
        }
        (Some(l), Steer::Pause) if l.outcome == Outcome::Paused => {
            r.ui.status("Paused", format!("{} {} already", r.place(), l.id));
            return steps::finish(
                t.as_ref(),
                Summary::new(t.as_ref(), "paused", started),
                ExitCode::Success,
            );
        }
        (Some(l), _) if l.outcome == Outcome::Paused => {}
        _ => {
            return Err(Error::usage_hint(
                format!("{} has no paused canary to {}", r.place(), how.verb()),
                "`packfy-deploy status --region R` shows what runs and any canary",
            ))
        }
    }
    let last = last.expect("matched above");
    t.steerable(&last, how)?;
    // 2. the lock the paused canary holds is ours to take; anyone else's is exit 5.
    if let Some(l) = lock {
        if steps::holds_for(&l, &last.id) {
            t.take_over(&l).await?;
        }
    }
    let lock = LockGuard::take(t.as_ref(), &format!("{} {}", how.verb(), last.id), None).await?;
    let result = locked_steer(t.as_ref(), &history, last, how, started).await;
    lock.release_or_hold(t.as_ref()).await; // 5.
    steps::end_window(t.as_ref(), &result).await; // 6. a blue-green's old set, after its window
    result
}

async fn locked_steer(
    t: &dyn Target,
    history: &[Release],
    last: Release,
    how: Steer,
    started: Instant,
) -> Result<ExitCode> {
    let before: Vec<Release> = history[..history.len() - 1].to_vec();
    let mut rec = last;
    rec.outcome = Outcome::InProgress; // 3. a killed steer is recovered by the next run
    rec.runner = release::runner();
    t.save(&rec).await?;
    let notify = Notify::new(t);
    if how == Steer::Abort {
        return aborted(t, rec, &before, started).await; // 4.
    }
    let outcome = steps::interruptible(async {
        t.steer(&rec, how).await?; // 4. the remaining steps
        if t.paused().is_some() {
            return Ok(());
        }
        t.verify().await?;
        t.complete().await
    })
    .await;
    t.applied(&mut rec);
    match (outcome, t.paused()) {
        (Ok(()), Some(why)) => steps::paused(t, rec, &why, started).await,
        (Ok(()), None) => {
            steps::deployed(t, rec, before, &notify, &DeployOptions::default(), started).await
        }
        (Err(e), _) => steps::failed(t, rec, &before, e, &notify, started).await,
    }
}

/// `abort`: what served before takes all the traffic again; recorded `rolled_back`.
async fn aborted(
    t: &dyn Target,
    mut rec: Release,
    before: &[Release],
    started: Instant,
) -> Result<ExitCode> {
    let r = t.region();
    let why = format!("aborted by {}", release::actor());
    match t.restore(&rec, before).await {
        Ok(()) => {
            rec.end(Outcome::RolledBack, Some(why));
            t.save(&rec).await?;
            r.ui.status(
                "Rolled back",
                format!(
                    "{}: {} aborted, {} serves again",
                    r.place(),
                    rec.id,
                    rec.previous.as_deref().unwrap_or("nothing")
                ),
            );
            steps::finish(
                t,
                Summary::of(t, "rolled_back", &rec, started),
                ExitCode::Success,
            )
        }
        Err(problems) => {
            rec.end(Outcome::Failed, Some(why));
            let _ = t.save(&rec).await;
            Err(Error::failed(
                ExitCode::NeedsPerson,
                anyhow!("aborting {} failed:\n  {}", rec.id, problems.join("\n  ")),
            ))
        }
    }
}
